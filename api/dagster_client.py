"""Talking to the Dagster webserver over its GraphQL API (launchRun, runOrError, ...)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from api.errors import ApiError
from orchestrator import contract
from orchestrator.contract import DagsterRunStatus
from orchestrator.engine import PipelineInvalid
from orchestrator.engine.errors import PROBLEMS_MARKER, problems_in

CATALOG_METADATA_KEY = contract.CATALOG_METADATA_KEY
IDEMPOTENCY_TAG = contract.Tags.IDEMPOTENCY_KEY
BODY_HASH_TAG = contract.Tags.PIPELINE_SHA256
# GraphQL requests in flight at once: enough to keep the webserver busy, few enough that none waits long.
MAX_CONNECTIONS = 8

_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message path } }
    ... on Error { message }
  }
}"""

# Dagster builds the execution plan in the code location, where the config's post-processing runs the server's
# checks (orchestrator/assets/checked_config.py): this asks the questions of a launch without creating a run.
_PLAN = """
query Plan($selector: PipelineSelector!, $config: RunConfigData!) {
  executionPlanOrError(pipeline: $selector, runConfigData: $config, mode: "default") {
    __typename
    ... on RunConfigValidationInvalid { errors { message path } }
    ... on Error { message }
  }
}"""

_REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}"""

_RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName creationTime startTime endTime tags { key value } }
    ... on Error { message }
  }
}"""

_RUNS_TAGGED = """
query Tagged($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}, limit: 1) {
    __typename
    ... on Runs { results { runId tags { key value } } }
    ... on Error { message }
  }
}"""

_RUNS = """
query Runs($filter: RunsFilter, $cursor: String, $limit: Int) {
  runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {
    __typename
    ... on Runs { results { runId status jobName creationTime startTime endTime tags { key value } } }
    ... on Error { message }
  }
}"""

# The run statuses GET /runs?state= filters on: Dagster's (contract.DagsterRunStatus) as the gateway has
# always taken them, SUSPENDED aside (Dagster added it later; taking it would be a change of the API).
RUN_STATUSES: tuple[DagsterRunStatus, ...] = tuple(s for s in DagsterRunStatus if s is not DagsterRunStatus.SUSPENDED)

_FAILURES = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId, limit: 500) {
    __typename
    ... on EventConnection { events { __typename
      ... on ExecutionStepFailureEvent { stepKey error { message }
        failureMetadata { metadataEntries { label ... on TextMetadataEntry { text } } } }
      ... on RunFailureEvent { message } } }
  }
}"""

STARTING_WAIT_S = 15.0  # how long a cancel waits for a STARTING run to become cancellable
STARTING_RETRY_S = 0.25


class _Starting(Exception):
    """Dagster cannot terminate the run yet: it is still starting (the exception's text is Dagster's)."""


_TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunSuccess { run { runId status } }
    ... on TerminateRunFailure { message run { status } }
    ... on Error { message }
  }
}"""

_CATALOG = """
query Catalog($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { metadataEntries { label ... on JsonMetadataEntry { jsonString } } }
    ... on Error { message }
  }
}"""


class DagsterUnavailable(ApiError):
    def __init__(self, detail: str):
        super().__init__(503, f"Dagster is unreachable: {detail}")


class CodeLocationUnavailable(ApiError):
    """Dagster answers but cannot reach the code location (its code server is down or restarting)."""

    def __init__(self, location: str, detail: str):
        super().__init__(
            503, f"the code location {location} is unavailable; retry once its code server is back ({detail})"
        )


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    job_name: str
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    tags: dict[str, str]


