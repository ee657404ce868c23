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
    # Dagster post-processes a launch's config several times in the code server (validate, launch, the queue's
    # launch) and once in the run worker: the code server asks the model server once, the run once more.
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
    passed = preflight.Passed(keep_s=30, clock=lambda: now[0])
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
    now[0] = 29.0
    assert paths() == []  # remembered: not checked again
    now[0] = 30.5
    assert paths() == ["/instructions/0/parameters/data/parameters/path"]  # forgotten: checked again
