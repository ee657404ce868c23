"""Dagster resources: the settings and clients that ops reach as `ctx.resources.<key>`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource, InitResourceContext, ResourceDefinition
from pydantic import BaseModel, PrivateAttr, field_validator

from orchestrator import runs, runstore
from orchestrator.contract import S3Location, SharedSettings, StoreSettings, blank_is_unset

# The clients behind these resources load when a run first uses them, not when the code location starts.
if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from orchestrator.models.client import ModelServer
    from orchestrator.sources import drive
    from orchestrator.sources.archives import ArchiveLimits
    from orchestrator.sources.databases import Connections, ImportLimits
    from orchestrator.sources.s3 import S3Settings
    from orchestrator.sources.url import UrlPolicy

DRIVE_PUBLIC_DOWNLOAD_URL = "https://drive.usercontent.google.com/download"


class WorkspaceSettings(StoreSettings):
    """The Workspace resource's fields, declared once: ServerSettings reads them, Workspace carries them.

    A field added here is a setting CONSTELLATION_<FIELD> and `ctx.resources.workspace.<field>`.
    """

    data_root: str = "./data"
    output_root: str = "./outputs"
    url_max_bytes: int = 2 * 1024**3
    url_allow_private: bool = False
    archive_max_bytes: int = 10 * 1024**3
    archive_max_files: int = 100_000
    max_image_pixels: int = 200_000_000
    max_tiles_per_image: int = 10_000
    # width × height × bands of a raster read or written (orchestrator/transforms/rasters.py says why 4e9)
    max_raster_samples: int = 4_000_000_000
    db_max_rows: int = 10_000_000
    db_max_bytes: int = 2 * 1024**3
    db_max_value_bytes: int = 64 * 1024**2
    db_max_row_bytes: int = 64 * 1024**2
    db_statement_timeout_s: float = 120.0
    db_export_any_schema: bool = False


class S3StorageSettings(S3Location):
    """The S3Storage resource's fields (the endpoint and region are the run store's, contract.S3Location)."""

    # export_to_s3 writes here when a pipeline names no bucket (the original clients never do).
    export_bucket: str | None = None

    _blank_is_unset = field_validator("export_bucket", mode="before")(blank_is_unset)


class ServerSettings(SharedSettings, WorkspaceSettings, S3StorageSettings):
    """Every setting of the code location, read once from its environment (CONSTELLATION_<NAME>).

    The resources below are built from these values (`resources()`); run config cannot change them
    (server_setting). A resource whose fields are a settings class above (Workspace, S3Storage)
    takes them as they are; the others are given theirs by name in `resources()`.
    Secrets are not here: credentials stay in the environment and are read where they are used.
    """

    google_api_endpoint: str | None = None
    google_download_url: str = DRIVE_PUBLIC_DOWNLOAD_URL
    model_server_timeout_s: float = 120.0
    model_server_retry_attempts: int = 5
    model_server_lease_ttl_s: float = 300.0

    def resources(self) -> dict[str, ConfigurableResource]:
        """The resources ops use (`ctx.resources.<key>`), with these values."""
        return {
            "workspace": self.workspace(),
            "s3": self.s3(),
            "google_drive": self.google_drive(),
            "databases": Databases(),
            "model_server": self.model_server(),
        }

    def workspace(self) -> Workspace:
        return Workspace(**self._fields_of(WorkspaceSettings))

    def s3(self) -> S3Storage:
        return S3Storage(**self._fields_of(S3StorageSettings))

    def google_drive(self) -> GoogleDrive:
        return GoogleDrive(
            api_endpoint=self.google_api_endpoint or None,
            download_url=self.google_download_url or DRIVE_PUBLIC_DOWNLOAD_URL,
            download_max_bytes=self.url_max_bytes,
        )

    def model_server(self) -> ModelServerConnection:
        return ModelServerConnection(
            url=self.model_server_url,
            timeout_s=self.model_server_timeout_s,
            retry_attempts=self.model_server_retry_attempts,
            lease_ttl_s=self.model_server_lease_ttl_s,
        )

    def _fields_of(self, group: type[BaseModel]) -> dict[str, Any]:
        return {name: getattr(self, name) for name in group.model_fields}


def _default(settings: type[BaseModel], name: str) -> Any:
    """A setting's declared default, for the resource field it fills: the value is written once, there."""
    return settings.model_fields[name].default


