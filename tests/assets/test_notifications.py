"""Run-status callbacks: one sensor sends running → completed / failed, in order per run, to a back-end.

The receiver behaves like the Agentic Earth back-end's `PUT /pipelines/status/{run_id}/{status}`
(api/backend/app/features/core/routes/pipelines.py at agentic-earth/constellation 17e3f4a): 200 for
a run id it stored, 400 for any other. The sensor is evaluated on a real Dagster instance (SQLite,
as the local stack's), and by the daemon of the real stack in the end-to-end tests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, job, op
from pytest_httpserver import HTTPServer
from werkzeug import Request as HttpRequest
from werkzeug import Response

from harness import ROOT, Stack, local_pipeline, start_stack, stop_stack
from orchestrator import runs
from orchestrator.assets import notifications
from orchestrator.assets.notifications import DEFAULT_WORDS, SENSOR_NAME, StatusNotifier, parse_words

STATUS_ROUTE = "/pipelines/status/{run_id}/{status}"


@dataclass
class Request:
    method: str
    path: str
    body: dict
    headers: dict[str, str]
    answered: int

    @property
    def run_id(self) -> str:
        return self.path.split("?")[0].rsplit("/", 2)[-2]

    @property
    def word(self) -> str:
        return self.path.split("?")[0].rsplit("/", 1)[-1]


@dataclass
class Receiver:
    """A stand-in for the back-end's status route: 200 for a run it knows, 400 for any other.

    `known` holds the run ids the back-end stored (it stores one when /execute answers); None knows
    every run. A path in `answers` gets those codes first. Stopped and started again, it listens on
    the same port (a back-end that was down and came back).
    """

    requests: list[Request] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    known: set[str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: HTTPServer = field(default_factory=lambda: HTTPServer("127.0.0.1", threaded=True))

    def __post_init__(self) -> None:
        self.server.expect_request(re.compile("/.*")).respond_with_handler(self.answer)

    def answer(self, sent: HttpRequest) -> Response:
        path = sent.path + (f"?{sent.query_string.decode()}" if sent.query_string else "")
        with self.lock:
            request = Request(sent.method, path, json.loads(sent.get_data() or b"{}"), dict(sent.headers), 200)
            queued = self.answers.get(path)
            if queued:
                request.answered = queued.pop(0)
            elif self.known is not None and request.run_id not in self.known:
                request.answered = 400
            self.requests.append(request)
        body = (
            '{"message": "Pipeline status updated successfully."}'
            if request.answered == 200
            else '{"detail": "Failed to update pipeline status."}'
        )
        return Response(body, status=request.answered, content_type="application/json")

    def start(self) -> None:
        self.server.start()  # the port it had before, once it has had one

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.url_for("").rstrip("/")

    @property
    def template(self) -> str:
        return self.base_url + STATUS_ROUTE

    def seen(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def of_run(self, run_id: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.run_id == run_id]

    def accepted(self, run_id: str) -> list[str]:
        """The words the back-end stored for the run, in the order they arrived."""
        return [r.word for r in self.of_run(run_id) if r.answered == 200]

    def wait_for(self, expected: dict[str, list[str]], timeout_s: float = 60) -> None:
        """Until each run's accepted words are the expected ones (sensors tick every 5 s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.accepted(run_id) == words for run_id, words in expected.items()):
                return
            time.sleep(0.3)
        got = {run_id: self.accepted(run_id) for run_id in expected}
        raise AssertionError(f"in {timeout_s} s the back-end got {got}, not {expected}")


def status_path(run_id: str, word: str) -> str:
    return STATUS_ROUTE.format(run_id=run_id, status=word)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


# --- the settings ------------------------------------------------------------------------------


def test_no_url_means_no_sensor_at_all():
    assert StatusNotifier.from_env({}) is None
    assert StatusNotifier.from_env({"CONSTELLATION_NOTIFY_URL": "  "}) is None
    assert notifications.notification_sensors(notification_test_job, None) == []
    # The code location as the code server loads it: without the setting, no sensor ticks or logs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSTELLATION_NOTIFY_")}
    script = "from orchestrator.assets.repository import main; print([s.name for s in main.sensor_defs])"
    without = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert without.stdout.strip().splitlines()[-1] == "[]", without.stderr[-2000:]
    env["CONSTELLATION_NOTIFY_URL"] = "http://main_api:8000" + STATUS_ROUTE
    with_url = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert with_url.stdout.strip().splitlines()[-1] == f"['{SENSOR_NAME}']", with_url.stderr[-2000:]


