"""import_from_s3 and export_to_s3 through the real stack, against the test S3 server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from harness import Stack
from services_s3 import ARCHIVE_MEMBERS, SAMPLE_BUCKET, SAMPLE_IMAGES, s3_client

pytestmark = pytest.mark.e2e


def resized_from_s3(width: int, **where: str) -> dict:
    """resize_image(dict_to_list(import_from_s3(bucket, **where)))."""
    imported = {"operation": "import_from_s3", "parameters": {"bucket": SAMPLE_BUCKET, **where}}
    listed = {"operation": "dict_to_list", "parameters": {"data": imported}}
    return {"operation": "resize_image", "parameters": {"data": listed, "width": width, "height": width}}


def run_to_end(stack: Stack, api: httpx.Client, *instructions: dict) -> dict:
    answer = api.post("/execute", json={"instructions": list(instructions)})
    assert answer.status_code == 200, answer.text
    return stack.wait_for_run(answer.json()["run_id"])


def test_images_under_a_prefix_are_imported_and_resized(stack: Stack, api: httpx.Client):
    run = run_to_end(stack, api, resized_from_s3(40, prefix="images/"))
    assert run["run_status"] == "SUCCESS", run
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    assert [f["name"] for f in result["output"]["files"]] == sorted(SAMPLE_IMAGES)
    for item in result["output"]["files"]:
        assert Image.open(io.BytesIO(stack.fetch(item["uri"]))).size == (40, 40)


def test_an_export_to_s3_can_be_read_back(stack: Stack, api: httpx.Client, s3_env: dict[str, str]):
    exported = {
        "operation": "export_to_s3",
        "parameters": {
            "data": resized_from_s3(24, key="archives/images.zip"),
            "bucket": SAMPLE_BUCKET,
            "prefix": "e2e-exports",
        },
    }
    run = run_to_end(stack, api, exported)
    assert run["run_status"] == "SUCCESS", run
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    output = result["output"]
    assert output["destination"] == f"s3://{SAMPLE_BUCKET}/e2e-exports/{run['run_id']}/"
    assert [item["name"] for item in output["items"]] == sorted(ARCHIVE_MEMBERS)
    client = s3_client(s3_env)
    for item in output["items"]:
        key = f"e2e-exports/{run['run_id']}/{item['name']}"
        assert item["uri"] == f"s3://{SAMPLE_BUCKET}/{key}"
        body = client.get_object(Bucket=SAMPLE_BUCKET, Key=key)["Body"].read()
        assert Image.open(io.BytesIO(body)).size == (24, 24)


def test_a_missing_bucket_or_object_is_refused_before_launch_naming_it(stack: Stack, api: httpx.Client):
    def listed(**where) -> dict:
        return {
            "operation": "dict_to_list",
            "parameters": {"data": {"operation": "import_from_s3", "parameters": where}},
        }

    body = {
        "instructions": [
            listed(bucket="no-such-bucket", key="a.jpg"),
            listed(bucket=SAMPLE_BUCKET, key="images/Fire/no-such-image.jpg"),
        ]
    }
    answer = api.post("/execute", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == [
        {
            "path": "/instructions/0/parameters/data/parameters/bucket",
            "message": "bucket 'no-such-bucket' does not exist",
        },
        {
            "path": "/instructions/1/parameters/data/parameters/key",
            "message": f"no object 'images/Fire/no-such-image.jpg' in bucket '{SAMPLE_BUCKET}'",
        },
    ]


LOGS = """query($id: ID!) { logsForRun(runId: $id) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message }
    ... on ExecutionStepFailureEvent { error { message stack cause { message stack } } }
    ... on RunFailureEvent { error { message stack } } } }
  ... on PythonError { message } } }"""


def test_the_s3_secret_shows_nowhere(stack: Stack, api: httpx.Client, s3_env: dict[str, str]):
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    good = run_to_end(stack, api, resized_from_s3(16, key="images/Smoke/smoke_0.jpg"))
    bad = run_to_end(stack, api, resized_from_s3(16, prefix="no/such/folder/"))
    assert (good["run_status"], bad["run_status"]) == ("SUCCESS", "FAILURE")
    for run in (good, bad):
        answer = httpx.post(f"{stack.dagster_url}/graphql", json={"query": LOGS, "variables": {"id": run["run_id"]}})
        logs = answer.json()
        assert "errors" not in logs and logs["data"]["logsForRun"]["__typename"] == "EventConnection", logs
        events = logs["data"]["logsForRun"]["events"]
        assert any("import_from_s3" in (e.get("message") or "") for e in events)
        assert secret not in json.dumps(logs)
        assert secret not in json.dumps(api.get(f"/runs/{run['run_id']}").json())
    assert "no objects under s3://constellation-samples/no/such/folder/" in bad["error"]["message"]
    # Whatever Dagster and the runs stored on disk: event log, run storage, compute logs, results.
    for folder in (stack.home, stack.artifact_root):
        leaking = [p for p in Path(folder).rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert not leaking
