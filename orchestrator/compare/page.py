"""The comparison as one self-contained HTML page, rendered from templates/report.html.j2.

Everything is inside the page: CSS in a <style> element, images as data: URIs, no scripts, and
a Content-Security-Policy that forbids any outside request. Jinja2 escapes all user text (model
names, labels, input names, table values): autoescape is on for every value the page shows.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.compare import choosing, text

_IMAGE_TYPES = [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif")]


def data_uri(content: bytes) -> str | None:
    """A data: URI for PNG, JPEG, GIF or WebP bytes; None for anything else."""
    mime = next((kind for magic, kind in _IMAGE_TYPES if content.startswith(magic)), None)
    if mime is None and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        mime = "image/webp"
    return None if mime is None else f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("orchestrator.compare", "templates"),
        autoescape=True,  # the name ends in .j2, which select_autoescape would not recognise
        undefined=jinja2.StrictUndefined,  # a misspelt name is an error, not an empty cell
        finalize=lambda value: "" if value is None else value,  # a missing value shows as nothing, not "None"
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")


def _figure(path: Path | str, caption: str) -> dict[str, str] | None:
    try:
        uri = data_uri(Path(path).read_bytes())
    except OSError:
        return None
    return None if uri is None else {"uri": uri, "caption": caption}


def _caption(name: str, report: dict[str, Any]) -> str:
    kind = report["kind"]
    if choosing.caption(name):
        return str(choosing.caption(name))
    if name == "metric":
        return f"{text.HEADLINE[kind][2]} per model with 95 % bootstrap intervals"
    if name == "speed":
        return "throughput (inputs per second)"
    if name == "agreement":
        return f"{text.AGREEMENT[kind]} between every two models"
    group, _, model = name.partition("/")
    if group == "confusion":
        return f"{model}: confusion matrix (rows true, columns predicted)"
    if group == "per_class":
        return f"{model}: {'AP' if kind == 'detection' else 'IoU'} per class"
    return name


def _input(row: dict[str, Any]) -> dict[str, Any]:
    """What the preview column shows of an input: its thumbnail, else its values, else nothing."""
    thumbnail = row.get("thumbnail")
    if isinstance(thumbnail, bytes | bytearray | memoryview):
        uri = data_uri(bytes(thumbnail))
        if uri:
            return {"thumbnail": uri, "fields": None}
    values = row.get("row")
    if isinstance(values, Mapping) and values:
        return {"thumbnail": None, "fields": list(values.items())}
    return {"thumbnail": None, "fields": None}


def _disagreements(report: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The disagreements table; detection and segmentation rows show each model's picture with its boxes or mask,
    the classes' colours gathered into one legend."""
    models = [m["model"] for m in report["models"]]
    shown = []
    legend: dict[str, dict[str, str]] = {}
    mark: dict[bool | None, str] = {True: "right", False: "wrong"}  # None: no truth for it
    for row in rows:
        predictions, correct = row.get("predictions") or {}, row.get("correct") or {}
        pictures = row.get("pictures") or {}
        marks = [mark.get(correct.get(model)) for model in models]
        drawn = [data_uri(pictures[model]) if isinstance(pictures.get(model), bytes) else None for model in models]
        shown.append(
            {
                "name": row.get("name"),
                "truth": row.get("truth"),
                **_input(row),
                "cells": list(zip(marks, (predictions.get(model, "") for model in models), drawn, strict=True)),
                "truth_drawn": bool(row.get("truth_drawn")),
            }
        )
        for name, colour in (row.get("colours") or {}).items():
            legend.setdefault(name.casefold(), {"name": name, "colour": colour})
    return {
        "models": models,
        "labelled": report["labelled"] or any(r.get("truth") is not None for r in rows),
        "pictures": any(r["thumbnail"] or r["fields"] for r in shown),
        "drawn": any(cell[2] for r in shown for cell in r["cells"]),
        "truth_drawn": any(r["truth_drawn"] for r in shown),
        "boxes": report["kind"] == "detection",  # their coordinates fold under the picture
        "legend": list(legend.values()),
        "rows": shown,
    }


# A pipeline shown in a report is cut here (a body may be 1 MB; the page is for people).
MAX_PIPELINE_CHARS = 100_000


def run_facts(run_id: str, pipeline: Any, when: datetime | None = None) -> dict[str, str]:
    """What a report says of its run: its id, when it was made (UTC) and the pipeline, as JSON."""
    shown = json.dumps({"instructions": pipeline}, indent=1, ensure_ascii=False) if pipeline is not None else ""
    if len(shown) > MAX_PIPELINE_CHARS:
        shown = f"{shown[:MAX_PIPELINE_CHARS]}\n… ({len(shown) - MAX_PIPELINE_CHARS} more characters cut)"
    made = (when or datetime.now(UTC)).astimezone(UTC)
    return {"run_id": run_id, "date": made.strftime("%Y-%m-%d %H:%M UTC"), "pipeline": shown}


def html_report(
    report: dict[str, Any],
    charts: Mapping[str, Path | str] | None = None,
    disagreements: Sequence[dict[str, Any]] | None = None,
    *,
    title: str = "Model comparison",
    geo: Mapping[str, Any] | None = None,
    drilldown: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> str:
    """One self-contained HTML page: verdict, metrics with intervals, charts, heat maps, disagreements.

    `charts`: {name: PNG path} from `charts()`; `disagreements`: rows from `find_disagreements`,
    each optionally with a "thumbnail" (PNG/JPEG bytes) or a "row" (the input's values); `geo`: the maps,
    per-class IoU and regions of a comparison on the Earth (maps.section), shown by geo.html.j2; `run`: the
    run it belongs to, so that a saved page stands alone (`run_facts`).
    """
    charts = dict(charts or {})
    choosing_context = choosing.context(report, dict(drilldown) if drilldown else None)  # ranking, gate, drill-down
    per_class = text.per_class_tables(report)
    if report["kind"] == "classification" and choosing_context["drill"]:
        per_class = []  # the drill-down shows them, each class opening its inputs

    def figures(names: list[str]) -> list[dict[str, str]]:
        drawn = (_figure(charts[name], _caption(name, report)) for name in names)
        return [figure for figure in drawn if figure is not None]  # a missing or unreadable chart is left out

    return _template().render(
        title=title,
        run=dict(run) if run else None,
        task=report.get("task"),
        method=text.method(report),
        verdict=report["verdict"],
        failed=report.get("failed_models") or [],  # models that did not run (compare_models goes on without them)
        models=text.models_table(report),
        pairs=text.pairs_table(report) if report["pairs"] else None,
        charts=figures([n for n in charts if not n.startswith("confusion/")]),
        heatmaps=figures([n for n in charts if n.startswith("confusion/")]),
        disagreeing=_disagreements(report, disagreements) if disagreements else None,
        labelled=report["labelled"],
        geo=geo,
        per_class=per_class,
        choosing=choosing_context,
    )
