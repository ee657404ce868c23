"""A small fixed table, for trying a pipeline without any data: the original Agentic Earth
`mock_csv_data` (columns column1, column2, column3 holding 1 to 9, row by row)."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.datasets import Table

COLUMNS = ["column1", "column2", "column3"]
ROWS = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def mock_table(out: Path) -> Table:
    """The fixed table, written to `out` as JSON Lines."""
    with out.open("w") as sink:
        for values in ROWS:
            sink.write(json.dumps(dict(zip(COLUMNS, values, strict=True))) + "\n")
    return Table(out, COLUMNS, len(ROWS))
