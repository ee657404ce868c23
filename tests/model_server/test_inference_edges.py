"""Edge cases of the inference and repository routes that answered 500 or logged a traceback: each now gets a 4xx
saying what is wrong and where (a shape NumPy cannot hold, a header that is not ASCII digits, a model source with a
NUL or too long to open, a body the client stopped sending)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from harness import asgi_post
from model_server.app import create_app
from model_server.config import Settings
from tiny_models import LAND_COVER_LABELS, make_band_segmenter, make_tabular_classifier

INFER = "/v2/models/iris/infer"
MODELS = {"iris": ("iris.onnx", "tabular-classification"), "land": ("land.onnx", "image-segmentation")}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("inference-edges")
    make_tabular_classifier(root / "iris.onnx")
    make_band_segmenter(root / "land.onnx", np.eye(len(LAND_COVER_LABELS), 4), np.zeros(len(LAND_COVER_LABELS)))
    with TestClient(create_app(Settings(models_root=root)), raise_server_exceptions=False) as client:
        for name, (source, task) in MODELS.items():
            loaded = client.post(
                f"/v2/repository/models/{name}/load", json={"parameters": {"source": source, "task": task}}
            )
            assert loaded.status_code == 200, loaded.text
        yield client


def binary(inputs: list[dict[str, Any]], payload: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": inputs}).encode()
    return head + payload, {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


@pytest.mark.parametrize(
    "model,name,shape",
    [("iris", "float_input", [0, 2**62]), ("iris", "float_input", [0, 2**70]), ("land", "bands", [0, 4, 2**62, 1])],
)
def test_an_empty_tensor_of_a_shape_no_array_can_hold_is_refused_in_binary_and_json(
    http: TestClient, model: str, name: str, shape: list[int]
):
    described = {"name": name, "shape": shape, "datatype": "FP32"}
    content, headers = binary([{**described, "parameters": {"binary_data_size": 0}}], b"")
    as_binary = http.post(f"/v2/models/{model}/infer", content=content, headers=headers)
    as_json = http.post(f"/v2/models/{model}/infer", json={"inputs": [{**described, "data": []}]})
    for answer in (as_binary, as_json):
        assert 400 <= answer.status_code < 500, answer.text
        assert f"input {name!r} has shape {shape}" in answer.json()["error"], answer.text


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9\xb2"])  # superscript digits in Latin-1: str.isdigit() says yes
def test_an_inference_header_length_of_digits_that_are_not_ascii_is_refused_naming_the_header(
    http: TestClient, value: bytes
):
    # Raw ASGI: the test client would send the header's characters as UTF-8, a server gets its bytes as they came.
    body, extra = binary(
        [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        np.ones((1, 4), "<f4").tobytes(),
    )
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode())]
    status, said = asgi_post(http.app, INFER, [*headers, (b"inference-header-content-length", value)], [body])
    assert status == 422, said
    assert "Inference-Header-Content-Length" in said["error"]


@pytest.mark.parametrize(
    "source,said",
    [("iris.onnx\x00", "control character"), ("a" * 300 + ".onnx", "too long"), ("a/" * 600 + "m", "too long")],
)
@pytest.mark.parametrize("task", ["tabular-classification", "image-classification", "text-classification"])
def test_a_model_source_the_system_cannot_open_is_refused_by_load_and_check(
    http: TestClient, source: str, said: str, task: str
):
    body = {"parameters": {"source": source, "task": task}}
    loaded = http.post("/v2/repository/models/odd-source/load", json=body)
    assert loaded.status_code == 400, loaded.text
    assert said in loaded.json()["error"]
    checked = http.post("/v2/repository/models/odd-source/check", json=body)
    assert checked.status_code == 200, checked.text
    assert checked.json()["loadable"] is False and said in checked.json()["error"]


@pytest.mark.parametrize("route", ["json", "binary"])
def test_a_client_that_stops_sending_its_body_is_a_400_not_an_error_of_ours(
    http: TestClient, route: str, caplog: pytest.LogCaptureFixture
):
    rows = {"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}]}
    body = json.dumps(rows).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if route == "binary":
        body, extra = binary(
            [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}],
            np.ones((2, 4), "<f4").tobytes(),
        )
        headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        headers.append((b"content-length", str(len(body)).encode()))
    with caplog.at_level(logging.ERROR):
        status, said = asgi_post(http.app, INFER, headers, [body[: len(body) // 2]], then_gone=True)
    assert status == 400, said
    assert "before sending the whole request body" in said["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(
    "datatype,value,what",
    [
        ("FP16", 70_000.0, "a finite number in the range of FP16"),  # past FP16's 65504: inf once cast
        ("INT8", 300, "a whole number in the range of INT8"),
        ("UINT8", -1, "a whole number in the range of UINT8"),
        ("INT64", 2**63, "a whole number in the range of INT64"),  # wraps to -2**63 once cast
        ("INT32", 1.5, "a whole number in the range of INT32"),
    ],
)
def test_a_json_value_its_declared_datatype_cannot_hold_is_refused_naming_the_item(
    http: TestClient, datatype: str, value: float, what: str
):
    row = [5, 3, 1, value]  # the others fit every datatype
    answer = http.post(
        "/v2/models/iris/infer",
        json={"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": datatype, "data": row}]},
    )
    assert answer.status_code == 400, answer.text
    assert f"input 'float_input' row 0 column 3 is {value!r}, not {what}" in answer.json()["error"]


def test_json_values_that_fit_their_datatype_are_taken_as_the_numbers_they_are(http: TestClient):
    rows = {"FP32": [5.1, 3.5, 1.4, 0.2], "INT64": [5, 3, 1, 0], "FP16": [5.1, 3.5, 1.4, 65504.0]}
    for datatype, row in rows.items():
        answer = http.post(
            "/v2/models/iris/infer",
            json={"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": datatype, "data": row}]},
        )
        assert answer.status_code == 200, (datatype, answer.text)
