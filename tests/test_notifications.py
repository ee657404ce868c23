"""Run-status notifications: the daemon's sensors call the configured URL on start, success, failure, cancel."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from conftest import Stack, local_pipeline, start_stack, stop_stack
from orchestrator.assets.notifications import STATUS_WORDS, StatusNotifier

SENSORS = [f"notify_run_{word}" for word in STATUS_WORDS.values()]


@dataclass
class Request:
    method: str
    path: str
    body: dict
    headers: dict[str, str]
    answered: int


@dataclass
class Receiver:
    """A stand-in for the backend: records every request; a path in `answers` gets those codes before 200s.

    It also serves GET /slow.bin, a download that trickles for a minute (a run that stays running).
    """

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-length", str(120 * 1024))
                self.end_headers()
                try:
                    for _ in range(120):
                        self.wfile.write(b"x" * 1024)
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    pass

            def do_PUT(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    queued = receiver.answers.get(self.path)
                    code = queued.pop(0) if queued else 200
                    receiver.requests.append(
                        Request(self.command, self.path, json.loads(raw or b"{}"), dict(self.headers), code)
                    )
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_PUT

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, paths: list[str], timeout_s: float = 60) -> None:
        """Until every path was answered 200 at least once (sensors tick every 5 s)."""
        deadline = time.monotonic() + timeout_s
        missing = paths
        while time.monotonic() < deadline:
            missing = [p for p in paths if not any(r.answered == 200 for r in self.seen(p))]
            if not missing:
                return
            time.sleep(0.5)
        raise AssertionError(f"no notification in {timeout_s} s for {missing}; got {[r.path for r in self.requests]}")


def status_path(run_id: str, word: str) -> str:
    return f"/pipelines/status/{run_id}/{word}"


def sensor_ticks(stack: Stack, sensor: str, limit: int = 50) -> list[dict]:
    """The sensor's latest ticks as the Dagster UI shows them, with their log lines."""
    query = """query($selector: SensorSelector!, $limit: Int) { sensorOrError(sensorSelector: $selector) {
        __typename ... on Sensor { sensorState { ticks(limit: $limit) {
            status originRunIds skipReason logEvents { events { level message } } } } } } }"""
    selector = {"repositoryName": "main", "repositoryLocationName": "constellation", "sensorName": sensor}
    answer = httpx.post(stack.dagster_url + "/graphql", json={"query": query,
                                                               "variables": {"selector": selector, "limit": limit}})
    found = answer.json()["data"]["sensorOrError"]
    assert found["__typename"] == "Sensor", found
    return found["sensorState"]["ticks"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Stack]:
    template = receiver.base_url + "/pipelines/status/{run_id}/{status}"
    running = start_stack(tmp_path_factory.mktemp("notify_stack"), {"CONSTELLATION_NOTIFY_URL": template})
    try:
        # A run-status sensor's first tick only sets its cursor at the newest event: runs
        # submitted before it are not notified. Wait until every sensor has ticked once.
        deadline = time.monotonic() + 60
        while not all(sensor_ticks(running, name, limit=1) for name in SENSORS):
            assert time.monotonic() < deadline, f"the sensors never ticked:\n{running.log_tail()}"
            time.sleep(0.5)
        yield running
    finally:
        stop_stack(running)


@pytest.mark.e2e
def test_start_success_failure_and_cancel_are_put_to_the_url(notify_stack: Stack, receiver: Receiver):
    with notify_stack.client() as api:
        ok = api.post("/execute", json=local_pipeline()).json()["run_id"]
        failing = api.post("/execute", json=local_pipeline(path="missing-folder")).json()["run_id"]
        slow = {"operation": "import_from_url", "parameters": {"url": receiver.base_url + "/slow.bin"}}
        cancelled = api.post("/execute", json={"instructions": [slow]}).json()["run_id"]
        deadline = time.monotonic() + 30
        while api.get(f"/runs/{cancelled}").json()["run_status"] != "STARTED" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.post(f"/runs/{cancelled}/cancel").status_code == 200
    ends = {run_id: notify_stack.wait_for_run(run_id)["run_status"] for run_id in (ok, failing, cancelled)}
    assert ends == {ok: "SUCCESS", failing: "FAILURE", cancelled: "CANCELED"}
    expected = {ok: ["started", "success"], failing: ["started", "failure"], cancelled: ["started", "canceled"]}
    receiver.wait_for([status_path(run_id, word) for run_id, words in expected.items() for word in words])
    time.sleep(6)  # one more sensor tick: nothing is sent twice, and no run gets another status
    for run_id, words in expected.items():
        sent = sorted(r.path.rsplit("/", 1)[1] for r in receiver.requests if f"/{run_id}/" in r.path)
        assert sent == sorted(words), (run_id, sent)
    [request] = receiver.seen(status_path(ok, "success"))
    assert request.method == "PUT" and request.body == {"run_id": ok, "status": "success"}


