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
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
                self.thumbnails[name] = {
                    "css": f"t{len(self.thumbnails)}",
                    "uri": "" if small is None else f"data:{mime};base64,{base64.b64encode(small).decode('ascii')}",
                }
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


def cells(
    results: Sequence[Predictions], runs: Sequence[compare.ModelRun], truth: Any, report: dict[str, Any]
) -> dict[str, Any] | None:
    """What the page needs to drill down; None unless it is a classification with truth."""
    listed = Listing.of(results, runs, truth, report)
    if listed is None:
        return None
    listed.inputs.read_rows()
    return listed.finish()


class Listing:
    """The drill-down's lists, made in two steps: `of` lists every cell's and class's inputs (and which table rows
    they show: `wanted_rows`); `finish(rows)` puts the rows in, from wherever the caller read them."""

    def __init__(self, models: list[dict[str, Any]], inputs: Inputs):
        self.models, self.inputs = models, inputs

    @property
    def wanted_rows(self) -> set[str]:
        return self.inputs.wanted_rows - set(self.inputs.rows)

    @classmethod
    def of(
        cls, results: Sequence[Predictions], runs: Sequence[compare.ModelRun], truth: Any, report: dict[str, Any]
    ) -> Listing | None:
        """The lists; None unless it is a classification with truth."""
        if report.get("kind") != "classification" or not report.get("labelled") or truth is None:
            return None
        return cls(*_lists(results, runs, truth))

    def finish(self, rows: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """What the page needs, with the table rows of the inputs shown (`rows`, else those read already)."""
        found = {**self.inputs.rows, **(rows or {})}
        for model in self.models:
            for listing in model["cells"] + model["classes"]:
                for entry in listing["shown"]:
                    row = found.get(entry["name"])
                    entry["fields"] = list(row.items()) if row else None
        thumbnails = [{"css": t["css"], "uri": t["uri"]} for t in self.inputs.thumbnails.values() if t["uri"]]
        return {"models": self.models, "thumbnails": thumbnails}


def _lists(
    results: Sequence[Predictions], runs: Sequence[compare.ModelRun], truth: Any
) -> tuple[list[dict[str, Any]], Inputs]:
    names = [str(item["name"]) for item in runs[0].items]
    enc = Encoded.of(runs, names, truth)
    assert enc.expected is not None and enc.truth is not None
    inputs = Inputs(results)
    models: list[dict[str, Any]] = []
    expected = enc.expected
    by_name = np.empty(len(names), dtype=np.int64)  # each input's place in name order
    by_name[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    classes = np.unique(expected)
    for i, run in enumerate(runs):
        codes = enc.predicted[i]
        cell = expected * enc.k + codes
        order = np.argsort(cell, kind="stable")  # by (true, predicted) class, then input order
        cell_lists = []
        for members in np.split(order, np.flatnonzero(np.diff(cell[order])) + 1):
            true, guessed = (int(v) for v in divmod(int(cell[members[0]]), enc.k))
            cell_lists.append(
                {
                    "id": f"cell-{i + 1}-{true}-{guessed}",
                    "true": enc.display[true],
                    "predicted": enc.display[guessed],
                    "count": len(members),
                    **_listing(members.tolist(), names, inputs, enc, i),
                }
            )
        class_lists = []
        for c in classes.tolist():
            members = np.flatnonzero(expected == c)
            members = members[np.lexsort((by_name[members], codes[members] == c))]  # mistakes first, then by name
            class_lists.append(
                {
                    "id": f"class-{i + 1}-{c}",
                    "label": enc.display[c],
                    "count": len(members),
                    **_listing(members.tolist(), names, inputs, enc, i),
                }
            )
        models.append({"index": i + 1, "model": run.model, "cells": cell_lists, "classes": class_lists})
    return models, inputs


def _listing(members: list[int], names: list[str], inputs: Inputs, enc: Encoded, model: int) -> dict[str, Any]:
    assert enc.expected is not None  # a drill-down needs truth
    shown = []
    for j in members[:PREVIEWS]:
        right = bool(enc.predicted[model][j] == enc.expected[j])
        shown.append({"name": names[j], "predicted": enc.top1[model][j], "correct": right, **inputs.preview(names[j])})
    named = [names[j] for j in members[PREVIEWS : PREVIEWS + NAMES]]
    return {"shown": shown, "named": named, "more": max(0, len(members) - PREVIEWS - NAMES)}


# --- the rows a report shows, read once -------------------------------------------------------------------------


def rows_to_show(
    results: Sequence[Predictions],
    runs: Sequence[compare.ModelRun],
    truth: Any,
    listed: Listing | None,
    limit: int = 24,
) -> set[str]:
    """The names of the table rows the page shows: the disagreements' (`limit`, as reporting.disagreements picks
    them) and the drill-down's; none unless the inputs are rows of a table."""
    if not any(result.table is not None for result in results):
        return set()
    shown = {str(entry["name"]) for entry in compare.find_disagreements(runs, truth, limit=limit)}
    return shown | (listed.wanted_rows if listed is not None else set())


def _kept_for(
    result: Predictions, kept: dict[tuple[Path, str | None], dict[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]] | None:
    if result.table is None:
        return None
    try:
        return kept.get((result.table.path.resolve(), result.table_key))
    except OSError:
        return None


def with_rows(
    results: Sequence[Predictions], kept: dict[tuple[Path, str | None], dict[str, dict[str, Any]]]
) -> list[Predictions]:
    """The results as the report shows them: a result whose table rows were kept (fingerprint.fingerprint_and_rows)
    has them among its inputs instead of the table to read again."""
    found = []
    for result in results:
        rows = _kept_for(result, kept)
        if rows is None:
            found.append(result)
            continue
        shown = copy.copy(result)
        shown.inputs = {**result.inputs, **rows}
        shown.table = None
        found.append(shown)
    return found


def kept_rows(
    results: Sequence[Predictions], kept: dict[tuple[Path, str | None], dict[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Every kept row of the results' tables, by name."""
    found: dict[str, dict[str, Any]] = {}
    for result in results:
        found.update(_kept_for(result, kept) or {})
    return found
