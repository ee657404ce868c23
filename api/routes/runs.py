"""Following a run: status and progress, results, cancellation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from api import artifacts
from api.dagster_client import RunInfo
from api.deps import DagsterDep, SettingsDep, require_token
from api.errors import ApiError
from api.schemas import ERRORS, FILE_ERRORS, WRITE_ERRORS, Cancelled, Retried, RunResults, RunStatus
from orchestrator import contract, runs

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(require_token)])


@router.get("/{run_id}", response_model=RunStatus, responses=ERRORS)
async def run_status(run_id: str, settings: SettingsDep, dagster: DagsterDep) -> RunStatus:
    """Status, timings and per-instruction progress of a run."""
    info = await _find(run_id, dagster)
    progress = runs.read_json(runs.run_dir(settings.artifact_root, run_id) / runs.PROGRESS) or {}
    error = _clipped(progress.get("error"))
    if info.status == "FAILURE" and error is None:
        # Failed before or around the instructions (e.g. launchpad config, a full disk): Dagster knows why.
        why = runs.clip(await dagster.failure_message(run_id))
        error = {"message": f"{why or 'the run failed outside its instructions'} (log: {dagster.run_url(run_id)})"}
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
async def run_results(run_id: str, request: Request, settings: SettingsDep, dagster: DagsterDep) -> RunResults:
    """Each top-level instruction's output, once the run has succeeded (large data as URIs)."""
    info = await _find(run_id, dagster)
    if info.status != "SUCCESS":
        raise ApiError(409, f"run {run_id} is {info.status}; results exist once it succeeds")
    folder = runs.run_dir(settings.artifact_root, run_id)
    document = _results(folder, run_id, settings)
    return RunResults(run_id=run_id, results=artifacts.public_uris(document["results"], folder, str(request.base_url),
                                                                   run_id))


@router.get("/{run_id}/report", response_class=HTMLResponse, responses=FILE_ERRORS)
async def run_report(
    run_id: str,
    settings: SettingsDep,
    dagster: DagsterDep,
    path: str | None = Query(None, max_length=512, description="the compare_models instruction, e.g. /instructions/2"),
) -> HTMLResponse:
    """The run's model comparison as one self-contained HTML page."""
    info = await _find(run_id, dagster)
    if info.status != "SUCCESS":
        raise ApiError(409, f"run {run_id} is {info.status}; its report exists once it succeeds")
    folder = runs.run_dir(settings.artifact_root, run_id)
    report = artifacts.find_report(_results(folder, run_id, settings)["results"], folder, path)
    return HTMLResponse(report.read_text(), headers=artifacts.SAFE_HEADERS)


@router.get("/{run_id}/files/{relative:path}", response_class=FileResponse, responses=FILE_ERRORS)
async def run_file(run_id: str, relative: str, settings: SettingsDep, dagster: DagsterDep) -> FileResponse:
    """A file the run wrote (a chart, predictions, a mask), as its results link to it."""
    await _find(run_id, dagster)
    path = artifacts.run_file(runs.run_dir(settings.artifact_root, run_id), relative)
    return FileResponse(path, media_type=artifacts.media_type(path), headers=artifacts.SAFE_HEADERS)


def _clipped(entry: Any) -> Any:
    """A progress entry with its texts cut to runs.MAX_MESSAGE_CHARS (files of older runs were not)."""
    if not isinstance(entry, dict):
        return entry
    return {k: runs.clip(v) if isinstance(v, str) else v for k, v in entry.items()}


def _results(folder, run_id: str, settings) -> dict:
    document = runs.read_json(folder / runs.RESULTS)
    if document is None:
        raise ApiError(404, f"run {run_id} succeeded but its results are not under {settings.artifact_root}")
    return document


@router.post("/{run_id}/retry", response_model=Retried, responses=WRITE_ERRORS)
async def retry(run_id: str, dagster: DagsterDep) -> Retried:
    """Resume a failed or cancelled run: a new run that reuses every instruction the first one completed."""
    info = await _find(run_id, dagster)
    if info.status not in ("FAILURE", "CANCELED"):
        raise ApiError(409, f"run {run_id} is {info.status}; only a failed or cancelled run can be resumed")
    new_run = await dagster.reexecute(run_id, {contract.Tags.RETRY_OF: run_id})
    return Retried(run_id=new_run, parent_run_id=run_id, run_url=dagster.run_url(new_run))


@router.post("/{run_id}/cancel", response_model=Cancelled, responses=WRITE_ERRORS)
async def cancel(run_id: str, dagster: DagsterDep) -> Cancelled:
    """Terminate a queued or running run."""
    await _find(run_id, dagster)
    status = await dagster.terminate(run_id)
    return Cancelled(run_id=run_id, run_status=status)


async def _find(run_id: str, dagster) -> RunInfo:
    info = await dagster.run(run_id) if runs.is_run_id(run_id) else None
    if info is None:
        raise ApiError(404, f"no run {run_id!r}")
    return info
