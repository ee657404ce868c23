"""Dagster resources: the settings and clients that ops reach as `ctx.resources.<key>`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext, ResourceDefinition
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from orchestrator import runs, runstore
from orchestrator.data import drive
from orchestrator.data.archives import ArchiveLimits
from orchestrator.data.databases import Connections, ImportLimits
from orchestrator.data.model_server import ModelServer, Retry
from orchestrator.data.s3 import S3Settings
from orchestrator.data.url import UrlPolicy


def server_setting(resource: ConfigurableResource) -> ResourceDefinition:
    """`resource` as a job's resource whose values are the server's: run config cannot change them.

    A ConfigurableResource handed to a job as it is turns its fields into run config with its values
    as defaults, so a launch with `resources: {workspace: {config: {data_root: /anywhere}}}` would
    replace them. This definition declares an empty config schema instead (Dagster refuses any field
    given for it before the run starts) and keeps Dagster's own initialisation: each run gets a fresh
    copy of `resource`, with the same values, and its setup/teardown hooks.
    """
    definition = resource.get_resource_definition()
    return ResourceDefinition(resource_fn=definition.resource_fn, config_schema={},
                              description=definition.description)


class Workspace(ConfigurableResource):
    """The folders a run may use and the limits on what it may fetch and unpack.

    `from_env()` reads each field from `CONSTELLATION_<FIELD>` (e.g. CONSTELLATION_DATA_ROOT).
    """

    data_root: str = "./data"
    artifact_root: str = "./.artifacts"  # a folder, or s3://bucket/prefix (orchestrator/runstore.py)
    output_root: str = "./outputs"
    url_max_bytes: int = 2 * 1024**3
    url_allow_private: bool = False
    archive_max_bytes: int = 10 * 1024**3
    archive_max_files: int = 100_000
    max_image_pixels: int = 200_000_000
    max_tiles_per_image: int = 10_000
    db_max_rows: int = 10_000_000
    db_max_bytes: int = 2 * 1024**3
    db_max_value_bytes: int = 64 * 1024**2
    db_statement_timeout_s: float = 600.0
    db_export_any_schema: bool = False

    @classmethod
    def from_env(cls) -> Workspace:
        given = {
            name: os.environ[f"CONSTELLATION_{name.upper()}"]
            for name in cls.model_fields
            if f"CONSTELLATION_{name.upper()}" in os.environ
        }
        return cls(**given)

    @property
    def data_path(self) -> Path:
        return Path(self.data_root)

    def run_store(self) -> runstore.RunStore:
        """Where runs keep their files: the artifact root, a folder or `s3://bucket/prefix`."""
        return runstore.open_store(self.artifact_root)

    def run_dir(self, run_id: str) -> Path:
        """A run's folder under a local artifact root (an `s3://` root has none: see run_store)."""
        if runstore.is_store_url(self.artifact_root):
            raise ValueError(f"runs keep no local folder: the artifact root is {self.artifact_root}")
        return runs.run_dir(Path(self.artifact_root).resolve(), run_id)

    def url_policy(self) -> UrlPolicy:
        return UrlPolicy(max_bytes=self.url_max_bytes, allow_private=self.url_allow_private)

    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_bytes=self.archive_max_bytes, max_files=self.archive_max_files)

    def database_limits(self) -> ImportLimits:
        return ImportLimits(
            max_rows=self.db_max_rows, max_bytes=self.db_max_bytes, max_value_bytes=self.db_max_value_bytes,
            statement_timeout_s=self.db_statement_timeout_s,
        )


