"""import_from_database, table_to_images and export_to_database through the real stack, against
the session's PostgreSQL, MariaDB and SQLite connections."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from constellation_cli import render
from harness import Stack
from sample_data import SAMPLES_TABLE
from services_databases import SessionDatabases

pytestmark = pytest.mark.e2e


def imported(connection: str, **where) -> dict:
    return {"operation": "import_from_database", "parameters": {"connection": connection, **where}}


def run_to_end(stack: Stack, api: httpx.Client, *instructions: dict) -> dict:
    answer = api.post("/execute", json={"instructions": list(instructions)})
    assert answer.status_code == 200, answer.text
    return stack.wait_for_run(answer.json()["run_id"])


@pytest.fixture
def maria_table(test_databases: SessionDatabases) -> Iterator[str]:
    name = f"constellation_e2e_{uuid.uuid4().hex[:12]}"
    yield name
    test_databases.drop("maria", name)


def test_rows_go_from_postgresql_to_mariadb_tagged_with_the_run(stack, api, test_databases, maria_table):
    query = f"SELECT id, name, label, taken_at, score FROM {SAMPLES_TABLE} WHERE label = :label ORDER BY id"
    exported = {
        "operation": "export_to_database",
        "parameters": {
            "connection": "maria",
            "table": maria_table,
            "data": imported("samples", query=query, params={"label": "fire"}),
        },
    }
    run = run_to_end(stack, api, exported)
    assert run["run_status"] == "SUCCESS", run
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    assert result["output"] == {
        "type": "Exported",
        "destination": f"database:maria/{maria_table}",
        "count": 1,
        "rows": 2,
        "files": 0,
        "written": "2 rows",
        "items": [{"table": maria_table, "rows": 2, "run_id": run["run_id"]}],
    }
    with test_databases.admin["maria"].connect() as conn:
        rows = conn.execute(sa.text(f"SELECT run_id, name, taken_at, score FROM {maria_table} ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [
        (run["run_id"], "fire-1", "2024-05-01T12:30:15", "1.125"),
        (run["run_id"], "fire-2", "2024-05-02T12:30:15", "2.125"),
    ]


def test_predictions_go_to_a_database_table_a_row_per_input(stack, api, test_databases, maria_table):
    predicted = {
        "operation": "model_inference",
        "parameters": {
            "model": "fire-vit-a",
            "data": {"operation": "import_from_local", "parameters": {"path": "samples"}},
        },
    }
    run = run_to_end(
        stack,
        api,
        {"operation": "deploy_model", "parameters": {"model": "fire-vit-a"}},
        {
            "operation": "export_to_database",
            "parameters": {"data": predicted, "connection": "maria", "table": maria_table},
        },
    )
    assert run["run_status"] == "SUCCESS", run
    images = sorted(
        p.relative_to(stack.data_root / "samples").as_posix()
        for p in (stack.data_root / "samples").rglob("*")
        if p.is_file()
    )
    exported = api.get(f"/runs/{run['run_id']}/results").json()["results"][1]["output"]
    assert (exported["rows"], exported["files"], exported["written"]) == (len(images), 0, f"{len(images)} rows")
    assert render.output_summary(exported) == f"Exported: {len(images)} rows to database:maria/{maria_table}"
    [progress] = [e for e in run["instructions"] if e["path"] == "/instructions/1"]
    assert progress["summary"] == f"{len(images)} rows written to database:maria/{maria_table}"
    with test_databases.admin["maria"].connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT run_id, name, model, label, score, labels FROM {maria_table} ORDER BY name")
        ).all()
    assert [r.name for r in rows] == images and {(r.run_id, r.model) for r in rows} == {(run["run_id"], "fire-vit-a")}
    assert all(r.label == json.loads(r.labels)[0] and 0 <= float(r.score) <= 1 for r in rows)


def test_images_held_in_a_table_are_resized(stack, api):
    images = {
        "operation": "table_to_images",
        "parameters": {"image_column": "image", "name_column": "name", "data": imported("lite", table=SAMPLES_TABLE)},
    }
    run = run_to_end(
        stack, api, {"operation": "resize_image", "parameters": {"data": images, "width": 20, "height": 10}}
    )
    assert run["run_status"] == "SUCCESS", run
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    files = result["output"]["files"]
    assert [f["name"] for f in files] == ["fire-1.png", "fire-2.jpg", "forest-1.png", "lake-1.jpg"]
    for item in files:
        assert Image.open(io.BytesIO(stack.fetch(item["uri"]))).size == (20, 10)


@pytest.mark.parametrize("connection", ["samples", "maria", "lite"])
def test_a_hostile_query_is_refused_before_launch_and_the_table_keeps_its_rows(stack, api, test_databases, connection):
    images = {
        "operation": "table_to_images",
        "parameters": {"image_column": "image", "data": imported(connection, query=f"DELETE FROM {SAMPLES_TABLE}")},
    }
    body = {"instructions": [{"operation": "dict_to_list", "parameters": {"data": images}}]}
    answer = api.post("/execute", json=body)
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["path"] == "/instructions/0/parameters/data/parameters/data/parameters/query"
    assert f"connection '{connection}' is read-only for imports" in error["message"]
    assert test_databases.count(connection, SAMPLES_TABLE) == 4


LOGS = """query($id: ID!) { logsForRun(runId: $id) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message }
    ... on ExecutionStepFailureEvent { error { message stack cause { message stack } } }
    ... on RunFailureEvent { error { message stack } } } }
  ... on PythonError { message } } }"""


def test_the_database_password_shows_nowhere(stack, api, test_databases):
    password = test_databases.reader_password
    good = run_to_end(stack, api, imported("reader", table=SAMPLES_TABLE, limit=2))
    bad = run_to_end(stack, api, imported("reader", query="SELECT * FROM no_such_table"))
    assert (good["run_status"], bad["run_status"]) == ("SUCCESS", "FAILURE")
    assert bad["error"] == {
        "path": "/instructions/0",
        "operation": "import_from_database",
        "message": "database connection 'reader': relation \"no_such_table\" does not exist",
    }
    for run in (good, bad):
        answer = httpx.post(f"{stack.dagster_url}/graphql", json={"query": LOGS, "variables": {"id": run["run_id"]}})
        logs = answer.json()
        assert "errors" not in logs and logs["data"]["logsForRun"]["__typename"] == "EventConnection", logs
        assert any("import_from_database" in (e.get("message") or "") for e in logs["data"]["logsForRun"]["events"])
        assert password not in json.dumps(logs)
        assert password not in api.get(f"/runs/{run['run_id']}").text
    assert password not in api.get(f"/runs/{good['run_id']}/results").text
    # Whatever Dagster and the runs stored on disk: event log, run storage, compute logs, results; and the stack's log.
    files = [stack.log, *(p for folder in (stack.home, stack.artifact_root) for p in Path(folder).rglob("*"))]
    assert not [p for p in files if p.is_file() and password.encode() in p.read_bytes()]
