"""Tabular models fed a table by model_inference, through a real model server.

What a user would notice: the predictions are ONNX Runtime's own on the same rows; the rows go in
thousands per request by default, in binary (the server counts how requests came); a table whose
values are not plain numbers is still read (numbers written as text) or refused naming the row and
the column (a missing value, text, NaN, a value beyond the model's FP32).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from test_model_server import ModelServerProcess, running_server

from orchestrator.assets import ops
from orchestrator.assets.resources import ModelServerConnection, Workspace
from orchestrator.datasets import Table
from orchestrator.engine import OperationError, RunContext
from orchestrator.models import inference
from tiny_models import IRIS_LABELS, make_tabular_classifier, make_tabular_regressor, tabular_data

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MODELS = {"iris": ("iris.onnx", "tabular-classification"), "reg": ("reg.onnx", "tabular-regression")}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tabular_models")
    make_tabular_classifier(root / "iris.onnx")
    make_tabular_regressor(root / "reg.onnx")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[ModelServerProcess]:
    env = {"CONSTELLATION_MODELS_ROOT": str(models_root), "CONSTELLATION_MODEL_SERVER_TOKEN": "", "HF_HUB_OFFLINE": "1"}
    with running_server(env, tmp_path_factory.mktemp("tabular_server") / "server.log") as running:
        with running.client() as http:
            for name, (source, task) in MODELS.items():
                answer = http.post(
                    f"/v2/repository/models/{name}/load", json={"parameters": {"source": source, "task": task}}
                )
                assert answer.status_code == 200, answer.text
        yield running


def run_context(tmp_path: Path, server: ModelServerProcess) -> RunContext:
    workspace = Workspace(data_root=str(tmp_path), artifact_root=str(tmp_path / "art"))
    connection = ModelServerConnection(url=server.url, retry_attempts=1)
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace, model_server=connection))


def table_of(path: Path, rows: list[dict[str, Any]]) -> Table:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Table(path, list(rows[0]), len(rows))


def numbered(values: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i:05d}", **dict(zip(FEATURES, row, strict=True)), "note": "x"}
        for i, row in enumerate(values.tolist())
    ]


def session(models_root: Path, name: str) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(str(models_root / MODELS[name][0]), providers=["CPUExecutionProvider"])


def counts(server: ModelServerProcess, name: str) -> tuple[int, int, int]:
    with server.client() as http:
        stats = http.get(f"/v2/models/{name}/stats").json()["model_stats"][0]
    return stats["binary_requests"], stats["json_requests"], stats["inference_count"]


def test_a_table_is_predicted_as_onnxruntime_does_thousands_of_rows_per_binary_request(
    server: ModelServerProcess, models_root: Path, tmp_path: Path
):
    rows, _ = tabular_data(rows=5000, seed=12)
    table = table_of(tmp_path / "rows.jsonl", numbered(rows))
    before = counts(server, "iris")
    predictions = ops.model_inference(
        run_context(tmp_path, server), "iris", table, features=FEATURES, key="id", top_k=2
    )
    label, probabilities = session(models_root, "iris").run(None, {"float_input": rows})
    order = np.argsort(-probabilities, axis=1, kind="stable")
    assert (order[:, 0] == [IRIS_LABELS.index(v) for v in label.tolist()]).all(), "the label is the best score"
    assert [item["name"] for item in predictions.items] == [f"r{i:05d}" for i in range(5000)]
    assert [item["labels"] for item in predictions.items] == np.array(IRIS_LABELS)[order[:, :2]].tolist()
    np.testing.assert_allclose(
        [item["scores"] for item in predictions.items],
        np.take_along_axis(probabilities, order[:, :2], axis=1),
        rtol=1e-6,
        atol=1e-7,
    )
    first = predictions.items[0]
    assert list(first["scores_all"]) == [IRIS_LABELS[i] for i in order[0]]  # every class's score is kept
    assert predictions.stats["batch_sizes"] == [4096, 904]
    after = counts(server, "iris")
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (2, 0, 5000)


def test_a_regression_table_in_batches_of_the_size_given(server: ModelServerProcess, models_root: Path, tmp_path: Path):
    rows, _ = tabular_data(rows=2500, seed=13)
    table = table_of(tmp_path / "rows.jsonl", numbered(rows))
    predictions = ops.model_inference(run_context(tmp_path, server), "reg", table, features=FEATURES, batch_size=1000)
    (expected,) = session(models_root, "reg").run(None, {"float_input": rows})
    assert [item["name"] for item in predictions.items] == [str(i) for i in range(2500)]  # no key: row numbers
    np.testing.assert_allclose([item["value"] for item in predictions.items], expected.ravel(), rtol=1e-6)
    assert predictions.stats["batch_sizes"] == [1000, 1000, 500]


def test_a_server_of_onnx_models_never_loads_torch(server: ModelServerProcess, models_root: Path, tmp_path: Path):
    """torch and transformers serve only the transformers models: a server that loaded and ran ONNX models has
    not mapped torch's library (about 200 MB of memory it would hold for nothing)."""
    rows, _ = tabular_data(rows=100, seed=14)
    table = table_of(tmp_path / "rows.jsonl", numbered(rows))
    ops.model_inference(run_context(tmp_path, server), "iris", table, features=FEATURES, key="id")
    with server.client() as http:
        assert {m["name"] for m in http.post("/v2/repository/index", json={"ready": True}).json()} >= set(MODELS)
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "onnxruntime" in maps  # the check sees the server's libraries
    assert "libtorch" not in maps and "/torch/" not in maps


