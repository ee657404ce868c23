"""The seed's Google Drive pipeline end to end: gateway → Dagster → the real Drive client → the fake API."""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest
from PIL import Image

from fake_drive import FakeDrive, ServiceAccount
from harness import Stack
from services_drive import SEED_FILE_ID

pytestmark = pytest.mark.e2e

EVENTS = """query($id: ID!) { logsForRun(runId: $id) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message level } } }
    ... on PythonError { message } } }"""


def seed_pipeline(file_id: str, width: int, height: int) -> dict:
    """The seed README's chain: import_from_google_drive → dict_to_list → resize_image."""
    imported = {"operation": "import_from_google_drive", "parameters": {"file_id": file_id}}
    listed = {"operation": "dict_to_list", "parameters": {"data": imported}}
    return {
        "instructions": [
            {"operation": "resize_image", "parameters": {"data": listed, "width": width, "height": height}}
        ]
    }


def run_events(stack: Stack, run_id: str) -> str:
    """Every message of the run's stored Dagster event log, as one text."""
    answer = httpx.post(stack.dagster_url + "/graphql", json={"query": EVENTS, "variables": {"id": run_id}}).json()
    found = answer["data"]["logsForRun"]
    assert found["__typename"] == "EventConnection", found
    return "\n".join(event.get("message") or "" for event in found["events"])


def secrets_of(fake: FakeDrive, account: ServiceAccount) -> list[str]:
    """What must never be shown: the access tokens issued, and every line of the private key."""
    assert fake.issued_tokens, "the stack never signed in as the service account"
    return [*fake.issued_tokens, *account.private_key_pem.splitlines()[1:-1]]


def test_the_seed_pipeline_resizes_the_images_of_the_drive_zip(
    stack: Stack, api: httpx.Client, fake_drive: FakeDrive, drive_account: ServiceAccount
):
    launched = api.post("/execute", json=seed_pipeline(SEED_FILE_ID, 40, 30)).json()
    assert launched["status"] == "success", launched
    run = stack.wait_for_run(launched["run_id"])
    assert run["run_status"] == "SUCCESS", f"{run}\n{stack.log_tail()}"
    assert run["done"] == run["total"] == 3
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    with zipfile.ZipFile(io.BytesIO(fake_drive.items[SEED_FILE_ID].content or b"")) as archive:
        expected = sorted(archive.namelist())
    assert [f["name"] for f in result["output"]["files"]] == expected
    for item in result["output"]["files"]:
        with Image.open(io.BytesIO(stack.fetch(item["uri"]))) as image:
            assert image.size == (40, 30)
    assert any(c["iss"] == drive_account.email for c in fake_drive.token_claims)

    events = run_events(stack, run["run_id"])
    assert "import_from_google_drive finished" in events
    for secret in secrets_of(fake_drive, drive_account):
        assert secret not in events


def test_a_missing_drive_file_fails_the_run_naming_the_id_and_nothing_secret(
    stack: Stack, api: httpx.Client, fake_drive: FakeDrive, drive_account: ServiceAccount
):
    missing = "1noSuchFileOnThisDrive_x"
    run = stack.wait_for_run(api.post("/execute", json=seed_pipeline(missing, 8, 8)).json()["run_id"])
    assert run["run_status"] == "FAILURE"
    assert run["error"]["path"] == "/instructions/0/parameters/data/parameters/data"
    assert missing in run["error"]["message"] and f"File not found: {missing}." in run["error"]["message"]
    events = run_events(stack, run["run_id"])
    assert missing in events
    for secret in secrets_of(fake_drive, drive_account):
        assert secret not in events and secret not in run["error"]["message"]
        assert secret not in json.dumps(run)
    assert all(secret not in stack.log.read_text(errors="replace") for secret in secrets_of(fake_drive, drive_account))
