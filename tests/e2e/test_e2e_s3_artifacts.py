"""The stack with CONSTELLATION_ARTIFACT_ROOT=s3://bucket/prefix (the moto server): runs keep nothing locally.

Progress, results and every instruction's files are in the bucket; the gateway reads and serves
them from there; a failed run resumed through the gateway takes what its parent completed from
the bucket.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from harness import Stack, local_pipeline, start_stack, stop_stack
from samples import sample_with
from services_s3 import s3_client

pytestmark = pytest.mark.e2e

BUCKET = "constellation-runs"
PREFIX = "team/constellation"


@pytest.fixture(scope="module")
def s3_stack(
    tmp_path_factory: pytest.TempPathFactory, s3_env: dict[str, str], stack_env: dict[str, str]
) -> Iterator[tuple[Stack, Path]]:
    """The stack with its artifact root in the bucket; the folder its processes use for temporary files."""
    s3_client(s3_env).create_bucket(Bucket=BUCKET)
    base = tmp_path_factory.mktemp("s3stack")
    scratch = base / "tmp"
    scratch.mkdir()
    running = start_stack(
        base, {**stack_env, "CONSTELLATION_ARTIFACT_ROOT": f"s3://{BUCKET}/{PREFIX}", "TMPDIR": str(scratch)}
    )
    yield running, scratch
    stop_stack(running)


@pytest.fixture
def api(s3_stack: tuple[Stack, Path]) -> Iterator[httpx.Client]:
    with s3_stack[0].client() as client:
        yield client


def stored_keys(s3_env: dict[str, str], run_id: str) -> list[str]:
    pages = (
        s3_client(s3_env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/runs/{run_id}/")
    )
    return [o["Key"][len(f"{PREFIX}/runs/{run_id}/") :] for page in pages for o in page.get("Contents", ())]


def stored_json(s3_env: dict[str, str], run_id: str, name: str) -> dict:
    answer = s3_client(s3_env).get_object(Bucket=BUCKET, Key=f"{PREFIX}/runs/{run_id}/{name}")
    return json.loads(answer["Body"].read())


def nothing_local(stack: Stack, scratch: Path) -> None:
    local = [p for p in stack.artifact_root.rglob("*")] if stack.artifact_root.exists() else []
    assert local == [], f"run files in the local artifact folder: {local[:5]}"
    assert not (Path.cwd() / "s3:").exists(), "the root was taken for a folder named s3:"
    left = sorted(p.name for p in scratch.glob("constellation-run-*"))
    assert left == [], f"scratch folders left behind: {left}"


def test_a_run_keeps_its_files_progress_and_results_in_the_bucket(s3_stack, api: httpx.Client, s3_env: dict[str, str]):
    stack, scratch = s3_stack
    run = stack.wait_for_run(api.post("/execute", json=local_pipeline(width=24)).json()["run_id"])
    assert run["run_status"] == "SUCCESS", (run, stack.log_tail())
    assert run["done"] == run["total"] == 3, "progress is read from the bucket"
    assert {i["state"] for i in run["instructions"]} == {"succeeded"}

    keys = stored_keys(s3_env, run["run_id"])
    assert "progress.json" in keys and "results.json" in keys
    assert sum(k.startswith("kept/") and k != "kept/manifest.json" for k in keys) == 3, "every output is kept"
    stored = stored_json(s3_env, run["run_id"], "results.json")["results"][0]["output"]["files"]
    assert all(f["uri"].startswith(f"s3://{BUCKET}/{PREFIX}/runs/{run['run_id']}/nodes/") for f in stored)
    assert stored_json(s3_env, run["run_id"], "progress.json")["done"] == 3

    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    files = result["output"]["files"]
    assert len(files) == 12
    for item in files:
        assert item["uri"].startswith(f"{stack.api_url}/runs/{run['run_id']}/files/nodes/"), item
        assert Image.open(io.BytesIO(stack.fetch(item["uri"]))).size == (24, 24)
    for wrong in ("../progress.json", "nodes/none.png", "nodes//x"):
        assert api.get(f"/runs/{run['run_id']}/files/{wrong}").status_code == 404
    nothing_local(stack, scratch)


def test_the_report_of_a_comparison_is_served_from_the_bucket(s3_stack, api: httpx.Client):
    stack, scratch = s3_stack
    body = sample_with('"fire-risk-tree"', "compare_models")
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=180)
    assert run["run_status"] == "SUCCESS", (run, stack.log_tail())
    [comparison] = [
        r["output"]
        for r in api.get(f"/runs/{run['run_id']}/results").json()["results"]
        if r["operation"] == "compare_models"
    ]
    page = api.get(f"/runs/{run['run_id']}/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert comparison["verdict"].split()[0] in page.text
    assert comparison["chart"].startswith(f"{stack.api_url}/runs/{run['run_id']}/files/")
    chart = Image.open(io.BytesIO(stack.fetch(comparison["chart"])))
    assert chart.format == "PNG"
    nothing_local(stack, scratch)


def resized_pair(folder: str) -> dict:
    def resized(path: str, width: int) -> dict:
        return {
            "operation": "resize_image",
            "parameters": {
                "width": width,
                "height": width,
                "data": {
                    "operation": "dict_to_list",
                    "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": path}}},
                },
            },
        }

    return {"instructions": [resized("samples", 40), resized(folder, 20)]}


def test_a_failed_run_resumes_from_the_bucket(s3_stack, api: httpx.Client, s3_env: dict[str, str]):
    stack, scratch = s3_stack
    folder = f"arrives-later-{time.time_ns()}"
    (stack.data_root / folder).mkdir()  # there, but empty: the launch is checked, the run fails
    failed = stack.wait_for_run(api.post("/execute", json=resized_pair(folder)).json()["run_id"])
    assert failed["run_status"] == "FAILURE" and folder in failed["error"]["message"]
    parent_keys = stored_keys(s3_env, failed["run_id"])
    kept = [k for k in parent_keys if k.startswith("kept/") and k != "kept/manifest.json"]
    assert len(kept) == 3, "completed instructions are in the bucket"
    # the missing data arrives
    shutil.copytree(stack.data_root / "samples" / "Fire", stack.data_root / folder, dirs_exist_ok=True)

    answer = api.post(f"/runs/{failed['run_id']}/retry")
    assert answer.status_code == 200, answer.text
    run = stack.wait_for_run(answer.json()["run_id"])
    assert run["run_status"] == "SUCCESS", (run, stack.log_tail())
    states = {i["path"]: i["state"] for i in run["instructions"]}
    assert states["/instructions/0"] == "reused"
    assert states["/instructions/0/parameters/data/parameters/data"] == "reused"
    assert states["/instructions/1"] == "succeeded"
    first, second = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    assert first["output"]["count"] == 12 and second["output"]["count"] == 4
    # Reused files are the parent's objects, served from its folder; the new ones are this run's.
    assert all(f["uri"].startswith(f"{stack.api_url}/runs/{failed['run_id']}/files/") for f in first["output"]["files"])
    assert all(f["uri"].startswith(f"{stack.api_url}/runs/{run['run_id']}/files/") for f in second["output"]["files"])
    assert all(Image.open(io.BytesIO(stack.fetch(f["uri"]))).size == (40, 40) for f in first["output"]["files"])
    assert all(Image.open(io.BytesIO(stack.fetch(f["uri"]))).size == (20, 20) for f in second["output"]["files"])
    nothing_local(stack, scratch)


def test_an_export_into_the_runs_prefix_is_refused(s3_stack, api: httpx.Client, s3_env: dict[str, str]):
    """export_to_s3 cannot write where runs keep their kept outputs (it would forge what a retry reads);
    beside them, the default prefix (constellation/<run id>/) of the same bucket still takes exports."""
    stack, scratch = s3_stack

    def body(**where) -> dict:
        data = {"operation": "import_from_local", "parameters": {"path": "samples/Fire"}}
        return {"instructions": [{"operation": "export_to_s3", "parameters": {"data": data, **where}}]}

    def export(**where) -> dict:
        return stack.wait_for_run(api.post("/execute", json=body(**where)).json()["run_id"])

    # Objects would land in its own run folder: refused before launch (the code location knows the artifact root).
    refused = api.post("/execute", json=body(bucket=BUCKET, prefix=f"{PREFIX}/runs"))
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["path"] == "/instructions/0/parameters/prefix"
    assert (
        f"CONSTELLATION_ARTIFACT_ROOT keeps runs under s3://{BUCKET}/{PREFIX}/runs/; choose another" in error["message"]
    )

    exported = export(bucket=BUCKET)
    assert exported["run_status"] == "SUCCESS", (exported, stack.log_tail())
    [result] = api.get(f"/runs/{exported['run_id']}/results").json()["results"]
    assert result["output"]["destination"] == f"s3://{BUCKET}/constellation/{exported['run_id']}/"
    nothing_local(stack, scratch)
