"""Run-status callbacks: tell a back-end when a pipeline run starts and how it ends, in order.

When `CONSTELLATION_NOTIFY_URL` is set, the code location defines ONE sensor, `notify_run_status`,
evaluated every few seconds by the daemon's sensor loop (in the code server). It reads Dagster's
run-status events (start, success, failure, cancel) of `build_execute_job` runs after its cursor, in
the order the event log stored them (storage ids), and for each sends `CONSTELLATION_NOTIFY_METHOD`
(default PUT) to the URL with `{run_id}` and `{status}` filled in, e.g.
`http://main_api:8000/pipelines/status/{run_id}/{status}`, with the body
`{"message": …, "run_id": …, "status": …}`: the message says why a run failed.

The words are the Agentic Earth back-end's by default (its front-end shows `completed` green,
`running` yellow, anything else red, and a failure's message only for `failed`):

    started → running    success → completed    failure → failed    canceled → failed

`CONSTELLATION_NOTIFY_WORDS` changes them for other receivers, e.g.
`started=started,success=success,failure=failure,canceled=canceled`; an empty word
(`started=`) sends nothing for that status.

Per run, callbacks go out in order and never go back (no `running` after `completed`): one sensor
sees every status, a run's statuses are sent one after the other, and a status already sent is
not sent again when a tick is replayed. Runs are sent for side by side. Failed calls are retried
with backoff, then logged on the sensor's tick: a callback never fails a run, and the sensor
never raises. With no URL set there is no sensor at all (nothing ticks, nothing is logged).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import tenacity
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    JobDefinition,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.event_api import EventLogRecord, RunStatusChangeEventType, RunStatusChangeRecordsFilter
from dagster._core.events import EVENT_TYPE_TO_PIPELINE_RUN_STATUS as EVENT_TYPE_TO_RUN_STATUS

from orchestrator import contract, runs, runstore
from orchestrator.assets.resources import Workspace
from orchestrator.contract import RunChange

SENSOR_NAME = "notify_run_status"
# The run-status events read, each as the change it reports: the status Dagster's event sets (its own
# mapping), as contract.CHANGE_OF_STATUS names it.
STATUS_EVENTS: dict[RunStatusChangeEventType, RunChange] = {
    event_type: contract.CHANGE_OF_STATUS[contract.DagsterRunStatus(EVENT_TYPE_TO_RUN_STATUS[event_type].value)]
    for event_type in (
        DagsterEventType.RUN_START,
        DagsterEventType.RUN_SUCCESS,
        DagsterEventType.RUN_FAILURE,
        DagsterEventType.RUN_CANCELED,
    )
}
# A run's changes are sent in this order only (contract.CHANGE_RANK).
RANK = contract.CHANGE_RANK
# What the original Agentic Earth back-end and front-end understand.
DEFAULT_WORDS = contract.DEFAULT_CALLBACK_WORDS
MESSAGES = {
    RunChange.STARTED: "Run has started",
    RunChange.SUCCESS: "Run has been completed successfully",  # the original pipelines' words
}
# The daemon's sensor loop runs every 5 s; Dagster's default sensor interval would be 30 s.
SENSOR_INTERVAL_S = 5
# Events read per status per tick; the rest wait for the next tick.
FETCH_LIMIT = 100
# No new call starts after this long in a tick: the daemon gives a tick 60 s, and a call that
# starts just before takes at most attempts × timeout + delays (3 × 3 + 0.5 + 1 = 10.5 s).
TICK_BUDGET_S = 25.0
# Runs notified side by side (each run's own statuses always one after the other).
PARALLEL_RUNS = 8
MAX_MESSAGE_CHARS = 2000
# Answers worth asking again: the server's trouble, and the original back-end's 400, which it
# also gives for a run it does not know yet (it stores the run id after /execute answered).
RETRY_STATUSES = frozenset({400, 404, 408, 409, 425, 429})
_WORD = re.compile(r"^[A-Za-z0-9_.~-]{0,40}$")

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusNotifier:
    """Where and how to send a run's status; `token`, when set, goes as `Authorization: Bearer`."""

    url_template: str
    method: str = "PUT"
    token: str | None = None
    words: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_WORDS))
    attempts: int = 3
    timeout_s: float = 3.0
    first_delay_s: float = 0.5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StatusNotifier | None:
        """From CONSTELLATION_NOTIFY_URL / _METHOD / _TOKEN / _WORDS; None when no URL is set."""
        url = environ.get("CONSTELLATION_NOTIFY_URL", "").strip()
        if not url:
            return None
        method = environ.get("CONSTELLATION_NOTIFY_METHOD", "").strip().upper() or "PUT"
        words = parse_words(environ.get("CONSTELLATION_NOTIFY_WORDS", ""))
        return cls(url, method, environ.get("CONSTELLATION_NOTIFY_TOKEN") or None, words)

    def url(self, run_id: str, word: str) -> str:
        # Plain replacement: other braces in the template are left alone instead of raising.
        return self.url_template.replace("{run_id}", run_id).replace("{status}", word)

    def send(self, run_id: str, word: str, log: logging.Logger, message: str = "") -> bool:
        """Send one status; retry what may pass next time; log the outcome, never raise."""
        try:
            url = self.url(run_id, word)
            shown = _without_secrets(url)
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            body = {"message": message, "run_id": run_id, "status": word}
            with httpx.Client(timeout=self.timeout_s, headers=headers) as client:
                return self._send(client, url, body, f"{word} of run {run_id} ({self.method} {shown})", log)
        except Exception as error:  # a callback must never break the sensor
            log.error(f"status callback {word} of run {run_id} failed: {_describe(error)}")
            return False

    def _send(self, client: httpx.Client, url: str, body: dict, what: str, log: logging.Logger) -> bool:
        def attempt() -> httpx.Response:
            response = client.request(self.method, url, json=body)
            if not response.is_success and _worth_retrying(response.status_code):
                raise _Retryable(f"HTTP {response.status_code}")
            return response

        def before_sleep(state: tenacity.RetryCallState) -> None:
            log.warning(
                f"notifying {what}: {_describe(state.outcome.exception() if state.outcome else None)} "
                f"(attempt {state.attempt_number} of {self.attempts}); retrying"
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.first_delay_s, exp_base=2),
            retry=tenacity.retry_if_exception_type((httpx.HTTPError, _Retryable)),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            response = retrying(attempt)
        except (httpx.HTTPError, _Retryable) as error:
            problem = _describe(error)
        else:
            if response.is_success:
                log.info(f"notified {what}: HTTP {response.status_code}")
                return True
            problem = f"HTTP {response.status_code}"  # refused (401, 403, 405...): asking again will not help
        tries = retrying.statistics.get("attempt_number", 1)
        log.error(f"could not notify {what}: {problem}, after {tries} attempt(s); the run is not affected")
        return False


