"""The model server's client (orchestrator/models/client.py, what the pipeline's ops call), over HTTP to a real
model server holding a tiny model of every task (tests/model_server/test_model_server_tasks.py's), against the
models in this process."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_model_server import ModelServerProcess
from test_model_server_tasks import (  # noqa: F401  (the `models_root` and `server` fixtures)
    BATCH_SIZE,
    CANDIDATES,
    ROW,
    TEXTS,
    class_mask,
    images,
    local,
    models_root,
    pictures,
    same_ranking,
    server,
)

from orchestrator.engine import OperationError
from orchestrator.models.client import ModelServer, Retry
from tiny_models import IRIS_LABELS, tabular_data


@pytest.fixture
def client(server: ModelServerProcess) -> Iterator[ModelServer]:  # noqa: F811
    with ModelServer(server.url, timeout_s=60, retry=Retry(attempts=1)) as model_server:
        yield model_server


@pytest.fixture
def root(models_root: Path) -> Path:  # noqa: F811
    """The server's models root, where this process finds the same models."""
    return models_root


def test_client_loads_reads_metadata_and_unloads(client: ModelServer):
    client.load("tiny/iris", "tabular/iris.onnx", "tabular-classification")
    metadata = client.metadata("tiny/iris")
    assert (metadata["name"], metadata["platform"], metadata["task"]) == (
        "tiny--iris",
        "onnxruntime",
        "tabular-classification",
    )
    assert metadata["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["labels"] == list(IRIS_LABELS)
    client.unload("tiny/iris")
    with pytest.raises(OperationError, match="tiny--iris.*not loaded"):
        client.metadata("tiny/iris")


def test_client_classify_and_zero_shot_classify(client: ModelServer, root: Path):
    files = images(4)
    same_ranking(client.classify("vit", files, 2), local(root, "vit")(pictures(files), top_k=2, batch_size=BATCH_SIZE))
    same_ranking(
        client.classify("clip", files, 2, CANDIDATES),
        local(root, "clip")(pictures(files), candidate_labels=CANDIDATES, batch_size=BATCH_SIZE),
    )


def test_client_detect_groups_detections_by_image(client: ModelServer, root: Path):
    files = images(4)
    found = client.detect("yolos", files, 0.4)
    expected = local(root, "yolos")(pictures(files), threshold=0.4, batch_size=BATCH_SIZE)
    assert len(found) == 4 and sum(map(len, found)) > 0
    for got, answer in zip(found, expected, strict=True):
        assert [(d["label"], d["box"]) for d in got] == [
            (a["label"], [float(a["box"][k]) for k in ("xmin", "ymin", "xmax", "ymax")]) for a in answer
        ]
        assert [d["score"] for d in got] == pytest.approx([a["score"] for a in answer], abs=1e-5)
    assert [len(f) for f in client.detect("yolos", files[:2], 0.0)] == [6, 6]  # every detection token


def test_client_segment_gives_png_class_id_masks(client: ModelServer, root: Path):
    files = images(3)
    masks = client.segment("segformer", files)
    pipe = local(root, "segformer")
    answers = pipe(pictures(files), subtask="semantic", batch_size=BATCH_SIZE)
    for png, picture, segments in zip(masks, pictures(files), answers, strict=True):
        mask = Image.open(io.BytesIO(png))
        assert (mask.mode, mask.size) == ("L", picture.size)
        np.testing.assert_array_equal(np.asarray(mask), class_mask(pipe, picture, segments))


def test_client_classify_texts(client: ModelServer, root: Path):
    same_ranking(
        client.classify_texts("bert", TEXTS, 2),
        local(root, "bert")(TEXTS, top_k=2, truncation=True, batch_size=BATCH_SIZE),
    )


@pytest.mark.parametrize(
    ("name", "classes"), [("iris", IRIS_LABELS), ("iris-zipmap", IRIS_LABELS), ("iris-int", ("0", "1", "2"))]
)
def test_client_predict_rows_classification(client: ModelServer, root: Path, name: str, classes: tuple[str, ...]):
    rows, _ = tabular_data(rows=5, seed=3)
    got = client.predict_rows(name, rows.tolist(), "tabular-classification")
    label, probabilities = local(root, name).run(None, {"float_input": rows})
    if isinstance(probabilities, list):  # a ZipMap's {class: p} per row
        probabilities = [[row[c] for c in row] for row in probabilities]
    assert [g["label"] for g in got] == [str(v) for v in label.tolist()]
    for prediction, expected in zip(got, probabilities, strict=True):
        assert list(prediction["scores"]) == list(classes)
        assert list(prediction["scores"].values()) == pytest.approx(list(expected), abs=1e-6)


def test_client_predict_rows_regression(client: ModelServer, root: Path):
    rows, _ = tabular_data(rows=5, seed=3)
    got = client.predict_rows("reg", rows.tolist(), "tabular-regression")
    (expected,) = local(root, "reg").run(None, {"float_input": rows})
    assert [g["value"] for g in got] == pytest.approx(expected.ravel().tolist(), rel=1e-6)
    assert client.predict_rows("reg", [], "tabular-regression") == []


@pytest.mark.parametrize("name", ["iris", "iris-zipmap", "iris-int"])
def test_client_predict_array_is_onnxruntime_in_process_in_binary(client: ModelServer, root: Path, name: str):
    rows, _ = tabular_data(rows=3000, seed=8)
    stats = f"/v2/models/{name}/stats"
    before = client._http.get(stats).json()["model_stats"][0]
    answer = client.predict_array(name, rows.astype(np.float64), "tabular-classification")
    label, probabilities = local(root, name).run(None, {"float_input": rows})
    if isinstance(probabilities, list):  # a ZipMap's {class: p} per row
        probabilities = [[row[c] for c in row] for row in probabilities]
    assert answer.labels == [str(v) for v in label.tolist()]
    assert answer.scores is not None and answer.scores.dtype == np.float32 and answer.scores.shape == (3000, 3)
    np.testing.assert_allclose(answer.scores, probabilities, rtol=1e-6, atol=1e-7)
    assert answer.classes == (list(IRIS_LABELS) if name != "iris-int" else ["0", "1", "2"])
    after = client._http.get(stats).json()["model_stats"][0]
    assert (
        after["binary_requests"] - before["binary_requests"],
        after["json_requests"] - before["json_requests"],
        after["inference_count"] - before["inference_count"],
    ) == (1, 0, 3000)


def test_client_predict_array_regression_and_rows_it_refuses(client: ModelServer, root: Path):
    rows, _ = tabular_data(rows=1000, seed=6)
    answer = client.predict_array("reg", rows, "tabular-regression")
    (expected,) = local(root, "reg").run(None, {"float_input": rows})
    assert answer.labels is None and answer.values is not None
    np.testing.assert_allclose(answer.values, expected.ravel(), rtol=1e-6)
    assert client.predict_array("reg", np.zeros((0, 4)), "tabular-regression").values.shape == (0,)
    with pytest.raises(OperationError, match="row 1 column 3 is 1e\\+39, beyond the range of FP32"):
        client.predict_array("iris", np.array([ROW, [1.0, 2.0, 3.0, 1e39]]), "tabular-classification")
    with pytest.raises(OperationError, match="row 0 column 0 is nan, not a finite number"):
        client.predict_array("iris", np.full((1, 4), np.nan), "tabular-classification")
    with pytest.raises(OperationError, match="expected 4 features per row, got 5"):
        client.predict_array("iris", np.ones((2, 5)), "tabular-classification")


def test_client_predict_rows_reads_each_models_metadata_once(client: ModelServer):
    sent: list[tuple[str, str]] = []
    client._http.event_hooks["request"].append(lambda request: sent.append((request.method, request.url.path)))

    def reads() -> list[str]:
        return [path for method, path in sent if method == "GET"]

    def requests() -> dict[str, int]:  # the server's count: the inference requests go over http.client, not httpx
        return {n: client._http.get(f"/v2/models/{n}/stats").json()["model_stats"][0]["execution_count"] for n in names}

    names = ("iris", "reg")
    before = requests()
    rows = tabular_data(rows=4, seed=5)[0].tolist()
    first = client.predict_rows("iris", rows, "tabular-classification")
    assert client.predict_rows("iris", rows, "tabular-classification") == first
    client.predict_rows("reg", rows, "tabular-regression")
    assert [path for path in reads() if not path.endswith("/stats")] == ["/v2/models/iris", "/v2/models/reg"]
    assert {n: count - before[n] for n, count in requests().items()} == {"iris": 2, "reg": 1}
    with pytest.raises(OperationError, match="expected 4 features per row"):  # read again after a failure
        client.predict_rows("iris", [row[:3] for row in rows], "tabular-classification")
    client.predict_rows("iris", rows, "tabular-classification")
    client.load("reg", "reg.onnx", "tabular-regression")  # and after a load (or an unload) by this client
    client.predict_rows("reg", rows, "tabular-regression")
    assert [path for path in reads() if not path.endswith("/stats")][2:] == ["/v2/models/iris", "/v2/models/reg"]


def test_client_errors_carry_the_servers_message(client: ModelServer):
    with pytest.raises(OperationError, match="expected 4 features per row, got 3"):
        client.predict_rows("iris", [[1.0, 2.0, 3.0]], "tabular-classification")
    with pytest.raises(OperationError, match="row 1 column 2 is nan"):
        client.predict_rows("iris", [ROW, [1.0, 2.0, float("nan"), 4.0]], "tabular-classification")
    with pytest.raises(OperationError, match="row 1 has 3 values but row 0 has 4"):
        client.predict_rows("iris", [ROW, ROW[:3]], "tabular-classification")
    with pytest.raises(OperationError, match="not 'image-classification'"):
        client.predict_rows("iris", [ROW], "image-classification")
    with pytest.raises(OperationError, match="'vit' \\(task image-classification\\) takes 'image'"):
        client.classify_texts("vit", ["hello"], 1)
    with pytest.raises(OperationError, match="not \\[inputs, k\\] as a classifier's .*image_index, label, score, box"):
        client.classify("yolos", images(1), 1)  # a detector answers, but not with ranked labels
    with pytest.raises(OperationError, match="lacks the 'mask' output"):
        client.segment("vit", images(1))


def test_an_idle_connection_the_server_closed_is_replaced_at_once(client: ModelServer):
    rows = tabular_data(rows=4, seed=5)[0]
    first = client.predict_array("iris", rows, "tabular-classification")
    time.sleep(6)  # uvicorn closes a kept-alive connection idle for 5 s
    # One attempt only (the fixture's Retry): the request must not go out on the connection the server closed.
    assert client.predict_array("iris", rows, "tabular-classification").labels == first.labels
