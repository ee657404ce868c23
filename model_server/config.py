"""Model server settings, read once from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """CONSTELLATION_MODEL_SERVER_* variables, plus CONSTELLATION_MODELS_ROOT shared with the stack."""

    model_config = SettingsConfigDict(env_prefix="CONSTELLATION_MODEL_SERVER_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Local model folders; a load's `source` that names a folder here loads from it.
    models_root: Path = Field(
        Path("./models"), validation_alias=AliasChoices("CONSTELLATION_MODELS_ROOT", "models_root")
    )
    # Images per forward pass; a request's images go through the pipeline in batches of this size.
    batch_size: int = Field(8, ge=1, le=1024)
    max_request_bytes: int = Field(64 * MiB, ge=1024)
    # Bodies up to this size are read and discarded before answering 413, so the client reads
    # the answer instead of a reset connection; beyond it the server stops reading.
    max_drain_bytes: int = 256 * MiB
    # "cpu", "cuda", "cuda:1", ...; unset: whatever the pipeline picks (a GPU where there is one).
    device: str | None = None

    @model_validator(mode="after")
    def _drain_covers_limit(self) -> Settings:
        self.max_drain_bytes = max(self.max_drain_bytes, self.max_request_bytes)
        return self
