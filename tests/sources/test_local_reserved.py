"""import_from_local and export_to_local never reach where the server keeps runs: a local artifact root
(kept outputs a retry reads), DAGSTER_HOME (Dagster's step outputs a re-execution loads), a run's scratch
folder — even when the operator put them under the data or output root."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.assets import ops
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileList, FileRef
from orchestrator.engine import OperationError, RunContext


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One folder holding the data root, the output root, the artifact root and DAGSTER_HOME."""
    for name in ("data", "artifacts/runs/11111111-0000-4000-8000-000000000000/kept", "dagster_home/storage"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "data" / "a.txt").write_text("data")
    (tmp_path / "artifacts/runs/11111111-0000-4000-8000-000000000000/kept/manifest.json").write_text("{}")
    (tmp_path / "dagster_home/storage/step").write_text("pickled")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def context(server: Path, data: str = "data", output: str = "outputs", artifacts: str | None = None) -> RunContext:
    root = artifacts or str(server / "artifacts")
    workspace = Workspace(data_root=str(server / data), output_root=str(server / output), artifact_root=root)
    runs = server / "artifacts" / "runs" if artifacts is None else server / "scratch" / "runs"
    return RunContext(run_dir=runs / str(uuid.uuid4()), resources=SimpleNamespace(workspace=workspace))


@pytest.mark.parametrize(
    ("path", "setting"),
    [
        ("artifacts/runs", "CONSTELLATION_ARTIFACT_ROOT"),
        ("artifacts/runs/11111111-0000-4000-8000-000000000000/kept/manifest.json", "CONSTELLATION_ARTIFACT_ROOT"),
        ("data/../artifacts", "CONSTELLATION_ARTIFACT_ROOT"),
        ("dagster_home/storage/step", "DAGSTER_HOME"),
        (".", "CONSTELLATION_ARTIFACT_ROOT"),  # a folder holding them: refused when the walk reaches them
    ],
)
def test_an_import_from_where_runs_are_kept_is_refused(server: Path, path: str, setting: str):
    with pytest.raises(OperationError, match=f"lies in {setting}.*imports never go there"):
        ops.import_from_local(context(server, data="."), path)


def test_a_link_into_the_artifact_root_is_refused(server: Path):
    (server / "link").symlink_to(server / "artifacts")
    with pytest.raises(OperationError, match="CONSTELLATION_ARTIFACT_ROOT"):
        ops.import_from_local(context(server, data="."), "link")


def test_the_data_root_beside_them_is_read(server: Path):
    assert list(ops.import_from_local(context(server), ".").files) == ["a.txt"]
    assert list(ops.import_from_local(context(server, data="."), "data").files) == ["a.txt"]


def test_the_scratch_folder_of_a_run_on_s3_is_refused(server: Path):
    ctx = context(server, data=".", artifacts="s3://runs-bucket/constellation")
    (ctx.run_dir / "nodes").mkdir(parents=True)
    (ctx.run_dir / "nodes" / "x.txt").write_text("a file of this run")
    with pytest.raises(OperationError, match="scratch folder"):
        ops.import_from_local(ctx, f"scratch/runs/{ctx.run_id}")


@pytest.mark.parametrize(
    ("output", "setting"),
    [
        ("artifacts", "CONSTELLATION_ARTIFACT_ROOT"),  # <output>/runs/<run id>: the run's own folder
        ("artifacts/runs/11111111-0000-4000-8000-000000000000", "CONSTELLATION_ARTIFACT_ROOT"),
        ("dagster_home", "DAGSTER_HOME"),
    ],
)
def test_an_export_into_where_runs_are_kept_is_refused(server: Path, output: str, setting: str):
    data = FileList([FileRef("kept/manifest.json", server / "data" / "a.txt")])
    ctx = context(server, output=output)
    with pytest.raises(OperationError, match=f"lies in {setting}.*exports never go there"):
        ops.export_to_local(ctx, data, folder="runs")
    assert (server / "artifacts/runs/11111111-0000-4000-8000-000000000000/kept/manifest.json").read_text() == "{}"
    assert not list(server.glob(f"**/{ctx.run_id}/kept"))


def test_an_export_to_the_output_root_is_written(server: Path):
    ctx = context(server)
    exported = ops.export_to_local(ctx, FileList([FileRef("a.txt", server / "data" / "a.txt")]))
    assert (server / "outputs" / "constellation" / ctx.run_id / "a.txt").read_text() == "data"
    assert exported.items[0]["name"] == "a.txt"
