"""Resuming a failed run: what the parent run completed is reused, the rest runs, deployments always run.

Only what the parent kept as data, listed in its manifest with the digest it wrote and marked as
completed in its progress, is reused: a file an instruction wrote, a changed document, an instruction
that failed and an output kept by an older version (a pickle) are never read as an output.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from orchestrator import kept, runs
from orchestrator.engine import Catalog, DataType, InstructionFailed, RunContext, build_plan, execute, never_reused

RUN_A, RUN_B, RUN_C = (f"{i}0000000-0000-4000-8000-000000000000" for i in (1, 2, 3))


class Text(DataType):
    """A piece of text."""

    def __init__(self, value: str):
        self.value = value

    def summary(self) -> str:
        return f"text {self.value!r}"


kept.register(Text, "tests.Text", lambda t: {"value": t.value}, lambda f: Text(f.text("value")))


class Calls:
    def __init__(self, failing: set[str]):
        self.made: list[str] = []
        self.failing = failing


def make(ctx: RunContext, name: Annotated[str, Field(description="a name")]) -> Text:
    """Make a text (fails for names the test says)."""
    ctx.resources.made.append(name)
    if name in ctx.resources.failing:
        raise RuntimeError(f"{name} is not ready yet")
    return Text(name)


def join(ctx: RunContext, parts: Annotated[list[Text], Field(description="texts")]) -> Text:
    """Join texts."""
    ctx.resources.made.append("join")
    return Text("+".join(p.value for p in parts))


@never_reused
def deploy(ctx: RunContext, name: Annotated[str, Field(description="a name")]) -> dict:
    """Pretend to deploy something that a run undoes at its end."""
    ctx.resources.made.append(f"deploy {name}")
    return {"deployed": name}


CATALOG = Catalog.from_functions([make, join, deploy])
PIPELINE = [
    {"operation": "deploy", "parameters": {"name": "m"}},
    {
        "operation": "join",
        "parameters": {
            "parts": [
                {"operation": "make", "parameters": {"name": "first"}},
                {"operation": "make", "parameters": {"name": "second"}},
                {"operation": "make", "parameters": {"name": "third"}},
            ]
        },
    },
]


def run(root: Path, run_id: str, parent: str | None, calls: Calls) -> list:
    plan = build_plan(PIPELINE, CATALOG)
    folder = root / "runs" / run_id
    progress = runs.ProgressLog(folder, plan)
    kept = runs.KeptOutputs(folder, root / "runs" / parent if parent else None)
    context = RunContext(run_dir=folder, resources=calls)
    try:
        return execute(plan, CATALOG, context, progress.record, max_workers=1, reuse=kept)
    except InstructionFailed as failed:
        progress.fail(failed)
        raise


def states(root: Path, run_id: str) -> dict[str, str]:
    document = json.loads((root / "runs" / run_id / runs.PROGRESS).read_text())
    return {e["path"]: e["state"] for e in document["instructions"]}


def test_a_resumed_run_reuses_what_succeeded_and_runs_the_rest(tmp_path: Path):
    first = Calls(failing={"third"})
    with pytest.raises(InstructionFailed, match="third is not ready yet"):
        run(tmp_path, RUN_A, None, first)
    assert first.made[:3] == ["deploy m", "first", "second"]

    again = Calls(failing=set())
    outputs = run(tmp_path, RUN_B, RUN_A, again)
    assert outputs[1].value == "first+second+third"
    assert again.made == ["deploy m", "third", "join"], "only the failed part and the deployment ran again"
    found = states(tmp_path, RUN_B)
    assert found["/instructions/1/parameters/parts/0"] == "reused"
    assert found["/instructions/1/parameters/parts/1"] == "reused"
    assert found["/instructions/1/parameters/parts/2"] == "succeeded"
    assert found["/instructions/0"] == "succeeded"  # a deployment is never reused

    # A retry of the retry finds everything, including what the retry itself had reused.
    third = Calls(failing=set())
    run(tmp_path, RUN_C, RUN_B, third)
    assert third.made == ["deploy m"]


def test_a_changed_instruction_is_not_reused(tmp_path: Path):
    with pytest.raises(InstructionFailed):
        run(tmp_path, RUN_A, None, Calls(failing={"third"}))
    PIPELINE[1]["parameters"]["parts"][0]["parameters"]["name"] = "FIRST"
    try:
        again = Calls(failing=set())
        run(tmp_path, RUN_B, RUN_A, again)
        assert "FIRST" in again.made and "second" not in again.made
    finally:
        PIPELINE[1]["parameters"]["parts"][0]["parameters"]["name"] = "first"


def test_a_run_without_parent_runs_everything_and_keeps_outputs(tmp_path: Path):
    calls = Calls(failing=set())
    run(tmp_path, RUN_A, None, calls)
    assert calls.made == ["deploy m", "first", "second", "third", "join"]
    folder = tmp_path / "runs" / RUN_A
    documents = sorted(p.name for p in (folder / runs.KEPT).iterdir())
    assert len(documents) == 5 and "manifest.json" in documents  # make ×3 and join; the deployment is not kept
    manifest = json.loads((folder / runs.KEPT_MANIFEST).read_text())["outputs"]
    for key, entry in manifest.items():
        assert entry["sha256"] == hashlib.sha256((folder / runs.KeptOutputs.document(key)).read_bytes()).hexdigest()
    assert not list(folder.rglob("*.pickle")), "nothing is pickled"


def key_of(root: Path, run_id: str, path: str) -> str:
    manifest = json.loads((root / "runs" / run_id / runs.KEPT_MANIFEST).read_text())["outputs"]
    [key] = [k for k, e in manifest.items() if e["path"] == path]
    return key


class Planted:
    """A pickle that, once unpickled, writes a marker file: what a retry must never do with what it reads."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_changed_kept_document_is_not_reused(tmp_path: Path):
    with pytest.raises(InstructionFailed):
        run(tmp_path, RUN_A, None, Calls(failing={"third"}))
    key = key_of(tmp_path, RUN_A, "/instructions/1/parameters/parts/0")
    document = tmp_path / "runs" / RUN_A / runs.KeptOutputs.document(key)
    document.write_bytes(document.read_bytes().replace(b'"first"', b'"forged"'))  # valid, but not what was written

    again = Calls(failing=set())
    outputs = run(tmp_path, RUN_B, RUN_A, again)
    assert outputs[1].value == "first+second+third", "the changed document was not taken"
    assert again.made == ["deploy m", "first", "third", "join"]
    assert states(tmp_path, RUN_B)["/instructions/1/parameters/parts/0"] == "succeeded"