class S3Storage(ConfigurableResource):
    """Where S3 (or an S3-compatible store: MinIO, R2...) answers; credentials are not fields.

    boto3 reads credentials from its standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    a profile, a role) in the server's environment, so they never show in the Dagster UI.
    `from_env()` reads CONSTELLATION_S3_ENDPOINT_URL and CONSTELLATION_S3_REGION.
    """

    endpoint_url: str | None = None
    region: str | None = None
    # export_to_s3 writes here when a pipeline names no bucket (the original clients never do).
    export_bucket: str | None = None

    @classmethod
    def from_env(cls) -> S3Storage:
        return cls(
            endpoint_url=os.environ.get("CONSTELLATION_S3_ENDPOINT_URL") or None,
            region=os.environ.get("CONSTELLATION_S3_REGION") or None,
            export_bucket=os.environ.get("CONSTELLATION_EXPORT_BUCKET") or None,
        )

    def settings(self) -> S3Settings:
        return S3Settings(endpoint_url=self.endpoint_url, region=self.region)


class GoogleDrive(ConfigurableResource):
    """Where the Google Drive v3 API answers; credentials are not fields.

    They are read from the server's environment each time a client is built
    (GOOGLE_APPLICATION_CREDENTIALS: a service-account key file, else
    CONSTELLATION_GOOGLE_API_KEY: an API key for public files), so they never show in the
    Dagster UI. `from_env()` reads CONSTELLATION_GOOGLE_API_ENDPOINT: the API's base URL,
    https://www.googleapis.com/drive/v3/ when unset. With neither credential, files shared with
    anyone who has the link download from CONSTELLATION_GOOGLE_DOWNLOAD_URL (Drive's public
    download endpoint when unset), up to CONSTELLATION_URL_MAX_BYTES like any download by URL.
    """

    api_endpoint: str | None = None
    download_url: str = drive.PUBLIC_DOWNLOAD_URL
    download_max_bytes: int = drive.PUBLIC_MAX_BYTES

    @classmethod
    def from_env(cls) -> GoogleDrive:
        given = {"download_url": os.environ.get("CONSTELLATION_GOOGLE_DOWNLOAD_URL") or None,
                 "download_max_bytes": os.environ.get("CONSTELLATION_URL_MAX_BYTES") or None}
        return cls(api_endpoint=os.environ.get("CONSTELLATION_GOOGLE_API_ENDPOINT") or None,
                   **{name: value for name, value in given.items() if value is not None})

    def connect(self) -> drive.Drive:
        return drive.connect(self.api_endpoint, os.environ, drive.PublicDownloads(self.download_url,
                                                                                   self.download_max_bytes))


class Databases(ConfigurableResource):
    """SQL databases by connection name; URLs are not fields.

    Connection `<name>` is the SQLAlchemy URL in the server's environment variable
    CONSTELLATION_DB_<NAME>_URL, read when a run first uses it, so no URL or password shows in
    the Dagster UI. Each connection gets one engine per run (pre-pinged, disposed at the end).
    """

    _connections: Connections = PrivateAttr(default_factory=Connections)

    def engine(self, name: str) -> Engine:
        return self._connections.engine(name)

    def names(self) -> list[str]:
        return self._connections.names()

    def dispose(self) -> None:
        """Close every pooled connection."""
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

    url: str = "http://127.0.0.1:8080"
    timeout_s: float = 120.0
    retry_attempts: int = 5
    retry_first_delay_s: float = 0.5
    lease_ttl_s: float = 300.0

    @classmethod
    def from_env(cls) -> ModelServerConnection:
        env = {"url": "CONSTELLATION_MODEL_SERVER_URL", "timeout_s": "CONSTELLATION_MODEL_SERVER_TIMEOUT_S",
               "retry_attempts": "CONSTELLATION_MODEL_SERVER_RETRY_ATTEMPTS",
               "lease_ttl_s": "CONSTELLATION_MODEL_SERVER_LEASE_TTL_S"}
        return cls(**{field: os.environ[var] for field, var in env.items() if var in os.environ})

    def connect(self, check_cancelled: Callable[[], None] = lambda: None, lease: str | None = None) -> ModelServer:
        retry = Retry(attempts=self.retry_attempts, first_delay_s=self.retry_first_delay_s)
        token = os.environ.get("CONSTELLATION_MODEL_SERVER_TOKEN", "").strip() or None
        return ModelServer(self.url, self.timeout_s, retry, check_cancelled, token=token, lease=lease,
                           lease_ttl_s=self.lease_ttl_s)

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
