"""The `constellation` command, run as installed, against the real stack (and a real gateway for tokens);
`retry` and a few answers the stack cannot give cheaply, against a local stand-in of the gateway's routes."""

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
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from constellation_cli.link import place
from harness import CLI, ROOT, Stack, cli, cli_env, free_port, local_pipeline

RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
e2e = pytest.mark.e2e


@pytest.fixture
def write_body(tmp_path: Path):
    def write(body: dict, name: str = "pipeline.json") -> str:
        path = tmp_path / name
        path.write_text(json.dumps(body, indent=2))
        return str(path)

    return write


def sample_count(stack: Stack) -> int:
    return sum(1 for p in (stack.data_root / "samples").rglob("*") if p.is_file())


INVALID = {
    "instructions": [
        {"operation": "resize_imag", "parameters": {}},
        {
            "operation": "resize_image",
            "parameters": {"width": 0, "height": 8, "data": {"operation": "import_from_local", "parameters": {}}},
        },
    ]
}


@e2e
def test_submit_shows_progress_then_the_results_table(stack: Stack, write_body):
    done = cli(stack.api_url, "submit", write_body(local_pipeline()))
    assert done.returncode == 0, done.stderr
    assert RUN_ID.search(done.stderr) and "[3/3] SUCCESS" in done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith("/instructions/0")]
    assert row.split()[:2] == ["/instructions/0", "resize_image"]
    assert f"FileList: {sample_count(stack)} items" in row


COMPARISON = {
    "instructions": [
        {"operation": "deploy_model", "parameters": {"model": "fire-vit-a"}},
        {"operation": "deploy_model", "parameters": {"model": "fire-vit-b"}},
        {
            "operation": "compare_models",
            "parameters": {
                "results": [
                    {
                        "operation": "model_inference",
                        "parameters": {
                            "model": model,
                            "data": {"operation": "import_from_local", "parameters": {"path": "samples"}},
                        },
                    }
                    for model in ("fire-vit-a", "fire-vit-b")
                ]
            },
        },
    ]
}


@e2e
def test_submit_of_a_comparison_ends_with_its_metrics_and_verdict(stack: Stack, write_body):
    done = cli(stack.api_url, "submit", write_body(COMPARISON))
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert re.search(r"^/instructions/2\s+compare_models\s+Comparison: 2 models", done.stdout, re.M), done.stdout
    header = next(line for line in lines if line.split()[:2] == ["model", "accuracy"])
    assert "macro-F1" in header
    for model in ("fire-vit-a", "fire-vit-b"):  # a row each: the accuracy and its 95% interval
        assert re.search(rf"^{model}\s+\d\.\d{{3}} \[\d\.\d{{3}}, \d\.\d{{3}}\]", done.stdout, re.M), done.stdout
    run_id = RUN_ID.search(done.stderr).group()
    verdict = json.loads(cli(stack.api_url, "results", run_id, "--json").stdout)["results"][2]["output"]["verdict"]
    assert verdict and lines[-1] == verdict  # the verdict, last, as `results` prints it
    assert done.stdout == cli(stack.api_url, "results", run_id).stdout


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
        for path in (
            "/instructions/0/operation",
            "/instructions/1/parameters/width",
            "/instructions/1/parameters/data/parameters",
        ):
            assert any(line.strip().startswith(f"{path}: ") for line in lines), (path, refused.stderr)
        assert "did you mean 'resize_image'" in refused.stderr
        assert not RUN_ID.search(refused.stderr + refused.stdout)  # nothing launched


@e2e
def test_validate_counts_instructions_and_what_will_run(stack: Stack, write_body):
    shared = {"operation": "import_from_local", "parameters": {"path": "samples"}}
    body = {
        "instructions": [
            {"operation": "dict_to_list", "parameters": {"data": shared}},
            {"operation": "resize_image", "parameters": {"data": shared, "width": 8, "height": 8}},
        ]
    }
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


