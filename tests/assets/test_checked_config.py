"""The launch config's pre-launch checks (orchestrator/assets/checked_config.py, orchestrator/preflight.py) on the
real stack: how often they ask the model server, and what the launchpad's GraphQL answers."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from harness import Stack

e2e = pytest.mark.e2e


def tabular_deploy(model: str) -> list[dict]:
    return [
        {
            "operation": "deploy_model",
            "parameters": {"model": model, "task": "tabular-classification", "source": "fire-risk-logreg.onnx"},
        },
        {"operation": "delete_model", "parameters": {"model": model}},
    ]


def checks_asked(stack: Stack, model: str) -> int:
    """How many times the model server was asked whether it could load `model` (its access log, in the stack's)."""
    return len(re.findall(rf'"POST /v2/repository/models/{re.escape(model)}/check ', stack.log.read_text()))


@e2e
def test_a_pipeline_is_checked_once_by_the_code_server_and_once_by_its_run(stack: Stack, api: httpx.Client):
    model = f"checked-once-{uuid.uuid4().hex[:8]}"
    body = {"instructions": tabular_deploy(model)}
    assert api.post("/validate", json=body).status_code == 200
    launched = api.post("/execute", json=body)
    assert launched.status_code == 200, launched.text
    run = stack.wait_for_run(launched.json()["run_id"], timeout_s=120)
    assert run["run_status"] == "SUCCESS", run
    # Dagster post-processes the config once per request in the code server (/validate, the launch), then three
    # times in the run worker as it starts: 5 rounds of checks, now 2 (the code server's second, a moment after
    # the first, and the run worker's last two are remembered).
    assert checks_asked(stack, model) == 2, stack.log_tail()


def test_a_pipeline_that_passed_is_remembered_a_while_and_a_refusal_never(tmp_path):
    """In process, with the real checks: a folder that does not exist is refused each time until it exists; once
    the pipeline passed, it is not checked again for keep_s seconds (the folder's removal shows only after)."""
    from orchestrator import preflight
    from orchestrator.assets.repository import CATALOG
    from orchestrator.assets.resources import OpResources, ServerSettings

    (tmp_path / "data").mkdir()
    resources = OpResources(
        **ServerSettings(data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "artifacts")).resources()
    )
    now = [0.0]
    passed = preflight.Passed(keep_s=3, clock=lambda: now[0])
    pipeline = [
        {
            "operation": "dict_to_list",
            "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "photos"}}},
        }
    ]

    def paths() -> list[str]:
        return [p.path for p in passed.check(pipeline, CATALOG, resources)]

    assert paths() == ["/instructions/0/parameters/data/parameters/path"]
    (tmp_path / "data" / "photos").mkdir()
    assert paths() == []  # a refusal was not remembered
    (tmp_path / "data" / "photos").rmdir()
    now[0] = 2.9
    assert paths() == []  # remembered: not checked again
    now[0] = 3.1
    assert paths() == ["/instructions/0/parameters/data/parameters/path"]  # forgotten: checked again


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}
"""
VALID = """
query Valid($selector: PipelineSelector!, $config: RunConfigData) {
  isPipelineConfigValid(pipeline: $selector, mode: "default", runConfigData: $config) { __typename }
}
"""


@e2e
def test_the_launchpad_launch_names_each_problem_at_its_pointer(stack: Stack):
    """As the launchpad asks the webserver: its validation as one types cannot see what only the code location
    knows (Dagster checks the schema only there); its launch is refused, naming each problem on its own line."""
    from orchestrator import contract

    local = {"operation": "import_from_local", "parameters": {"path": "no-such-folder"}}
    pipeline = [
        {"operation": "dict_to_list", "parameters": {"data": local}},
        {"operation": "deploy_model", "parameters": {"model": "nobody/no-such-model"}},
    ]
    where = {"repositoryLocationName": contract.CODE_LOCATION, "repositoryName": contract.REPOSITORY}
    config = contract.launch_config(pipeline)

    def graphql(query: str, variables: dict) -> dict:
        answer = httpx.post(f"{stack.dagster_url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        # (A launch refused by the code server comes back as a PythonError, with HTTP status 500.)
        assert answer.status_code in (200, 500) and answer.json().get("data"), answer.text
        return answer.json()["data"]

    selector = {**where, "pipelineName": contract.JOB}
    valid = graphql(VALID, {"selector": selector, "config": config})["isPipelineConfigValid"]
    assert valid["__typename"] == "PipelineConfigValidationValid"  # the schema's check alone: see checked_config.py

    params = {"selector": {**where, "jobName": contract.JOB}, "runConfigData": config}
    refused = graphql(LAUNCH, {"params": params})["launchRun"]
    assert refused["__typename"] == "PythonError", refused
    lines = refused["message"].splitlines()
    assert "2 problems with this pipeline, each at its JSON Pointer, where /instructions/N is item N of raw_input:" in (
        line.split("PostProcessingError: ")[-1] for line in lines
    )
    assert (
        "  /instructions/0/parameters/data/parameters/path: path 'no-such-folder' does not exist under the data root"
        in lines
    )
    [model] = [line for line in lines if line.startswith("  /instructions/1/parameters/model: ")]
    assert "not in the models root or the local Hugging Face cache" in model
