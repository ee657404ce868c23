"""End to end on the real stack: post pipelines to the gateway, follow them in Dagster."""

from __future__ import annotations

import html
import io
import json
import time

import httpx
import pytest
from PIL import Image

from harness import Stack, local_pipeline
from samples import sample_bodies

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("index", range(len(sample_bodies())))
def test_every_sample_dag_validates_and_runs_to_success(stack: Stack, api: httpx.Client, index: int):
    body = sample_bodies()[index]
    headers = {"content-type": "application/json"}
    assert api.post("/validate", content=body, headers=headers).json()["status"] == "success"
    answer = api.post("/execute", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    run = stack.wait_for_run(answer.json()["run_id"])
    assert run["run_status"] == "SUCCESS", run
    results = api.get(f"/runs/{run['run_id']}/results").json()
    assert results["status"] == "success" and results["results"]


def test_local_pipeline_results_are_the_resized_images(stack: Stack, api: httpx.Client):
    launched = api.post("/execute", json=local_pipeline(width=48)).json()
    assert launched["status"] == "success"
    assert launched["run_url"] == f"{stack.dagster_url}/runs/{launched['run_id']}"
    run = stack.wait_for_run(launched["run_id"])
    assert run["run_status"] == "SUCCESS"
    assert run["done"] == run["total"] == 3
    assert run["duration_s"] > 0 and run["ended_at"] >= run["started_at"]
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    names = [f["name"] for f in result["output"]["files"]]
    expected = sorted(
        p.relative_to(stack.data_root / "samples").as_posix() for p in (stack.data_root / "samples").rglob("*.jpg")
    )
    assert names == expected
    for item in result["output"]["files"]:
        assert Image.open(io.BytesIO(stack.fetch(item["uri"]))).size == (48, 48)


def test_run_shows_in_dagster_under_main_at_constellation(stack: Stack, api: httpx.Client):
    run_id = api.post("/execute", json=local_pipeline()).json()["run_id"]
    stack.wait_for_run(run_id)
    query = """query($id: ID!) { runOrError(runId: $id) { ... on Run {
        jobName repositoryOrigin { repositoryName repositoryLocationName } } } }"""
    run = httpx.post(stack.dagster_url + "/graphql", json={"query": query, "variables": {"id": run_id}}).json()
    found = run["data"]["runOrError"]
    assert found["jobName"] == "build_execute_job"
    assert found["repositoryOrigin"] == {"repositoryName": "main", "repositoryLocationName": "constellation"}


def test_a_failing_instruction_is_reported_with_its_path(stack: Stack, api: httpx.Client):
    (stack.data_root / "empty-folder").mkdir(exist_ok=True)  # exists (checked before launch), holds nothing
    run_id = api.post("/execute", json=local_pipeline(path="empty-folder")).json()["run_id"]
    run = stack.wait_for_run(run_id)
    assert run["run_status"] == "FAILURE"
    assert run["error"]["path"] == "/instructions/0/parameters/data/parameters/data"
    assert "'empty-folder' holds no files" in run["error"]["message"]
    [failed] = api.get(f"/runs/{run_id}/results").json()["results"]  # what a failed run made: here, nothing
    assert failed["state"] == "failed" and "empty-folder" in failed["error"] and "output" not in failed


def inference(model: str, path: str) -> dict:
    return {
        "operation": "model_inference",
        "parameters": {"model": model, "data": {"operation": "import_from_local", "parameters": {"path": path}}},
    }


def test_a_failed_run_serves_what_its_instructions_made_before_the_failure(stack: Stack, api: httpx.Client):
    compared = {
        "operation": "compare_models",
        "parameters": {"results": [inference("fire-vit-a", "samples"), inference("fire-vit-b", "samples")]},
    }
    # The same models on the same images (run once, shared), but truth without a name column: fails as it runs.
    fails = {
        "operation": "compare_models",
        "parameters": {**compared["parameters"], "truth": {"operation": "mock_csv_data"}},
    }
    listed = {
        "operation": "dict_to_list",
        "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "samples"}}},
    }
    body = {
        "instructions": [
            {"operation": "deploy_model", "parameters": {"model": "fire-vit-a"}},
            {"operation": "deploy_model", "parameters": {"model": "fire-vit-b"}},
            compared,
            fails,
            listed,
        ]
    }
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=180)
    assert run["run_status"] == "FAILURE" and run["error"]["path"] == "/instructions/3", run

    answer = api.get(f"/runs/{run['run_id']}/results")
    assert answer.status_code == 200, answer.text
    deployed_a, deployed_b, comparison, failed, not_run = answer.json()["results"]
    assert deployed_a["output"]["model"] == "fire-vit-a" and deployed_b["output"]["model"] == "fire-vit-b"
    assert {m["model"] for m in comparison["output"]["models"]} == {"fire-vit-a", "fire-vit-b"}
    assert comparison["output"]["verdict"] and "state" not in comparison
    assert failed == {
        "path": "/instructions/3",
        "operation": "compare_models",
        "state": "failed",
        "error": failed["error"],
    }
    assert failed["error"].startswith("compare_models at /instructions/3 failed: ") and "'name'" in failed["error"]
    assert not_run == {
        "path": "/instructions/4",
        "operation": "dict_to_list",
        "state": "not run",
        "error": "not run: compare_models at /instructions/3 stopped the run before it",
    }
    assert stack.fetch(comparison["output"]["chart"]).startswith(b"\x89PNG")  # its files are served

    report = api.get(f"/runs/{run['run_id']}/report")  # the comparison that worked
    assert report.status_code == 200 and "fire-vit-b" in report.text
    page = html.unescape(report.text)  # a page that stands alone: its run and the pipeline it ran
    assert f"run <code>{run['run_id']}</code> · " in page
    assert json.loads(page[page.index("<pre>") + 5 : page.index("</pre>")]) == body
    no_report = api.get(f"/runs/{run['run_id']}/report", params={"path": "/instructions/3"})
    assert no_report.status_code == 409
    assert no_report.json()["message"].startswith("compare_models at /instructions/3 failed, so there is no report")


