"""The inputs behind each confusion-matrix cell and each class of a classification report, to show in the page.

For every model: each non-empty cell (true class × predicted class) lists its inputs, and each
class of the per-class table lists the inputs of that class (truth) with what the model said,
mistakes first. An input is shown by its thumbnail (images) or its row (tables): at most
`PREVIEWS` per list with a picture or row, the next `NAMES` by name, then a count. Thumbnails are
made once per input and at most `THUMBNAILS` of them per report; the page defines each once
(a CSS class), however many lists show it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator import compare
from orchestrator.compare import reporting
from orchestrator.compare.classification import Encoded
from orchestrator.datasets import Predictions

PREVIEWS = 12
NAMES = 40
THUMBNAILS = 240
THUMBNAIL = (96, 96)


class Inputs:
    """Each shown input's thumbnail (a data: URI, under a short CSS class name) or row, gathered lazily."""

    def __init__(self, results: Sequence[Predictions]):
        self.results = list(results)
        self.sources: dict[str, Any] = {}
        for result in results:
            self.sources.update(result.inputs)
        self.thumbnails: dict[str, dict[str, str]] = {}  # name -> {"css": class name, "uri": data URI}
        self.rows: dict[str, dict[str, Any]] = {}
        self.wanted_rows: set[str] = set()

    def preview(self, name: str) -> dict[str, Any]:
        source = self.sources.get(name)
        if isinstance(source, Path) and (name in self.thumbnails or len(self.thumbnails) < THUMBNAILS):
            if name not in self.thumbnails:
                small = reporting.thumbnail(source, THUMBNAIL)
                mime = "image/jpeg"
                self.thumbnails[name] = {"css": f"t{len(self.thumbnails)}", "uri": "" if small is None else
                                         f"data:{mime};base64,{base64.b64encode(small).decode('ascii')}"}
            found = self.thumbnails[name]
            return {"thumbnail": found["css"] if found["uri"] else None}
        if isinstance(source, dict):
            self.rows[name] = source
        elif any(result.table is not None for result in self.results):
            self.wanted_rows.add(name)
        return {"thumbnail": None}

    def read_rows(self) -> None:
        """The table rows of the inputs shown with a preview, in one pass over the table."""
        for result in self.results:
            if result.table is not None and self.wanted_rows - set(self.rows):
                self.rows.update(reporting.rows_of(result.table, result.table_key, self.wanted_rows))


def cells(results: Sequence[Predictions], runs: Sequence[compare.ModelRun], truth: Any,
          report: dict[str, Any]) -> dict[str, Any] | None:
    """What the page needs to drill down; None unless it is a classification with truth."""
    if report.get("kind") != "classification" or not report.get("labelled") or truth is None:
        return None
    names = [str(item["name"]) for item in runs[0].items]
    enc = Encoded(runs, names, truth)
    assert enc.expected is not None and enc.truth is not None
    inputs = Inputs(results)
    models: list[dict[str, Any]] = []
    for i, run in enumerate(runs):
        codes = enc.predicted[i]
        listed: dict[tuple[int, int], list[int]] = {}
        for j in range(len(names)):
            listed.setdefault((int(enc.expected[j]), int(codes[j])), []).append(j)
        cell_lists = []
        for (true, guessed), members in sorted(listed.items()):
            cell_lists.append({"id": f"cell-{i + 1}-{true}-{guessed}", "true": enc.display[true],
                               "predicted": enc.display[guessed], "count": len(members),
                               **_listing(members, names, inputs, enc, i)})
        class_lists = []
        for c in sorted({int(code) for code in enc.expected}):
            members = [j for j in range(len(names)) if enc.expected[j] == c]
            members.sort(key=lambda j: (bool(codes[j] == c), names[j]))  # mistakes first
            class_lists.append({"id": f"class-{i + 1}-{c}", "label": enc.display[c], "count": len(members),
                                **_listing(members, names, inputs, enc, i)})
        models.append({"index": i + 1, "model": run.model, "cells": cell_lists, "classes": class_lists})
    inputs.read_rows()
    for model in models:
        for listing in model["cells"] + model["classes"]:
            for entry in listing["shown"]:
                row = inputs.rows.get(entry["name"])
                entry["fields"] = list(row.items()) if row else None
    thumbnails = [{"css": t["css"], "uri": t["uri"]} for t in inputs.thumbnails.values() if t["uri"]]
    return {"models": models, "thumbnails": thumbnails}


def _listing(members: list[int], names: list[str], inputs: Inputs, enc: Encoded, model: int) -> dict[str, Any]:
    assert enc.expected is not None  # a drill-down needs truth
    shown = []
    for j in members[:PREVIEWS]:
        right = bool(enc.predicted[model][j] == enc.expected[j])
        shown.append({"name": names[j], "predicted": enc.top1[model][j], "correct": right, **inputs.preview(names[j])})
    named = [names[j] for j in members[PREVIEWS:PREVIEWS + NAMES]]
    return {"shown": shown, "named": named, "more": max(0, len(members) - PREVIEWS - NAMES)}
