"""Resuming a failed run: what the parent run completed is reused, the rest runs, deployments always run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from orchestrator import runs
from orchestrator.engine import Catalog, DataType, InstructionFailed, RunContext, build_plan, execute, never_reused

RUN_A, RUN_B, RUN_C = (f"{i}0000000-0000-4000-8000-000000000000" for i in (1, 2, 3))


class Text(DataType):
    """A piece of text."""

    def __init__(self, value: str):
        self.value = value

    def summary(self) -> str:
        return f"text {self.value!r}"


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
    {"operation": "join", "parameters": {"parts": [
        {"operation": "make", "parameters": {"name": "first"}},
        {"operation": "make", "parameters": {"name": "second"}},
        {"operation": "make", "parameters": {"name": "third"}}]}},
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
    kept = list((tmp_path / "runs" / RUN_A / "nodes").glob(f"*/{runs.KeptOutputs.FILE}"))
    assert len(kept) == 4  # make ×3 and join; the deployment is not kept