def test_idempotency_key_returns_the_same_run(api: httpx.Client):
    headers = {"Idempotency-Key": f"e2e-{time.time_ns()}"}
    first = api.post("/execute", json=local_pipeline(), headers=headers).json()
    again = api.post("/execute", json=local_pipeline(), headers=headers).json()
    assert again["run_id"] == first["run_id"] and again["replayed"] is True
    other = api.post("/execute", json=local_pipeline(width=20), headers=headers)
    assert other.status_code == 409 and "different pipeline" in other.json()["message"]


def test_a_cancel_sent_while_the_run_is_starting_cancels_it(stack: Stack, api: httpx.Client, slow_file_url: str):
    """Dagster refuses to terminate a STARTING run; the gateway waits for it to start, then cancels."""
    pipeline = {"instructions": [{"operation": "import_from_url", "parameters": {"url": slow_file_url}}]}
    run_id = api.post("/execute", json=pipeline).json()["run_id"]
    deadline = time.monotonic() + 30
    while (status := api.get(f"/runs/{run_id}").json()["run_status"]) in ("QUEUED", "NOT_STARTED"):
        assert time.monotonic() < deadline, "the run never left the queue"
        time.sleep(0.02)
    assert status == "STARTING", f"the run was {status} when first seen off the queue: nothing to test"
    cancelled = api.post(f"/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert stack.wait_for_run(run_id, timeout_s=45)["run_status"] == "CANCELED"


def test_unknown_run_is_404(api: httpx.Client):
    for path in ("/runs/00000000-0000-0000-0000-000000000000", "/runs/not-a-run/results", "/runs/../etc"):
        answer = api.get(path)
        assert answer.status_code == 404 and answer.json()["message"], path
    assert api.post("/runs/00000000-0000-0000-0000-000000000000/cancel").status_code == 404


def test_cancel_stops_a_running_pipeline(stack: Stack, api: httpx.Client, slow_file_url: str):
    pipeline = {"instructions": [{"operation": "import_from_url", "parameters": {"url": slow_file_url}}]}
    run_id = api.post("/execute", json=pipeline).json()["run_id"]
    deadline = time.monotonic() + 30
    while [e["state"] for e in api.get(f"/runs/{run_id}").json()["instructions"]] != [
        "running"
    ] and time.monotonic() < deadline:  # the download has begun
        time.sleep(0.2)
    cancelled = api.post(f"/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    run = stack.wait_for_run(run_id, timeout_s=45)
    assert run["run_status"] == "CANCELED"
    [stopped] = api.get(f"/runs/{run_id}/results").json()["results"]
    assert stopped["state"] == "failed" and "cancel" in stopped["error"], stopped
    again = api.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["message"]


def test_a_launchpad_run_with_a_bad_pipeline_reports_why(stack: Stack, api: httpx.Client):
    """Launched around the gateway (as from the launchpad): the code server checks the config when the run is
    created, so the launch is refused naming the instruction's path, and no run is created."""
    bad = [
        {
            "operation": "resize_image",
            "parameters": {
                "width": 0,
                "height": 5,
                "data": {"operation": "import_from_local", "parameters": {"path": "samples"}},
            },
        }
    ]
    selector = {"repositoryLocationName": "constellation", "repositoryName": "main", "jobName": "build_execute_job"}
    config = {"ops": {"generate_dynamic_job_configs": {"config": {"raw_input": bad}}}}
    launch = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
        ... on RunConfigValidationInvalid { errors { message } } } }"""
    runs_before = api.get("/runs").json()["runs"]
    params = {"selector": selector, "runConfigData": config}
    launched = httpx.post(stack.dagster_url + "/graphql", json={"query": launch, "variables": {"p": params}}).json()
    refused = launched["data"]["launchRun"]
    assert refused["__typename"] != "LaunchRunSuccess", refused
    assert "/instructions/0/parameters/width" in str(refused) and "minimum of 1" in str(refused)
    assert api.get("/runs").json()["runs"] == runs_before
