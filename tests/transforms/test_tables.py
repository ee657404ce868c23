"""read_table and the table checks model_inference and compare_models rely on: plain Python, no stack."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.compare import truth
from orchestrator.datasets import FileRef, Table
from orchestrator.engine import OperationError
from orchestrator.transforms import tables

ROWS = [{"name": "a", "x": 1.5, "y": 2, "label": "fire"}, {"name": "b", "x": -3.0, "y": 4, "label": "smoke"}]


def write(folder: Path, fmt: str, rows: list[dict] = ROWS) -> FileRef:
    path = folder / f"rows.{fmt}"
    if fmt == "csv":
        path.write_text("name,x,y,label\n" + "".join(f"{r['name']},{r['x']},{r['y']},{r['label']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return FileRef(path.name, path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_format_reads_to_the_same_rows(tmp_path: Path, fmt: str):
    table = tables.read_tables([write(tmp_path, fmt)], tmp_path / "out.jsonl", "auto", lambda: None)
    assert table.columns == ["name", "x", "y", "label"] and table.count == 2
    assert list(table.rows()) == ROWS


def test_several_files_become_one_table_in_order(tmp_path: Path):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    refs = [write(tmp_path / "one", "csv", ROWS[:1]), write(tmp_path / "two", "parquet", ROWS[1:])]
    table = tables.read_tables(refs, tmp_path / "out.jsonl", "auto", lambda: None)
    assert [r["name"] for r in table.rows()] == ["a", "b"]


def test_an_empty_table_and_an_unknown_format_are_clear_errors(tmp_path: Path):
    empty = tmp_path / "empty.csv"
    empty.write_text("name,x\n")
    with pytest.raises(OperationError, match="the table is empty: empty.csv"):
        tables.read_tables([FileRef("empty.csv", empty)], tmp_path / "out.jsonl", "auto", lambda: None)
    with pytest.raises(OperationError, match="cannot tell its table format"):
        tables.read_tables([FileRef("rows.bin", empty)], tmp_path / "out.jsonl", "auto", lambda: None)


def test_files_of_other_columns_are_refused_naming_the_file(tmp_path: Path):
    (tmp_path / "two").mkdir()
    other = tmp_path / "two" / "other.jsonl"
    other.write_text('{"name": "c", "z": 1}\n')
    with pytest.raises(OperationError, match="'other.jsonl' has columns"):
        tables.read_tables(
            [write(tmp_path, "jsonl"), FileRef("other.jsonl", other)], tmp_path / "o.jsonl", "auto", lambda: None
        )


def test_a_feature_that_is_not_a_number_names_the_row_and_column():
    assert tables.features_of({"x": "1.5", "y": 2}, ["x", "y"], "a") == [1.5, 2.0]
    with pytest.raises(OperationError, match=r"row 'a': feature column 'y' holds 'tall', not a number"):
        tables.features_of({"x": 1, "y": "tall"}, ["x", "y"], "a")
    with pytest.raises(OperationError, match="feature column 'x' is None"):
        tables.features_of({"x": None}, ["x"], "a")


def table_of(tmp_path: Path, rows: list[dict]) -> Table:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Table(path, list(rows[0]), len(rows))


def test_duplicate_row_keys_are_refused(tmp_path: Path):
    table = table_of(tmp_path, [{"name": "a"}, {"name": "a"}])
    with pytest.raises(OperationError, match="key column 'name' holds 'a' twice"):
        list(tables.keyed_rows(table, "name"))
    assert [k for k, _ in tables.keyed_rows(table, None)] == ["0", "1"]


def test_truth_from_a_table_refuses_duplicates_missing_columns_and_non_numbers(tmp_path: Path):
    with pytest.raises(OperationError, match="truth key 'a' appears twice"):
        truth.from_table(
            table_of(tmp_path, [{"name": "a", "label": "x"}, {"name": "a", "label": "y"}]),
            "text-classification",
            "name",
            "label",
        )
    with pytest.raises(OperationError, match="'label' are not in the table"):
        truth.from_table(table_of(tmp_path, [{"name": "a"}]), "text-classification", "name", "label")
    with pytest.raises(OperationError, match="holds 'big', not a number"):
        truth.from_table(table_of(tmp_path, [{"name": "a", "label": "big"}]), "tabular-regression", "name", "label")
    found = truth.from_table(table_of(tmp_path, [{"name": 7, "label": 1.5}]), "tabular-regression", "name", "label")
    assert found.kind == "values" and found.values == {"7": 1.5}


def test_masks_are_matched_to_images_by_name_without_extension(tmp_path: Path):
    refs = [FileRef("a.png", tmp_path / "a.png"), FileRef("sub/b.png", tmp_path / "b.png")]
    found = truth.from_files(refs, "image-segmentation", ["a.jpg", "sub/b.jpg", "c.jpg"])
    assert found.values == {"a.jpg": tmp_path / "a.png", "sub/b.jpg": tmp_path / "b.png"}  # c: reported missing later
    with pytest.raises(OperationError, match="one COCO JSON file"):
        truth.from_files(refs, "object-detection", ["a.jpg"])
