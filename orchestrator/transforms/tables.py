"""Reading tabular files (CSV, JSON Lines, Parquet) into a Table, and taking columns out of one.

Files are read in record batches with pyarrow and written out as JSON Lines, so memory holds
one batch, not the file. Several files of the same columns become one table, in name order.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from orchestrator.datasets import FileRef, Table
from orchestrator.engine import OperationError

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
BATCH_ROWS = 16_384


def table_format(ref: FileRef, given: str) -> str:
    """The format of one file: the one given, or the one its extension names."""
    if given != "auto":
        return given
    found = FORMATS.get(Path(ref.name).suffix.lower())
    if found is None:
        raise OperationError(
            f"{ref.name!r}: cannot tell its table format from the extension; name format "
            f"(one of csv, jsonl, parquet) or use files ending in {', '.join(sorted(FORMATS))}"
        )
    return found


def read_tables(refs: Sequence[FileRef], out: Path, fmt: str, check_cancelled: Callable[[], None]) -> Table:
    """Every file's rows, in order, as one JSON Lines table at `out`."""
    if not refs:
        raise OperationError("there is no file to read a table from")
    columns: list[str] | None = None
    count = 0
    with out.open("w") as sink:
        for ref in refs:
            for batch in _batches(ref, table_format(ref, fmt)):
                check_cancelled()
                names = list(batch.schema.names)
                if columns is None:
                    columns = names
                elif names != columns:
                    raise OperationError(
                        f"{ref.name!r} has columns {names} but the first file has {columns}; "
                        "read files of different columns with separate read_table instructions"
                    )
                for row in batch.to_pylist():
                    sink.write(json.dumps({k: _jsonable(v) for k, v in row.items()}, allow_nan=False) + "\n")
                    count += 1
    if count == 0:
        raise OperationError(f"the table is empty: {', '.join(r.name for r in refs[:5])} hold no rows")
    return Table(out, columns or [], count)


def _batches(ref: FileRef, fmt: str) -> Iterator[Any]:
    import pyarrow as pa  # pyarrow is heavy; only pipelines that read tables pay for it
    from pyarrow import csv, parquet
    from pyarrow import json as pa_json

    try:
        if fmt == "parquet":
            yield from parquet.ParquetFile(ref.path).iter_batches(batch_size=BATCH_ROWS)
        elif fmt == "csv":
            delimiter = "\t" if Path(ref.name).suffix.lower() == ".tsv" else ","
            reader = csv.open_csv(ref.path, parse_options=csv.ParseOptions(delimiter=delimiter))
            yield from reader
        else:
            # pyarrow's JSON reader takes JSON Lines; it reads the file in blocks.
            yield from pa_json.read_json(ref.path).to_batches(max_chunksize=BATCH_ROWS)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise OperationError(f"{ref.name!r} is not a readable {fmt} table: {str(exc)[:300]}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return str(value)  # dates, decimals: their text, as a database import keeps them


# CSV injection (OWASP): a spreadsheet runs a text cell that starts with one of these as a formula
# (=HYPERLINK(...), +cmd|' /C calc'!A0, @SUM(...)); a leading apostrophe makes it text. defusedcsv does
# the same for = + - @ | % but not for TAB and CR, and rewrites every | inside such a cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Text that is only a number ("-1.5", "+3", "-2e-4"): a spreadsheet reads it as that number, nothing runs.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_safe(value: Any) -> Any:
    """A cell as written to CSV: text a spreadsheet would run gets a leading ', the rest is unchanged.

    Numbers stay numbers (-1.5 is written -1.5), and so does text that is a plain number ("-1.5").
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str], path: Path) -> int:
    """Write rows as CSV with a header of `columns` (nested values as JSON); the number of rows.

    Every cell, the header's too, goes through `spreadsheet_safe`: the file is meant to be opened in a spreadsheet.
    """
    import csv

    count = 0
    with path.open("w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow([spreadsheet_safe(c) for c in columns])
        for row in rows:
            writer.writerow(
                [spreadsheet_safe(json.dumps(v) if isinstance(v := row.get(c), dict | list) else v) for c in columns]
            )
            count += 1
    return count


def require_columns(table: Table, wanted: Iterable[str], what: str) -> None:
    """Fail naming each column that the table lacks, and the columns it has."""
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise OperationError(
            f"{what}: column(s) {', '.join(map(repr, missing))} are not in the table "
            f"({table.path.name}); its columns are {', '.join(table.columns[:30])}"
        )


def keyed_rows(table: Table, key: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, row) for each row: the key column's value as text, or the row number from 0."""
    seen: set[str] = set()
    for number, row in enumerate(table.rows()):
        name = str(number) if key is None else _key_text(row.get(key), key, number)
        if name in seen:
            raise OperationError(f"key column {key!r} holds {name!r} twice (rows must be named uniquely)")
        seen.add(name)
        yield name, row


def _key_text(value: Any, key: str, number: int) -> str:
    if value is None or value == "":
        raise OperationError(f"row {number} has no value in the key column {key!r}")
    return str(value)


def features_of(row: dict[str, Any], features: Sequence[str], name: str) -> list[float]:
    """The row's feature values as floats, in the model's order; names the row and column that is not a number."""
    values = []
    for column in features:
        value = row.get(column)
        if isinstance(value, bool) or value is None:
            raise OperationError(f"row {name!r}: feature column {column!r} is {value!r}, not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OperationError(
                f"row {name!r}: feature column {column!r} holds {str(value)[:40]!r}, not a number"
            ) from None
        if not math.isfinite(number):
            raise OperationError(f"row {name!r}: feature column {column!r} is {value!r}, not a finite number")
        values.append(number)
    return values