class _Retryable(Exception):
    """An answer that may be different next time (5xx, 429, the back-end's 400 for a run it has not stored yet)."""


def _worth_retrying(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUSES


def parse_words(text: str) -> dict[str, str]:
    """`started=running,success=completed,...` over DEFAULT_WORDS; an empty word turns a status off."""
    words = dict(DEFAULT_WORDS)
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        status, equals, word = (part.strip() for part in pair.partition("="))
        if not equals or status not in DEFAULT_WORDS or not _WORD.match(word):
            raise ValueError(
                f"CONSTELLATION_NOTIFY_WORDS: {pair!r} is not <status>=<word> with a status among "
                f"{', '.join(DEFAULT_WORDS)} and a word of letters, digits, '.', '_', '~' or '-' (or empty: not sent)"
            )
        words[status] = word
    return words


class _SentStatuses:
    """The highest rank sent per run, in this process: a replayed tick neither repeats nor goes back."""

    def __init__(self, capacity: int = 20_000):
        self._ranks: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def claim(self, run_id: str, rank: int) -> bool:
        """True if a status of `rank` may go out for the run (and records it); False if one of it or later went."""
        with self._lock:
            if self._ranks.get(run_id, 0) >= rank:
                return False
            self._ranks[run_id] = rank
            self._ranks.move_to_end(run_id)
            while len(self._ranks) > self._capacity:
                self._ranks.popitem(last=False)
            return True


SENT = _SentStatuses()


@dataclass(frozen=True)
class _Status:
    storage_id: int
    run_id: str
    status: RunChange
    event_message: str


def notification_sensors(
    job: JobDefinition, notifier: StatusNotifier | None, artifact_root: str | Path | None = None
) -> Sequence[SensorDefinition]:
    """The callback sensor for `job`'s runs, on by default; none at all when `notifier` is None.

    A failure's reason is read from the run's progress file under `artifact_root`
    (CONSTELLATION_ARTIFACT_ROOT when not given).
    """
    if notifier is None:
        return []
    if artifact_root is None:
        artifact_root = Workspace.from_env().artifact_root
    return [status_sensor(job.name, notifier, artifact_root)]


def status_sensor(job_name: str, notifier: StatusNotifier, artifact_root: str | Path | None = None) -> SensorDefinition:
    @sensor(
        name=SENSOR_NAME,
        description=(
            f"Calls CONSTELLATION_NOTIFY_URL when a {job_name} run starts, succeeds, fails or is cancelled "
            "(in order, per run)."
        ),
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
    )
    def notify_run_status(context: SensorEvaluationContext):
        try:
            return evaluate(context, job_name, notifier, artifact_root)
        except Exception as error:  # a raising sensor marks its tick failed: log it, try again next tick
            context.log.error(f"run-status callbacks: {_describe(error)}")
            return SkipReason(f"could not read run-status events: {_describe(error)}")

    return notify_run_status


def evaluate(
    context: SensorEvaluationContext,
    job_name: str,
    notifier: StatusNotifier,
    artifact_root: str | Path | None,
    clock: Callable[[], float] = time.monotonic,
) -> SkipReason | None:
    """One tick: send the statuses stored after the cursor, in storage order per run; move the cursor."""
    instance = context.instance
    after = _cursor(context.cursor)
    if after is None:
        # The first tick starts at the newest event: turning callbacks on does not replay history.
        newest = _newest_storage_id(instance)
        context.update_cursor(json.dumps({"after": newest}))
        return SkipReason(f"callbacks start after event {newest}: runs before now are not notified")
    statuses = _statuses_after(instance, after, FETCH_LIMIT)
    if not statuses:
        return None
    deadline = clock() + TICK_BUDGET_S
    by_run: dict[str, list[_Status]] = {}
    for status in statuses:
        by_run.setdefault(status.run_id, []).append(status)
    ours = _runs_of_job(instance, list(by_run), job_name, context.repository_name)

    def send_run(run_id: str) -> int | None:
        """Send one run's statuses in order; the storage id of the first left for the next tick, if any."""
        for status in by_run[run_id]:
            if clock() > deadline:
                return status.storage_id
            word = notifier.words[status.status]
            if not word or not SENT.claim(run_id, RANK[status.status]):
                continue
            message = _message(instance, status, artifact_root)
            notifier.send(run_id, word, context.log, message)
        return None

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS, thread_name_prefix="notify") as pool:
        left = [s for s in pool.map(send_run, [r for r in by_run if r in ours]) if s is not None]
    # Everything before the first status left over is done; statuses sent after it are not sent again.
    context.update_cursor(json.dumps({"after": min(left) - 1 if left else statuses[-1].storage_id}))
    return None