@dataclass(frozen=True)
class OpResources:
    """What an op reaches as `ctx.resources`: this run's instances of the job's resources."""

    workspace: Workspace
    s3: S3Storage | None = None
    google_drive: GoogleDrive | None = None
    databases: Databases | None = None
    model_server: ModelServerConnection | None = None


def server_setting(resource: ConfigurableResource) -> ResourceDefinition:
    """`resource` as a job's resource whose values are the server's: run config cannot change them.

    A ConfigurableResource handed to a job as it is turns its fields into run config with its values
    as defaults, so a launch with `resources: {workspace: {config: {data_root: /anywhere}}}` would
    replace them. This definition declares an empty config schema instead (Dagster refuses any field
    given for it before the run starts). Each run gets a fresh copy of `resource` with the same,
    already validated values (a pydantic copy: Dagster's own initialisation would infer the
    config schema and validate the values again, about 15 ms per resource and run), and its
    setup/teardown hooks run around the run.
    """

    def per_run(context: InitResourceContext):
        fresh = resource.model_copy()  # fields are plain values; private state (a pool) starts empty
        fresh.setup_for_execution(context)
        try:
            yield fresh
        finally:
            fresh.teardown_after_execution(context)

    return ResourceDefinition(
        resource_fn=per_run, config_schema={}, description=resource.get_resource_definition().description
    )


class Workspace(ConfigurableResource, WorkspaceSettings):
    """The folders a run may use and the limits on what it may fetch and unpack.

    Its fields are WorkspaceSettings' (the artifact root and its S3 endpoint included), built from
    ServerSettings: each from `CONSTELLATION_<FIELD>` (e.g. CONSTELLATION_DATA_ROOT).
    """

    @classmethod
    def from_env(cls) -> Workspace:
        return ServerSettings().workspace()

    @property
    def data_path(self) -> Path:
        return Path(self.data_root)

    def run_store(self) -> runstore.RunStore:
        """Where runs keep their files: the artifact root, a folder or `s3://bucket/prefix`."""
        return runstore.open_store(self.artifact_root, self.s3_endpoint_url, self.s3_region)

    def run_dir(self, run_id: str) -> Path:
        """A run's folder under a local artifact root (an `s3://` root has none: see run_store)."""
        if runstore.is_store_url(self.artifact_root):
            raise ValueError(f"runs keep no local folder: the artifact root is {self.artifact_root}")
        return runs.run_dir(Path(self.artifact_root).resolve(), run_id)

    def url_policy(self) -> UrlPolicy:
        from orchestrator.sources.url import UrlPolicy

        return UrlPolicy(max_bytes=self.url_max_bytes, allow_private=self.url_allow_private)

    def archive_limits(self) -> ArchiveLimits:
        from orchestrator.sources.archives import ArchiveLimits

        return ArchiveLimits(max_bytes=self.archive_max_bytes, max_files=self.archive_max_files)

    def database_limits(self) -> ImportLimits:
        from orchestrator.sources.databases import ImportLimits

        return ImportLimits(
            max_rows=self.db_max_rows,
            max_bytes=self.db_max_bytes,
            max_value_bytes=self.db_max_value_bytes,
            max_row_bytes=self.db_max_row_bytes,
            statement_timeout_s=self.db_statement_timeout_s,
        )


class S3Storage(ConfigurableResource, S3StorageSettings):
    """Where S3 (or an S3-compatible store: MinIO, R2...) answers; credentials are not fields.

    boto3 reads credentials from its standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    a profile, a role) in the server's environment, so they never show in the Dagster UI.
    Its fields are S3StorageSettings': CONSTELLATION_S3_ENDPOINT_URL, CONSTELLATION_S3_REGION,
    CONSTELLATION_EXPORT_BUCKET.
    """

    @classmethod
    def from_env(cls) -> S3Storage:
        return ServerSettings().s3()

    def settings(self) -> S3Settings:
        from orchestrator.sources.s3 import S3Settings

        return S3Settings(endpoint_url=self.s3_endpoint_url, region=self.s3_region)