def test_the_original_back_ends_words_by_default_and_others_when_configured():
    notifier = StatusNotifier.from_env(
        {"CONSTELLATION_NOTIFY_URL": "http://b/{run_id}/{status}", "CONSTELLATION_NOTIFY_METHOD": "post"}
    )
    assert notifier is not None and notifier.method == "POST"
    assert dict(notifier.words) == {
        "started": "running",
        "success": "completed",
        "failure": "failed",
        "canceled": "failed",
    }
    assert notifier.url("r1", "completed") == "http://b/r1/completed"
    assert parse_words(" success=success , canceled=canceled,started=") == {
        **DEFAULT_WORDS,
        "success": "success",
        "canceled": "canceled",
        "started": "",
    }
    for bad in ("succeeded=ok", "success", "failure=a/b", "success=../x"):
        with pytest.raises(ValueError, match="CONSTELLATION_NOTIFY_WORDS"):
            parse_words(bad)


# --- one call: what it sends, what it retries, what it keeps out of logs ----------------------------


def test_the_backends_400_for_a_run_it_does_not_know_yet_is_retried(receiver: Receiver):
    """The back-end stores the run id only after /execute answered: the first call may come too early."""
    receiver.answers[status_path("r-early", "running")] = [400]
    notifier = StatusNotifier(receiver.template, first_delay_s=0.01)
    assert notifier.send("r-early", "running", logging.getLogger("test"), "Run has started") is True
    sent = receiver.seen(status_path("r-early", "running"))
    assert [r.answered for r in sent] == [400, 200]
    assert sent[-1].method == "PUT" and sent[-1].body == {
        "message": "Run has started",
        "run_id": "r-early",
        "status": "running",
    }


def test_a_refusal_is_not_retried_and_secrets_stay_out_of_the_log(receiver: Receiver, caplog):
    template = receiver.base_url + "/refuse/{run_id}/{status}?key=k-secret"
    with_user = template.replace("http://", "http://user:pw-secret@")
    receiver.answers["/refuse/r3/failed?key=k-secret"] = [403]
    log = logging.getLogger("test_notifications")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert StatusNotifier(template, token="t-secret").send("r2", "failed", log) is True
        assert StatusNotifier(with_user, first_delay_s=0.01).send("r3", "failed", log) is False
    [sent] = receiver.seen("/refuse/r2/failed?key=k-secret")
    assert sent.headers["Authorization"] == "Bearer t-secret"
    assert [r.answered for r in receiver.seen("/refuse/r3/failed?key=k-secret")] == [403]  # asked once
    assert [r.levelname for r in caplog.records] == ["INFO", "ERROR"] and "HTTP 403" in caplog.records[1].message
    assert not any(secret in caplog.text for secret in ("pw-secret", "k-secret", "t-secret"))


def test_an_unusable_url_is_logged_not_raised(caplog):
    log = logging.getLogger("test_notifications")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert StatusNotifier("ftp://nowhere/{run_id}", first_delay_s=0.01).send("r4", "running", log) is False
    assert caplog.records[-1].levelname == "ERROR" and "r4" in caplog.records[-1].message


# --- the sensor on a real Dagster instance -------------------------------------------------------


@op(config_schema={"fail": bool})
def work(context) -> None:
    if context.op_config["fail"]:
        raise ValueError("the share link points nowhere")


@job(name="notification_test_job")
def notification_test_job():
    work()


@job(name="some_other_job")
def other_job():
    work()


CONFIG = {"ops": {"work": {"config": {"fail": False}}}}


def run(instance: DagsterInstance, fail: bool = False, which=notification_test_job) -> str:
    config = {"ops": {"work": {"config": {"fail": fail}}}}
    return which.execute_in_process(instance=instance, run_config=config, raise_on_error=False).run_id


@dataclass
class Sensor:
    """The callback sensor of `notification_test_job`, ticked by hand the way the daemon ticks it."""

    instance: DagsterInstance
    notifier: StatusNotifier
    artifact_root: Path
    cursor: str | None = None

    def tick(self, clock=time.monotonic) -> str | None:
        context = build_sensor_context(instance=self.instance, cursor=self.cursor, repository_name="main")
        result = notifications.evaluate(context, notification_test_job.name, self.notifier, self.artifact_root, clock)
        self.cursor = context.cursor
        return result.skip_message if result is not None else None


@pytest.fixture
def sensor(receiver: Receiver, tmp_path: Path) -> Iterator[Sensor]:
    receiver.known = set()
    with instance_for_test() as instance:
        ticking = Sensor(instance, StatusNotifier(receiver.template, first_delay_s=0.01), tmp_path / "artifacts")
        assert "runs before now are not notified" in (ticking.tick() or "")  # the first tick sets the cursor
        yield ticking
    receiver.known = None