@pytest.mark.e2e
def test_server_errors_are_retried(notify_stack: Stack, receiver: Receiver):
    with notify_stack.client() as api:
        run_id = api.post("/execute", json=local_pipeline(width=20)).json()["run_id"]
    path = status_path(run_id, "success")
    receiver.answers[path] = [500, 500]  # set before the run can end: success comes after it
    assert notify_stack.wait_for_run(run_id)["run_status"] == "SUCCESS"
    receiver.wait_for([path])
    assert [r.answered for r in receiver.seen(path)] == [500, 500, 200]


@pytest.mark.e2e
def test_a_run_succeeds_when_the_backend_is_down_and_the_sensor_logs_it(notify_stack: Stack, receiver: Receiver):
    receiver.stop()
    try:
        with notify_stack.client() as api:
            run_id = api.post("/execute", json=local_pipeline(width=18)).json()["run_id"]
        assert notify_stack.wait_for_run(run_id)["run_status"] == "SUCCESS"
        deadline, logged = time.monotonic() + 60, []
        while not logged and time.monotonic() < deadline:
            time.sleep(1)
            logged = [event for tick in sensor_ticks(notify_stack, "notify_run_success")
                      if run_id in tick["originRunIds"] for event in tick["logEvents"]["events"]
                      if event["level"] == "ERROR"]
        assert logged, f"no error logged on a notify_run_success tick for {run_id}:\n{notify_stack.log_tail()}"
        assert f"could not notify success of run {run_id}" in logged[0]["message"]
        assert "ConnectError" in logged[0]["message"] and "after 3 attempt(s)" in logged[0]["message"]
    finally:
        receiver.start()  # the same port again
    with notify_stack.client() as api:
        assert api.get(f"/runs/{run_id}").json()["run_status"] == "SUCCESS"


# The notifier on its own (no stack): what it sends, what it retries, what it keeps out of logs.


def test_unset_url_turns_notifications_off():
    assert StatusNotifier.from_env({}) is None
    assert StatusNotifier.from_env({"CONSTELLATION_NOTIFY_URL": "  "}) is None
    notifier = StatusNotifier.from_env({"CONSTELLATION_NOTIFY_URL": "http://b/{run_id}/{status}",
                                        "CONSTELLATION_NOTIFY_METHOD": "post"})
    assert notifier is not None and notifier.method == "POST"
    assert notifier.url("r1", "success") == "http://b/r1/success"


def test_a_refusal_is_not_retried_and_secrets_stay_out_of_the_log(receiver: Receiver, caplog):
    template = receiver.base_url + "/refuse/{run_id}/{status}?key=k-secret"
    with_user = template.replace("http://", "http://user:pw-secret@")
    receiver.answers["/refuse/r3/failure?key=k-secret"] = [404]
    log = logging.getLogger("test_notifications")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert StatusNotifier(template, token="t-secret").send("r2", "failure", log) is True
        assert StatusNotifier(with_user, first_delay_s=0.01).send("r3", "failure", log) is False
    [sent] = receiver.seen("/refuse/r2/failure?key=k-secret")
    assert sent.headers["Authorization"] == "Bearer t-secret"
    assert [r.answered for r in receiver.seen("/refuse/r3/failure?key=k-secret")] == [404]  # asked once
    assert [r.levelname for r in caplog.records] == ["INFO", "ERROR"] and "HTTP 404" in caplog.records[1].message
    assert not any(secret in caplog.text for secret in ("pw-secret", "k-secret", "t-secret"))


def test_an_unusable_url_is_logged_not_raised(caplog):
    log = logging.getLogger("test_notifications")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert StatusNotifier("ftp://nowhere/{run_id}", first_delay_s=0.01).send("r4", "started", log) is False
    assert caplog.records[-1].levelname == "ERROR" and "r4" in caplog.records[-1].message
