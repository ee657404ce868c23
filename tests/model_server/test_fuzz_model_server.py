"""Fuzzing the model server: random and invalid requests never get a 5xx.

Two sources of requests: schemathesis over the server's OpenAPI document (names, methods, headers), and
Hypothesis bodies for load and infer, which the document does not describe (the routes read them
themselves). The server runs as a real process (the fixture of tests/model_server/test_model_server.py: offline, with
tiny local models), so a random model or source fails to load at once instead of reaching the network.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from test_model_server import ModelServerProcess, server  # noqa: F401  (the `server` fixture)

from services_models import FIRE_MODEL_ID, FOLDER_MODEL

EXAMPLES = 40  # per route and generation mode


@pytest.fixture(scope="module")
def model_server_schema(server: ModelServerProcess) -> schemathesis.BaseSchema:  # noqa: F811
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_no_route_answers_a_server_error(model_server_schema: schemathesis.BaseSchema):
    routes = [(method, path) for path, methods in model_server_schema.items() for method in methods]
    assert len(routes) >= 9, routes
    for method, path in routes:
        for mode in GenerationMode:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                print_blob=False,
                suppress_health_check=list(HealthCheck),
            )
            @given(model_server_schema[path][method].as_strategy(mode))
            def answers(case: schemathesis.Case) -> None:
                response = case.call(timeout=30)
                case.validate_response(response, checks=[not_a_server_error])

            try:
                answers()
            except Exception as exc:
                if mode == GenerationMode.NEGATIVE and "Unable to satisfy" in str(exc):
                    continue  # the route takes nothing that could be wrong
                raise AssertionError(f"{method.upper()} {path} ({mode.value}): {exc}") from exc


def png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
NAMES = st.sampled_from([FOLDER_MODEL, "not-loaded", "a" * 201]) | st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True
)
INTS = st.integers(-3, 3) | st.sampled_from([0, 2**31, 2**63, -(2**63), 10**30])
IMAGES = st.sampled_from([png(), "", "not base64!", base64.b64encode(b"GIF89a").decode()]) | st.binary(max_size=40).map(
    lambda b: base64.b64encode(b).decode()
)
INFER = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["image", "images", ""]),
                        "shape": st.lists(INTS, max_size=2),
                        "datatype": st.sampled_from(["BYTES", "FP32", "bytes"]),
                        "data": st.lists(IMAGES, max_size=3),
                    },
                    optional={
                        "parameters": st.fixed_dictionaries({"content_type": st.sampled_from(["base64", "str", ""])})
                    },
                ),
                max_size=2,
            )
        },
        optional={"parameters": st.fixed_dictionaries({"top_k": INTS}) | JSON, "id": JSON},
    ),
)
SOURCES = st.sampled_from([FOLDER_MODEL, FIRE_MODEL_ID, "../" + FOLDER_MODEL, "/etc", "no/such-model", "", "."])
LOAD = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {},
        optional={
            "parameters": st.fixed_dictionaries(
                {},
                optional={
                    "source": SOURCES | st.text(max_size=10),
                    "task": st.sampled_from(["image-classification", "x"]),
                },
            )
        },
    ),
)


def test_load_and_infer_bodies_never_get_a_server_error(server: ModelServerProcess):  # noqa: F811
    """Bodies from nonsense to nearly right, against a loaded tiny model and names that are not loaded."""
    answers: set[int] = set()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert (
            http.post(
                f"/v2/repository/models/{FOLDER_MODEL}/load", json={"parameters": {"source": FOLDER_MODEL}}
            ).status_code
            == 200
        )

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            print_blob=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.one_of(st.tuples(st.just("infer"), NAMES, INFER), st.tuples(st.just("load"), NAMES, LOAD)))
        def no_server_error(request: tuple[str, str, Any]) -> None:
            route, name, body = request
            path = f"/v2/models/{name}/infer" if route == "infer" else f"/v2/repository/models/{name}/load"
            answer = http.post(path, json=body)
            assert answer.status_code < 500, (path, body, answer.text)
            assert answer.headers["content-type"].startswith("application/json"), answer.headers
            answers.add(answer.status_code)

        no_server_error()
        # Which random bodies come out right or wrong depends on the examples drawn: one of each kind, by hand.
        wrong_kind = {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        refused = http.post(f"/v2/models/{FOLDER_MODEL}/infer", json=wrong_kind)
        assert refused.status_code == 400 and "error" in refused.json(), refused.text
    assert 200 in answers and answers - {200}, answers