def test_running_then_completed_or_failed_with_the_reason(sensor: Sensor, receiver: Receiver):
    ok, failing = run(sensor.instance), run(sensor.instance, fail=True)
    receiver.known |= {ok, failing}
    sensor.tick()
    assert receiver.accepted(ok) == ["running", "completed"]
    assert receiver.accepted(failing) == ["running", "failed"]
    [failed] = receiver.seen(status_path(failing, "failed"))
    assert failed.body["message"] == "work: ValueError: the share link points nowhere"
    [completed] = receiver.seen(status_path(ok, "completed"))
    assert completed.body == {"message": "Run has been completed successfully", "run_id": ok, "status": "completed"}
    sensor.tick()  # nothing new: nothing sent again
    assert len(receiver.of_run(ok)) == 2 and len(receiver.of_run(failing)) == 2


def test_a_failed_instruction_is_the_message_and_a_cancel_is_failed(sensor: Sensor, receiver: Receiver):
    instance = sensor.instance
    failed = instance.create_run_for_job(notification_test_job, run_config=CONFIG)
    progress = runs.run_dir(sensor.artifact_root.resolve(), failed.run_id) / runs.PROGRESS
    error = {
        "path": "/instructions/1/parameters/data",
        "operation": "import_from_google_drive",
        "message": "Google Drive has no file '1abc'",
    }
    runs.write_json(progress, {"done": 0, "total": 2, "instructions": [], "error": error})
    instance.report_run_failed(failed)
    cancelled = instance.create_run_for_job(notification_test_job, run_config=CONFIG)
    instance.report_run_canceled(cancelled, message="cancelled by the user")
    receiver.known |= {failed.run_id, cancelled.run_id}
    sensor.tick()
    [sent] = receiver.of_run(failed.run_id)
    assert sent.word == "failed" and sent.body["message"] == (
        "import_from_google_drive at /instructions/1/parameters/data failed: Google Drive has no file '1abc'"
    )
    [sent] = receiver.of_run(cancelled.run_id)
    assert sent.word == "failed" and sent.body["message"] == "the run was cancelled: cancelled by the user"


def test_only_the_pipeline_jobs_runs_are_sent(sensor: Sensor, receiver: Receiver):
    other = run(sensor.instance, which=other_job)
    ours = run(sensor.instance)
    receiver.known |= {other, ours}
    sensor.tick()
    assert receiver.of_run(other) == [] and receiver.accepted(ours) == ["running", "completed"]


def test_order_holds_when_events_come_in_several_ticks(sensor: Sensor, receiver: Receiver, monkeypatch):
    monkeypatch.setattr(notifications, "FETCH_LIMIT", 2)  # 5 runs' 10 events: the queries are cut short
    started = [run(sensor.instance, fail=i % 2 == 1) for i in range(5)]
    receiver.known |= set(started)
    for _ in range(8):
        sensor.tick()
    for i, run_id in enumerate(started):
        assert [r.word for r in receiver.of_run(run_id)] == ["running", "failed" if i % 2 else "completed"]


def test_a_tick_out_of_time_leaves_the_rest_for_the_next_without_going_back(
    sensor: Sensor, receiver: Receiver, monkeypatch
):
    monkeypatch.setattr(notifications, "PARALLEL_RUNS", 1)  # one run after the other: a known order
    first, second = run(sensor.instance), run(sensor.instance)
    receiver.known |= {first, second}
    before = len(receiver.requests)
    # The budget runs out as soon as one call went out.
    sensor.tick(clock=lambda: 0.0 if len(receiver.requests) == before else notifications.TICK_BUDGET_S + 1)
    assert receiver.accepted(first) == ["running"] and receiver.accepted(second) == []
    replayed_cursor = sensor.cursor
    sensor.tick()
    assert receiver.accepted(first) == ["running", "completed"]
    assert receiver.accepted(second) == ["running", "completed"]
    sensor.cursor = replayed_cursor  # a tick replayed (its cursor lost): nothing repeats, nothing goes back
    sensor.tick()
    assert receiver.accepted(first) == ["running", "completed"] and len(receiver.of_run(second)) == 2


def test_the_back_end_down_never_fails_the_sensor(sensor: Sensor, receiver: Receiver, capfd):
    sensor.notifier = StatusNotifier("http://127.0.0.1:9" + STATUS_ROUTE, attempts=2, first_delay_s=0.01)
    run_id = run(sensor.instance)
    capfd.readouterr()
    assert sensor.tick() is None
    errors = [line for line in capfd.readouterr().err.splitlines() if " - ERROR - " in line]  # the tick's log
    assert len(errors) == 2 and f"could not notify completed of run {run_id}" in errors[1]
    assert "ConnectError" in errors[1] and "after 2 attempt(s); the run is not affected" in errors[1]
    sensor.notifier = StatusNotifier(receiver.template)
    sensor.tick()  # those are behind the cursor now: a later tick does not send them again
    assert receiver.of_run(run_id) == []


