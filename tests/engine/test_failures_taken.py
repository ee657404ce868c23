"""Failures a pipeline can go on after: a list parameter typed to take `Failed`, and a top-level instruction that
provides for later ones (`provides` / `needs`). Small test ops, the real engine."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from orchestrator.engine import (
    Catalog,
    DataType,
    Failed,
    InstructionFailed,
    NodeEvent,
    OperationError,
    RunContext,
    build_plan,
    execute,
    needs,
    provides,
)
from orchestrator.engine.plan import Node


class Score(DataType):
    """One model's score."""

    def __init__(self, model: str, value: float):
        self.model, self.value = model, value


def _the_model(given: Any) -> list[str]:
    return [f"model {given['model']!r}"]


@provides(_the_model)
def load(ctx: RunContext, model: str) -> dict:
    """Load a model (one named broken* does not load)."""
    ctx.resources.append(f"load {model}")
    if model.startswith("broken"):
        raise OperationError(f"{model} is not a model file")
    return {"model": model}


@needs(_the_model)
def score(ctx: RunContext, model: str) -> Score:
    """Score a model (one named failing* fails)."""
    ctx.resources.append(f"score {model}")
    if model.startswith("failing"):
        raise OperationError(f"{model} could not run")
    return Score(model, len(model))


def rank(ctx: RunContext, results: list[Score | Failed]) -> dict:
    """Rank what ran; list what failed."""
    ctx.resources.append("rank")
    return {
        "ranked": [r.model for r in sorted((r for r in results if isinstance(r, Score)), key=lambda r: r.value)],
        "failed": [
            {"model": f.parameters.get("model"), "path": f.path, "error": f.error}
            for f in results
            if isinstance(f, Failed)
        ],
    }


def strict_rank(ctx: RunContext, results: list[Score]) -> dict:
    """Rank, taking no failure."""
    ctx.resources.append("strict_rank")
    return {"ranked": [r.model for r in results]}


def note(ctx: RunContext, text: str) -> dict:
    """Note something (runs after the others)."""
    ctx.resources.append(f"note {text}")
    return {"text": text}


CATALOG = Catalog.from_functions([load, score, rank, strict_rank, note])


def S(model: str) -> dict:
    return {"operation": "score", "parameters": {"model": model}}


def run(tmp_path, instructions: list, reuse: Any = None) -> tuple[list[str], list[NodeEvent], Any]:
    journal: list[str] = []
    events: list[NodeEvent] = []
    plan = build_plan(instructions, CATALOG)
    context = RunContext(tmp_path, resources=journal)
    try:
        outcome: Any = execute(plan, CATALOG, context, events.append, reuse=reuse)
    except InstructionFailed as failed:
        outcome = failed
    return journal, events, outcome


def finished(events: list[NodeEvent], path: str) -> Any:
    [output] = [e.output for e in events if e.kind == "finished" and e.node.path == path]
    return output


def test_the_catalog_says_which_list_takes_failures():
    assert CATALOG["rank"].parameter("results").to_json()["tolerates_failures"] is True
    assert CATALOG["rank"].parameter("results").accepts == ("Score",)
    assert CATALOG["strict_rank"].parameter("results").to_json()["tolerates_failures"] is False


def test_only_a_list_may_take_failures():
    def one(ctx: RunContext, result: Score | Failed) -> dict:
        """Take one result."""
        return {}

    with pytest.raises(TypeError, match="only a list"):
        Catalog.from_functions([one])


def test_a_list_that_takes_failures_gets_the_others_and_the_run_still_fails(tmp_path):
    journal, events, outcome = run(
        tmp_path,
        [
            {"operation": "rank", "parameters": {"results": [S("alpha"), S("failing-b"), S("gamma-long")]}},
            {"operation": "note", "parameters": {"text": "after"}},
        ],
    )
    ranked = finished(events, "/instructions/0")
    assert ranked["ranked"] == ["alpha", "gamma-long"]
    assert ranked["failed"] == [
        {"model": "failing-b", "path": "/instructions/0/parameters/results/1", "error": "failing-b could not run"}
    ]
    assert "note after" in journal  # the run went on
    assert isinstance(outcome, InstructionFailed)  # and still failed, naming the model that failed
    assert outcome.path == "/instructions/0/parameters/results/1"
    assert "failing-b could not run" in str(outcome)


