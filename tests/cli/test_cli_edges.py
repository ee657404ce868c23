"""The `constellation` command with odd arguments and odd gateways: a non-zero exit and one clear line, never a
traceback. Against a local stand-in of the gateway (or nothing at all): no stack is needed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from harness import cli, free_port

RUN = "00000000-0000-0000-0000-000000000000"


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.splitlines()
    return line


@pytest.fixture
def answering() -> Iterator[tuple[str, dict]]:
    """A stand-in that answers every request with what the test puts in `answer` (status, JSON body)."""
    answer: dict = {"status": 404, "body": {"status": "failure", "message": "Not Found"}}

    def reply(_: Request) -> Response:
        return Response(json.dumps(answer["body"]), status=answer["status"], content_type="application/json")

    server = HTTPServer("127.0.0.1", free_port())
    server.expect_request("").respond_with_handler(reply)
    server.start()
    yield server.url_for("/").rstrip("/"), answer
    server.stop()


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:8000/\t"])
def test_a_url_that_is_not_one_exits_3_naming_it(url: str):
    done = cli("http://127.0.0.1:1", "runs", "--url", url)
    assert done.returncode == 3, done
    assert "not a URL" in one_line(done) and "given by --url" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "--cursor", "A" * 100_000),
        ("leaderboard", "local/samples", "--cursor", "A" * 100_000),
        ("status", "a" * 100_000),
    ],
)
def test_an_argument_too_long_for_a_url_exits_2(args: tuple[str, ...]):
    done = cli(f"http://127.0.0.1:{free_port()}", *args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "too long" in one_line(done)


@pytest.mark.parametrize("run", ["", ".", "..", "../../etc/passwd", "a/b"])
@pytest.mark.parametrize("command", ["status", "results", "report", "cancel"])
def test_a_run_id_that_is_no_path_segment_is_no_run(answering, command: str, run: str):
    url, _ = answering
    done = cli(url, command, run)
    assert done.returncode == 4, done
    assert one_line(done) == f"error: no run {run!r}"


def test_problems_that_are_not_objects_are_left_out(answering):
    url, answer = answering
    answer.update(status=422, body={"status": "failure", "message": "bad", "errors": [1, "x", {"path": "/a"}]})
    done = cli(url, "leaderboard", "local/samples")
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and done.stderr.splitlines() == ["error: bad", "  /a: "]


@pytest.mark.parametrize("body", [{}, {"runs": None, "models": 5, "results": "x", "operations": {}, "run_id": 1}])
@pytest.mark.parametrize(
    "args",
    [
        ("runs",),
        ("leaderboard", "local/samples"),
        ("status", RUN),
        ("results", RUN),
        ("ops",),
        ("cancel", RUN),
    ],
)
def test_a_success_of_another_shape_is_not_a_constellation_gateway(answering, body: dict, args: tuple[str, ...]):
    url, answer = answering
    answer.update(status=200, body=body)
    done = cli(url, *args)
    assert done.returncode == 4, done
    assert one_line(done).endswith("is this a Constellation gateway?")


def test_a_report_that_is_not_a_page_is_not_saved(answering, tmp_path):
    url, answer = answering
    answer.update(status=200, body={"status": "success"})
    target = tmp_path / "report.html"
    done = cli(url, "report", RUN, "--output", str(target))
    assert done.returncode == 4, done
    assert "without an HTML page" in one_line(done) and not target.exists()
