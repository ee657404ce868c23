"""Model server settings, read once from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
GiB = 1024 * MiB
PLACEHOLDER_TOKEN = "change-me"


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
    # torch's intra-op threads; unset: OMP_NUM_THREADS if set, else the CPUs this process may use
    # (its affinity, capped by the container's CPU quota). model_server/cpus.py says why.
    torch_threads: int | None = Field(None, ge=1, le=1024)
    # Threads that decode and preprocess a batch's images; unset: one per available CPU.
    prepare_threads: int | None = Field(None, ge=1, le=256)
    # Prepare the next batch while the model runs this one; unset: only when torch's threads and the
    # preparation threads together fit in the available CPUs (set both to split the CPUs between them).
    overlap: bool | None = None
    max_request_bytes: int = Field(64 * MiB, ge=1024)
    # Bodies up to this size are read and discarded before answering 413, so the client reads
    # the answer instead of a reset connection; beyond it the server stops reading.
    max_drain_bytes: int = 256 * MiB
    # "cpu", "cuda", "cuda:1", ...; unset: whatever the pipeline picks (a GPU where there is one).
    device: str | None = None

    # Shared with the code location: when set, every route but /v2/health/* asks for
    # `Authorization: Bearer <token>`. Unset or empty: no token (a server on a machine of one's own only).
    token: SecretStr | None = None
    # Models in memory at once (a model loaded under several names is one).
    max_models: int = Field(8, ge=1, le=10_000)
    # The weights of every loaded model together, in bytes: a load is refused before it starts when
    # the model's weight files on disk do not fit in what is left, and after it when its weights in
    # memory (parameters and buffers; an ONNX graph's file) do not.
    max_model_bytes: int = Field(8 * GiB, ge=1)
    # Names loaded (READY or LOADING) at once; names share the copy of a model loaded from one source.
    max_names: int = Field(256, ge=1, le=100_000)
    # Pixels of one image, and of all the images of one request, read from each image's header
    # before any is decoded. Decoding holds about 3 bytes a pixel, a batch at a time.
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_request_pixels: int = Field(256_000_000, ge=1)
    # Leases: a load with `parameters.lease` holds the model for that holder for this long unless the
    # load says `lease_ttl_s` (capped at max_lease_ttl_s); renewals (infer, renew) extend it.
    lease_ttl_s: float = Field(300.0, gt=0)
    max_lease_ttl_s: float = Field(24 * 3600.0, gt=0)
    # How often expired leases are looked for (a model whose every lease expired is unloaded).
    lease_sweep_s: float = Field(5.0, gt=0)

    @field_validator("token")
    @classmethod
    def _token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None or not token.get_secret_value().strip():
            return None
        if token.get_secret_value().strip() == PLACEHOLDER_TOKEN:
            raise ValueError(
                "CONSTELLATION_MODEL_SERVER_TOKEN is the placeholder 'change-me'; set a secret "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return token

    @model_validator(mode="after")
    def _drain_covers_limit(self) -> Settings:
        self.max_drain_bytes = max(self.max_drain_bytes, self.max_request_bytes)
        self.max_request_pixels = max(self.max_request_pixels, self.max_image_pixels)
        self.lease_ttl_s = min(self.lease_ttl_s, self.max_lease_ttl_s)
        return self
