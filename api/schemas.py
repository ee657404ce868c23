"""Shapes of the gateway's answers, for validation of what we send and for /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from orchestrator.contract import DagsterRunStatus, InstructionProgress


class Instruction(BaseModel):
    operation: str = Field(description="a registered operation name; GET /operations lists them")
    parameters: dict[str, Any] = Field(default_factory=dict, description="literals or nested instructions")


class PipelineRequest(BaseModel):
    """Body of POST /execute and POST /validate."""

    instructions: list[Instruction]


class ProblemOut(BaseModel):
    path: str = Field(description="JSON Pointer into the request body")
    message: str


class Failure(BaseModel):
    status: Literal["failure"] = "failure"
    message: str
    errors: list[ProblemOut] | None = None


class Launched(BaseModel):
    status: Literal["success"] = "success"
    run_id: str = Field(description="Dagster's run id")
    replayed: bool = Field(False, description="true when an Idempotency-Key matched an earlier submission")
    run_url: str = Field(description="the run in the Dagster UI")


class Valid(BaseModel):
    status: Literal["success"] = "success"
    message: str
    instructions: int
    nodes: int = Field(description="instructions that will run, identical nested ones counted once")


class RunStatus(BaseModel):
    status: Literal["success"] = "success"
    run_id: str
    run_status: DagsterRunStatus = Field(
        description="Dagster's run status: QUEUED, STARTED, SUCCESS, FAILURE, CANCELED..."
    )
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    done: int = Field(description="instructions finished so far")
    total: int = Field(description="instructions in the plan (0 until the run starts)")
    instructions: list[InstructionProgress]
    error: dict[str, Any] | None
    run_url: str


class RunSummary(BaseModel):
    run_id: str
    run_status: DagsterRunStatus = Field(description="as GET /runs/{run_id} reports it")
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    operations: list[str] = Field(
        description="the top-level instructions' operations, in order (empty until the run starts)"
    )
    done: int = Field(description="instructions finished")
    total: int = Field(description="instructions in the plan (0 until the run starts)")
    error: dict[str, Any] | None = Field(description="the failing instruction's path, operation and message")
    parent_run_id: str | None = Field(description="the run this one resumes, if it is a retry")
    user: str | None = Field(description="the X-Constellation-User it was submitted with")
    run_url: str


class RunList(BaseModel):
    status: Literal["success"] = "success"
    runs: list[RunSummary] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last one")


class RunResults(BaseModel):
    status: Literal["success"] = "success"
    run_id: str
    results: list[dict[str, Any]]


class Retried(BaseModel):
    status: Literal["success"] = "success"
    run_id: str = Field(description="the new run")
    parent_run_id: str = Field(description="the run it resumes; what that run completed is reused")
    run_url: str


class Cancelled(BaseModel):
    status: Literal["success"] = "success"
    run_id: str
    run_status: DagsterRunStatus


class Operations(BaseModel):
    status: Literal["success"] = "success"
    operations: list[dict[str, Any]]
    types: dict[str, str]


class Health(BaseModel):
    status: Literal["success", "failure"]
    gateway: Literal["ok"] = "ok"
    dagster: Literal["ok", "unreachable"]
    model_server: Literal["ok", "unreachable"]
    message: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Failure, "description": text}
    for code, text in {
        400: "the Host header names no host the gateway answers for (CONSTELLATION_ALLOWED_HOSTS)",
        401: "missing or wrong bearer token",
        404: "no such run",
        409: "conflict with the run's state or an earlier use of the Idempotency-Key",
        413: "body too large",
        422: "invalid pipeline; every problem listed with its JSON Pointer",
        503: "Dagster unreachable",
    }.items()
}

# Routes that change state also refuse what a page of another site could send (api/guard.py).
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {"model": Failure, "description": "sent by a web page of an origin that is not allowed"},
    415: {"model": Failure, "description": "a body that is not Content-Type: application/json"},
}

# Routes that answer a page or a file still answer their errors as JSON; say so, or the media
# type of the route's own answer would be documented for its errors too.
FILE_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {**spec, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Failure"}}}}
    for code, spec in ERRORS.items()
}
