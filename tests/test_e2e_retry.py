"""Resuming a failed run through the gateway (the same re-execution as the Dagster UI's *from failure*)."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from conftest import Stack

pytestmark = pytest.mark.e2e


def pipeline(folder: str) -> dict:
    def resized(path: str, width: int) -> dict:
        return {"operation": "resize_image", "parameters": {"width": width, "height": width, "data": {
            "operation": "dict_to_list", "parameters": {"data": {
                "operation": "import_from_local", "parameters": {"path": path}}}}}}

    return {"instructions": [resized("samples", 40), resized(folder, 20)]}


def test_a_resumed_run_reuses_what_succeeded_and_finishes(stack: Stack, api: httpx.Client):
    folder = f"arrives-later-{time.time_ns()}"
    failed = stack.wait_for_run(api.post("/execute", json=pipeline(folder)).json()["run_id"])
    assert failed["run_status"] == "FAILURE" and folder in failed["error"]["message"]
    shutil.copytree(stack.data_root / "samples" / "Fire", stack.data_root / folder)  # the missing data arrives

    answer = api.post(f"/runs/{failed['run_id']}/retry")
    assert answer.status_code == 200, answer.text
    retried = answer.json()
    assert retried["status"] == "success" and retried["parent_run_id"] == failed["run_id"]
    run = stack.wait_for_run(retried["run_id"])
    assert run["run_status"] == "SUCCESS", run
    states = {i["path"]: i["state"] for i in run["instructions"]}
    assert states["/instructions/0"] == "reused"
    assert states["/instructions/0/parameters/data/parameters/data"] == "reused"
    assert states["/instructions/1"] == "succeeded"
    first, second = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    assert first["output"]["count"] == 12 and second["output"]["count"] == 4
    assert all(stack.fetch(f["uri"]) for f in first["output"]["files"]), "reused files are still served"


def test_only_a_failed_run_can_be_resumed(stack: Stack, api: httpx.Client):
    done = stack.wait_for_run(api.post("/execute", json=pipeline("samples")).json()["run_id"])
    assert done["run_status"] == "SUCCESS"
    refused = api.post(f"/runs/{done['run_id']}/retry")
    assert refused.status_code == 409 and "only a failed or cancelled run" in refused.json()["message"]
    assert api.post("/runs/00000000-0000-4000-8000-000000000000/retry").status_code == 404
