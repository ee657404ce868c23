"""Hostile and broken submissions: each gets a clear 4xx, and the gateway stays healthy."""

from __future__ import annotations

import json

import httpx
import pytest

from harness import Stack, local_pipeline

pytestmark = pytest.mark.e2e


def nested(depth: int) -> dict:
    """dict_to_list wrapped around itself `depth` times."""
    node: dict = {"operation": "import_from_local", "parameters": {"path": "samples"}}
    for _ in range(depth):
        node = {"operation": "dict_to_list", "parameters": {"data": node}}
    return {"instructions": [node]}


def resize(**parameters) -> dict:
    return {"instructions": [{"operation": "resize_image", "parameters": parameters}]}


IMPORT = {"operation": "import_from_local", "parameters": {"path": "samples"}}

# (name, raw body, expected status, a JSON Pointer the errors must name, words the message must hold)
CORPUS: list[tuple[str, bytes, int, str | None, str]] = [
    ("malformed JSON", b'{"instructions": [', 422, "", "malformed JSON"),
    ("not JSON at all", b"\x00\xff\xfe", 422, "", "UTF-8"),
    ("empty body", b"", 422, "", "malformed JSON"),
    ("a list body", b"[]", 422, "", "expected an object"),
    ("no instructions key", b'{"steps": []}', 422, "", "missing required key 'instructions'"),
    (
        "instructions not a list",
        b'{"instructions": {"operation": "dict_to_list"}}',
        422,
        "/instructions",
        "expected a list",
    ),
    ("empty instructions", b'{"instructions": []}', 422, "/instructions", "empty"),
    ("instruction not an object", b'{"instructions": [42]}', 422, "/instructions/0", "expected an instruction"),
    (
        "unknown operation",
        json.dumps({"instructions": [{"operation": "resize_imag"}]}).encode(),
        422,
        "/instructions/0/operation",
        "did you mean 'resize_image'",
    ),
    (
        "operation not a string",
        b'{"instructions": [{"operation": 7}]}',
        422,
        "/instructions/0/operation",
        "expected an operation name",
    ),
    (
        "missing parameter",
        json.dumps(resize(data=IMPORT, width=10)).encode(),
        422,
        "/instructions/0/parameters",
        "missing required parameter 'height'",
    ),
    (
        "unknown parameter",
        json.dumps(resize(data=IMPORT, width=10, height=10, widht=3)).encode(),
        422,
        "/instructions/0/parameters/widht",
        "unknown parameter 'widht'",
    ),
    (
        "wrong literal type",
        json.dumps(resize(data=IMPORT, width="ten", height=10)).encode(),
        422,
        "/instructions/0/parameters/width",
        "is not of type 'integer'",
    ),
    (
        "out of range",
        json.dumps(resize(data=IMPORT, width=0, height=10)).encode(),
        422,
        "/instructions/0/parameters/width",
        "minimum",
    ),
    (
        "type mismatch between nested ops",
        json.dumps(
            {
                "instructions": [
                    {
                        "operation": "dict_to_list",
                        "parameters": {"data": {"operation": "batch_formatted_data", "parameters": {"data": IMPORT}}},
                    }
                ]
            }
        ).encode(),
        422,
        "/instructions/0/parameters/data",
        "produces Batches",
    ),
    (
        "literal where data is needed",
        json.dumps(resize(data="samples", width=1, height=1)).encode(),
        422,
        "/instructions/0/parameters/data",
        "expects the output of an instruction",
    ),
    (
        "duplicate keys",
        b'{"instructions": [{"operation": "dict_to_list", "operation": "resize_image"}]}',
        422,
        "/instructions/0/operation",
        "duplicate key",
    ),
    ("nesting thousands deep", ("[" * 5000 + "]" * 5000).encode(), 422, "", "nests 5000 levels"),
    ("instructions nested too deep", json.dumps(nested(20)).encode(), 422, None, "nest more than"),
    (
        "path traversal",
        json.dumps(
            {"instructions": [{"operation": "import_from_local", "parameters": {"path": "../../../../etc"}}]}
        ).encode(),
        422,
        "/instructions/0/parameters/path",
        "outside the data root",
    ),
]


@pytest.mark.parametrize("name,body,status,path,words", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_gets_a_clear_answer(stack: Stack, api: httpx.Client, name, body, status, path, words):
    answer = api.post("/execute", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    payload = answer.json()
    assert payload["status"] == "failure" and words in payload["message"] + json.dumps(payload.get("errors"))
    if path is not None:
        assert path in [e["path"] for e in payload["errors"]], payload
    assert api.get("/health").status_code == 200


def test_a_30_mb_body_gets_413_not_a_dropped_connection(api: httpx.Client):
    body = b'{"instructions": [' + b" " * (30 * 1024 * 1024) + b"]}"
    answer = api.post("/execute", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert "limit" in answer.json()["message"]
    assert api.get("/health").status_code == 200


def test_every_problem_is_reported_at_once(api: httpx.Client):
    body = resize(data={"operation": "nope"}, width=-1, height="x", colour="red")
    errors = api.post("/validate", json=body).json()["errors"]
    assert {e["path"] for e in errors} == {
        "/instructions/0/parameters/data/operation",
        "/instructions/0/parameters/width",
        "/instructions/0/parameters/height",
        "/instructions/0/parameters/colour",
    }


def test_wrong_methods_and_paths_answer_json(api: httpx.Client):
    for method, path, status in [("GET", "/execute", 405), ("GET", "/nowhere", 404), ("DELETE", "/runs/x", 405)]:
        answer = api.request(method, path)
        assert answer.status_code == status and answer.json()["message"]


def test_validate_launches_nothing(stack: Stack, api: httpx.Client):
    query = "{ runsOrError { ... on Runs { count } } }"
    before = httpx.post(stack.dagster_url + "/graphql", json={"query": query}).json()["data"]["runsOrError"]
    assert api.post("/validate", json=local_pipeline()).json()["status"] == "success"
    after = httpx.post(stack.dagster_url + "/graphql", json={"query": query}).json()["data"]["runsOrError"]
    assert after == before
