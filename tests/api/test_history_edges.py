"""Odd cursors and file paths on the history and run routes: each gets a clear 4xx, never a 500 or a 503."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest

from harness import Stack, local_pipeline

pytestmark = pytest.mark.e2e

FINGERPRINT = "sha256:" + "e7" * 32


def cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def deeply_nested() -> str:
    """A cursor of valid base64 whose JSON nests past Python's recursion limit (the query stays under 2000)."""
    return base64.urlsafe_b64encode(b"[" * 1400).decode().rstrip("=")


@pytest.fixture(scope="module")
def compared(stack: Stack) -> str:
    """A dataset with one comparison in the stack's catalog, as a compare_models run records it."""
    from dagster import AssetMaterialization, DagsterInstance, MetadataValue

    dataset = f"local/edges-{uuid.uuid4().hex[:8]}"
    facts = {
        "dataset": dataset,
        "fingerprint": FINGERPRINT,
        "metric": "accuracy",
        "higher_is_better": True,
        "models": [{"model": "a", "value": 0.9, "ci": [0.8, 1.0]}, {"model": "b", "value": 0.7, "ci": [0.6, 0.8]}],
    }
    instance = DagsterInstance.from_config(str(stack.home))
    try:
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key=["comparisons", *dataset.split("/")], metadata={"comparison": MetadataValue.json(facts)}
            )
        )
    finally:
        instance.dispose()
    return dataset


@pytest.mark.parametrize("route", ["/comparisons", "/comparisons/leaderboard"])
def test_a_cursor_nested_too_deep_is_refused(api: httpx.Client, compared: str, route: str):
    answer = api.get(route, params={"dataset": compared, "cursor": deeply_nested()})
    assert answer.status_code == 422, answer.text
    assert "cursor" in answer.json()["message"]
    assert api.get("/health").status_code == 200


@pytest.mark.parametrize("timestamp_ms", [10**17, 2**63, 10**30, -(10**17)])
def test_a_cursor_out_of_any_date_is_refused_not_blamed_on_dagster(api: httpx.Client, compared: str, timestamp_ms: int):
    answer = api.get("/comparisons", params={"dataset": compared, "cursor": cursor([timestamp_ms, "x", compared])})
    assert answer.status_code == 422, answer.text
    assert "cursor" in answer.json()["message"]


def test_the_leaderboard_pages_with_its_own_cursor(api: httpx.Client, compared: str):
    first = api.get("/comparisons/leaderboard", params={"dataset": compared, "limit": 1}).json()
    assert [m["model"] for m in first["models"]] == ["a"] and first["next_cursor"]
    second = api.get(
        "/comparisons/leaderboard", params={"dataset": compared, "limit": 1, "cursor": first["next_cursor"]}
    ).json()
    assert [m["model"] for m in second["models"]] == ["b"] and second["next_cursor"] is None


@pytest.fixture(scope="module")
def run_id(stack: Stack) -> str:
    with stack.client() as client:
        answer = client.post("/execute", json=local_pipeline())
    assert answer.status_code == 200, answer.text
    return str(stack.wait_for_run(answer.json()["run_id"])["run_id"])


@pytest.mark.parametrize("relative", ["x" * 300, "nodes/" + "y" * 256 + ".jpg", "a/" * 3000 + "b"])
def test_a_file_name_no_filesystem_can_hold_is_not_found(api: httpx.Client, run_id: str, relative: str):
    answer = api.get(f"/runs/{run_id}/files/{relative}")
    assert answer.status_code == 404, answer.text
    assert answer.json()["message"].startswith("no file ")
    assert api.get(f"/runs/{run_id}/files/progress.json").status_code == 200
