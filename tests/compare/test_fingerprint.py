"""dataset_fingerprint: the same bytes give the same digest; any change the models could see, or to the truth,
gives another; what the models did not read does not count."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from orchestrator.compare import Truth
from orchestrator.compare.fingerprint import dataset_fingerprint
from orchestrator.datasets import Predictions, Table


def images(folder: Path) -> dict[str, Path]:
    files = {}
    for i, label in enumerate(["cat", "dog", "cat"]):
        path = folder / label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (10 * i, 20, 30)).save(path)
        files[f"{label}/{i}.png"] = path
    return files


def predictions(model: str, files: dict[str, Path]) -> Predictions:
    items = [{"name": n, "labels": ["cat"], "scores": [0.9]} for n in files]
    return Predictions(model, items, {}, Path("unused.json"), inputs=files)


def folders(names) -> Truth:
    return Truth("classes", {n: n.split("/")[0] for n in names})


def test_images_same_bytes_same_fingerprint_one_pixel_changes_it(tmp_path: Path):
    files = images(tmp_path / "a")
    copy = images(tmp_path / "b")  # the same pictures elsewhere
    names = list(files)
    first, basis = dataset_fingerprint([predictions("a", files), predictions("b", files)], names, folders(names))
    assert first.startswith("sha256:") and len(first) == 71 and basis == "files"
    # other paths, same bytes; the models in another order: the same data
    assert dataset_fingerprint([predictions("b", copy), predictions("a", copy)], names, folders(names))[0] == first
    with Image.open(copy["dog/1.png"]) as image:
        changed = image.copy()
    changed.putpixel((0, 0), (0, 0, 0))
    changed.save(copy["dog/1.png"])
    assert dataset_fingerprint([predictions("a", copy), predictions("b", copy)], names, folders(names))[0] != first
    # the truth is part of the data
    other_truth = Truth("classes", {**folders(names).values, "dog/1.png": "cat"})
    assert (
        dataset_fingerprint([predictions("a", files)], names, other_truth)[0]
        != dataset_fingerprint([predictions("a", files)], names, folders(names))[0]
    )
    assert (
        dataset_fingerprint([predictions("a", files)], names, None)[0]
        != dataset_fingerprint([predictions("a", files)], names, folders(names))[0]
    )


def table(path: Path, rows: list[dict]) -> Table:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Table(path, list(rows[0]), len(rows))


def rows_predictions(model: str, data: Table, columns: list[str]) -> Predictions:
    names = [str(row["id"]) for row in data.rows()]
    result = Predictions(
        model, [{"name": n, "value": 1.0} for n in names], {"columns": columns}, Path("x"), task="tabular-regression"
    )
    result.table, result.table_key = data, "id"
    return result


def test_rows_count_only_the_columns_the_models_read_in_any_row_order(tmp_path: Path):
    rows = [{"id": i, "x": i * 1.5, "y": -i, "note": f"row {i}"} for i in range(5)]
    names = [str(i) for i in range(5)]
    base, basis = dataset_fingerprint(
        [rows_predictions("m", table(tmp_path / "a.jsonl", rows), ["x", "y"])], names, None
    )
    assert basis == "rows"
    shuffled = list(reversed(rows))
    assert (
        dataset_fingerprint([rows_predictions("m", table(tmp_path / "b.jsonl", shuffled), ["y", "x"])], names, None)[0]
        == base
    )
    unread = [{**row, "note": "changed"} for row in rows]
    assert (
        dataset_fingerprint([rows_predictions("m", table(tmp_path / "c.jsonl", unread), ["x", "y"])], names, None)[0]
        == base
    )
    read = [{**row, "x": row["x"] + (0.5 if row["id"] == 3 else 0)} for row in rows]
    assert (
        dataset_fingerprint([rows_predictions("m", table(tmp_path / "d.jsonl", read), ["x", "y"])], names, None)[0]
        != base
    )


def test_inputs_that_cannot_be_read_fall_back_to_their_names(tmp_path: Path):
    files = images(tmp_path)
    names = list(files)
    gone = {name: tmp_path / "gone" / name for name in names}
    found, basis = dataset_fingerprint([predictions("a", gone)], names, None)
    assert basis == "names" and found.startswith("sha256:")