class GoogleDrive(ConfigurableResource):
    """Where the Google Drive v3 API answers; credentials are not fields.

    They are read from the server's environment each time a client is built
    (GOOGLE_APPLICATION_CREDENTIALS: a service-account key file, else
    CONSTELLATION_GOOGLE_API_KEY: an API key for public files), so they never show in the
    Dagster UI. Built from ServerSettings: CONSTELLATION_GOOGLE_API_ENDPOINT, the API's base URL,
    https://www.googleapis.com/drive/v3/ when unset. With neither credential, files shared with
    anyone who has the link download from CONSTELLATION_GOOGLE_DOWNLOAD_URL (Drive's public
    download endpoint when unset), up to CONSTELLATION_URL_MAX_BYTES like any download by URL.
    """

    api_endpoint: str | None = None
    download_url: str = DRIVE_PUBLIC_DOWNLOAD_URL
    download_max_bytes: int = _default(WorkspaceSettings, "url_max_bytes")  # as for downloads by URL

    @classmethod
    def from_env(cls) -> GoogleDrive:
        return ServerSettings().google_drive()

    def connect(self) -> drive.Drive:
        from orchestrator.sources import drive

        return drive.connect(
            self.api_endpoint, os.environ, drive.PublicDownloads(self.download_url, self.download_max_bytes)
        )


class Databases(ConfigurableResource):
    """SQL databases by connection name; URLs are not fields.

    Connection `<name>` is the SQLAlchemy URL in the server's environment variable
    CONSTELLATION_DB_<NAME>_URL, read when a run first uses it, so no URL or password shows in
    the Dagster UI. Each connection gets one engine per run (pre-pinged, disposed at the end).
    """

    _connections: Any = PrivateAttr(default=None)

    @property
    def _pool(self) -> Connections:
        if self._connections is None:
            from orchestrator.sources.databases import Connections

            self._connections = Connections()
        return self._connections

    def engine(self, name: str) -> Engine:
        return self._pool.engine(name)

    def names(self) -> list[str]:
        return self._pool.names()

    def dispose(self) -> None:
        """Close every pooled connection."""
        if self._connections is not None:
            self._connections.dispose()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.dispose()


class ModelServerConnection(ConfigurableResource):
    """The model server that model ops talk to (any Open Inference Protocol server).

    The token it shares with the model server is not a field (run config and the Dagster UI never
    show it): `connect()` reads CONSTELLATION_MODEL_SERVER_TOKEN from the server's environment each
    time and sends it as `Authorization: Bearer <token>`. `connect(lease=run_id)` (or `for_run`)
    loads, infers and unloads as that run's lease; `lease_ttl_s` is how long a lease lasts without
    renewal (the run's process renews it while it lives), CONSTELLATION_MODEL_SERVER_LEASE_TTL_S.
    """

    # The settings' defaults (resources() gives the settings' values; tests build it with a few fields).
    url: str = _default(SharedSettings, "model_server_url")
    timeout_s: float = _default(ServerSettings, "model_server_timeout_s")
    retry_attempts: int = _default(ServerSettings, "model_server_retry_attempts")
    retry_first_delay_s: float = 0.5
    lease_ttl_s: float = _default(ServerSettings, "model_server_lease_ttl_s")

    @classmethod
    def from_env(cls) -> ModelServerConnection:
        return ServerSettings().model_server()

    def connect(self, check_cancelled: Callable[[], None] = lambda: None, lease: str | None = None) -> ModelServer:
        from orchestrator.models.client import ModelServer, Retry

        retry = Retry(attempts=self.retry_attempts, first_delay_s=self.retry_first_delay_s)
        token = os.environ.get("CONSTELLATION_MODEL_SERVER_TOKEN", "").strip() or None
        return ModelServer(
            self.url, self.timeout_s, retry, check_cancelled, token=token, lease=lease, lease_ttl_s=self.lease_ttl_s
        )

    def for_run(self, run_id: str) -> RunModelServer:
        """This connection as run `run_id`'s lease holder (for clean-up actions, which call `connect()`)."""
        return RunModelServer(self, run_id)


@dataclass(frozen=True)
class RunModelServer:
    """A model server connection bound to one run's lease."""

    connection: ModelServerConnection
    run_id: str

    def connect(self, check_cancelled: Callable[[], None] = lambda: None) -> ModelServer:
        return self.connection.connect(check_cancelled, lease=self.run_id)
