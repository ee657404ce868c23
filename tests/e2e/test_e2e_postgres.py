"""The local stack on PostgreSQL storage: runs complete, outlive a webserver restart, and wait for the daemon.

The processes are `make run`'s own (scripts/stack.py's commands), started one by one so that
single ones can be restarted; the Dagster instance keeps runs, schedules and event logs in a
PostgreSQL database of its own, created here and dropped at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import stack as launcher
import yaml

from harness import ROOT, Processes, Stack, local_pipeline, separate_processes_env
from sample_data import write_samples
from services_databases import PG_ADMIN_URL

pytestmark = pytest.mark.e2e

COMPOSE_INSTANCE = ROOT / "deploy" / "docker" / "dagster.yaml"
STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")
# What deploy/docker/dagster.yaml says, for as long as that file is not there to read. The scheme
# picks psycopg2: with SQLAlchemy 2.1 `postgresql://` means psycopg 3, whose connections
# dagster-postgres 0.29 closes in its statement-timeout hook ("the connection is closed").
POSTGRES_STORAGE = {
    "storage": {
        "postgres": {
            "postgres_db": {
                "username": {"env": "DAGSTER_POSTGRES_USER"},
                "password": {"env": "DAGSTER_POSTGRES_PASSWORD"},
                "hostname": {"env": "DAGSTER_POSTGRES_HOST"},
                "db_name": {"env": "DAGSTER_POSTGRES_DB"},
                "port": {"env": "DAGSTER_POSTGRES_PORT"},
                "scheme": "postgresql+psycopg2",
            }
        }
    }
}


def postgres_storage() -> dict:
    """The storage sections of the Compose deployment's dagster.yaml: the settings under test."""
    if not COMPOSE_INSTANCE.exists():
        return POSTGRES_STORAGE
    compose = yaml.safe_load(COMPOSE_INSTANCE.read_text())
    return {key: compose[key] for key in STORAGE_KEYS if key in compose}


@pytest.fixture(scope="module")
def database() -> Iterator[sa.URL]:
    """A fresh PostgreSQL database for the Dagster instance; its connections are ended and it is dropped."""
    url = sa.make_url(PG_ADMIN_URL).set(database=f"constellation_e2e_{uuid.uuid4().hex[:12]}")
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": url.database},
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}"')
        admin.dispose()


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory, database: sa.URL) -> Iterator[Processes]:
    base = tmp_path_factory.mktemp("pg_stack")
    write_samples(base / "data")
    env = separate_processes_env(
        base,
        {
            "DAGSTER_POSTGRES_USER": database.username or "postgres",
            "DAGSTER_POSTGRES_PASSWORD": database.password or "",
            "DAGSTER_POSTGRES_HOST": database.host or "127.0.0.1",
            "DAGSTER_POSTGRES_PORT": str(database.port or 5432),
            "DAGSTER_POSTGRES_DB": database.database,
        },
    )
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True)
    # The local instance (queue, run monitoring) with the Compose deployment's storage;
    # prepare_home keeps a dagster.yaml that is already there.
    instance = {**yaml.safe_load((ROOT / "deploy" / "local" / "dagster.yaml").read_text()), **postgres_storage()}
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
    launcher.prepare_home(env)
    running = Processes(env, base / "stack.log")
    try:
        running.start_all()
        # The runs page of the UI: where broken storage settings show first, with the database's own words.
        answer = httpx.post(
            env["CONSTELLATION_DAGSTER_URL"] + "/graphql",
            json={"query": "{ runsOrError(limit: 1) { ... on Runs { results { runId } } } }"},
        ).json()
        if answer.get("errors"):
            pytest.fail(f"Dagster cannot read its run storage: {answer['errors'][0]['message'].splitlines()[0]}")
        yield running
    finally:
        running.stop_everything()


@pytest.fixture(scope="module")
def pg_stack(processes: Processes) -> Stack:
    return processes.as_stack()


def run_to_success(api: httpx.Client, stack: Stack, width: int = 32) -> tuple[str, list]:
    launched = api.post("/execute", json=local_pipeline(width=width))
    assert launched.status_code == 200, launched.text
    run = stack.wait_for_run(launched.json()["run_id"])
    assert run["run_status"] == "SUCCESS", run
    results = api.get(f"/runs/{run['run_id']}/results")
    assert results.status_code == 200, results.text
    return run["run_id"], results.json()["results"]


def stored_runs(database: sa.URL) -> dict[str, str]:
    """Run id → status, as the PostgreSQL run storage holds them."""
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT run_id, status FROM runs").all())
    finally:
        engine.dispose()


def test_the_instance_is_on_postgres(processes: Processes):
    instance = yaml.safe_load((Path(processes.env["DAGSTER_HOME"]) / "dagster.yaml").read_text())
    storage = {key: instance[key] for key in STORAGE_KEYS if key in instance}
    assert storage and all("postgres" in yaml.safe_dump(section) for section in storage.values()), storage


def test_pipelines_complete_and_are_stored_in_postgres(pg_stack: Stack, database: sa.URL):
    with pg_stack.client() as api:
        first, results = run_to_success(api, pg_stack)
        second, _ = run_to_success(api, pg_stack, width=16)
    [result] = results
    assert result["operation"] == "resize_image" and result["output"]["files"]
    stored = stored_runs(database)
    assert stored[first] == stored[second] == "SUCCESS"


def test_a_run_outlives_a_webserver_restart(pg_stack: Stack, processes: Processes):
    with pg_stack.client() as api:
        run_id, results = run_to_success(api, pg_stack)
        processes.stop("webserver")
        assert api.get(f"/runs/{run_id}").status_code >= 500  # the gateway cannot reach Dagster now
        processes.start("webserver")
        again = api.get(f"/runs/{run_id}").json()
        assert again["run_status"] == "SUCCESS" and again["done"] == again["total"] == 3
        assert api.get(f"/runs/{run_id}/results").json()["results"] == results
        run_to_success(api, pg_stack, width=24)


def test_queued_runs_complete_after_a_daemon_restart(pg_stack: Stack, processes: Processes, database: sa.URL):
    processes.stop("daemon")
    try:
        with pg_stack.client() as api:
            run_ids = [api.post("/execute", json=local_pipeline(width=w)).json()["run_id"] for w in (10, 12, 14)]
            time.sleep(3)  # the queue is checked every second: nothing would dequeue them
            assert [api.get(f"/runs/{r}").json()["run_status"] for r in run_ids] == ["QUEUED"] * 3
            assert [stored_runs(database)[r] for r in run_ids] == ["QUEUED"] * 3
    finally:
        processes.start("daemon")
    for run_id in run_ids:
        assert pg_stack.wait_for_run(run_id, timeout_s=60)["run_status"] == "SUCCESS"
