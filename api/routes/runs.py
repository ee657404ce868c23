"""Following a run: status and progress, results, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api import artifacts
from api.dagster_client import RUN_STATUSES, DagsterClient, RunInfo
from api.deps import DagsterDep, StoreDep, require_token
from api.errors import ApiError
from api.schemas import (
    ERRORS,
    FILE_ERRORS,
    WRITE_ERRORS,
    Cancelled,
    Retried,
    RunList,
    RunResults,
    RunStatus,
    RunSummary,
)
from orchestrator import contract, runs
from orchestrator.contract import DagsterRunStatus
from orchestrator.runstore import RunStore, RunStoreError, StoredFile

T = TypeVar("T")

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(require_token)])


@router.get("", response_model=RunList, responses=ERRORS)
async def list_runs(
    store: StoreDep,
    dagster: DagsterDep,
    state: str | None = Query(
        None, max_length=200, description="only runs in these states, comma-separated, e.g. FAILURE,CANCELED"
    ),
    limit: int = Query(20, ge=1, le=100, description="runs per page"),
    cursor: str | None = Query(None, max_length=64, description="next_cursor of the previous page"),
) -> RunList:
    """The pipeline's runs, newest first, a page at a time."""
    statuses = [s.strip().upper() for s in state.split(",") if s.strip()] if state else []
    unknown = [s for s in statuses if s not in RUN_STATUSES]
    if unknown:
        message = f"state {unknown[0]!r} is not a run state; give one or more of {', '.join(RUN_STATUSES)}"
        raise ApiError(422, message, [{"path": "/query/state", "message": message}])
    if cursor is not None and not runs.is_run_id(cursor):
        raise ApiError(
            422,
            "cursor is not a run id; give the next_cursor of the previous page",
            [{"path": "/query/cursor", "message": "not a run id"}],
        )
    found = await dagster.runs(statuses, cursor, limit + 1)  # one more than shown: is there a next page?
    page = found[:limit]
    progress = await asyncio.gather(*(_progress_or_none(store, info.run_id) for info in page))
    return RunList(
        runs=[_summary(info, doc, dagster.run_url(info.run_id)) for info, doc in zip(page, progress, strict=True)],
        next_cursor=page[-1].run_id if len(found) > limit else None,
    )


