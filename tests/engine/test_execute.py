"""Running a plan: order, sharing, progress events, failures and overlap, with small test ops."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from pydantic import Field

from orchestrator.engine import (
    Catalog,
    DataType,
    InstructionFailed,
    NodeEvent,
    OperationError,
    RunContext,
    build_plan,
    execute,
)


@dataclass
class Journal:
    """The resource the test ops share: what ran, in which order, and when."""

    entries: list[str] = field(default_factory=list)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, entry: str) -> None:
        with self.lock:
            self.entries.append(entry)


class Text(DataType):
    """A piece of text."""

    def __init__(self, value: str):
        self.value = value

    def summary(self) -> str:
        return f"text {self.value!r}"


Name = Annotated[str, Field(min_length=1, description="a name")]


def make(ctx: RunContext, name: Name) -> Text:
    """Make a text."""
    ctx.resources.note(f"make {name}")
    return Text(name)


def join(
    ctx: RunContext,
    left: Annotated[Text, Field(description="first")],
    right: Annotated[Text, Field(description="second")],
) -> Text:
    """Join two texts."""
    value = f"{left.value}+{right.value}"
    ctx.resources.note(f"join {value}")
    return Text(value)


def gather(ctx: RunContext, items: Annotated[list[Text], Field(description="texts")]) -> Text:
    """Join any number of texts."""
    return Text(",".join(item.value for item in items))


def nap(ctx: RunContext, name: Name, seconds: Annotated[float, Field(ge=0, le=2)]) -> Text:
    """Sleep, recording when it started and ended."""
    start = time.monotonic()
    time.sleep(seconds)
    with ctx.resources.lock:
        ctx.resources.spans[name] = (start, time.monotonic())
    return Text(name)


def patient(ctx: RunContext, name: Name) -> Text:
    """A long op that checks for cancellation between units of work, as ops are told to."""
    try:
        for _ in range(60):
            ctx.check_cancelled()
            time.sleep(0.01)
    except OperationError:
        ctx.resources.note(f"{name} stopped early")
        raise
    ctx.resources.note(f"{name} ran to the end")
    return Text(name)


def fail(ctx: RunContext, message: Annotated[str, Field(description="what to say")]) -> Text:
    """Fail the way an op reports a problem the user can fix."""
    raise OperationError(message)


def crash(ctx: RunContext) -> Text:
    """Fail the way a bug does."""
    raise KeyError("missing")


def count(ctx: RunContext, n: Annotated[int, Field(ge=0, description="a count")]) -> dict:
    """Echo a count with the Python type it arrived as."""
    return {"n": n, "type": type(n).__name__}


CATALOG = Catalog.from_functions([make, join, gather, nap, patient, fail, crash, count])


def op(operation: str, **parameters: Any) -> dict[str, Any]:
    return {"operation": operation, "parameters": parameters}


@pytest.fixture
def journal() -> Journal:
    return Journal()


def run(instructions: list[Any], tmp_path, journal: Journal, events: list[NodeEvent] | None = None, **kw):
    plan = build_plan(instructions, CATALOG)
    sink = events.append if events is not None else (lambda event: None)
    return execute(plan, CATALOG, RunContext(run_dir=tmp_path, resources=journal), sink, **kw)


def test_top_level_instructions_run_in_the_order_given(tmp_path, journal):
    outputs = run([op("make", name=n) for n in "cab"], tmp_path, journal)
    assert journal.entries == ["make c", "make a", "make b"]
    assert [o.value for o in outputs] == ["c", "a", "b"]


def test_nested_instructions_run_before_their_parent(tmp_path, journal):
    pipeline = [
        op(
            "join",
            left=op("make", name="x"),
            right=op("join", left=op("make", name="y"), right=op("make", name="z")),
        )
    ]
    [output] = run(pipeline, tmp_path, journal)
    assert output.value == "x+y+z"
    order = journal.entries
    assert order[-1] == "join x+y+z"
    assert order.index("make y") < order.index("join y+z")
    assert order.index("make z") < order.index("join y+z")
    assert order.index("make x") < order.index("join x+y+z")


def test_list_inputs_keep_their_order(tmp_path, journal):
    [output] = run([op("gather", items=[op("make", name=n) for n in "qwerty"])], tmp_path, journal)
    assert output.value == "q,w,e,r,t,y"


def test_a_shared_nested_instruction_runs_once(tmp_path, journal):
    same = op("make", name="s")
    outputs = run(
        [op("join", left=same, right=same), op("join", left=same, right=op("make", name="t"))],
        tmp_path,
        journal,
    )
    assert [o.value for o in outputs] == ["s+s", "s+t"]
    assert journal.entries.count("make s") == 1


def test_identical_top_level_instructions_each_run(tmp_path, journal):
    run([op("make", name="a"), op("make", name="a")], tmp_path, journal)
    assert journal.entries == ["make a", "make a"]


def test_every_instruction_reports_started_then_finished(tmp_path, journal):
    events: list[NodeEvent] = []
    run(
        [op("join", left=op("nap", name="a", seconds=0.05), right=op("make", name="b"))],
        tmp_path,
        journal,
        events,
    )
    by_op: dict[str, list[NodeEvent]] = {}
    for event in events:
        by_op.setdefault(event.node.operation, []).append(event)
    assert {name: [e.kind for e in evs] for name, evs in by_op.items()} == {
        "nap": ["started", "finished"],
        "make": ["started", "finished"],
        "join": ["started", "finished"],
    }
    assert events[-1].kind == "finished" and events[-1].node.operation == "join"
    nap_done = by_op["nap"][1]
    assert nap_done.duration_s >= 0.05
    assert nap_done.summary == "text 'a'"
    assert nap_done.node.path == "/instructions/0/parameters/left"
    assert by_op["join"][1].summary == "text 'a+b'"


def test_a_failure_names_the_failing_nested_instruction_and_stops_the_run(tmp_path, journal):
    events: list[NodeEvent] = []
    pipeline = [
        op("make", name="first"),
        op("join", left=op("make", name="b"), right=op("fail", message="disk full")),
        op("make", name="never"),
    ]
    with pytest.raises(InstructionFailed) as caught:
        run(pipeline, tmp_path, journal, events)
    assert caught.value.path == "/instructions/1/parameters/right"
    assert caught.value.operation == "fail"
    assert caught.value.message == "disk full"
    assert "make never" not in journal.entries
    assert not any(e.startswith("join") for e in journal.entries)
    [failed] = [e for e in events if e.kind == "failed"]
    assert failed.error == "disk full"
    assert failed.node.path == "/instructions/1/parameters/right"


def test_an_unexpected_exception_is_reported_with_its_type(tmp_path, journal):
    with pytest.raises(InstructionFailed) as caught:
        run([op("join", left=op("crash"), right=op("make", name="a"))], tmp_path, journal)
    assert caught.value.path == "/instructions/0/parameters/left"
    assert caught.value.message == "KeyError: 'missing'"


def test_independent_siblings_overlap_in_time(tmp_path, journal):
    pipeline = [op("join", left=op("nap", name="a", seconds=0.3), right=op("nap", name="b", seconds=0.3))]
    run(pipeline, tmp_path, journal, max_workers=2)
    (a_start, a_end), (b_start, b_end) = journal.spans["a"], journal.spans["b"]
    assert a_start < b_end and b_start < a_end  # the two intervals intersect


def test_literals_are_coerced_to_the_declared_type(tmp_path, journal):
    [output] = run([op("count", n=3.0)], tmp_path, journal)
    assert output == {"n": 3, "type": "int"}


def test_a_failure_tells_running_siblings_to_stop(tmp_path, journal):
    pipeline = [op("join", left=op("patient", name="slow"), right=op("fail", message="bad input"))]
    with pytest.raises(InstructionFailed, match="bad input"):
        run(pipeline, tmp_path, journal, max_workers=2)
    assert "slow stopped early" in journal.entries


def _echo_str():
    def echo(ctx: RunContext, value: str) -> dict:
        return {"value": value}

    return echo


def _echo_int():
    def echo(ctx: RunContext, value: int) -> dict:
        return {"value": value}

    return echo


def _run_one(function, value: Any, tmp_path) -> Any:
    catalog = Catalog.from_functions([function])
    plan = build_plan([op("echo", value=value)], catalog)
    return execute(plan, catalog, RunContext(run_dir=tmp_path))[0]


def test_ops_of_the_same_name_each_coerce_to_their_own_types(tmp_path):
    assert _run_one(_echo_str(), "abc", tmp_path) == {"value": "abc"}
    assert _run_one(_echo_int(), 7.0, tmp_path) == {"value": 7}
