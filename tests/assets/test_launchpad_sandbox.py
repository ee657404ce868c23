"""The launchpad cannot move the sandbox: server settings (resources) come from the server's environment.

A resource handed to Dagster as a ConfigurableResource turns its fields into run config, so a launch
with `resources: {workspace: {config: {data_root: /anywhere}}}` read outside the data root, and
`url_allow_private` could be switched on the same way. Now each resource is a definition with an
empty config schema (orchestrator/assets/resources.py, `server_setting`): Dagster refuses the launch.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError

from harness import Stack
from orchestrator import runs
from orchestrator.assets.job import make_execute_job
from orchestrator.assets.repository import CATALOG, resources_from_env
from orchestrator.assets.resources import Databases, GoogleDrive, ModelServerConnection, S3Storage, Workspace

IMPORT_SECRET = [{"operation": "import_from_local", "parameters": {"path": "secret"}}]
# What a launchpad user could try: every setting of every resource.
OVERRIDES = {
    "workspace": {
        "data_root": "{outside}",
        "url_allow_private": True,
        "artifact_root": "/tmp/elsewhere",
        "archive_max_files": 10**9,
        "db_export_any_schema": True,
    },
    "s3": {"endpoint_url": "http://attacker.example"},
    "google_drive": {"api_endpoint": "http://attacker.example/", "download_url": "http://127.0.0.1:1/"},
    "model_server": {"url": "http://attacker.example"},
    "databases": {"anything": 1},
}


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "secret").mkdir(parents=True)
    (outside / "secret").mkdir(parents=True)
    (data / "secret" / "inside.txt").write_text("inside the data root")
    (outside / "secret" / "outside.txt").write_text("outside the data root")
    monkeypatch.setenv("CONSTELLATION_DATA_ROOT", str(data))
    monkeypatch.setenv("CONSTELLATION_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.delenv("CONSTELLATION_URL_ALLOW_PRIVATE", raising=False)
    return {"data": data, "outside": outside, "artifacts": tmp_path / "artifacts"}


def run_config(raw_input: list, resources: dict | None = None) -> dict:
    config: dict = {"ops": {"generate_dynamic_job_configs": {"config": {"raw_input": raw_input}}}}
    if resources is not None:
        config["resources"] = resources
    return config


def test_the_resources_read_the_servers_environment(folders: dict[str, Path]):
    resources = resources_from_env()
    assert isinstance(resources["workspace"], Workspace) and resources["workspace"].data_root == str(folders["data"])
    assert resources["workspace"].url_allow_private is False
    assert isinstance(resources["s3"], S3Storage) and isinstance(resources["google_drive"], GoogleDrive)
    assert isinstance(resources["databases"], Databases)
    assert isinstance(resources["model_server"], ModelServerConnection)


@pytest.mark.parametrize("key", sorted(OVERRIDES))
def test_a_launch_with_resource_config_is_refused_before_anything_runs(folders: dict[str, Path], key: str):
    job = make_execute_job(CATALOG, resources_from_env())
    instance = DagsterInstance.ephemeral()
    given = {
        name: str(value).format(outside=folders["outside"]) if isinstance(value, str) else value
        for name, value in OVERRIDES[key].items()
    }
    with pytest.raises(DagsterInvalidConfigError, match=f"unexpected config entr.*resources:{key}:config"):
        job.execute_in_process(run_config=run_config(IMPORT_SECRET, {key: {"config": given}}), instance=instance)
    assert instance.get_runs() == []  # refused at config validation: no run was even created
    assert not folders["artifacts"].exists()


def test_the_pipeline_reads_the_servers_data_root_and_ops_get_typed_resources(folders: dict[str, Path]):
    job = make_execute_job(CATALOG, resources_from_env())
    # An empty config for a resource is harmless, and accepted (a launchpad may scaffold it).
    result = job.execute_in_process(
        run_config=run_config(IMPORT_SECRET, {"workspace": {"config": {}}}), instance=DagsterInstance.ephemeral()
    )
    assert result.success
    folder = runs.run_dir(folders["artifacts"].resolve(), result.run_id)
    [entry] = json.loads((folder / runs.RESULTS).read_text())["results"]
    files = json.dumps(entry["output"])
    assert "inside.txt" in files and "outside.txt" not in files


def test_each_run_gets_its_own_copy_of_a_resource_with_teardown(folders: dict[str, Path]):
    """Dagster's own initialisation is kept: Databases' engines are per run and disposed at its end."""
    seen: list[int] = []
    disposed: list[int] = []

    class Recording(Databases):
        def teardown_after_execution(self, context) -> None:
            disposed.append(id(self))
            super().teardown_after_execution(context)

    resources = {**resources_from_env(), "databases": Recording()}
    job = make_execute_job(CATALOG, resources)
    for _ in range(2):
        result = job.execute_in_process(run_config=run_config(IMPORT_SECRET), instance=DagsterInstance.ephemeral())
        assert result.success
        seen.append(disposed[-1])
    assert len(disposed) == 2 and seen[0] != seen[1] and id(resources["databases"]) not in seen


# ---- through the real webserver's GraphQL (the Dagster UI's launchpad sends exactly this) -------------

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on RunConfigValidationInvalid { errors { message } }
    ... on LaunchRunSuccess { run { runId } }
  }
}"""
RUN_COUNT = "{ runsOrError { ... on Runs { count } } }"


@pytest.mark.e2e
@pytest.mark.parametrize("key", ["workspace", "model_server"])
def test_the_webservers_launchpad_refuses_resource_config(stack: Stack, key: str):
    graphql = stack.dagster_url + "/graphql"
    before = httpx.post(graphql, json={"query": RUN_COUNT}, timeout=30).json()["data"]["runsOrError"]["count"]
    given = {
        name: str(value).format(outside="/") if isinstance(value, str) else value
        for name, value in OVERRIDES[key].items()
    }
    params = {
        "selector": {
            "repositoryLocationName": "constellation",
            "repositoryName": "main",
            "pipelineName": "build_execute_job",
        },
        "runConfigData": run_config(IMPORT_SECRET, {key: {"config": given}}),
    }
    answer = httpx.post(graphql, json={"query": LAUNCH, "variables": {"params": params}}, timeout=30).json()
    result = answer["data"]["launchPipelineExecution"]
    assert result["__typename"] == "RunConfigValidationInvalid", answer
    assert any("unexpected config entr" in e["message"] for e in result["errors"]), result
    after = httpx.post(graphql, json={"query": RUN_COUNT}, timeout=30).json()["data"]["runsOrError"]["count"]
    assert after == before