def test_when_every_one_of_the_list_fails_the_run_stops_there(tmp_path):
    journal, _, outcome = run(
        tmp_path,
        [
            {"operation": "rank", "parameters": {"results": [S("failing-a"), S("failing-b")]}},
            {"operation": "note", "parameters": {"text": "after"}},
        ],
    )
    assert isinstance(outcome, InstructionFailed)
    assert "rank" not in journal and "note after" not in journal


def test_a_list_that_takes_no_failures_stops_the_run(tmp_path):
    journal, _, outcome = run(
        tmp_path,
        [
            {"operation": "strict_rank", "parameters": {"results": [S("alpha"), S("failing-b")]}},
            {"operation": "note", "parameters": {"text": "after"}},
        ],
    )
    assert isinstance(outcome, InstructionFailed) and outcome.path == "/instructions/0/parameters/results/1"
    assert "strict_rank" not in journal and "note after" not in journal


def test_a_failure_shared_with_an_instruction_that_takes_none_stops_the_run(tmp_path):
    journal, _, outcome = run(
        tmp_path,
        [
            {"operation": "rank", "parameters": {"results": [S("alpha"), S("failing-b")]}},
            {"operation": "strict_rank", "parameters": {"results": [S("failing-b")]}},
        ],
    )
    assert isinstance(outcome, InstructionFailed)
    assert "rank" not in journal and "strict_rank" not in journal


def test_a_model_that_does_not_load_fails_what_needs_it_and_the_run_goes_on(tmp_path):
    journal, events, outcome = run(
        tmp_path,
        [
            {"operation": "load", "parameters": {"model": "alpha"}},
            {"operation": "load", "parameters": {"model": "broken-b"}},
            {"operation": "load", "parameters": {"model": "gamma-long"}},
            {"operation": "rank", "parameters": {"results": [S("alpha"), S("broken-b"), S("gamma-long")]}},
            {"operation": "note", "parameters": {"text": "after"}},
        ],
    )
    assert "score broken-b" not in journal  # failed without running
    ranked = finished(events, "/instructions/3")
    assert ranked["ranked"] == ["alpha", "gamma-long"]
    [failed] = ranked["failed"]
    assert failed["model"] == "broken-b"
    assert failed["error"] == (
        "not run: it needs model 'broken-b', which load at /instructions/1 did not provide: "
        "broken-b is not a model file"
    )
    assert "note after" in journal
    assert isinstance(outcome, InstructionFailed)  # the run ends with its first failure: the load
    assert (outcome.path, outcome.operation) == ("/instructions/1", "load")


def test_what_needs_a_model_that_did_not_load_fails_the_run_where_nothing_takes_the_failure(tmp_path):
    journal, _, outcome = run(
        tmp_path,
        [
            {"operation": "load", "parameters": {"model": "broken-b"}},
            S("broken-b"),
            {"operation": "note", "parameters": {"text": "after"}},
        ],
    )
    assert isinstance(outcome, InstructionFailed) and outcome.path == "/instructions/0"
    assert "score broken-b" not in journal and "note after" not in journal


def test_a_cancelled_run_does_not_go_on_after_a_failure(tmp_path):
    journal: list[str] = []
    context = RunContext(tmp_path, resources=journal)
    context.cancelled.set()
    plan = build_plan(
        [
            {"operation": "load", "parameters": {"model": "broken-b"}},
            {"operation": "note", "parameters": {"text": "after"}},
        ],
        CATALOG,
    )
    with pytest.raises(InstructionFailed):
        execute(plan, CATALOG, context)
    assert "note after" not in journal


class Kept:
    """Outputs kept for a retry, in memory (the engine's Reuse protocol)."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] = {}
        self.lock = threading.Lock()

    def load(self, node: Node) -> tuple[bool, Any]:
        return (node.key in self.saved), self.saved.get(node.key)

    def save(self, node: Node, output: Any) -> None:
        with self.lock:
            self.saved[node.key] = output


def test_an_output_made_without_a_failed_model_is_not_kept_for_a_retry(tmp_path):
    kept = Kept()
    rank_all = {"operation": "rank", "parameters": {"results": [S("alpha"), S("failing-b")]}}
    run(tmp_path, [rank_all], reuse=kept)
    plan = build_plan([rank_all], CATALOG)
    assert plan.roots[0].key not in kept.saved  # a retry ranks again, with the model that failed then
    assert {n.literals["model"] for n in plan.shared.values() if n.key in kept.saved} == {"alpha"}