def _cursor(text: str | None) -> int | None:
    try:
        return int(json.loads(text)["after"]) if text else None
    except (ValueError, TypeError, KeyError):
        return None


def _newest_storage_id(instance: DagsterInstance) -> int:
    newest = -1
    for event_type in STATUS_EVENTS:
        records = instance.fetch_run_status_changes(records_filter=event_type, limit=1).records
        newest = max([newest, *(r.storage_id for r in records)])
    return newest


def _statuses_after(instance: DagsterInstance, after: int, limit: int) -> list[_Status]:
    """Every run-status event after `after`, in storage order, up to where all four queries are complete."""
    found: list[tuple[EventLogRecord, RunChange]] = []
    complete_to: int | None = None
    for event_type, change in STATUS_EVENTS.items():
        records = instance.fetch_run_status_changes(
            records_filter=RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after),
            limit=limit,
            ascending=True,
        ).records
        found.extend((r, change) for r in records)
        if len(records) == limit:  # more of this kind wait: the others may only be taken up to here
            last = records[-1].storage_id
            complete_to = last if complete_to is None else min(complete_to, last)
    found.sort(key=lambda found_one: found_one[0].storage_id)
    return [
        _Status(r.storage_id, r.run_id, change, r.event_log_entry.message or "")
        for r, change in found
        if complete_to is None or r.storage_id <= complete_to
    ]


def _runs_of_job(instance: DagsterInstance, run_ids: list[str], job_name: str, repository: str | None) -> set[str]:
    found = set()
    for record in instance.get_run_records(filters=RunsFilter(run_ids=run_ids)):
        run = record.dagster_run
        origin = run.remote_job_origin
        if run.job_name != job_name:
            continue
        if origin is not None and repository and origin.repository_origin.repository_name != repository:
            continue
        found.add(run.run_id)
    return found


def _message(instance: DagsterInstance, status: _Status, artifact_root: str | Path | None) -> str:
    if status.status in MESSAGES:
        return MESSAGES[status.status]
    if status.status == RunChange.CANCELED:
        return _clip(f"the run was cancelled: {status.event_message}".rstrip(": "))
    return _clip(failure_reason(instance, status.run_id, artifact_root) or status.event_message or "the run failed")


def failure_reason(instance: DagsterInstance, run_id: str, artifact_root: str | Path | None) -> str | None:
    """Why a run failed: the failing instruction (its progress file), else Dagster's first step failure."""
    if artifact_root is not None and runs.is_run_id(run_id):
        try:  # a folder or s3://bucket/prefix, read alike
            progress = runstore.open_store(artifact_root).read_json(run_id, runs.PROGRESS)
        except runstore.RunStoreError as unreadable:
            _logger.debug(f"could not read the progress of run {run_id}: {_describe(unreadable)}")
            progress = None
        failed = progress.get("error") if isinstance(progress, dict) else None
        if isinstance(failed, dict) and failed.get("message"):
            return f"{failed.get('operation')} at {failed.get('path')} failed: {failed['message']}"
    try:
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            data = entry.dagster_event.step_failure_data if entry.dagster_event else None
            error = data.error if data is not None else None
            while error is not None and error.cause is not None:  # Dagster wraps the op's own error
                error = error.cause
            if error is not None:
                return f"{entry.step_key}: {error.message.strip()}"
    except Exception as error:  # the reason is a courtesy: the callback goes out without it
        _logger.debug(f"could not read the step failures of run {run_id}: {_describe(error)}")
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _without_secrets(url: str) -> str:
    """The URL for logs: no user, password or query string (they may hold credentials)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def _describe(error: BaseException | None) -> str:
    if isinstance(error, _Retryable):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