# Fails while it runs (no check before launch can know): 6 ** 400 is beyond the largest float.
OVERFLOWS = {
    "instructions": [
        {
            "operation": "math_block",
            "parameters": {"operand": "pow", "constant": 400, "data": {"operation": "mock_csv_data"}},
        }
    ]
}
OVERFLOW_ERROR = "row 1, column 'column3': 6.0 pow 400.0 would be about 10^311.3, beyond the largest float"


@e2e
def test_a_failing_run_exits_1_naming_the_instruction(stack: Stack, write_body):
    failed = cli(stack.api_url, "submit", write_body(OVERFLOWS))
    assert failed.returncode == 1, failed
    last = failed.stderr.strip().splitlines()[-1]
    assert "FAILURE" in last and "math_block at /instructions/0" in last and OVERFLOW_ERROR in last
    made = re.search(r"^/instructions/0\s+math_block\s+failed: (.*)$", failed.stdout, re.M)  # what it made: nothing
    assert made and OVERFLOW_ERROR in made.group(1), failed.stdout
    run_id = RUN_ID.search(failed.stderr).group()
    again = cli(stack.api_url, "results", run_id)
    assert again.returncode == 0 and again.stdout == failed.stdout, again


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


# Starts a program the way a terminal's shell does, with Ctrl-C's signal at its default. A background job of a
# non-interactive shell (CI scripts, `cmd &`) inherits SIGINT ignored, and Python then never raises
# KeyboardInterrupt: the CLI would follow the run to its end and exit 0 (what CI once saw).
AS_IN_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
]


