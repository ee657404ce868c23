"""What the gateway and the code location agree on, written once and imported by both.

The gateway launches runs of one job in one code location and reads what they leave behind;
the code location publishes its operation catalog where the gateway looks for it. Names here
are part of the contract with other tools too (Dagster UI users, the launchpad, dashboards
filtering runs by tag): add to them, never rename. The instruction engine
(`orchestrator.engine`) and a run's folder format (`orchestrator.runs`) are the rest of it.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class Tags:
    """Dagster run tags the gateway sets (and Dagster's tag concurrency limits may bind)."""

    USER = "constellation/user"
    MODEL = "constellation/model"
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
