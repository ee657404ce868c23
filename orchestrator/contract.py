"""What the gateway and the code location agree on, written once and imported by both.

The gateway launches runs of one job in one code location and reads what they leave behind;
the code location publishes its operation catalog where the gateway looks for it. Names here
are part of the contract with other tools too (Dagster UI users, the launchpad, dashboards
filtering runs by tag): add to them, never rename. The instruction engine
(`orchestrator.engine`) and a run's folder format (`orchestrator.runs`) are the rest of it.
"""

from __future__ import annotations

import hashlib
import os
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import TypedDict

# Where the job lives: shown in the Dagster UI as main@constellation.
CODE_LOCATION = "constellation"
REPOSITORY = "main"
JOB = "build_execute_job"

# The job publishes its catalog as job metadata under this key; the gateway validates against it.
CATALOG_METADATA_KEY = "constellation/catalog"

# The launch config: ops.<CONFIG_OP>.config.<CONFIG_FIELD> holds the instruction list, as posted.
CONFIG_OP = "generate_dynamic_job_configs"
CONFIG_FIELD = "raw_input"


def launch_config(instructions: list[Any]) -> dict[str, Any]:
    """The run config that launches a pipeline (the same the launchpad takes)."""
    return {"ops": {CONFIG_OP: {"config": {CONFIG_FIELD: instructions}}}}


class DagsterRunStatus(StrEnum):
    """A run's status as Dagster reports it (dagster.DagsterRunStatus, its GraphQL enum RunStatus);
    GET /runs/{id} answers it as `run_status`."""

    QUEUED = "QUEUED"
    NOT_STARTED = "NOT_STARTED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    MANAGED = "MANAGED"
    SUSPENDED = "SUSPENDED"  # Dagster 1.12+; GET /runs?state= does not take it (api/dagster_client.RUN_STATUSES)


class NodeEventKind(StrEnum):
    """What the engine reports of one instruction (orchestrator.engine.NodeEvent.kind)."""

    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    REUSED = "reused"  # a resumed run took the output its parent kept


class InstructionState(StrEnum):
    """An instruction's `state` in a run's progress.json, and in GET /runs/{id}'s `instructions`."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REUSED = "reused"


class ResultState(StrEnum):
    """The `state` of a top-level instruction without output in results.json of a run that did not succeed."""

    FAILED = "failed"  # it was running when the run failed or was cancelled
    NOT_RUN = "not run"  # it came after the one that stopped the run


class RunChange(StrEnum):
    """A change of a run's status that a callback reports: the keys of CONSTELLATION_NOTIFY_WORDS."""

    STARTED = "started"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELED = "canceled"