@e2e
def test_ctrl_c_leaves_the_run_running_and_cancel_stops_it(stack: Stack, write_body, slow_file_url: str):
    body = {"instructions": [{"operation": "import_from_url", "parameters": {"url": slow_file_url}}]}
    following = subprocess.Popen(
        [*AS_IN_A_TERMINAL, str(CLI), "submit", write_body(body)],
        env=cli_env(stack.api_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in following.stderr], daemon=True).start()
    seen = ""
    while "STARTED import_from_url /instructions/0" not in seen:  # the CLI is following the run: it is waiting
        try:
            seen += lines.get(timeout=60)
        except queue.Empty:
            raise AssertionError(f"the CLI printed no progress for 60 s:\n{seen}") from None
    following.send_signal(signal.SIGINT)  # the download is held open until the test ends: the run cannot end first
    assert following.wait(60) == 130  # a loaded machine may take seconds to answer the status it prints
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
        assert "from $CONSTELLATION_URL; is it running? `make run` prints the URL it serves" in line
    for args in (("ops", "--url", url), ("--url", url, "ops"), ("--url", "http://127.0.0.1:2", "ops", "--url", url)):
        flag = cli("http://127.0.0.1:1", *args)  # --url wins over CONSTELLATION_URL, after the command over before
        assert flag.returncode == 3 and url in flag.stderr and "given by --url" in flag.stderr, (args, flag)
    port = free_port()  # no CONSTELLATION_URL: the port `make run` was given, else 8000
    env = {k: v for k, v in cli_env(url).items() if k != "CONSTELLATION_URL"}
    moved = subprocess.run(
        [str(CLI), "ops"], env={**env, "CONSTELLATION_API_PORT": str(port)}, capture_output=True, text=True, timeout=30
    )
    assert moved.returncode == 3 and f"at http://127.0.0.1:{port} (" in moved.stderr, moved
    assert "from $CONSTELLATION_API_PORT" in moved.stderr
    told = subprocess.run(
        [str(CLI), "--help"],
        env={**env, "CONSTELLATION_API_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"Now: http://127.0.0.1:{port} ($CONSTELLATION_API_PORT)" in " ".join(told.stdout.split())


@pytest.fixture(scope="module")
def gateway_with_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real gateway, with a token and no Dagster behind it: enough to meet its door."""
    port, token = free_port(), "cli-test-token-4c1f"
    env = {
        **os.environ,
        "CONSTELLATION_API_TOKEN": token,
        "CONSTELLATION_DAGSTER_URL": f"http://127.0.0.1:{free_port()}",
        "CONSTELLATION_ARTIFACT_ROOT": str(tmp_path_factory.mktemp("artifacts")),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


@e2e
def test_every_command_answers_json_with_the_gateways_answer(stack: Stack, write_body):
    def answer(*args: str, code: int = 0, stdin: str | None = None) -> dict:
        done = cli(stack.api_url, *args, stdin=stdin)
        assert done.returncode == code, (args, done)
        return json.loads(done.stdout)

    body = local_pipeline()
    valid = answer("validate", write_body(body), "--json")
    assert valid["status"] == "success" and (valid["instructions"], valid["nodes"]) == (1, 3)
    refused = answer("validate", "--json", write_body(INVALID), code=2)  # the 422 answer: every problem
    assert "/instructions/1/parameters/width" in {e["path"] for e in refused["errors"]}

    final = answer("submit", "--json", "-", stdin=json.dumps(body))  # the run's status once it ended, and results
    run_id = final.pop("run_id")
    assert final["run_status"] == "SUCCESS" and final["done"] == final["total"] == 3
    [made] = final.pop("results")
    assert made["operation"] == "resize_image" and made["output"]["count"] == sample_count(stack)
    final["run_id"] = run_id
    launched = answer("submit", write_body(body), "--no-wait", "--json")  # the launch answer
    assert RUN_ID.fullmatch(launched["run_id"]) and launched["status"] == "success"
    stack.wait_for_run(launched["run_id"])

    assert answer("status", run_id, "--json") == {**final, **answer("--json", "status", run_id)}  # before the command
    [result] = answer("results", run_id, "--json")["results"]
    assert result["operation"] == "resize_image"
    catalog = answer("ops", "--json")["operations"]
    one = answer("ops", "resize_image", "--json")
    assert one in catalog and one["name"] == "resize_image"
    no_report = answer("report", run_id, "--json", code=4)  # no comparison in this run
    assert "compare_models" in no_report["message"]
    ended = answer("cancel", run_id, "--json", code=4)  # a finished run cannot be cancelled
    assert ended["message"], ended


@e2e
def test_a_failed_run_with_json_still_exits_1_and_prints_its_status(stack: Stack, write_body):
    failed = cli(stack.api_url, "submit", "--json", write_body(OVERFLOWS))
    assert failed.returncode == 1, failed
    status = json.loads(failed.stdout)
    assert status["run_status"] == "FAILURE" and OVERFLOW_ERROR in status["error"]["message"]
    [made] = status["results"]  # what the run made: nothing, and why
    assert made["state"] == "failed" and OVERFLOW_ERROR in made["error"]
    assert "FAILURE" in failed.stderr.strip().splitlines()[-1]


def test_help_names_every_command_the_environment_and_the_exit_codes():
    top = cli("http://127.0.0.1:1", "--help")
    assert top.returncode == 0, top
    for command in ("submit", "retry", "validate", "runs", "status", "results", "report", "cancel", "ops"):
        assert re.search(rf"^\W*{command}\s+\w", top.stdout, re.M), (command, top.stdout)
        own = cli("http://127.0.0.1:1", command, "-h")
        assert own.returncode == 0 and f"Usage: constellation {command}" in own.stdout, own
        assert "--json" in own.stdout and "--url" in own.stdout, (command, own.stdout)
    flat = " ".join(top.stdout.split())
    for words in (
        "$CONSTELLATION_URL, else http://127.0.0.1:$CONSTELLATION_API_PORT",
        "else http://127.0.0.1:8000. Now: http://127.0.0.1:1 ($CONSTELLATION_URL)",
        "set $CONSTELLATION_API_TOKEN",
        "Exit codes: 0 done",
        "3 gateway unreachable",
        "130 interrupted",
        "--install-completion",
        "--show-completion",
    ):
        assert words in flat, (words, top.stdout)
    bare = cli("http://127.0.0.1:1")
    assert bare.returncode == 2 and "Usage: constellation" in bare.stdout + bare.stderr


def test_shell_completion_is_offered_and_completes_commands_options_and_operations(stand_in: str):
    # Typed in bash, as a user would: the command finds its shell among its parents (what runs the tests may be
    # sh); `; exit $?` keeps bash from replacing itself with the command.
    script = subprocess.run(
        ["bash", "-c", f"{CLI} --show-completion; exit $?"],
        env=cli_env(stand_in),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert script.returncode == 0 and "_CONSTELLATION_COMPLETE=complete_bash" in script.stdout, script
    env = {**cli_env(stand_in), "_CONSTELLATION_COMPLETE": "complete_bash"}

    def complete(*words: str) -> list[str]:
        line = ["constellation", *words]
        done = subprocess.run(
            [str(CLI)],
            env={**env, "COMP_WORDS": " ".join(line), "COMP_CWORD": str(len(words))},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done
        return done.stdout.split()

    assert sorted(complete("re")) == ["report", "results", "retry"]
    assert {"--json", "--url"} <= set(complete("status", "--"))
    assert complete("ops", "re") == ["read_table", "resize_image"]  # from the gateway's catalog
    env["CONSTELLATION_URL"] = f"http://127.0.0.1:{free_port()}"
    assert complete("ops", "re") == []  # no gateway, no names (and no error in the shell)


class GatewayStandIn:
    """A local stand-in of the gateway's routes, answering as they are specified: POST /runs/{id}/retry answers
    like /execute plus `parent_run_id`; the new run is STARTED once, then ends; a report is an HTML page."""

    FAILED, SUCCEEDED = "0f1e2d3c-0000-4000-8000-00000000000f", "0f1e2d3c-0000-4000-8000-0000000000a5"
    RESUMED = "7a7a7a7a-0000-4000-8000-000000000001"
    RESUMED_FAILS = "7a7a7a7a-0000-4000-8000-000000000002"

    def __init__(self) -> None:
        self.polls: dict[str, int] = {}

    def answer(self, request: Request) -> Response:
        run_id, _, action = request.path.removeprefix("/runs/").partition("/")
        if request.method == "POST":
            return self.post(run_id, action)
        if request.path == "/operations":
            return reply(200, {"operations": [{"name": n} for n in ("read_table", "resize_image", "sample")]})
        if action == "report":
            return Response("<!doctype html><title>comparison</title>", content_type="text/html; charset=utf-8")
        if action == "results":
            return reply(
                200,
                {
                    "run_id": run_id,
                    "results": [
                        {
                            "path": "/instructions/2",
                            "operation": "model_inference",
                            "output": {"type": "Predictions", "model": "fire-vit-b", "count": 9},
                        }
                    ],
                },
            )
        self.polls[run_id] = self.polls.get(run_id, 0) + 1
        first = self.polls[run_id] == 1
        last = "running" if first else ("failed" if run_id == self.RESUMED_FAILS else "succeeded")
        states = ["reused", "reused", last]
        status = "STARTED" if first else ("FAILURE" if run_id == self.RESUMED_FAILS else "SUCCESS")
        return reply(
            200,
            {
                "run_id": run_id,
                "run_status": status,
                "done": 2 if first else 3,
                "total": 3,
                "instructions": [
                    {"path": f"/instructions/{i}", "operation": "model_inference", "state": state}
                    for i, state in enumerate(states)
                ],
                "error": {"path": "/instructions/2", "operation": "model_inference", "message": "model server down"}
                if status == "FAILURE"
                else None,
                "run_url": f"http://dagster.invalid/runs/{run_id}",
            },
        )

    def post(self, run_id: str, action: str) -> Response:
        if action == "cancel" and run_id == self.RESUMED:
            return reply(200, {"run_id": run_id, "run_status": "CANCELING"})
        if action != "retry" or run_id not in (self.FAILED, self.SUCCEEDED, self.RESUMED):
            return reply(404, {"status": "error", "message": f"no run {run_id!r}"})
        if run_id == self.SUCCEEDED:
            return reply(409, {"status": "error", "message": f"run {run_id} is SUCCESS; nothing to resume"})
        new = self.RESUMED if run_id == self.FAILED else self.RESUMED_FAILS
        return reply(
            200,
            {
                "status": "success",
                "run_id": new,
                "parent_run_id": run_id,
                "run_url": f"http://dagster.invalid/runs/{new}",
            },
        )


def reply(code: int, body: dict) -> Response:
    return Response(json.dumps(body), status=code, content_type="application/json")


@pytest.fixture
def stand_in(httpserver: HTTPServer) -> str:
    httpserver.expect_request(re.compile("/.*")).respond_with_handler(GatewayStandIn().answer)
    return httpserver.url_for("").rstrip("/")


def seen(httpserver: HTTPServer) -> list[tuple[str, str, str | None]]:
    """What the stand-in was asked: method, path and Authorization of each request."""
    return [(request.method, request.path, request.headers.get("Authorization")) for request, _ in httpserver.log]


def test_retry_follows_the_new_run_like_submit_against_a_stand_in_of_the_route(stand_in: str, httpserver: HTTPServer):
    parent, new = GatewayStandIn.FAILED, GatewayStandIn.RESUMED
    resumed = cli(stand_in, "retry", parent, token="stand-in-token")
    assert resumed.returncode == 0, resumed
    assert f"run {new} (retry of {parent}): http://dagster.invalid/runs/{new}" in resumed.stderr
    assert "[3/3] SUCCESS" in resumed.stderr and f"2 of 3 instructions reused from run {parent}" in resumed.stderr
    assert re.search(r"^/instructions/2\s+model_inference\s+Predictions: 9 items by fire-vit-b", resumed.stdout, re.M)
    assert ("POST", f"/runs/{parent}/retry", "Bearer stand-in-token") in seen(httpserver)


def test_retry_no_wait_and_json_against_a_stand_in_of_the_route(stand_in: str, httpserver: HTTPServer):
    parent, new = GatewayStandIn.FAILED, GatewayStandIn.RESUMED
    quick = cli(stand_in, "retry", parent, "--no-wait")
    assert quick.returncode == 0 and quick.stdout.strip() == new, quick
    assert not any(method == "GET" for method, *_ in seen(httpserver))  # nothing followed
    launched = json.loads(cli(stand_in, "retry", parent, "--no-wait", "--json").stdout)
    assert launched == {
        "status": "success",
        "run_id": new,
        "parent_run_id": parent,
        "run_url": f"http://dagster.invalid/runs/{new}",
    }
    followed = cli(stand_in, "--json", "retry", parent)
    assert followed.returncode == 0, followed
    final = json.loads(followed.stdout)
    assert final["run_status"] == "SUCCESS" and [e["state"] for e in final["instructions"]][:2] == ["reused"] * 2


def test_retry_refusals_and_a_failing_resumed_run_against_a_stand_in_of_the_route(stand_in: str):
    unknown = cli(stand_in, "retry", "no-such-run")
    assert unknown.returncode == 4 and unknown.stderr.strip() == "error: no run 'no-such-run'", unknown
    done = cli(stand_in, "retry", GatewayStandIn.SUCCEEDED, "--json")
    assert done.returncode == 4 and "nothing to resume" in json.loads(done.stdout)["message"], done
    fails = cli(stand_in, "retry", GatewayStandIn.RESUMED)
    assert fails.returncode == 1, fails
    assert fails.stderr.strip().splitlines()[-1] == (
        f"run {GatewayStandIn.RESUMED_FAILS} FAILURE: model_inference at /instructions/2: model server down"
    )


def test_report_and_cancel_json_against_a_stand_in(stand_in: str, tmp_path: Path):
    run_id = GatewayStandIn.RESUMED
    target = tmp_path / "page.html"
    saved = cli(stand_in, "report", run_id, "-o", str(target), "--json")
    assert saved.returncode == 0 and json.loads(saved.stdout) == {"path": str(target.resolve())}, saved
    assert target.read_text().startswith("<!doctype html>")
    plain = subprocess.run(
        [str(CLI), "report", run_id], cwd=tmp_path, env=cli_env(stand_in), capture_output=True, text=True, timeout=30
    )
    assert plain.stdout.strip() == f"report saved to constellation-report-{run_id[:8]}.html", plain
    cancelled = cli(stand_in, "cancel", run_id, "--json")
    assert json.loads(cancelled.stdout) == {"run_id": run_id, "run_status": "CANCELING"}


def test_make_run_links_the_command_into_local_bin_when_that_is_on_path(tmp_path: Path):
    home, venv_bin = tmp_path / "home", tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    command = venv_bin / "constellation"
    command.write_text("#!/bin/sh\necho linked\n")
    command.chmod(0o755)
    local_bin = home / ".local" / "bin"
    path = f"/usr/bin{os.pathsep}{local_bin}"

    assert "ln -s" in place(command, "/usr/bin", home) and not local_bin.exists()  # not on PATH: a hint only
    said = place(command, path, home)
    assert said.startswith("constellation is on PATH: ") and "rm " in said, said
    assert (local_bin / "constellation").resolve() == command.resolve()
    assert subprocess.run(["constellation"], env={"PATH": path}, capture_output=True, text=True).stdout == "linked\n"
    assert place(command, path, home) == f"constellation is on PATH: {local_bin / 'constellation'}"

    other = tmp_path / "other-checkout" / "constellation"  # another checkout's link is moved to this one
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    (local_bin / "constellation").unlink()
    (local_bin / "constellation").symlink_to(other)
    assert f"(was {other})" in place(command, path, home)
    assert (local_bin / "constellation").resolve() == command.resolve()

    (local_bin / "constellation").unlink()  # someone else's program by that name is left alone
    (local_bin / "constellation").write_text("#!/bin/sh\necho theirs\n")
    assert "left alone" in place(command, path, home)
    assert (local_bin / "constellation").read_text().endswith("theirs\n")


def test_make_run_prints_where_the_command_is_when_it_cannot_link(tmp_path: Path):
    env = {**os.environ, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    said = subprocess.run(
        [sys.executable, "-m", "constellation_cli.link"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert said.returncode == 0, said
    assert said.stdout.startswith(f"constellation is {CLI}") and f"ln -s {CLI} ~/.local/bin/" in said.stdout
    assert not (tmp_path / ".local").exists()


@e2e
def test_runs_lists_the_newest_first_with_what_they_ran_and_why_they_failed(stack: Stack, write_body):
    ran = cli(stack.api_url, "submit", "--no-wait", write_body(local_pipeline())).stdout.strip()
    failed = cli(stack.api_url, "submit", "--no-wait", write_body(OVERFLOWS)).stdout.strip()
    for run_id in (ran, failed):
        stack.wait_for_run(run_id)
    listed = cli(stack.api_url, "runs", "--limit", "2")
    assert listed.returncode == 0, listed
    rows = [line for line in listed.stdout.splitlines() if RUN_ID.match(line)]
    assert [row.split()[:2] for row in rows] == [[failed, "FAILURE"], [ran, "SUCCESS"]], listed.stdout
    assert "resize_image" in rows[1] and "math_block" in rows[0] and "/instructions/0: row 1" in rows[0]
    assert "largest float" in listed.stdout  # the error, wrapped in its column
    [more] = [line for line in listed.stderr.splitlines() if line.startswith("more: ")]
    assert more == f"more: constellation runs --limit 2 --cursor {ran}"
    after = json.loads(cli(stack.api_url, "runs", "--limit", "2", "--cursor", ran, "--json").stdout)
    assert ran not in {r["run_id"] for r in after["runs"]} and failed not in {r["run_id"] for r in after["runs"]}
    failures = json.loads(cli(stack.api_url, "runs", "--state", "FAILURE", "--json").stdout)["runs"]
    assert failed in {r["run_id"] for r in failures} and {r["run_status"] for r in failures} == {"FAILURE"}
    wrong = cli(stack.api_url, "runs", "--state", "DONE")
    assert wrong.returncode == 2 and "'DONE' is not a run state" in wrong.stderr, wrong
