"""Faults on the real stack: the webserver down, the code server killed and restarted, the artifact disk full.

The processes are `make run`'s own (scripts/stack.py's commands), started one by one so that a
single one can be stopped, killed or restarted. The full disk is a 1 MiB tmpfs mounted over the
running stack's artifact root (mounting needs root). A daemon restart and the model server dying
mid-run are covered by tests/e2e/test_e2e_postgres.py and tests/e2e/test_e2e_models.py.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
import stack as launcher
from pydantic import Field

from harness import Processes, Stack, local_pipeline, separate_processes_env, small_tmpfs
from orchestrator.engine import Catalog, InstructionFailed, RunContext, build_plan, execute
from sample_data import write_samples

e2e = pytest.mark.e2e
CHEAP = {
    "instructions": [
        {
            "operation": "dict_to_list",
            "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "samples"}}},
        }
    ]
}
RUN_COUNT = """query { runsOrError(filter: {pipelineName: "build_execute_job"}) { ... on Runs { count } } }"""


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    base = tmp_path_factory.mktemp("fault_stack")
    write_samples(base / "data")
    env = separate_processes_env(base)
    Path(env["CONSTELLATION_ARTIFACT_ROOT"]).mkdir()
    launcher.prepare_home(env)
    running = Processes(env, base / "stack.log")
    try:
        running.start_all()
        yield running
    finally:
        running.stop_everything()


@pytest.fixture(scope="module")
def fault_stack(processes: Processes) -> Stack:
    return processes.as_stack()


def runs_in_dagster(stack: Stack) -> int:
    """How many runs of build_execute_job Dagster holds, whatever their status."""
    answer = httpx.post(stack.dagster_url + "/graphql", json={"query": RUN_COUNT}, timeout=30).json()
    return answer["data"]["runsOrError"]["count"]


def run_to_end(api: httpx.Client, stack: Stack, pipeline: dict, **headers: str) -> dict:
    launched = api.post("/execute", json=pipeline, headers=headers)
    assert launched.status_code == 200, launched.text
    return stack.wait_for_run(launched.json()["run_id"], timeout_s=60)


@e2e
def test_webserver_down_answers_503_and_launches_nothing(fault_stack: Stack, processes: Processes):
    with fault_stack.client() as api:
        assert run_to_end(api, fault_stack, CHEAP)["run_status"] == "SUCCESS"
        before = runs_in_dagster(fault_stack)
        processes.stop("webserver")
        try:
            answers = [
                api.post("/execute", json=CHEAP),
                api.post("/execute", json=CHEAP, headers={"Idempotency-Key": f"down-{uuid.uuid4()}"}),
            ]
        finally:
            processes.start("webserver")
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["status"] == "failure"
            unreachable = f"Dagster is unreachable: ConnectError at {fault_stack.dagster_url}"
            assert answer.json()["message"].startswith(unreachable)
        assert runs_in_dagster(fault_stack) == before  # nothing half-launched shows up once it is back
        assert run_to_end(api, fault_stack, CHEAP)["run_status"] == "SUCCESS"
        assert runs_in_dagster(fault_stack) == before + 1


@e2e
def test_new_runs_succeed_after_the_code_server_is_killed_and_restarted(fault_stack: Stack, processes: Processes):
    with fault_stack.client() as api:
        assert run_to_end(api, fault_stack, CHEAP)["run_status"] == "SUCCESS"
        before = runs_in_dagster(fault_stack)
        code_server = processes.children.pop("code server")
        os.killpg(code_server.pid, signal.SIGKILL)
        code_server.wait()
        try:
            down = api.post("/execute", json=CHEAP)
        finally:
            processes.start("code server")  # the same command, the same port
        assert down.status_code == 503, down.text
        assert "the code location constellation is unavailable" in down.json()["message"]
        assert runs_in_dagster(fault_stack) == before

        # Dagster's webserver notices the new server by itself (it polls it every second): no reload,
        # nothing for the user to do but retry a 503 under the same key.
        key = {"Idempotency-Key": f"after-restart-{uuid.uuid4()}"}
        deadline = time.monotonic() + 15
        while (launched := api.post("/execute", json=local_pipeline(width=20), headers=key)).status_code == 503:
            assert time.monotonic() < deadline, launched.text
            time.sleep(0.5)
        assert launched.status_code == 200, launched.text
        run = fault_stack.wait_for_run(launched.json()["run_id"], timeout_s=60)
        assert run["run_status"] == "SUCCESS", run
        assert runs_in_dagster(fault_stack) == before + 1


@pytest.fixture
def full_disk(fault_stack: Stack) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted over the running stack's artifact root, unmounted at the end."""
    with small_tmpfs(fault_stack.artifact_root, "1m") as root:
        yield root


@e2e
def test_a_full_artifact_disk_fails_the_run_saying_so(fault_stack: Stack, full_disk: Path):
    big = local_pipeline(width=4000)  # 12 JPEGs of 4000×3000: about 3 MB
    big["instructions"][0]["parameters"]["height"] = 3000
    with fault_stack.client() as api:
        run = run_to_end(api, fault_stack, big)
    assert run["run_status"] == "FAILURE", run
    error = run["error"]
    assert error.get("path") == "/instructions/0" and error["operation"] == "resize_image", run
    # Where, relative to the artifact root: the server's folders stay on the server.
    assert error["message"].startswith("no space left on the server's disk (this run's files go to runs/"), error
    assert str(full_disk) not in error["message"]
    assert error["message"].endswith("[Errno 28] No space left on device")


def write(ctx: RunContext, name: Annotated[str, Field(description="what to write")]) -> dict:
    """Fails as writing to a full disk does: without a file name (write) or with one (open)."""
    if name == "quota":
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(ctx.run_dir / name))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    "name,where,code",
    [
        ("full", "this run's files go to {}", errno.ENOSPC),
        ("quota", "writing {}/quota", errno.EDQUOT),
    ],
)
def test_a_full_disk_is_named_the_same_whatever_the_operation(tmp_path: Path, name: str, where: str, code: int):
    catalog = Catalog.from_functions([write])
    plan = build_plan([{"operation": "write", "parameters": {"name": name}}], catalog)
    with pytest.raises(InstructionFailed) as failed:
        execute(plan, catalog, RunContext(run_dir=tmp_path))
    assert failed.value.path == "/instructions/0"
    expected = f"no space left on the server's disk ({where.format(tmp_path)}): [Errno {code}] {os.strerror(code)}"
    assert failed.value.message == expected
