"""Dagster resources: the settings and clients that ops reach as `ctx.resources.<key>`."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource

from orchestrator import runs
from orchestrator.data.archives import ArchiveLimits
from orchestrator.data.url import UrlPolicy


class Workspace(ConfigurableResource):
    """The folders a run may use and the limits on what it may fetch and unpack.

    `from_env()` reads each field from `CONSTELLATION_<FIELD>` (e.g. CONSTELLATION_DATA_ROOT).
    """

    data_root: str = "./data"
    artifact_root: str = "./.artifacts"
    output_root: str = "./outputs"
    url_max_bytes: int = 2 * 1024**3
    url_allow_private: bool = False
    archive_max_bytes: int = 10 * 1024**3
    archive_max_files: int = 100_000
    max_image_pixels: int = 200_000_000

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

    def run_dir(self, run_id: str) -> Path:
        return runs.run_dir(Path(self.artifact_root).resolve(), run_id)

    def url_policy(self) -> UrlPolicy:
        return UrlPolicy(max_bytes=self.url_max_bytes, allow_private=self.url_allow_private)

    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_bytes=self.archive_max_bytes, max_files=self.archive_max_files)
