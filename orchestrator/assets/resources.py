"""Dagster resources: where runs read local data and keep their files."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from orchestrator import runs


class Workspace(ConfigurableResource):
    """The folders a run may use: the read-only data root and the artifact root."""

    data_root: str = "./data"
    artifact_root: str = "./.artifacts"
    url_max_bytes: int = 2 * 1024**3

    @property
    def data_path(self) -> Path:
        return Path(self.data_root)

    def run_dir(self, run_id: str) -> Path:
        return runs.run_dir(Path(self.artifact_root).resolve(), run_id)
