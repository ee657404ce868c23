"""Fuzzing the gateway through its own OpenAPI document, in front of the real Dagster of the test stack.

Schemathesis reads /openapi.json from the app in process (ASGI, no socket) and makes requests from it,
valid and deliberately invalid, for every route. Whatever arrives, the gateway answers JSON with a status
code it documents and a body of the documented shape, and never a 5xx (503 is the documented answer
when Dagster is down; here it is up).

Cases come from `operation.as_strategy()` under a plain Hypothesis `@given`: schemathesis' own pytest
wrapper (`schemathesis.pytest.from_fixture`) reads `Node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonpointer
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.config import Settings
from api.main import create_app
from harness import Stack, local_pipeline
from instruction_trees import GAPS, valid_instruction
from orchestrator.assets.repository import CATALOG
from orchestrator.engine import build_plan

pytestmark = pytest.mark.e2e

MISSING = object()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ROUTES = [
    ("POST", "/execute"),
    ("POST", "/validate"),
    ("GET", "/runs"),
    ("GET", "/runs/{run_id}"),
    ("GET", "/runs/{run_id}/results"),
    ("GET", "/runs/{run_id}/report"),
    ("GET", "/runs/{run_id}/files/{relative}"),
    ("POST", "/runs/{run_id}/retry"),
    ("POST", "/runs/{run_id}/cancel"),
    ("GET", "/comparisons"),
    ("GET", "/comparisons/leaderboard"),
    ("GET", "/operations"),
    ("GET", "/health"),
]
EXAMPLES = 100  # per route and generation mode; schemathesis' random bodies never pass validation
LAUNCHES = 6  # real runs launched from well-typed random pipelines (each fails fast: see `nowhere`)


@pytest.fixture(scope="module")
def gateway_app(stack: Stack) -> FastAPI:
    # Schemathesis calls the app as host `testserver`.
    return create_app(
        Settings(
            dagster_url=stack.dagster_url,
            artifact_root=stack.artifact_root,
            model_server_url=stack.model_server_url,
            allowed_hosts=["testserver"],
        )
    )


@pytest.fixture(scope="module")
def gateway_schema(gateway_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", gateway_app)


def test_the_fuzzed_routes_are_all_the_routes(gateway_schema: schemathesis.BaseSchema):
    documented = {(method.upper(), path) for path, methods in gateway_schema.items() for method in methods}
    assert documented == set(ROUTES)


CASES = [
    (method, path, mode)
    for method, path in ROUTES
    for mode in GenerationMode
    if not (path == "/health" and mode == GenerationMode.NEGATIVE)
]  # it takes nothing that could be wrong


def check(case: schemathesis.Case) -> schemathesis.Response:
    """Send the case; the answer must be JSON, of a documented status and shape, and not a 5xx."""
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    content_type = response.headers.get("content-type", [""])[0]  # schemathesis keeps every value
    assert content_type.startswith("application/json"), response.headers
    return response


def fuzz(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


@pytest.mark.parametrize("method,path,mode", CASES)
def test_every_route_answers_as_documented(
    gateway_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
):
    @fuzz(EXAMPLES)
    @given(gateway_schema[path][method].as_strategy(mode))
    def answers(case: schemathesis.Case) -> None:
        response = check(case)
        # Random bodies name no real operation: nothing here may launch a run.
        assert not (path == "/execute" and response.status_code == 200), response.json()

    answers()


# Schemathesis cannot invent a pipeline that the catalog accepts; the engine fuzzing's generator can.
PIPELINES = st.lists(valid_instruction(), min_size=1, max_size=2).map(lambda items: {"instructions": items})
LOCAL_OPS = [
    CATALOG[name]
    for name in (
        "import_from_local",
        "dict_to_list",
        "resize_image",
        "crop_image",
        "convert_image",
        "filter_files",
        "sample",
        "batch_formatted_data",
    )
]


def nowhere(instruction: Any) -> Any:
    """The same pipeline reading an empty folder (it exists: the launch is checked): its run fails fast, whatever
    its sizes."""
    if isinstance(instruction, list):
        return [nowhere(i) for i in instruction]
    if not isinstance(instruction, dict):
        return instruction
    parameters = {k: nowhere(v) for k, v in instruction.get("parameters", {}).items()}
    if instruction["operation"] == "import_from_local":
        parameters["path"] = "fuzz/nothing-here"
    return {**instruction, "parameters": parameters}


RUNNABLE = st.lists(valid_instruction(ops=LOCAL_OPS), min_size=1, max_size=2).map(
    lambda items: {"instructions": nowhere(items)}
)


def test_every_well_typed_pipeline_is_valid_or_refused_by_the_server_at_its_paths(
    gateway_schema: schemathesis.BaseSchema,
):
    """The catalog accepts every such pipeline; the code location may still refuse one (a path that is not under
    its data root, a connection it does not have...), each problem at a JSON Pointer into the body."""
    operation = gateway_schema["/validate"]["POST"]

    @fuzz(60)
    @given(PIPELINES.flatmap(lambda body: operation.as_strategy(body=body, media_type="application/json")))
    def valid(case: schemathesis.Case) -> None:
        response = check(case)
        assert response.status_code in (200, 422), response.json()
        if response.status_code == 200:
            assert response.json()["nodes"] == len(build_plan(case.body["instructions"], CATALOG))
            return
        for error in response.json()["errors"]:
            assert jsonpointer.resolve_pointer(case.body, error["path"], default=MISSING) is not MISSING, error

    valid()


def test_launched_runs_are_followed_and_cancelled_as_documented(gateway_schema: schemathesis.BaseSchema, stack: Stack):
    """A few real launches of random valid pipelines, then every run route on those runs and on unknown ids."""
    launched: list[str] = []
    (stack.data_root / "fuzz" / "nothing-here").mkdir(parents=True, exist_ok=True)

    execute = gateway_schema["/execute"]["POST"]

    @fuzz(LAUNCHES)
    @given(RUNNABLE.flatmap(lambda body: execute.as_strategy(body=body, media_type="application/json")))
    def launch(case: schemathesis.Case) -> None:
        response = check(case)
        # 400: a random header was malformed; 409: a random Idempotency-Key came back with another body.
        assert response.status_code in (200, 400, 409), response.json()
        if response.status_code == 200:
            launched.append(response.json()["run_id"])

    launch()
    assert 0 < len(launched) <= LAUNCHES
    ids = st.sampled_from([*launched, "00000000-0000-4000-8000-000000000000"])  # and one Dagster never had
    for method, path in [
        ("GET", "/runs/{run_id}"),
        ("GET", "/runs/{run_id}/results"),
        ("POST", "/runs/{run_id}/cancel"),
        ("GET", "/runs/{run_id}"),
    ]:
        operation = gateway_schema[path][method]

        @fuzz(12)
        @given(ids.flatmap(lambda run_id: operation.as_strategy(path_parameters={"run_id": run_id})))
        def follow(case: schemathesis.Case) -> None:
            check(case)

        follow()


# ---- regressions: what the fuzzing found, request by request --------------------------------------


@pytest.fixture
def client(stack: Stack) -> Iterator[TestClient]:
    """A gateway of its own (not the fuzzed app, whose lifespan schemathesis holds)."""
    app = create_app(Settings(dagster_url=stack.dagster_url, artifact_root=stack.artifact_root))
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as c:
        yield c


@pytest.mark.parametrize("header,value", [("Idempotency-Key", "has spaces"), ("X-Constellation-User", "bob smith")])
def test_a_malformed_header_is_a_documented_400(client: TestClient, header: str, value: str):
    answer = client.post("/execute", json=local_pipeline(), headers={header: value})
    assert answer.status_code == 400 and header in answer.json()["message"]
    documented = client.get("/openapi.json").json()["paths"]["/execute"]["post"]["responses"]
    assert documented["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Failure"}


IMPORT = '{"operation": "import_from_local", "parameters": {"path": "samples"}}'
REFUSED_BY_THE_ENGINE = {  # engine gap (tests/instruction_trees.py GAPS) -> a body that crashed the gateway
    "lone-surrogates": '{"instructions": [{"operation": "import_from_local", "parameters": {"path": "a\\ud800"}}]}',
    "long-integers": '{"instructions": [{"operation": "sample", "parameters": {"n": ' + "9" * 5000 + "}}]}",
    "non-finite-numbers": '{"instructions": [{"operation": "normalize_image", "parameters": {"mean": [1e400], '
    '"data": ' + IMPORT + "}}]}",
}


@pytest.mark.parametrize("route", ["/validate", "/execute"])
@pytest.mark.parametrize(
    "gap",
    [
        pytest.param(name, marks=pytest.mark.xfail(name in GAPS, reason=f"engine gap {name!r}", strict=True))
        for name in REFUSED_BY_THE_ENGINE
    ],
)
def test_bodies_the_engine_cannot_read_are_a_422_not_a_500(client: TestClient, gap: str, route: str):
    answer = client.post(
        route, content=REFUSED_BY_THE_ENGINE[gap].encode(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["status"] == "failure" and answer.json()["errors"]
