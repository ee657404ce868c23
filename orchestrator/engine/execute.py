"""Running a plan: top-level instructions in order, nested ones first, shared ones once.

Independent nested instructions run side by side on a small thread pool (the work is
I/O and Pillow, which release the GIL). Every start, end and failure is reported through
`on_event`, which is how the host (Dagster, a test) shows progress.
"""

from __future__ import annotations

import errno
import functools
import time
import typing
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from orchestrator.contract import NodeEventKind
from orchestrator.engine.catalog import Catalog, DataType, RunContext
from orchestrator.engine.errors import InstructionFailed, OperationError
from orchestrator.engine.plan import Node, Plan


@dataclass(frozen=True)
class NodeEvent:
    """Progress of one instruction, as reported to the host."""

    kind: NodeEventKind
    node: Node
    duration_s: float = 0.0
    summary: str = ""
    error: str = ""
    output: Any = field(default=None, repr=False, compare=False)  # finished and reused: what it produced


EventSink = Callable[[NodeEvent], None]


class Reuse(Protocol):
    """Where outputs of earlier runs are kept, so a resumed run can take them instead of running again."""

    def load(self, node: Node) -> tuple[bool, Any]:
        """(True, output) when an earlier run produced this very instruction; (False, None) otherwise."""

    def save(self, node: Node, output: Any) -> None:
        """Keep this run's output of `node` for a later resumed run."""


def execute(
    plan: Plan,
    catalog: Catalog,
    context: RunContext,
    on_event: EventSink = lambda event: None,
    max_workers: int = 2,
    reuse: Reuse | None = None,
) -> list[Any]:
    """Run every instruction of `plan`; return the top-level outputs in order.

    With `reuse`, an instruction an earlier run already produced (same instruction, same inputs)
    is taken from it, unless its operation is never reused (e.g. a deployment). Raises
    InstructionFailed naming the failing instruction's path.
    """
    runner = _Runner(catalog, context, on_event, reuse)
    try:
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="instruction") as pool:
            try:
                return [runner.run_subtree(root, pool) for root in plan.roots]
            except BaseException:
                # Interrupted (run cancelled) or failed: tell running ops to stop at their next check,
                # so the pool's shutdown does not wait for a long download to finish.
                context.cancelled.set()
                raise
    finally:
        # Success, failure or cancel: undo what the run left behind (e.g. models it deployed).
        context.cleanup.run_all(context.log)


def summarize(value: Any) -> str:
    """A one-line description of an output, for logs and progress."""
    if isinstance(value, DataType):
        return value.summary()
    text = repr(value)
    return text if len(text) <= 120 else text[:119] + "…"


class _Runner:
    def __init__(self, catalog: Catalog, context: RunContext, on_event: EventSink, reuse: Reuse | None = None):
        self.catalog = catalog
        self.context = context
        self.on_event = on_event
        self.reuse = reuse
        self.outputs: dict[int, Any] = {}  # id(node) -> output

    def run_subtree(self, root: Node, pool: ThreadPoolExecutor) -> Any:
        """Run `root` after whatever it needs that has not run yet."""
        pending = [n for n in _post_order(root) if id(n) not in self.outputs]
        running: dict[Future[Any], Node] = {}
        while id(root) not in self.outputs:
            started = set(map(id, running.values()))
            for node in pending:
                if id(node) not in started and all(id(c) in self.outputs for c in node.children()):
                    running[pool.submit(self.run_node, node)] = node
            pending = [n for n in pending if n not in running.values()]
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                node = running.pop(future)
                try:
                    self.outputs[id(node)] = future.result()
                except BaseException:
                    # Siblings still running are told to stop before we wait for them.
                    self.context.cancelled.set()
                    for other in running:
                        other.cancel()
                    wait(running)
                    raise
        return self.outputs[id(root)]

    def run_node(self, node: Node) -> Any:
        op = self.catalog[node.operation]
        if self.reuse is not None and op.reusable:
            found, output = self.reuse.load(node)
            if found:
                self.on_event(NodeEvent(NodeEventKind.REUSED, node, summary=summarize(output), output=output))
                return output
        self.on_event(NodeEvent(NodeEventKind.STARTED, node))
        start = time.perf_counter()
        try:
            kwargs = self._arguments(node)
            assert op.function is not None, f"{op.name} has no implementation in this catalog"
            output = op.function(replace(self.context, node_key=node.key), **kwargs)
        except Exception as exc:  # every failure becomes one message naming the instruction
            message = self.context.redact(_describe(exc, self.context))
            self.on_event(NodeEvent(NodeEventKind.FAILED, node, time.perf_counter() - start, error=message))
            raise InstructionFailed(node.path, node.operation, message) from exc
        duration = time.perf_counter() - start
        if self.reuse is not None and op.reusable:
            self.reuse.save(node, output)
        self.on_event(NodeEvent(NodeEventKind.FINISHED, node, duration, summary=summarize(output), output=output))
        return output

    def _arguments(self, node: Node) -> Mapping[str, Any]:
        op = self.catalog[node.operation]
        assert op.function is not None, f"{op.name} has no implementation in this catalog"
        kwargs: dict[str, Any] = {}
        for name, value in node.literals.items():
            kwargs[name] = _coerce(op.function, name, value)
        for name, fed in node.inputs.items():
            kwargs[name] = [self.outputs[id(n)] for n in fed] if isinstance(fed, list) else self.outputs[id(fed)]
        return kwargs


def _post_order(root: Node) -> list[Node]:
    order: list[Node] = []
    seen: set[int] = set()

    def visit(node: Node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for child in node.children():
            visit(child)
        order.append(node)

    visit(root)
    return order


@functools.cache
def _adapter(function: Callable[..., Any], name: str) -> TypeAdapter[Any]:
    return TypeAdapter(typing.get_type_hints(function, include_extras=True)[name])


def _coerce(function: Callable[..., Any], name: str, value: Any) -> Any:
    """Turn a validated JSON literal into the Python type the op declares (e.g. 3.0 -> 3)."""
    try:
        return _adapter(function, name).validate_python(value)
    except ValidationError as exc:
        raise OperationError(f"parameter {name!r}: {exc.errors()[0]['msg']}") from None


def _describe(exc: BaseException, context: RunContext) -> str:
    if isinstance(exc, (OperationError, InstructionFailed)):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # Whatever op wrote: a full disk is the server's problem, not the pipeline's. A failed
        # write() names no file, so say at least where this run's files go.
        where = f"writing {exc.filename}" if exc.filename else f"this run's files go to {context.run_dir}"
        return f"no space left on the server's disk ({where}): [Errno {exc.errno}] {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"
