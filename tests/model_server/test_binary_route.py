"""The binary inference route (POST /v2/models/{name}/infer with Inference-Header-Content-Length), which the model
server serves outside FastAPI's routing (model_server/routes.py's BinaryInference): the same answers as JSON
inference, the same refusals as every other route, behind the same token."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_server.app import create_app
from model_server.config import Settings
from model_server.errors import ServerError
from model_server.protocol import InferRequest, LoadRequest
from model_server.routes import parse
from tiny_models import IRIS_LABELS, make_tabular_classifier, tabular_data

TOKEN = "binary-route-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("binary-route")
    make_tabular_classifier(root / "iris.onnx")
    settings = Settings(models_root=root, token=TOKEN, max_request_bytes=4096, max_drain_bytes=8192)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        loaded = client.post(
            "/v2/repository/models/iris/load",
            json={"parameters": {"source": "iris.onnx", "task": "tabular-classification"}},
            headers=AUTH,
        )
        assert loaded.status_code == 200, loaded.text
        yield client


def binary(rows: np.ndarray, outputs: list[dict] | None = None) -> tuple[bytes, dict[str, str]]:
    header = {
        "inputs": [
            {
                "name": "float_input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": rows.nbytes},
            }
        ],
        **({"outputs": outputs} if outputs else {}),
    }
    head = json.dumps(header).encode()
    return head + rows.astype("<f4").tobytes(), {
        **AUTH,
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def test_binary_and_json_inference_answer_alike(http: TestClient):
    rows = tabular_data(rows=50, seed=3)[0].astype(np.float32)
    body, headers = binary(
        rows,
        [
            {"name": "label", "parameters": {"binary_data": False}},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    )
    stats = http.get("/v2/models/iris/stats", headers=AUTH).json()["model_stats"][0]
    answer = http.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["inference-header-content-length"])
    head = json.loads(answer.content[:length])
    by_name = {o["name"]: o for o in head["outputs"]}
    probabilities = np.frombuffer(answer.content[length:], dtype="<f4").reshape(50, 3)

    as_json = http.post(
        "/v2/models/iris/infer",
        json={"inputs": [{"name": "float_input", "shape": [50, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]},
        headers=AUTH,
    ).json()
    json_outputs = {o["name"]: o for o in as_json["outputs"]}
    assert head["model_name"] == as_json["model_name"] == "iris"
    assert by_name["label"]["data"] == json_outputs["label"]["data"] and set(by_name["label"]["data"]) <= set(
        IRIS_LABELS
    )
    np.testing.assert_array_equal(
        probabilities, np.array(json_outputs["probabilities"]["data"], np.float32).reshape(50, 3)
    )
    after = http.get("/v2/models/iris/stats", headers=AUTH).json()["model_stats"][0]
    assert (after["binary_requests"] - stats["binary_requests"], after["json_requests"] - stats["json_requests"]) == (
        1,
        1,
    )


@pytest.mark.parametrize(
    ("path", "change", "status", "words"),
    [
        ("/v2/models/iris/infer", {"Authorization": None}, 401, "Authorization: Bearer"),
        ("/v2/models/iris/infer", {"Sec-Fetch-Site": "cross-site"}, 403, "other sites"),
        ("/v2/models/not%20a%20name/infer", {}, 400, "is not a valid name"),
        ("/v2/models/nowhere/infer", {}, 404, "'nowhere' is not known"),
        ("/v2/models/iris/infer", {"Content-Type": "text/plain"}, 415, "application/octet-stream"),
        ("/v2/models/iris/infer", {"Inference-Header-Content-Length": "many"}, 422, "Inference-Header-Content-Length"),
    ],
)
def test_binary_inference_refusals_are_json_errors(
    http: TestClient, path: str, change: dict[str, str | None], status: int, words: str
):
    body, headers = binary(tabular_data(rows=2, seed=1)[0])
    for key, value in change.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    answer = http.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json" and words in answer.json()["error"]


def test_a_binary_body_over_the_limit_is_answered_413(http: TestClient):
    body, headers = binary(np.zeros((300, 4), np.float32))  # 4,800 bytes of rows: over the 4,096 of this server
    answer = http.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 413 and "larger than the limit of 4096 bytes" in answer.json()["error"]


def test_the_infer_route_is_still_described(http: TestClient):
    described = http.get("/openapi.json", headers=AUTH).json()
    assert "post" in described["paths"]["/v2/models/{name}/infer"]


def test_a_json_body_read_in_place_parses_as_its_bytes():
    # A body read into one buffer (read_declared) is a memoryview; Pydantic parses bytes only, and a view has no
    # .strip(): parse takes either (it refused a view with 422 "JSON input should be string, bytes or bytearray").
    body = json.dumps({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert parse(memoryview(body.encode()), InferRequest) == parse(body.encode(), InferRequest)
    assert parse(memoryview(b"  "), LoadRequest, optional=True) == LoadRequest()
    with pytest.raises(ServerError) as refused:
        parse(memoryview(b"{not json"), LoadRequest)
    assert refused.value.status_code == 400
