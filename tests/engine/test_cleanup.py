"""What a run registers to undo is undone when it ends, whether it succeeded or failed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from orchestrator.engine import Catalog, InstructionFailed, RunContext, build_plan, execute


def acquire(ctx: RunContext, name: Annotated[str, Field(description="what to acquire")]) -> dict:
    """Acquire something the run must give back."""
    ctx.resources.append(f"acquire {name}")
    ctx.cleanup.add(f"thing:{name}", f"releasing {name}", lambda: ctx.resources.append(f"release {name}"))
    return {"acquired": name}


def release(ctx: RunContext, name: Annotated[str, Field(description="what to release")]) -> dict:
    """Give it back explicitly."""
    ctx.resources.append(f"release {name} (explicit)")
    ctx.cleanup.discard(f"thing:{name}")
    return {"released": name}


def fail(ctx: RunContext, why: Annotated[str, Field(description="the message")]) -> dict:
    """Always fails."""
    raise RuntimeError(why)


def broken(ctx: RunContext, name: Annotated[str, Field(description="what to acquire")]) -> dict:
    """Acquires something whose release fails."""

    def explode() -> None:
        raise RuntimeError("the server is gone")

    ctx.cleanup.add(f"broken:{name}", f"releasing {name}", explode)
    return {}


CATALOG = Catalog.from_functions([acquire, release, fail, broken])


def run(instructions: list, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    journal: list[str] = []
    context = RunContext(run_dir=tmp_path, resources=journal, log=logging.getLogger("test-cleanup"))
    with caplog.at_level(logging.INFO, "test-cleanup"):
        try:
            execute(build_plan(instructions, CATALOG), CATALOG, context)
        finally:
            journal.extend(f"log: {r.getMessage()}" for r in caplog.records)
    return journal


def op(operation: str, **parameters) -> dict:
    return {"operation": operation, "parameters": parameters}


def test_what_is_left_is_released_newest_first_after_success(tmp_path, caplog):
    journal = run([op("acquire", name="a"), op("acquire", name="b")], tmp_path, caplog)
    assert journal == [
        "acquire a",
        "acquire b",
        "release b",
        "release a",
        "log: clean-up: releasing b",
        "log: clean-up: releasing a",
    ]


def test_an_explicit_release_is_not_repeated(tmp_path, caplog):
    journal = run([op("acquire", name="a"), op("release", name="a")], tmp_path, caplog)
    assert journal == ["acquire a", "release a (explicit)"]


def test_a_failing_run_still_releases(tmp_path, caplog):
    journal: list[str] = []
    context = RunContext(run_dir=tmp_path, resources=journal, log=logging.getLogger("test-cleanup"))
    plan = build_plan([op("acquire", name="a"), op("fail", why="boom"), op("acquire", name="never")], CATALOG)
    with pytest.raises(InstructionFailed, match="boom"):
        execute(plan, CATALOG, context)
    assert journal == ["acquire a", "release a"]


def test_a_failing_release_does_not_stop_the_others(tmp_path, caplog):
    journal = run([op("acquire", name="a"), op("broken", name="b")], tmp_path, caplog)
    assert "release a" in journal
    assert "log: clean-up failed: releasing b: the server is gone" in journal
