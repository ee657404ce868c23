"""Outputs kept for a retry (orchestrator/kept.py): every dataset an operation returns comes back equal,
on another machine's runs folder, and a document can only ever hold data."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest

from orchestrator import kept
from orchestrator.datasets import (
    NO_FACTS,
    ArrayList,
    Batches,
    Comparison,
    Exported,
    FileDict,
    FileList,
    FileRef,
    Predictions,
    Table,
)

RUN = "10000000-0000-4000-8000-000000000000"
DATA = Path("/srv/data/samples")


@pytest.fixture
def machines(tmp_path: Path) -> tuple[Path, Path]:
    """The runs folder of the machine that keeps an output, and of the one that reads it (a retry elsewhere)."""
    return tmp_path / "here" / "runs", tmp_path / "there" / "runs"


def node(runs_root: Path, name: str) -> Path:
    return runs_root / RUN / "nodes" / "0123456789abcdef" / name


def round_trip(value, machines: tuple[Path, Path]):
    here, there = machines
    data = kept.Codec(here).dumps(value)
    assert str(here).encode() not in data, "no path of the keeping machine is kept"
    json.loads(data)  # plain JSON
    return kept.Codec(there).loads(data)


def test_files_of_an_import_and_a_list(machines):
    here, there = machines
    files = FileDict({"Fire/a.jpg": DATA / "Fire/a.jpg", "b.png": node(here, "b.png")})
    loaded, refs = round_trip(files, machines)
    assert type(loaded) is FileDict
    assert loaded.files == {"Fire/a.jpg": DATA / "Fire/a.jpg", "b.png": node(there, "b.png")}
    assert refs == {f"{RUN}/nodes/0123456789abcdef/b.png"}

    tiles = FileList(
        [
            FileRef("t_0_0.png", node(here, "t_0_0.png"), {"source": "s.png", "x": 0, "y": 0}),
            FileRef("plain.png", DATA / "plain.png"),
        ]
    )
    loaded, _ = round_trip(tiles, machines)
    assert type(loaded) is FileList and [r.name for r in loaded] == ["t_0_0.png", "plain.png"]
    assert loaded.refs[0].meta == {"source": "s.png", "x": 0, "y": 0}
    assert loaded.refs[0].path == node(there, "t_0_0.png")
    assert loaded.refs[1].meta is NO_FACTS, "a file without facts shares the one empty mapping"


def test_facts_an_import_gave_are_kept(machines):
    here, _ = machines
    try:
        given = {"scene.png": {"datetime": "2024-05-01", "cloud": 3.5}}
        files = FileDict({"scene.png": node(here, "scene.png")}, given)
    except TypeError:
        pytest.skip("FileDict takes no facts in this checkout")
    loaded, _ = round_trip(files, machines)
    assert loaded.meta == {"scene.png": {"datetime": "2024-05-01", "cloud": 3.5}}


def test_arrays_and_batches(machines):
    here, there = machines
    arrays = ArrayList([FileRef("a.npy", node(here, "a.npy"), {"shape": [3, 8, 8]})])
    loaded, _ = round_trip(arrays, machines)
    assert type(loaded) is ArrayList and loaded.summary() == arrays.summary()
    assert loaded.refs[0].path == node(there, "a.npy")

    refs = [FileRef(f"{i}.png", node(here, f"{i}.png")) for i in range(5)]
    batches = Batches([refs[:2], refs[2:4], refs[4:]])
    loaded, found = round_trip(batches, machines)
    assert type(loaded) is Batches and [[r.name for r in b] for b in loaded.batches] == [
        ["0.png", "1.png"],
        ["2.png", "3.png"],
        ["4.png"],
    ]
    assert len(found) == 5


def test_a_table_and_an_export(machines):
    here, there = machines
    table = Table(node(here, "rows.jsonl"), ["name", "value"], 12)
    loaded, refs = round_trip(table, machines)
    assert (loaded.path, loaded.columns, loaded.count) == (node(there, "rows.jsonl"), ["name", "value"], 12)
    assert refs == {f"{RUN}/nodes/0123456789abcdef/rows.jsonl"}

    exported = Exported("s3://out/constellation/run/", [{"name": "a.png", "uri": "s3://out/constellation/run/a.png"}])
    loaded, _ = round_trip(exported, machines)
    assert type(loaded) is Exported and loaded.to_result() == exported.to_result()


def test_predictions_with_masks_inputs_and_their_table(machines):
    here, there = machines
    items = [
        {"name": "a.png", "labels": ["Fire", "Smoke"], "scores": [0.9, 0.1]},
        {"name": "b.png", "mask": str(node(here, "masks/b.png")), "classes": {"1": "road"}},
    ]
    predictions = Predictions(
        "org/model",
        items,
        {"inputs": 2, "seconds": 0.5, "batch_sizes": (2,)},
        node(here, "predictions.json"),
        task="image-segmentation",
        labels=["road"],
        inputs={"a.png": DATA / "a.png", "b.png": {"row": 2, "text": "x"}},
    )
    predictions.table, predictions.table_key = Table(node(here, "rows.jsonl"), ["name"], 2), "name"
    loaded, refs = round_trip(predictions, machines)
    assert type(loaded) is Predictions
    assert (loaded.model, loaded.task, loaded.labels) == ("org/model", "image-segmentation", ["road"])
    assert loaded.items[1]["mask"] == str(node(there, "masks/b.png")), "a mask's path is remapped too"
    assert loaded.items[0] == items[0] and loaded.stats == {"inputs": 2, "seconds": 0.5, "batch_sizes": (2,)}
    assert loaded.inputs == {"a.png": DATA / "a.png", "b.png": {"row": 2, "text": "x"}}
    assert loaded.path == node(there, "predictions.json") and loaded.table_key == "name"
    assert loaded.table.path == node(there, "rows.jsonl") and loaded.table.count == 2
    assert len(refs) == 3


def test_a_comparison(machines):
    here, there = machines
    report = {
        "models": [{"model": "a", "accuracy": 0.5, "ci": (0.4, 0.6)}],
        "inputs": 10,
        "verdict": "a wins",
        "p_value": math.nan,
        "odd keys": {1: "one", "$t": "not a tag"},
    }
    comparison = Comparison(report, "# a wins", {"metric": node(here, "charts/metric.png")}, node(here, "report.html"))
    loaded, _ = round_trip(comparison, machines)
    assert type(loaded) is Comparison and loaded.markdown == "# a wins"
    assert loaded.charts == {"metric": node(there, "charts/metric.png")} and loaded.html == node(there, "report.html")
    assert loaded.report["models"] == report["models"] and math.isnan(loaded.report["p_value"])
    assert loaded.report["odd keys"] == {1: "one", "$t": "not a tag"}, "a user's '$t' key is data, not a tag"
    without_html, _ = round_trip(Comparison(report, "", {}), machines)
    assert without_html.html is None


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 2.5, "text", [1, "a", None], {"a": [1, {"b": None}]}, (1, 2), [], {}, [FileRef("x", DATA / "x")]],
)
def test_plain_values(machines, value):
    loaded, refs = round_trip(value, machines)
    assert loaded == value and refs == set()


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        b"bytes",
        Path("relative/x.png"),
        {"deep": [object()]},
        FileDict.__new__(type("Elsewhere", (FileDict,), {})),
    ],
)
def test_what_is_not_data_is_not_kept(tmp_path: Path, value):
    with pytest.raises(kept.NotKept):
        kept.Codec(tmp_path).dumps(value)


@pytest.mark.parametrize(
    "document",
    [
        pickle.dumps(FileList([])),  # an output kept by an older version: never unpickled
        b"BM\x00\x00",
        b'{"format": 2, "output": null}',
        b'{"output": null}',
        b'{"format": 1, "output": {"$t": "os.system", "command": "touch /tmp/x"}}',
        b'{"format": 1, "output": {"$t": "FileDict", "files": {"a": "/etc/passwd"}}}',  # a string is not a path
        b'{"format": 1, "output": {"$t": "FileList", "refs": [{"name": "a"}]}}',
        b'{"format": 1, "output": {"$t": "Table", "path": {"$t": "path", "abs": "/x"}, "columns": [], "count": "1"}}',
        b'{"format": 1, "output": {"$t": "path", "abs": "relative/x"}}',
        b'{"format": 1, "output": {"$t": "path", "abs": "/srv/../etc/passwd"}}',
        b'{"format": 1, "output": {"$t": "path", "abs": "/srv//x"}}',
        b'{"format": 1, "output": {"$t": "map", "items": [[[1], 2]]}}',
        b'{"format": 1, "output": {"$t": "float", "value": "1e999999"}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_a_document_that_is_not_ours_is_refused(tmp_path: Path, document: bytes):
    with pytest.raises(kept.BadKept):
        kept.Codec(tmp_path).loads(document)


def test_an_absolute_path_into_the_runs_folder_is_refused(machines):
    here, _ = machines
    forged = json.dumps({"format": 1, "output": {"$t": "path", "abs": str(node(here, "x.png"))}}).encode()
    with pytest.raises(kept.BadKept, match="absolute path"):
        kept.Codec(here).loads(forged)
