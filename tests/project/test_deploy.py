"""The deployment's own configuration holds without Docker: what can be checked here, is.

- deploy/docker/dagster.yaml (and its DockerRunLauncher variant) loads on a real PostgreSQL as a
  Dagster instance with the queue, launcher, monitoring and retries it says.
- Each image installs only its profile (deploy/docker/requirements.py); a fresh process doing what
  the image's processes do (entry points, instance, a model load) loads nothing outside it.
- The code location is named and addressed the same way in Compose, its image, the workspace and
  the Helm values.
scripts/check_deploy.py checks the Compose files and Dockerfiles themselves (make check-deploy).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness import ROOT
from services_databases import PG_ADMIN_URL

DOCKER = ROOT / "deploy" / "docker"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _requirements_module():
    spec = importlib.util.spec_from_file_location("image_requirements", DOCKER / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMAGE_REQUIREMENTS = _requirements_module()


@pytest.fixture(scope="module")
def dagster_database() -> Iterator[dict[str, str]]:
    """A PostgreSQL database of its own, as DAGSTER_POSTGRES_* variables; dropped afterwards."""
    name = f"constellation_deploy_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(PG_ADMIN_URL)
    try:
        yield {
            "DAGSTER_POSTGRES_HOST": url.host or "127.0.0.1",
            "DAGSTER_POSTGRES_PORT": str(url.port or 5432),
            "DAGSTER_POSTGRES_USER": url.username or "postgres",
            "DAGSTER_POSTGRES_PASSWORD": url.password or "",
            "DAGSTER_POSTGRES_DB": name,
            "DAGSTER_MAX_CONCURRENT_RUNS": "3",
        }
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def probe(
    profile: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    instance: Path | None = None,
    extras: list[str] | None = None,
) -> dict:
    """tests/deploy_probe.py PROFILE in a fresh process that can import only what the image installs,
    with `instance` as DAGSTER_HOME/dagster.yaml."""
    allowed = sorted(installed_closure(profile, extras))
    home = tmp_path / "dagster_home"
    home.mkdir()
    if instance:
        (home / "dagster.yaml").write_text(instance.read_text())
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONSTELLATION_", "DAGSTER_"))}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "deploy_probe.py"), profile],
        env={
            **clean,
            **(env or {}),
            "DAGSTER_HOME": str(home),
            "DEPLOY_PROBE_ALLOWED": json.dumps(allowed),
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, (
        f"the {profile} image would fail (a ModuleNotFoundError names a distribution to add to its profile in "
        f"deploy/docker/requirements.py):\n{result.stderr[-3000:]}"
    )
    report = json.loads(result.stdout)
    assert set(report["distributions"]) <= set(allowed) | {"constellation"}
    return report


def installed_closure(profile: str, extras: list[str] | None = None) -> set[str]:
    """Every distribution the image of `profile` gets: its requirements and theirs, as installed here."""
    pending = [Requirement(r) for r in IMAGE_REQUIREMENTS.requirements(ROOT / "pyproject.toml", profile, extras or [])]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while pending:
        requirement = pending.pop()
        name, extras_wanted = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras_wanted) in seen:
            continue
        seen.add((name, extras_wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here, so nothing here can have loaded it
        names.add(name)
        for line in dist.requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras_wanted | {""}):
                pending.append(needed)
    return names


def test_compose_instance_is_postgres_with_queue_monitoring_and_retries(tmp_path, dagster_database):
    report = probe("dagster", tmp_path, dagster_database, DOCKER / "dagster.yaml")
    facts = report["facts"]
    assert facts["storage"] == ["PostgresEventLogStorage", "PostgresRunStorage", "PostgresScheduleStorage"]
    assert facts["run_coordinator"] == "QueuedRunCoordinator"
    assert facts["max_concurrent_runs"] == 3  # from DAGSTER_MAX_CONCURRENT_RUNS
    assert facts["dequeue_interval_seconds"] == 1
    assert facts["run_launcher"] == "DefaultRunLauncher"
    assert facts["run_monitoring"] is True
    assert (facts["run_retries"], facts["run_retries_max"], facts["retry_on_op_failure"]) == (True, 1, False)
    assert facts["telemetry"] is False
    # Loaded with only what the webserver/daemon image (dagster.Dockerfile) installs, driver included.
    assert "psycopg2-binary" in report["distributions"]


def test_docker_launcher_instance_runs_each_run_in_a_container_on_the_compose_network(tmp_path, dagster_database):
    report = probe("dagster", tmp_path, dagster_database, DOCKER / "dagster-docker-launcher.yaml", extras=["docker"])
    facts = report["facts"]
    assert facts["run_launcher"] == "DockerRunLauncher"
    assert facts["launcher_networks"] == [COMPOSE["networks"]["default"]["name"]]
    # The run containers mount the very volumes the code server mounts, at the same places.
    code_mounts = {m.split(":")[1]: m.split(":")[0] for m in COMPOSE["services"]["code_server"]["volumes"]}
    for mount in facts["launcher_volumes"]:
        volume, target = mount.split(":")[:2]
        assert COMPOSE["volumes"][code_mounts[target]]["name"] == volume
    assert {target for target in code_mounts} == {m.split(":")[1] for m in facts["launcher_volumes"]}
    # A run container needs the instance's storage settings and the model server's address.
    assert set(dagster_database) | {"CONSTELLATION_MODEL_SERVER_URL"} <= set(facts["launcher_env_vars"])
    assert facts["run_monitoring"] and facts["run_retries"]


def test_code_server_image_holds_the_code_location_and_no_model_runtime(tmp_path, dagster_database):
    report = probe("code_server", tmp_path, dagster_database, DOCKER / "dagster.yaml")
    assert report["facts"]["job"] == "build_execute_job"
    assert not {"torch", "transformers"} & set(report["distributions"])


def test_gateway_image_needs_no_dagster(tmp_path):
    report = probe("gateway", tmp_path)
    assert report["facts"]["modules"] > 3
    assert "dagster" not in report["distributions"]


def test_model_server_image_loads_and_runs_a_model(tmp_path):
    report = probe("model_server", tmp_path)
    assert report["facts"]["predictions"] == 1
    assert "dagster" not in report["distributions"]


def test_code_location_is_addressed_alike_everywhere():
    """Compose's command, the image's CMD, the workspace and the Helm values name one gRPC server."""
    command = COMPOSE["services"]["code_server"]["command"]
    image_cmd = next(line for line in (ROOT / "assets.Dockerfile").read_text().splitlines() if line.startswith("CMD"))
    assert json.loads(image_cmd.removeprefix("CMD ")) == command
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"]
    assert workspace == [
        {
            "grpc_server": {
                "host": "code_server",
                "port": int(command[command.index("-p") + 1]),
                "location_name": command[command.index("--location-name") + 1],
            }
        }
    ]
    helm = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["name"] == command[command.index("--location-name") + 1]
    assert deployment["dagsterApiGrpcArgs"] == command[command.index("-m") :]
    assert str(deployment["port"]) == command[command.index("-p") + 1]
