"""The gateway in process, in front of the real Dagster of the test stack."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.config import Settings
from api.main import create_app
from harness import Stack, free_port, local_pipeline

pytestmark = pytest.mark.e2e

PROTECTED = [
    ("POST", "/execute"),
    ("POST", "/validate"),
    ("GET", "/runs"),
    ("GET", "/runs/00000000-0000-0000-0000-000000000000"),
    ("GET", "/runs/00000000-0000-0000-0000-000000000000/results"),
    ("POST", "/runs/00000000-0000-0000-0000-000000000000/cancel"),
    ("GET", "/operations"),
]


def gateway(**settings) -> TestClient:
    return TestClient(create_app(Settings(**settings)), base_url="http://localhost")


@pytest.fixture
def locked(stack: Stack) -> Iterator[TestClient]:
    with gateway(dagster_url=stack.dagster_url, artifact_root=stack.artifact_root, api_token="s3cr3t-t0ken") as c:
        yield c


@pytest.mark.parametrize("method,path", PROTECTED)
def test_token_is_required_on_every_route_but_health(locked: TestClient, method: str, path: str):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cr3t-t0ken"}):
        answer = locked.request(method, path, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["status"] == "failure" and "bearer token" in answer.json()["message"]
    assert locked.get("/health").status_code == 200


def test_right_token_is_let_through(locked: TestClient):
    answer = locked.post("/validate", json=local_pipeline(), headers={"Authorization": "Bearer s3cr3t-t0ken"})
    assert answer.status_code == 200 and answer.json() == {
        "status": "success",
        "message": "the pipeline is valid",
        "instructions": 1,
        "nodes": 3,
    }


def test_placeholder_token_is_refused_at_start():
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(api_token="changeme")


def test_dagster_down_is_503_with_a_message():
    with gateway(dagster_url=f"http://127.0.0.1:{free_port()}") as client:
        for method, path in [("POST", "/execute"), ("POST", "/validate"), ("GET", "/operations")]:
            answer = client.request(method, path, json=local_pipeline())
            assert answer.status_code == 503, answer.text
            assert answer.json()["status"] == "failure" and "Dagster is unreachable" in answer.json()["message"]
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["dagster"] == "unreachable"


def test_invalid_pipeline_is_refused_even_when_dagster_is_down():
    with gateway(dagster_url=f"http://127.0.0.1:{free_port()}") as client:
        answer = client.post("/execute", content=b"{not json", headers={"content-type": "application/json"})
        assert answer.status_code == 422 and "malformed JSON" in answer.json()["message"]


def test_catalog_lists_every_op_with_its_schema(stack: Stack):
    with gateway(dagster_url=stack.dagster_url) as client:
        catalog = client.get("/operations").json()
    ops = {op["name"]: op for op in catalog["operations"]}
    assert {"import_from_local", "import_from_url", "dict_to_list", "resize_image", "batch_formatted_data"} <= set(ops)
    width = ops["resize_image"]["parameters_schema"]["properties"]["width"]
    assert width["type"] == "integer" and width["minimum"] == 1 and width["description"]
    assert ops["dict_to_list"]["output"] == "FileList" and "FileList" in catalog["types"]


def test_openapi_documents_every_route(stack: Stack):
    with gateway(dagster_url=stack.dagster_url) as client:
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/execute",
        "/validate",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/results",
        "/runs/{run_id}/cancel",
        "/operations",
        "/health",
    } <= set(paths)
    assert "requestBody" in paths["/execute"]["post"]


def test_error_messages_are_cut_to_2000_characters(stack: Stack):
    """A stored error (an archive's 100 MB member name was served whole) comes back cut, saying how much."""
    from api.errors import failure
    from orchestrator import runs

    answer = json.loads(failure(502, "x" * 100_000, [{"path": "/a", "message": "y" * 100_000}]).body)
    assert len(answer["message"]) < 2_100 and answer["message"].endswith("[98000 more characters cut]")
    assert len(answer["errors"][0]["message"]) < 2_100
    (stack.data_root / "empty-folder").mkdir(exist_ok=True)  # exists (checked before launch), holds nothing
    with gateway(dagster_url=stack.dagster_url, artifact_root=stack.artifact_root) as client:
        run_id = client.post("/execute", json=local_pipeline(path="empty-folder")).json()["run_id"]
        assert stack.wait_for_run(run_id)["run_status"] == "FAILURE"
        progress = runs.run_dir(stack.artifact_root, run_id) / runs.PROGRESS
        stored = json.loads(progress.read_text())  # as a run written before messages were cut would hold it
        stored["error"]["message"] = "z" * 100_000
        stored["instructions"][-1]["error"] = "z" * 100_000
        progress.write_text(json.dumps(stored))
        served = client.get(f"/runs/{run_id}").json()
    assert len(served["error"]["message"]) < 2_100 and "more characters cut]" in served["error"]["message"]
    assert all(len(str(i.get("error", ""))) < 2_100 for i in served["instructions"])


def test_runs_are_listed_newest_first_a_page_at_a_time_and_by_state(stack: Stack):
    with gateway(dagster_url=stack.dagster_url, artifact_root=stack.artifact_root) as client:
        overflows = {
            "instructions": [
                {
                    "operation": "math_block",
                    "parameters": {  # fails as it runs
                        "operand": "pow",
                        "constant": 400,
                        "data": {"operation": "mock_csv_data"},
                    },
                }
            ]
        }
        launched = [
            client.post("/execute", json=body).json()["run_id"]
            for body in (local_pipeline(), overflows, local_pipeline())
        ]
        for run_id in launched:
            stack.wait_for_run(run_id)
        first, failed, last = launched

        seen: list[dict] = []
        cursor = None
        while first not in [r["run_id"] for r in seen]:  # pages of 2 until the oldest of ours
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/runs", params=params).json()
            assert len(page["runs"]) <= 2 and page["next_cursor"] in (None, page["runs"][-1]["run_id"])
            seen += page["runs"]
            cursor = page["next_cursor"]
            assert cursor or first in [r["run_id"] for r in seen]
        ids = [r["run_id"] for r in seen]
        assert len(set(ids)) == len(ids)  # no run twice across pages
        ours = [r for r in seen if r["run_id"] in launched]
        assert [r["run_id"] for r in ours] == [last, failed, first]
        assert [r["created_at"] for r in seen] == sorted((r["created_at"] for r in seen), reverse=True)
        newest = ours[0]
        assert newest["run_status"] == "SUCCESS" and newest["operations"] == ["resize_image"]
        assert newest["done"] == newest["total"] == 3 and newest["duration_s"] > 0 and newest["error"] is None
        assert newest["run_url"] == f"{stack.dagster_url}/runs/{last}"

        failures = client.get("/runs", params={"state": "FAILURE", "limit": 100}).json()["runs"]
        assert {r["run_status"] for r in failures} == {"FAILURE"}
        [ours_failed] = [r for r in failures if r["run_id"] == failed]
        assert ours_failed["error"]["path"] == "/instructions/0" and ours_failed["operations"] == ["math_block"]
        assert "beyond the largest float" in ours_failed["error"]["message"]
        both = client.get("/runs", params={"state": "failure,success", "limit": 100}).json()["runs"]
        assert set(launched) <= {r["run_id"] for r in both}

        wrong = client.get("/runs", params={"state": "DONE"})
        assert wrong.status_code == 422 and "'DONE' is not a run state" in wrong.json()["message"]
        assert "CANCELED" in wrong.json()["message"]
        assert client.get("/runs", params={"cursor": "../etc"}).status_code == 422
        assert client.get("/runs", params={"limit": 0}).status_code == 422