def test_tables_pyarrow_cannot_read_as_numbers_are_read_row_by_row_alike(tmp_path: Path):
    plain = [{"id": 7, "a": 1.5, "b": 2}, {"id": 8, "a": -3.0, "b": 4}, {"id": 9, "a": 0, "b": 1e300}]
    read = inference.read_features(table_of(tmp_path / "plain.jsonl", plain), ["b", "a"], "id")
    assert read.names == ["7", "8", "9"] and read.columns == ["b", "a"]
    np.testing.assert_array_equal(read.values, [[2, 1.5], [4, -3], [1e300, 0]])
    # Numbers written as text, keys of two types: the row-by-row reading, the same rows.
    as_text = [{"id": 7, "a": "1.5", "b": 2}, {"id": "8", "a": -3.0, "b": "4"}, {"id": 9.0, "a": 0, "b": 1e300}]
    again = inference.read_features(table_of(tmp_path / "text.jsonl", as_text), ["b", "a"], "id")
    assert again.names == ["7", "8", "9.0"]
    np.testing.assert_array_equal(again.values, read.values)
    # An integer key, then a float one: named as written, "1.0" (pyarrow would make it 1).
    mixed = inference.read_features(
        table_of(tmp_path / "keys.jsonl", [{"id": 0, "a": 1}, {"id": 1.0, "a": 2}]), ["a"], "id"
    )
    assert mixed.names == ["0", "1.0"]


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([{"id": "a", "x": 1}, {"id": "b", "x": None}], "row 'b': feature column 'x' is None, not a number"),
        ([{"id": "a", "x": 1}, {"id": "b"}], "row 'b': feature column 'x' is None, not a number"),
        ([{"id": "a", "x": 1}, {"id": "b", "x": "tall"}], "row 'b': feature column 'x' holds 'tall', not a number"),
        ([{"id": "a", "x": 1}, {"id": "b", "x": True}], "row 'b': feature column 'x' is True, not a number"),
        ([{"id": "a", "x": 1}, {"id": "a", "x": 2}], "key column 'id' holds 'a' twice"),
        ([{"id": "a", "x": 1}, {"id": "", "x": 2}], "row 1 has no value in the key column 'id'"),
    ],
)
def test_a_bad_value_or_key_is_named(tmp_path: Path, rows: list[dict], words: str):
    with pytest.raises(OperationError, match=words.replace("(", "\\(")):
        inference.read_features(table_of(tmp_path / "bad.jsonl", rows), ["x"], "id")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"id": "b", "x": NaN}', "row 'b': feature column 'x' is nan, not a finite number"),
        ('{"id": "b", "x": 1e39}', "row 'b': feature column 'x' is 1e+39, beyond the range of FP32"),
    ],
)
def test_values_the_model_cannot_take_are_named_before_sending(
    server: ModelServerProcess, tmp_path: Path, line: str, words: str
):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "x": 1}\n' + line + "\n")
    table = Table(path, ["id", "x"], 2)
    with pytest.raises(OperationError, match=words.replace("+", "\\+")):
        ops.model_inference(run_context(tmp_path, server), "iris", table, features=["x", "x", "x", "x"], key="id")
