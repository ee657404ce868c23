"""Run-status notifications: tell a backend when a pipeline run starts, succeeds, fails or is cancelled.

One run-status sensor per status watches `build_execute_job`. The daemon's sensor loop evaluates
them every few seconds (in the code server); for each new status event the sensor sends
`CONSTELLATION_NOTIFY_METHOD` (default PUT) to `CONSTELLATION_NOTIFY_URL` with `{run_id}` and
`{status}` filled in, e.g. `http://backend:8000/pipelines/status/{run_id}/{status}`. Failed
calls are retried with backoff, then logged on the sensor tick: a notification never fails a run,
and the sensor itself never raises (a raising run-status sensor would mark its tick failed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunStatusSensorContext,
    SensorDefinition,
    SkipReason,
    run_status_sensor,
)

# Dagster's status → the word in the URL (the Agentic Earth backend's `{status}`).
STATUS_WORDS = {
    DagsterRunStatus.STARTED: "started",
    DagsterRunStatus.SUCCESS: "success",
    DagsterRunStatus.FAILURE: "failure",
    DagsterRunStatus.CANCELED: "canceled",
}
# The daemon's sensor loop runs every 5 s; Dagster's default sensor interval would be 30 s.
SENSOR_INTERVAL_S = 5

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusNotifier:
    """Where and how to send a run's status; `token`, when set, goes as `Authorization: Bearer`.

    The retry budget is small on purpose: a sensor tick handles up to 5 events inside one gRPC
    call that times out after 60 s, so one event may take at most
    attempts × timeout_s + the delays (3 × 3 + 0.5 + 1 = 10.5 s).
    """

    url_template: str
    method: str = "PUT"
    token: str | None = None
    attempts: int = 3
    timeout_s: float = 3.0
    first_delay_s: float = 0.5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StatusNotifier | None:
        """From CONSTELLATION_NOTIFY_URL / _METHOD / _TOKEN; None when no URL is set."""
        url = environ.get("CONSTELLATION_NOTIFY_URL", "").strip()
        if not url:
            return None
        method = environ.get("CONSTELLATION_NOTIFY_METHOD", "").strip().upper() or "PUT"
        return cls(url, method, environ.get("CONSTELLATION_NOTIFY_TOKEN") or None)

    def url(self, run_id: str, status: str) -> str:
        # Plain replacement: other braces in the template are left alone instead of raising.
        return self.url_template.replace("{run_id}", run_id).replace("{status}", status)

    def send(self, run_id: str, status: str, log: logging.Logger) -> bool:
        """Send one status; retry server errors and connection failures; log the outcome, never raise."""
        try:
            url = self.url(run_id, status)
            shown = _without_secrets(url)
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            body = {"run_id": run_id, "status": status}
            with httpx.Client(timeout=self.timeout_s, headers=headers) as client:
                return self._send(client, url, body, shown, log)
        except Exception as error:  # a notification must never break the sensor
            log.error(f"status notification {status} of run {run_id} failed: {_describe(error)}")
            return False

    def _send(self, client: httpx.Client, url: str, body: dict, shown: str, log: logging.Logger) -> bool:
        what = f"{body['status']} of run {body['run_id']} ({self.method} {shown})"
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = client.request(self.method, url, json=body)
            except httpx.HTTPError as error:
                problem = _describe(error)
            else:
                if response.is_success:
                    log.info(f"notified {what}: HTTP {response.status_code}")
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # the backend refuses this request: asking again will not help
            if attempt < self.attempts:
                log.warning(f"notifying {what}: {problem} (attempt {attempt} of {self.attempts}); retrying")
                time.sleep(self.first_delay_s * 2 ** (attempt - 1))
        log.error(f"could not notify {what}: {problem}, after {attempt} attempt(s); the run is not affected")
        return False


def notification_sensors(job: JobDefinition, notifier: StatusNotifier | None) -> Sequence[SensorDefinition]:
    """One run-status sensor per status in STATUS_WORDS, watching `job`, on by default."""
    if notifier is None:
        _logger.debug("CONSTELLATION_NOTIFY_URL is not set: run-status notifications are off")
    return [_status_sensor(job, status, word, notifier) for status, word in STATUS_WORDS.items()]


def _status_sensor(
    job: JobDefinition, status: DagsterRunStatus, word: str, notifier: StatusNotifier | None
) -> SensorDefinition:
    @run_status_sensor(
        run_status=status,
        name=f"notify_run_{word}",
        description=f"Calls CONSTELLATION_NOTIFY_URL when a {job.name} run reaches {status.value}.",
        monitored_jobs=[job],
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
    )
    def notify(context: RunStatusSensorContext):
        if notifier is None:
            # Returned reasons show on the sensor's ticks in the UI, saying why nothing was sent.
            return SkipReason("CONSTELLATION_NOTIFY_URL is not set: no notification sent")
        notifier.send(context.dagster_run.run_id, word, context.log)
        return None  # None lets Dagster go on to the next run in the same tick

    return notify


def _without_secrets(url: str) -> str:
    """The URL for logs: no user, password or query string (they may hold credentials)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
