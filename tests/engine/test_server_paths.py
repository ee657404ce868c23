"""No server path in what the gateway answers (issue 22): the data root, the models root and the artifact root
stay on the server; errors name files relative to them, as the user names them in a pipeline."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from pydantic import Field

from harness import Stack
from orchestrator.engine import Catalog, InstructionFailed, RunContext, build_plan, execute
from orchestrator.engine.redact import redactor


def forms(folder: Path) -> set[str]:
    return {str(folder), str(folder.resolve())}


def imported(path: str) -> dict:
    return {"operation": "import_from_local", "parameters": {"path": path}}


@pytest.mark.e2e
def test_errors_name_files_relative_to_the_servers_folders(stack: Stack, api: httpx.Client):
    private = forms(stack.data_root) | forms(stack.artifact_root) | forms(stack.models_root)
    (stack.data_root / "docs-22").mkdir(exist_ok=True)
    (stack.data_root / "docs-22" / "notes.png").write_text("a note, not an image")  # Pillow names the file it opens
    (stack.models_root / "corrupt-22.onnx").write_bytes(b"not a model")  # so does ONNX Runtime
    answers: list[str] = []
    for path in ("../outside", "/etc/passwd", "no-such-folder-22"):  # refused before launch
        refused = api.post("/validate", json={"instructions": [imported(path)]})
        assert refused.status_code == 422, refused.text
        answers.append(refused.text)
    failing = {
        "the data root": {
            "operation": "resize_image",
            "parameters": {"width": 8, "height": 8, "data": imported("docs-22/notes.png")},
        },
        "the models root": {
            "operation": "deploy_model",
            "parameters": {"model": "corrupt-22", "task": "tabular-classification", "source": "corrupt-22.onnx"},
        },
    }
    said: dict[str, str] = {}
    for where, instruction in failing.items():
        launched = api.post("/execute", json={"instructions": [instruction]})
        assert launched.status_code == 200, launched.text
        run_id = launched.json()["run_id"]
        run = stack.wait_for_run(run_id, timeout_s=120)
        assert run["run_status"] == "FAILURE", run
        said[where] = run["error"]["message"]
        answers += [api.get(f"/runs/{run_id}").text, api.get(f"/runs/{run_id}/results").text]
    answers.append(api.get("/runs", params={"limit": 100}).text)
    for answer in answers:
        assert not [folder for folder in private if folder in answer], answer
    # Still saying which file: as the pipeline named it.
    assert "cannot identify image file 'docs-22/notes.png'" in said["the data root"], said
    assert "Load model from corrupt-22.onnx failed" in said["the models root"], said


def fill(ctx: RunContext, name: Annotated[str, Field(description="a file to write")]) -> dict:
    """Fails as writing to a full disk does, naming the file it was writing in the run's folder."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.run_dir / name))


def test_a_full_disk_names_the_file_relative_to_the_artifact_root(tmp_path: Path):
    catalog = Catalog.from_functions([fill])
    artifact_root = tmp_path / "artifacts"
    run_dir = artifact_root / "runs" / "00000000-0000-4000-8000-0000000000aa"
    context = RunContext(run_dir=run_dir, redact=redactor([(artifact_root, "the artifact root")]))
    with pytest.raises(InstructionFailed) as failed:
        execute(build_plan([{"operation": "fill", "parameters": {"name": "x.png"}}], catalog), catalog, context)
    assert failed.value.message == (
        f"no space left on the server's disk (writing runs/{run_dir.name}/x.png): "
        f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}"
    )
