"""The `constellation` command, run as installed, against the real stack (and a real gateway for tokens)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, Stack, free_port, local_pipeline

CLI = Path(sys.executable).parent / "constellation"
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
e2e = pytest.mark.e2e


def cli_env(url: str, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONSTELLATION_API_TOKEN", "COLUMNS")}
    env.update(CONSTELLATION_URL=url, COLUMNS="200")
    if token is not None:
        env["CONSTELLATION_API_TOKEN"] = token
    return env


def cli(url: str, *args: str, stdin: str | None = None, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], input=stdin, env=cli_env(url, token), capture_output=True, text=True,
                          timeout=90)


@pytest.fixture
def write_body(tmp_path: Path):
    def write(body: dict, name: str = "pipeline.json") -> str:
        path = tmp_path / name
        path.write_text(json.dumps(body, indent=2))
        return str(path)

    return write


def sample_count(stack: Stack) -> int:
    return sum(1 for p in (stack.data_root / "samples").rglob("*") if p.is_file())


INVALID = {"instructions": [
    {"operation": "resize_imag", "parameters": {}},
    {"operation": "resize_image", "parameters": {"width": 0, "height": 8,
                                                  "data": {"operation": "import_from_local", "parameters": {}}}},
]}


@e2e
def test_submit_shows_progress_then_the_results_table(stack: Stack, write_body):
    done = cli(stack.api_url, "submit", write_body(local_pipeline()))
    assert done.returncode == 0, done.stderr
    assert RUN_ID.search(done.stderr) and "[3/3] SUCCESS" in done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith("/instructions/0")]
    assert row.split()[:2] == ["/instructions/0", "resize_image"]
    assert f"FileList: {sample_count(stack)} items" in row


@e2e
def test_submit_reads_stdin_and_no_wait_prints_only_the_run_id(stack: Stack):
    body, key = json.dumps(local_pipeline()), f"cli-{time.time_ns()}"
    launched = cli(stack.api_url, "submit", "-", "--no-wait", "--idempotency-key", key, stdin=body)
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip()
    assert RUN_ID.fullmatch(run_id)
    again = cli(stack.api_url, "submit", "-", "--no-wait", "--idempotency-key", key, stdin=body)
    assert again.stdout.strip() == run_id and "an earlier submission with this Idempotency-Key" in again.stderr
    assert stack.wait_for_run(run_id)["run_status"] == "SUCCESS"


@e2e
def test_an_invalid_pipeline_lists_every_problem_and_exits_2(stack: Stack, write_body):
    for command in ("submit", "validate"):
        refused = cli(stack.api_url, command, write_body(INVALID))
        assert refused.returncode == 2, refused
        lines = refused.stderr.splitlines()
        for path in ("/instructions/0/operation", "/instructions/1/parameters/width",
                     "/instructions/1/parameters/data/parameters"):
            assert any(line.strip().startswith(f"{path}: ") for line in lines), (path, refused.stderr)
        assert "did you mean 'resize_image'" in refused.stderr
        assert not RUN_ID.search(refused.stderr + refused.stdout)  # nothing launched


@e2e
def test_validate_counts_instructions_and_what_will_run(stack: Stack, write_body):
    shared = {"operation": "import_from_local", "parameters": {"path": "samples"}}
    body = {"instructions": [{"operation": "dict_to_list", "parameters": {"data": shared}},
                             {"operation": "resize_image", "parameters": {"data": shared, "width": 8, "height": 8}}]}
    checked = cli(stack.api_url, "validate", write_body(body))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "valid: 2 instructions (3 to run)"  # the shared import runs once
    unreadable = cli(stack.api_url, "validate", str(Path(write_body(body)).parent / "missing.json"))
    assert unreadable.returncode == 2 and "missing.json" in unreadable.stderr


@e2e
def test_status_and_results_of_a_finished_run(stack: Stack, write_body):
    run_id = cli(stack.api_url, "submit", "--no-wait", write_body(local_pipeline())).stdout.strip()
    stack.wait_for_run(run_id)
    status = cli(stack.api_url, "status", run_id)
    assert status.returncode == 0, status.stderr
    assert "status    SUCCESS" in status.stdout and "progress  3/3 instructions" in status.stdout
    assert "duration" in status.stdout and f"{stack.dagster_url}/runs/{run_id}" in status.stdout
    for operation in ("resize_image", "dict_to_list", "import_from_local"):
        assert re.search(rf"{operation}\s+succeeded\s+\d+\.\d\d s", status.stdout), (operation, status.stdout)

    raw = cli(stack.api_url, "results", run_id, "--json")
    assert raw.returncode == 0, raw.stderr
    [result] = json.loads(raw.stdout)["results"]
    assert result["operation"] == "resize_image" and result["output"]["count"] == sample_count(stack)
    table = cli(stack.api_url, "results", run_id)
    assert "resize_image" in table.stdout and "FileList" in table.stdout


@e2e
def test_a_failing_run_exits_1_naming_the_instruction(stack: Stack, write_body):
    failed = cli(stack.api_url, "submit", write_body(local_pipeline(path="missing-folder")))
    assert failed.returncode == 1, failed
    last = failed.stderr.strip().splitlines()[-1]
    assert "FAILURE" in last and "/instructions/0/parameters/data/parameters/data" in last and "missing-folder" in last
    run_id = RUN_ID.search(failed.stderr).group()
    no_results = cli(stack.api_url, "results", run_id)
    assert no_results.returncode == 4 and "FAILURE" in no_results.stderr


@e2e
def test_an_unknown_run_is_one_clear_line(stack: Stack):
    missing = cli(stack.api_url, "status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 4
    assert missing.stderr.strip() == "error: no run '00000000-0000-0000-0000-000000000000'"


@e2e
def test_ops_lists_the_catalog_and_describes_one_operation(stack: Stack):
    listed = cli(stack.api_url, "ops")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^resize_image\s+FileList\s+Resize every image", listed.stdout, re.M)
    assert re.search(r"^import_from_local\s+FileDict", listed.stdout, re.M)
    one = cli(stack.api_url, "ops", "resize_image")
    assert one.returncode == 0, one.stderr
    assert re.search(r"^width\s+integer ≥ 1 ≤ 16384\s+yes\s+target width in pixels", one.stdout, re.M)
    assert re.search(r"^data\s+FileList or FileDict\s+yes", one.stdout, re.M)
    typo = cli(stack.api_url, "ops", "resize_imag")
    assert typo.returncode == 2 and "did you mean resize_image" in typo.stderr


@e2e
def test_ctrl_c_leaves_the_run_running_and_cancel_stops_it(stack: Stack, write_body, slow_file_url: str):
    body = {"instructions": [{"operation": "import_from_url", "parameters": {"url": slow_file_url}}]}
    following = subprocess.Popen([str(CLI), "submit", write_body(body)], env=cli_env(stack.api_url),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in following.stderr], daemon=True).start()
    seen = ""
    while "STARTED import_from_url /instructions/0" not in seen:  # the progress names what is running
        seen += lines.get(timeout=30)
    following.send_signal(signal.SIGINT)
    assert following.wait(10) == 130
    time.sleep(0.2)
    while not lines.empty():
        seen += lines.get()
    run_id = RUN_ID.search(seen).group()
    assert f"it keeps running. Cancel it with: constellation cancel {run_id}" in seen
    assert "status    STARTED" in cli(stack.api_url, "status", run_id).stdout

    cancelled = cli(stack.api_url, "cancel", run_id)
    assert cancelled.returncode == 0 and cancelled.stdout.startswith(f"run {run_id}: "), cancelled
    assert stack.wait_for_run(run_id, timeout_s=45)["run_status"] == "CANCELED"
    assert "status    CANCELED" in cli(stack.api_url, "status", run_id).stdout


def test_an_unreachable_gateway_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("ops",), ("status", "00000000-0000-0000-0000-000000000000")):
        down = cli(url, *args)
        assert down.returncode == 3, down
        [line] = down.stderr.splitlines()
        assert url in line and "cannot reach the gateway" in line
    flag = cli("http://127.0.0.1:1", "ops", "--url", url)  # --url wins over CONSTELLATION_URL
    assert flag.returncode == 3 and url in flag.stderr


@pytest.fixture(scope="module")
def gateway_with_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real gateway, with a token and no Dagster behind it: enough to meet its door."""
    port, token = free_port(), "cli-test-token-4c1f"
    env = {**os.environ, "CONSTELLATION_API_TOKEN": token,
           "CONSTELLATION_DAGSTER_URL": f"http://127.0.0.1:{free_port()}",
           "CONSTELLATION_ARTIFACT_ROOT": str(tmp_path_factory.mktemp("artifacts"))}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/health", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url, token
    server.terminate()
    server.wait(10)


def test_a_missing_or_wrong_token_says_what_to_set(gateway_with_token: tuple[str, str]):
    url, token = gateway_with_token
    missing = cli(url, "ops")
    assert missing.returncode == 4 and "set CONSTELLATION_API_TOKEN" in missing.stderr, missing
    wrong = cli(url, "ops", token="not-the-token-9e2a")
    assert wrong.returncode == 4 and "CONSTELLATION_API_TOKEN is not the gateway's token" in wrong.stderr, wrong
    assert "not-the-token-9e2a" not in wrong.stderr + wrong.stdout
    past_the_door = cli(url, "ops", token=token)  # accepted; then Dagster, absent here, is the problem
    assert past_the_door.returncode == 4 and "Dagster" in past_the_door.stderr, past_the_door
    assert token not in past_the_door.stderr + past_the_door.stdout