class CallbackWord(StrEnum):
    """The words the Agentic Earth back-end understands (its front-end: completed green, running yellow)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


# The mapping between these vocabularies, in one place.
# Engine event -> the instruction's progress state.
STATE_OF_EVENT: dict[NodeEventKind, InstructionState] = {
    NodeEventKind.STARTED: InstructionState.RUNNING,
    NodeEventKind.FINISHED: InstructionState.SUCCEEDED,
    NodeEventKind.FAILED: InstructionState.FAILED,
    NodeEventKind.REUSED: InstructionState.REUSED,
}
# Instructions counted as done (`done` of progress.json); a resumed run reuses what its parent did.
DONE_STATES = frozenset({InstructionState.SUCCEEDED, InstructionState.REUSED})
# Events after which an instruction has an output (what it produced or what it reused).
OUTPUT_EVENTS = frozenset({NodeEventKind.FINISHED, NodeEventKind.REUSED})
# Run statuses a run does not leave; GET /runs/{id} is final once it answers one.
FINAL_STATUSES = frozenset({DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED})
# Runs a retry may resume (POST /runs/{id}/retry).
RESUMABLE_STATUSES = frozenset({DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED})
# Dagster run status -> the change a callback reports (other statuses are not reported).
CHANGE_OF_STATUS: dict[DagsterRunStatus, RunChange] = {
    DagsterRunStatus.STARTED: RunChange.STARTED,
    DagsterRunStatus.SUCCESS: RunChange.SUCCESS,
    DagsterRunStatus.FAILURE: RunChange.FAILURE,
    DagsterRunStatus.CANCELED: RunChange.CANCELED,
}
# A run's changes in order: a callback never reports one of a lower rank after a higher one.
CHANGE_RANK: dict[RunChange, int] = {
    RunChange.STARTED: 1,
    RunChange.SUCCESS: 2,
    RunChange.FAILURE: 2,
    RunChange.CANCELED: 2,
}
# Run change -> the word sent by default (CONSTELLATION_NOTIFY_WORDS changes them).
DEFAULT_CALLBACK_WORDS: dict[str, str] = {  # keyed by RunChange
    RunChange.STARTED: CallbackWord.RUNNING,
    RunChange.SUCCESS: CallbackWord.COMPLETED,
    RunChange.FAILURE: CallbackWord.FAILED,
    RunChange.CANCELED: CallbackWord.FAILED,
}


class InstructionProgress(TypedDict, total=False):
    """One instruction in progress.json (`instructions`), as the code location writes it and the gateway answers it.

    Every entry has path, also_at, operation and state; the others come with the state (timings once
    it started, `summary` once it finished or was reused, `error` when it failed). Other keys pass as they are.
    """

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]  # read by pydantic, not a key

    path: str
    also_at: list[str]  # the other places the same instruction appears (run once)
    operation: str
    state: InstructionState
    started_at: float
    ended_at: float
    duration_s: float
    summary: str
    error: str


# The longest model name a model server takes (our server's names: 1 + 200 characters).
MAX_MODEL_NAME = 201


def slug(model_id: str) -> str:
    """The model's name on the server, one to one with ids (ids are validated, never raw text).

    The model client names models on the server with it, and the gateway the run's Tags.MODEL.
    A run of n dashes becomes 2n-1 of them, and '/' (with the n dashes before it) becomes 2n+2:
    in a name, an odd run of dashes is dashes and an even run holds the slash. So plain ids keep
    their look, 'org/model' is 'org--model', and 'org--model' (an id of its own) is 'org---model'.
    An id whose name would pass the server's 201 characters (only long runs of dashes do that) is
    shortened and ends in a digest of the id: '<start>--<32 hex>--h', with two even runs, which no
    other id's name has.
    """

    def dashes(run: re.Match[str]) -> str:
        text = run.group(0)
        return "-" * (2 * len(text)) if text.endswith("/") else "-" * (2 * len(text) - 1)

    name = re.sub(r"-*/|-+", dashes, model_id)
    if len(name) <= MAX_MODEL_NAME:
        return name
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:32]
    return f"{name[:140].rstrip('-')}--{digest}--h"


def model_id_of(name: str) -> str:
    """The id whose name `slug` made `name` (ValueError for a shortened name, which keeps only a digest)."""
    runs = [len(run) for run in re.findall(r"-+", name)]
    if sum(1 for length in runs if length % 2 == 0) > 1:
        raise ValueError(f"{name!r} is a shortened name: it keeps a digest of its id, not the id")

    def undo(run: re.Match[str]) -> str:
        length = len(run.group(0))
        return "-" * ((length + 1) // 2) if length % 2 else "-" * ((length - 2) // 2) + "/"

    return re.sub(r"-+", undo, name)


class Tags:
    """Dagster run tags the gateway sets (and Dagster's tag concurrency limits may bind)."""

    USER = "constellation/user"
    MODEL = "constellation/model"  # the only model a run uses, by its name on the server (slug)
    IDEMPOTENCY_KEY = "constellation/idempotency-key"
    PIPELINE_SHA256 = "constellation/pipeline-sha256"
    RETRY_OF = "constellation/retry_of"


def blank_is_unset(value: Any) -> Any:
    """A setting given as empty text (`CONSTELLATION_S3_REGION=`, as Compose files write it) is unset."""
    return None if isinstance(value, str) and not value.strip() else value


class S3Location(BaseModel):
    """Where S3 (or an S3-compatible store) answers, for the run store and the S3 operations alike.

    None: AWS itself (and boto3's own region lookup).
    """

    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    _blank_is_unset = field_validator("s3_endpoint_url", "s3_region", mode="before")(blank_is_unset)


class StoreSettings(S3Location):
    """Where runs keep their files: CONSTELLATION_ARTIFACT_ROOT, and the S3 endpoint and region it is reached at.

    Declared once here: the gateway reads runs and the code location writes them with these values
    (`orchestrator.runstore.open_store`), and the code location's Workspace resource carries them.
    """

    # A folder, or s3://bucket/prefix; kept as text so that a URL is not mistaken for a path.
    artifact_root: str = "./.artifacts"

    @field_validator("artifact_root", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


class SharedSettings(BaseSettings, StoreSettings):
    """Settings both sides must read alike: where runs keep their files, where models are served."""

    model_config = SettingsConfigDict(env_prefix="CONSTELLATION_", extra="ignore")

    model_server_url: str = "http://127.0.0.1:8080"
