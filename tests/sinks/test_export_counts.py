"""What an export says it wrote (issue 22): rows and files counted as a user counts them, not "1 items"."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

from orchestrator.assets import ops
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileList, FileRef, Table
from orchestrator.engine import RunContext


def context(tmp_path: Path) -> RunContext:
    workspace = Workspace(
        data_root=str(tmp_path / "data"),
        output_root=str(tmp_path / "outputs"),
        artifact_root=str(tmp_path / "artifacts"),
    )
    return RunContext(
        run_dir=tmp_path / "artifacts" / "runs" / str(uuid.uuid4()), resources=SimpleNamespace(workspace=workspace)
    )


def test_a_table_exported_as_a_file_counts_its_rows_and_the_file(tmp_path: Path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(121)))
    ctx = context(tmp_path)
    exported = ops.export_to_local(ctx, Table(path, ["n"], 121))
    target = Path(tmp_path / "outputs" / "constellation" / ctx.run_id).resolve()
    assert exported.summary() == f"121 rows in 1 file written to {target.as_uri()}"
    assert exported.to_result()["written"] == "121 rows in 1 file"
    assert (exported.to_result()["rows"], exported.to_result()["files"]) == (121, 1)
    assert sum(1 for _ in (target / "table.jsonl").open()) == 121


def test_files_exported_are_counted_as_files(tmp_path: Path):
    (tmp_path / "data").mkdir()
    refs = []
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / "data" / name).write_text(name)
        refs.append(FileRef(name, tmp_path / "data" / name))
    exported = ops.export_to_local(context(tmp_path), FileList(refs))
    assert exported.to_result()["written"] == "3 files" and exported.to_result()["rows"] is None
    one = ops.export_to_local(context(tmp_path), FileList(refs[:1]))
    assert one.summary().startswith("1 file written to ")