# --- the real stack: the daemon ticks the sensor, the gateway launches the runs ------------------------


def sensor_ticks(stack: Stack, limit: int = 50) -> list[dict]:
    """The sensor's latest ticks as the Dagster UI shows them, with their log lines."""
    query = """query($selector: SensorSelector!, $limit: Int) { sensorOrError(sensorSelector: $selector) {
        __typename ... on Sensor { sensorState { ticks(limit: $limit) {
            status skipReason logEvents { events { level message } } } } } } }"""
    selector = {"repositoryName": "main", "repositoryLocationName": "constellation", "sensorName": SENSOR_NAME}
    answer = httpx.post(
        stack.dagster_url + "/graphql", json={"query": query, "variables": {"selector": selector, "limit": limit}}
    )
    found = answer.json()["data"]["sensorOrError"]
    assert found["__typename"] == "Sensor", found
    return found["sensorState"]["ticks"]


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("notify_stack"), {"CONSTELLATION_NOTIFY_URL": receiver.template})
    try:
        # The first tick only sets the cursor at the newest event: runs submitted before it are not sent.
        deadline = time.monotonic() + 60
        while not sensor_ticks(running, limit=1):
            assert time.monotonic() < deadline, f"the sensor never ticked:\n{running.log_tail()}"
            time.sleep(0.5)
        yield running
    finally:
        stop_stack(running)


def submit(api: httpx.Client, receiver: Receiver, body: dict) -> str:
    """As the back-end does: POST /execute, then store the run id (from then on it answers 200)."""
    answer = api.post("/execute", json=body).json()
    assert answer["status"] == "success", answer
    receiver.known.add(answer["run_id"])
    return answer["run_id"]


@pytest.mark.e2e
def test_the_back_end_sees_running_then_completed_or_failed(
    notify_stack: Stack, receiver: Receiver, slow_file_url: str
):
    receiver.known = set()
    try:
        (notify_stack.data_root / "empty-folder").mkdir(exist_ok=True)  # exists (checked at launch), holds nothing
        with notify_stack.client() as api:
            ok = submit(api, receiver, local_pipeline())
            failing = submit(api, receiver, local_pipeline(path="empty-folder"))
            slow = {"operation": "import_from_url", "parameters": {"url": slow_file_url}}
            cancelled = submit(api, receiver, {"instructions": [slow]})
            deadline = time.monotonic() + 30
            while api.get(f"/runs/{cancelled}").json()["run_status"] != "STARTED" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert api.post(f"/runs/{cancelled}/cancel").status_code == 200
        ends = {run_id: notify_stack.wait_for_run(run_id)["run_status"] for run_id in (ok, failing, cancelled)}
        assert ends == {ok: "SUCCESS", failing: "FAILURE", cancelled: "CANCELED"}
        receiver.wait_for(
            {ok: ["running", "completed"], failing: ["running", "failed"], cancelled: ["running", "failed"]}
        )
        time.sleep(6)  # one more tick: nothing is sent twice, and no run gets another status
        for run_id in (ok, failing, cancelled):
            assert [r.word for r in receiver.of_run(run_id) if r.answered == 200] == receiver.accepted(run_id)
            assert len(receiver.accepted(run_id)) == 2
        [failed] = receiver.seen(status_path(failing, "failed"))
        assert failed.body["message"].startswith("import_from_local at /instructions/0/parameters/data")
        assert "'empty-folder' holds no files" in failed.body["message"]
        [completed] = receiver.seen(status_path(ok, "completed"))
        assert completed.method == "PUT" and completed.body["status"] == "completed"
    finally:
        receiver.known = None


@pytest.mark.e2e
def test_a_run_succeeds_when_the_back_end_is_down_and_the_sensor_logs_it(notify_stack: Stack, receiver: Receiver):
    receiver.stop()
    try:
        with notify_stack.client() as api:
            run_id = api.post("/execute", json=local_pipeline(width=18)).json()["run_id"]
        assert notify_stack.wait_for_run(run_id)["run_status"] == "SUCCESS"
        deadline, logged = time.monotonic() + 60, []
        while not logged and time.monotonic() < deadline:
            time.sleep(1)
            events = [event for tick in sensor_ticks(notify_stack) for event in tick["logEvents"]["events"]]
            wanted = f"could not notify completed of run {run_id}"
            logged = [e["message"] for e in events if e["level"] == "ERROR" and wanted in e["message"]]
        assert logged, f"no error logged on a {SENSOR_NAME} tick for {run_id}:\n{notify_stack.log_tail()}"
        assert "ConnectError" in logged[0] and "after 3 attempt(s)" in logged[0]
    finally:
        receiver.start()  # the same port again
    with notify_stack.client() as api:
        assert api.get(f"/runs/{run_id}").json()["run_status"] == "SUCCESS"