def test_an_instruction_the_parent_did_not_complete_is_not_reused(tmp_path: Path):
    with pytest.raises(InstructionFailed):
        run(tmp_path, RUN_A, None, Calls(failing={"third"}))
    # The parent's progress is what says an instruction completed: one that failed there (here the
    # progress says so for "second", whose output was kept) runs again.
    progress = tmp_path / "runs" / RUN_A / runs.PROGRESS
    document = json.loads(progress.read_text())
    for entry in document["instructions"]:
        if entry["path"] == "/instructions/1/parameters/parts/1":
            entry["state"] = "failed"
    progress.write_text(json.dumps(document))

    again = Calls(failing=set())
    run(tmp_path, RUN_B, RUN_A, again)
    assert again.made == ["deploy m", "second", "third", "join"]


def test_an_old_pickled_output_and_files_in_node_folders_are_never_read(tmp_path: Path):
    """A parent kept before this change (output.pickle in node folders), or an instruction that wrote a
    file of that name: nothing is unpickled, everything runs again."""
    calls = Calls(failing={"third"})
    with pytest.raises(InstructionFailed):
        run(tmp_path, RUN_A, None, calls)
    parent = tmp_path / "runs" / RUN_A
    marker = tmp_path / "unpickled"
    for key in json.loads((parent / runs.KEPT_MANIFEST).read_text())["outputs"]:
        (parent / "nodes" / key).mkdir(parents=True, exist_ok=True)
        (parent / "nodes" / key / "output.pickle").write_bytes(pickle.dumps(Planted(marker)))
    for document in (parent / runs.KEPT).iterdir():
        document.unlink()  # as an older version left it: no kept/ folder

    again = Calls(failing=set())
    run(tmp_path, RUN_B, RUN_A, again)
    assert not marker.exists(), "a pickle was loaded"
    assert again.made == ["deploy m", "first", "second", "third", "join"]