class DagsterClient:
    """The gateway's only door into Dagster: one GraphQL endpoint, a handful of queries."""

    def __init__(
        self,
        base_url: str,
        location: str,
        repository: str,
        job: str,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/graphql"
        self.selector = {"repositoryLocationName": location, "repositoryName": repository}
        self.job = job
        # A burst of submissions waits here for one of a few connections, not inside the webserver,
        # where the wait would count against the timeout (tests/api/test_load.py: 200 at once gave 503s).
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, pool=None),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS),
            transport=transport,
        )
        self._catalog: tuple[float, dict[str, Any]] | None = None
        self._catalog_lock = asyncio.Lock()

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.base_url}/runs/{run_id}"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.post(self.url, json={"query": document, "variables": variables})
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(f"{type(exc).__name__} at {self.url}") from None
        if response.status_code != 200:
            reason = _first_error(response)
            # The webserver answers 500 while the code server is down, before it marks the location failed.
            if "DagsterUserCodeUnreachableError" in reason:
                raise CodeLocationUnavailable(self.selector["repositoryLocationName"], reason.strip())
            if PROBLEMS_MARKER in reason:  # the code location refused the pipeline (HTTP 500: a Python error)
                refused: dict[str, Any] = response.json()["data"]
                return refused
            raise DagsterUnavailable(f"GraphQL answered HTTP {response.status_code}")
        payload = response.json()
        if payload.get("errors"):
            raise ApiError(502, f"Dagster GraphQL error: {payload['errors'][0].get('message')}")
        data: dict[str, Any] = payload["data"]
        return data

    async def ping(self) -> bool:
        try:
            await self.query("{ version }", {})
        except ApiError:
            return False
        return True

    async def catalog(self, ttl_s: float) -> dict[str, Any]:
        """The op catalog that the code location publishes as job metadata, cached for ttl_s."""
        async with self._catalog_lock:
            if self._catalog and time.monotonic() - self._catalog[0] < ttl_s:
                return self._catalog[1]
            data = await self.query(_CATALOG, {"selector": {**self.selector, "pipelineName": self.job}})
            result = data["pipelineOrError"]
            if result["__typename"] != "Pipeline":
                raise CodeLocationUnavailable(self.selector["repositoryLocationName"], str(result.get("message")))
            entry = next((e for e in result["metadataEntries"] if e["label"] == CATALOG_METADATA_KEY), None)
            if entry is None:
                raise ApiError(503, f"{self.job} publishes no operation catalog")
            catalog: dict[str, Any] = json.loads(entry["jsonString"])
            self._catalog = (time.monotonic(), catalog)
            return catalog

    async def launch(self, instructions: list[Any], tags: dict[str, str]) -> str:
        params = {
            "selector": {**self.selector, "jobName": self.job},
            "runConfigData": contract.launch_config(instructions),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = (await self.query(_LAUNCH, {"params": params}))["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            run_id: str = result["run"]["runId"]
            return run_id
        self._refused(result)
        raise ApiError(502, f"Dagster did not launch the run ({result['__typename']}): {result.get('message')}")

    async def check(self, instructions: list[Any]) -> None:
        """What the code location finds wrong with a pipeline before launch (its data root, connections, model
        server...): 422 with every problem, as launchRun would refuse it, but nothing is created."""
        selector = {**self.selector, "pipelineName": self.job}
        data = await self.query(_PLAN, {"selector": selector, "config": contract.launch_config(instructions)})
        result = data["executionPlanOrError"]
        if result["__typename"] == "ExecutionPlan":
            return
        self._refused(result)
        raise ApiError(502, f"Dagster could not check the pipeline ({result['__typename']}): {result.get('message')}")

    def _refused(self, result: dict[str, Any]) -> None:
        """Raise the gateway's answer to Dagster refusing a launch's config or job, if it did."""
        kind = result["__typename"]
        problems = problems_in(str(result.get("message") or "")) if kind == "PythonError" else None
        if problems:  # the code location's checks: the pipeline's own paths, as the gateway's checks give them
            first = PipelineInvalid(problems)
            raise ApiError(422, f"invalid pipeline: {first}", [p.to_json() for p in problems])
        if kind == "RunConfigValidationInvalid":
            errors = [{"path": "/" + "/".join(e["path"]), "message": e["message"]} for e in result["errors"]]
            raise ApiError(422, "Dagster refused the run config", errors)
        if kind == "PipelineNotFoundError":  # nothing was launched: safe to retry
            raise CodeLocationUnavailable(self.selector["repositoryLocationName"], str(result.get("message")))
        if kind == "PythonError" and "DagsterUserCodeUnreachableError" in str(result.get("message")):
            raise CodeLocationUnavailable(self.selector["repositoryLocationName"], "its code server does not answer")

    async def reexecute(self, parent_run_id: str, tags: dict[str, str]) -> str:
        """A new run of the parent's pipeline from its failure, as the UI's *Re-execute from failure* does."""
        params = {
            "parentRunId": parent_run_id,
            "strategy": "FROM_FAILURE",
            "extraTags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        result = (await self.query(_REEXECUTE, {"params": params}))["launchRunReexecution"]
        if result["__typename"] == "LaunchRunSuccess":
            run_id: str = result["run"]["runId"]
            return run_id
        self._refused(result)  # the code location checks the resumed pipeline as it checks a launch
        raise ApiError(
            409, f"Dagster did not resume run {parent_run_id} ({result['__typename']}): {result.get('message')}"
        )

    async def run(self, run_id: str) -> RunInfo | None:
        result = (await self.query(_RUN, {"runId": run_id}))["runOrError"]
        if result["__typename"] == "RunNotFoundError":
            return None
        if result["__typename"] != "Run":
            raise ApiError(502, f"Dagster could not read run {run_id}: {result.get('message')}")
        return _run_info(result)

    async def runs(self, statuses: list[str] | None, cursor: str | None, limit: int) -> list[RunInfo]:
        """Runs of the job, newest first: at most `limit` after the run `cursor`, with one of `statuses` if given."""
        run_filter: dict[str, Any] = {"pipelineName": self.job}
        if statuses:
            run_filter["statuses"] = statuses
        data = await self.query(_RUNS, {"filter": run_filter, "cursor": cursor, "limit": limit})
        result = data["runsOrError"]
        if result["__typename"] != "Runs":
            raise ApiError(502, f"Dagster could not list runs: {result.get('message')}")
        return [_run_info(found) for found in result["results"]]

    async def failure(self, run_id: str) -> dict[str, str] | None:
        """Why Dagster says a run failed: its first step failure (with the failed instruction's
        `path` and `operation` when the step said which), else its run failure message."""
        result = (await self.query(_FAILURES, {"runId": run_id}))["logsForRun"]
        if result["__typename"] != "EventConnection":
            return None
        events = result["events"]
        for event in events:
            if event["__typename"] == "ExecutionStepFailureEvent" and event.get("error"):
                entries = (event.get("failureMetadata") or {}).get("metadataEntries") or []
                located = {
                    e["label"]: e["text"]
                    for e in entries
                    if e.get("label") in ("path", "operation", "message") and isinstance(e.get("text"), str)
                }
                if "path" in located and "operation" in located:  # an instruction failed: its own message, as
                    # the progress file has it (which a full disk may have kept from being written)
                    message = located.get("message") or event["error"]["message"].strip()
                    return {"path": located["path"], "operation": located["operation"], "message": message}
                return {"message": f"{event['stepKey']}: {event['error']['message'].strip()}"}
        message = next((e["message"] for e in events if e["__typename"] == "RunFailureEvent"), None)
        return {"message": message} if message else None

    async def run_tagged(self, key: str, value: str) -> RunInfo | None:
        data = await self.query(_RUNS_TAGGED, {"tags": [{"key": key, "value": value}]})
        result = data["runsOrError"]
        if result["__typename"] != "Runs":
            raise ApiError(502, f"Dagster could not search runs: {result.get('message')}")
        if not result["results"]:
            return None
        found = result["results"][0]
        tags = {t["key"]: t["value"] for t in found["tags"]}
        return RunInfo(found["runId"], "", self.job, None, None, None, tags)

    async def terminate(self, run_id: str) -> str:
        """Ask Dagster to stop the run; returns the run's status as Dagster then reports it.

        Dagster refuses to terminate a run that is STARTING (its worker is being launched, for a
        second or two after the daemon takes it off the queue): the request is tried again, every
        STARTING_RETRY_S, for up to STARTING_WAIT_S, so that a cancel sent right after a submit
        cancels the run instead of answering 409.
        """
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Starting),
            stop=stop_after_delay(STARTING_WAIT_S),
            wait=wait_fixed(STARTING_RETRY_S),
            reraise=True,
        )
        try:
            return await retrying(self._terminate_once, run_id)
        except _Starting as starting:
            raise ApiError(409, str(starting)) from None

    async def _terminate_once(self, run_id: str) -> str:
        result = (await self.query(_TERMINATE, {"runId": run_id}))["terminateRun"]
        kind = result["__typename"]
        if kind == "TerminateRunSuccess":
            status: str = result["run"]["status"]
            return status
        if kind == "RunNotFoundError":
            raise ApiError(404, f"no run {run_id}")
        if kind == "TerminateRunFailure":
            if (result.get("run") or {}).get("status") in (DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED):
                raise _Starting(result["message"])
            raise ApiError(409, result["message"])
        raise ApiError(502, f"Dagster could not cancel run {run_id}: {result.get('message')}")


def _run_info(found: dict[str, Any]) -> RunInfo:
    return RunInfo(
        run_id=found["runId"],
        status=found["status"],
        job_name=found["jobName"],
        created_at=found.get("creationTime"),
        started_at=found.get("startTime"),
        ended_at=found.get("endTime"),
        tags={t["key"]: t["value"] for t in found["tags"]},
    )


def _first_error(response: httpx.Response) -> str:
    """The first error message of a GraphQL answer (top-level or a result's), or ''."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    answered = payload.get("data")
    data = answered if isinstance(answered, dict) else {}
    found = [*(payload.get("errors") or []), *(v for v in data.values() if isinstance(v, dict))]
    return next((str(f["message"]) for f in found if isinstance(f, dict) and f.get("message")), "")