async def _progress_or_none(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """A listed run's progress, or None: one unreadable run must not hide the others."""
    try:
        document = await run_in_threadpool(store.read_json, run_id, runs.PROGRESS)
    except (RunStoreError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _summary(info: RunInfo, progress: dict[str, Any] | None, run_url: str) -> RunSummary:
    progress = progress or {}
    listed = progress.get("instructions")
    entries = listed if isinstance(listed, list) else []
    top = [e for e in entries if isinstance(e, dict) and _is_top_level(e.get("path"))]
    duration = info.ended_at - info.started_at if info.started_at and info.ended_at else None
    return RunSummary(
        run_id=info.run_id,
        run_status=info.status,
        created_at=info.created_at,
        started_at=info.started_at,
        ended_at=info.ended_at,
        duration_s=duration,
        operations=[str(e.get("operation")) for e in top],
        done=progress.get("done", 0),
        total=progress.get("total", 0),
        error=_clipped(progress.get("error")),
        parent_run_id=info.tags.get(contract.Tags.RETRY_OF) or info.tags.get("dagster/parent_run_id"),
        user=info.tags.get(contract.Tags.USER),
        run_url=run_url,
    )


def _is_top_level(path: Any) -> bool:
    """/instructions/<n>: a top-level instruction's path (nested ones go on with /parameters/...)."""
    parts = path.split("/") if isinstance(path, str) else []
    return len(parts) == 3 and parts[1] == "instructions" and parts[2].isdigit()


@router.get("/{run_id}", response_model=RunStatus, responses=ERRORS)
async def run_status(run_id: str, store: StoreDep, dagster: DagsterDep) -> RunStatus:
    """Status, timings and per-instruction progress of a run."""
    info = await _find(run_id, dagster)
    progress = await _read(store, store.read_json, run_id, runs.PROGRESS) or {}
    error = _clipped(progress.get("error"))
    if info.status == DagsterRunStatus.FAILURE and error is None:
        # Failed before or around the instructions (e.g. launchpad config, a full disk): Dagster knows why.
        # An instruction's failure whose progress could not be written (a full disk) is found there too.
        why = await dagster.failure(run_id) or {"message": "the run failed outside its instructions"}
        error = _clipped(why)
        if "path" not in why:  # not an instruction's own message (which reads as the progress file has it)
            error = {**error, "message": f"{runs.clip(why['message'])} (log: {dagster.run_url(run_id)})"}
    duration = info.ended_at - info.started_at if info.started_at and info.ended_at else None
    return RunStatus(
        run_id=run_id,
        run_status=info.status,
        created_at=info.created_at,
        started_at=info.started_at,
        ended_at=info.ended_at,
        duration_s=duration,
        done=progress.get("done", 0),
        total=progress.get("total", 0),
        instructions=[_clipped(entry) for entry in progress.get("instructions", [])],
        error=error,
        run_url=dagster.run_url(run_id),
    )


@router.get("/{run_id}/results", response_model=RunResults, responses=ERRORS)
async def run_results(run_id: str, request: Request, store: StoreDep, dagster: DagsterDep) -> RunResults:
    """Each top-level instruction's output (large data as URIs), once the run has ended.

    Of a failed or cancelled run: the output of each top-level instruction that finished and, for the
    others, `{"state": "failed" | "not run", "error"}`.
    """
    info = await _find(run_id, dagster)
    document = await _results(store, info)
    return RunResults(run_id=run_id, results=artifacts.public_uris(document["results"], store, str(request.base_url)))


@router.get("/{run_id}/report", response_class=HTMLResponse, responses=FILE_ERRORS)
async def run_report(
    run_id: str,
    store: StoreDep,
    dagster: DagsterDep,
    path: str | None = Query(None, max_length=512, description="the compare_models instruction, e.g. /instructions/2"),
) -> HTMLResponse:
    """The run's model comparison as one self-contained HTML page."""
    info = await _find(run_id, dagster)
    owner, rel = artifacts.find_report((await _results(store, info))["results"], store, path)
    page = await _read(store, store.read_bytes, owner, rel)
    if page is None:
        raise ApiError(404, "this run's report is no longer on the server")
    return HTMLResponse(page.decode(errors="replace"), headers=artifacts.SAFE_HEADERS)


@router.get("/{run_id}/files/{relative:path}", response_class=FileResponse, responses=FILE_ERRORS)
async def run_file(run_id: str, relative: str, store: StoreDep, dagster: DagsterDep) -> Response:
    """A file the run wrote (a chart, predictions, a mask), as its results link to it."""
    await _find(run_id, dagster)
    stored = await _read(store, artifacts.run_file, store, run_id, relative)
    media_type = artifacts.media_type(stored.name)
    if stored.path is not None:
        return FileResponse(stored.path, media_type=media_type, headers=artifacts.SAFE_HEADERS)
    # From the store, chunk by chunk (Starlette reads a plain iterator in its thread pool).
    headers = dict(artifacts.SAFE_HEADERS)
    if stored.size is not None:
        headers["Content-Length"] = str(stored.size)
    return StreamingResponse(_closing(stored), media_type=media_type, headers=headers)


def _clipped(entry: Any) -> Any:
    """A progress entry with its texts cut to runs.MAX_MESSAGE_CHARS (files of older runs were not)."""
    if not isinstance(entry, dict):
        return entry
    return {k: runs.clip(v) if isinstance(v, str) else v for k, v in entry.items()}


# Runs that ended: a failed or cancelled one keeps the results of what finished before (orchestrator/assets/job.py).
_ENDED = contract.FINAL_STATUSES


async def _results(store: RunStore, info: RunInfo) -> dict[str, Any]:
    if info.status not in _ENDED:
        raise ApiError(409, f"run {info.run_id} is {info.status}; its results exist once it has ended")
    document = await _read(store, store.read_json, info.run_id, runs.RESULTS)
    if document is None and info.status != DagsterRunStatus.SUCCESS:
        raise ApiError(
            409,
            f"run {info.run_id} is {info.status} and kept no results: it ended before any "
            f"instruction ran, or was made by an older version (GET /runs/{info.run_id} says why)",
        )
    if document is None:
        raise ApiError(404, f"run {info.run_id} succeeded but its results are no longer on the server")
    results: dict[str, Any] = document
    return results


async def _read(store: RunStore, read: Callable[..., T], *args: Any) -> T:
    """`read(*args)` off the event loop (a store may be remote); a store that fails answers 503."""
    try:
        return await run_in_threadpool(read, *args)
    except RunStoreError as exc:
        raise ApiError(503, f"the run store does not answer: {exc}") from None


def _closing(stored: StoredFile) -> Iterator[bytes]:
    assert stored.chunks is not None, "a stored file without a local path is read as chunks"
    try:
        yield from stored.chunks
    finally:
        stored.close()


@router.post("/{run_id}/retry", response_model=Retried, responses=WRITE_ERRORS)
async def retry(run_id: str, dagster: DagsterDep) -> Retried:
    """Resume a failed or cancelled run: a new run that reuses every instruction the first one completed."""
    info = await _find(run_id, dagster)
    if info.status not in contract.RESUMABLE_STATUSES:
        raise ApiError(409, f"run {run_id} is {info.status}; only a failed or cancelled run can be resumed")
    new_run = await dagster.reexecute(run_id, {contract.Tags.RETRY_OF: run_id})
    return Retried(run_id=new_run, parent_run_id=run_id, run_url=dagster.run_url(new_run))


@router.post("/{run_id}/cancel", response_model=Cancelled, responses=WRITE_ERRORS)
async def cancel(run_id: str, dagster: DagsterDep) -> Cancelled:
    """Terminate a queued or running run."""
    await _find(run_id, dagster)
    status = await dagster.terminate(run_id)
    return Cancelled(run_id=run_id, run_status=status)


async def _find(run_id: str, dagster: DagsterClient) -> RunInfo:
    info = await dagster.run(run_id) if runs.is_run_id(run_id) else None
    if info is None:
        raise ApiError(404, f"no run {run_id!r}")
    return info
