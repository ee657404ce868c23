"""The comparison as one self-contained HTML page.

Everything is inside the page: CSS in a <style> element, images as data: URIs, no scripts, and
a Content-Security-Policy that forbids any outside request. All user text (model names, labels,
input names, table values) is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.compare import text

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2330;
       background: #f6f7f9; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; border-bottom: 1px solid #d9dde5; padding-bottom: 4px; }
.meta { color: #5b6475; margin: 0 0 16px; }
.verdict { font-size: 18px; background: #fff; border-left: 5px solid #3867d6; padding: 14px 18px; margin: 0;
           box-shadow: 0 1px 2px rgba(0,0,0,.08); }
table { border-collapse: collapse; background: #fff; margin: 6px 0 18px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
th, td { border: 1px solid #dde1e8; padding: 6px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; background: #fff; padding: 10px; box-shadow: 0 1px 2px rgba(0,0,0,.08); max-width: 100%; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #5b6475; font-size: 13px; margin-top: 6px; overflow-wrap: anywhere; }
img.thumb { max-width: 160px; max-height: 120px; display: block; }
table.row { box-shadow: none; margin: 0; font-size: 12px; }
table.row th, table.row td { padding: 2px 6px; }
td.right { background: #e6f4ea; }
td.wrong { background: #fdecea; }
.name { overflow-wrap: anywhere; max-width: 260px; }
footer { color: #5b6475; font-size: 13px; margin-top: 32px; }
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_IMAGE_TYPES = [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif")]


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(content: bytes) -> str | None:
    """A data: URI for PNG, JPEG, GIF or WebP bytes; None for anything else."""
    mime = next((kind for magic, kind in _IMAGE_TYPES if content.startswith(magic)), None)
    if mime is None and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        mime = "image/webp"
    return None if mime is None else f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


def _table(head: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i >= numeric_from else "name"}">{esc(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _figure(name: str, path: Path | str, caption: str) -> str:
    try:
        uri = data_uri(Path(path).read_bytes())
    except OSError:
        return ""
    if uri is None:
        return ""
    return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _caption(name: str, report: dict[str, Any]) -> str:
    kind = report["kind"]
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


def _input_cell(row: dict[str, Any]) -> str:
    thumbnail = row.get("thumbnail")
    if isinstance(thumbnail, bytes | bytearray | memoryview):
        uri = data_uri(bytes(thumbnail))
        if uri:
            return f'<img class="thumb" src="{uri}" alt="{esc(row.get("name"))}">'
    values = row.get("row")
    if isinstance(values, Mapping) and values:
        cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in values.items())
        return f'<table class="row">{cells}</table>'
    return ""


def _disagreements(report: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    models = [m["model"] for m in report["models"]]
    labelled = report["labelled"] or any(r.get("truth") is not None for r in rows)
    shown = [_input_cell(row) for row in rows]
    pictures = any(shown)
    head = "<th>input</th>" + ("<th>preview</th>" if pictures else "") + (
        "<th>truth</th>" if labelled else "") + "".join(f"<th>{esc(m)}</th>" for m in models)
    body = []
    for row, picture in zip(rows, shown, strict=True):
        predictions, correct = row.get("predictions") or {}, row.get("correct") or {}
        cells = [f'<td class="name">{esc(row.get("name"))}</td>'] + ([f"<td>{picture}</td>"] if pictures else [])
        if labelled:
            cells.append(f"<td>{esc(row.get('truth'))}</td>")
        for model in models:
            mark = {True: ' class="right"', False: ' class="wrong"'}.get(correct.get(model), "")
            cells.append(f"<td{mark}>{esc(predictions.get(model, ''))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_report(report: dict[str, Any], charts: Mapping[str, Path | str] | None = None,
                disagreements: Sequence[dict[str, Any]] | None = None, *, title: str = "Model comparison") -> str:
    """One self-contained HTML page: verdict, metrics with intervals, charts, heat maps, disagreements.

    `charts`: {name: PNG path} from `charts()`; `disagreements`: rows from `find_disagreements`,
    each optionally with a "thumbnail" (PNG/JPEG bytes) or a "row" (the input's values).
    """
    charts = dict(charts or {})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request (which the policy above would refuse, noisily)
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(report.get("task"))} · {esc(text.method(report))}</p>',
        f'<section id="verdict"><h2>Verdict</h2><p class="verdict">{esc(report["verdict"])}</p></section>',
        '<section id="metrics"><h2>Metrics</h2>',
        _table(*text.models_table(report)),
    ]
    if report["pairs"]:
        parts += ["<h2>Between models</h2>", _table(*text.pairs_table(report))]
    parts.append("</section>")
    plain = [n for n in charts if not n.startswith("confusion/")]
    heat = [n for n in charts if n.startswith("confusion/")]
    for section, title_, names in (("charts", "Charts", plain), ("heatmaps", "Confusion matrices", heat)):
        figures = "".join(_figure(n, charts[n], _caption(n, report)) for n in names)
        if figures:
            parts.append(f'<section id="{section}"><h2>{title_}</h2><div class="figures">{figures}</div></section>')
    if disagreements:
        parts += ['<section id="disagreements">', f"<h2>Where the models disagree ({len(disagreements)} inputs)</h2>",
                  _disagreements(report, disagreements), "</section>"]
    note = ("Intervals are 95 % percentile bootstrap intervals; a p-value below 0.05 means the difference between "
            "two models is unlikely to be chance." if report["labelled"] else
            "Without ground truth only agreement between the models and their speed can be compared.")
    parts.append(f"<footer>{esc(note)}</footer></main></body></html>")
    return "\n".join(parts)
