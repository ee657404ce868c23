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
from orchestrator.engine.catalog import Catalog, DataType, Failed, Operation, RunContext
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

    A failure stops the run, except where the pipeline can go on without it: an instruction in a list
    parameter that takes failures (compare_models' results), while another of the list succeeds, and
    a top-level instruction that provides something to later ones (deploy_model), whose takers then
    fail in its stead. The run then goes on, and ends by raising the first failure.
    """
    runner = _Runner(catalog, context, on_event, reuse, plan)
    try:
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="instruction") as pool:
            try:
                outputs = [runner.run_root(root, pool) for root in plan.roots]
            except InstructionFailed as failed:
                context.cancelled.set()
                first = runner.first_failure or failed  # what the run went on after came first
                raise first from first.__cause__
            except BaseException:
                # Interrupted (run cancelled) or failed: tell running ops to stop at their next check,
                # so the pool's shutdown does not wait for a long download to finish.
                context.cancelled.set()
                raise
        if runner.first_failure is not None:  # the run went on past failures: it still failed
            raise runner.first_failure
        return outputs
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
    def __init__(
        self,
        catalog: Catalog,
        context: RunContext,
        on_event: EventSink,
        reuse: Reuse | None = None,
        plan: Plan | None = None,
    ):
        self.catalog = catalog
        self.context = context
        self.on_event = on_event
        self.reuse = reuse
        self.outputs: dict[int, Any] = {}  # id(node) -> output
        # Failures the run goes on after: instructions whose takers take failures (id(node) -> why), what failed
        # top-level instructions would have provided (name -> why), and the first failure, which the run ends with.
        self.failures: dict[int, InstructionFailed] = {}
        self.unavailable: dict[str, InstructionFailed] = {}
        self.first_failure: InstructionFailed | None = None
        self.takers = _takers(plan) if plan is not None else {}

    def run_root(self, root: Node, pool: ThreadPoolExecutor) -> Any:
        """Run a top-level instruction; one that fails but provides for later ones lets the run go on."""
        try:
            return self.run_subtree(root, pool)
        except InstructionFailed as failed:
            provides = self.catalog[root.operation].provides
            if provides is None or failed.path != root.path or self.context.cancelled.is_set():
                raise
            self._went_on_after(failed)
            for name in provides(root.literals):
                self.unavailable[name] = failed
            return None

    def run_subtree(self, root: Node, pool: ThreadPoolExecutor) -> Any:
        """Run `root` after whatever it needs that has not run yet."""
        pending = [n for n in _post_order(root) if not self._ended(n)]
        running: dict[Future[Any], Node] = {}
        while not self._ended(root):
            started = set(map(id, running.values()))
            for node in pending:
                if id(node) not in started and all(self._ended(c) for c in node.children()):
                    running[pool.submit(self.run_node, node)] = node
            pending = [n for n in pending if n not in running.values()]
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                node = running.pop(future)
                try:
                    self.outputs[id(node)] = future.result()
                except InstructionFailed as failed:
                    if not self._taken_as_failed(node):
                        self._stop(running)
                        raise
                    self._went_on_after(failed)
                    self.failures[id(node)] = failed
                except BaseException:
                    self._stop(running)
                    raise
        return self.outputs[id(root)]

    def _ended(self, node: Node) -> bool:
        return id(node) in self.outputs or id(node) in self.failures

    def _stop(self, running: dict[Future[Any], Node]) -> None:
        """Siblings still running are told to stop before we wait for them. (With none, the run is not told to
        stop: a top-level instruction that provides for later ones may fail and the run go on.)"""
        if not running:
            return
        self.context.cancelled.set()
        for other in running:
            other.cancel()
        wait(running)

    def _went_on_after(self, failed: InstructionFailed) -> None:
        if self.first_failure is None:
            self.first_failure = failed
        self.context.log.warning(f"{failed}; the run goes on without it")

    def _taken_as_failed(self, node: Node) -> bool:
        """Whether every instruction taking `node`'s output takes it in a list parameter that takes failures, and
        still has an instruction there that has not failed."""
        takers = self.takers.get(id(node), [])
        if self.context.cancelled.is_set():  # the run is being stopped: nothing goes on
            return False
        for taker, name in takers:
            param = self.catalog[taker.operation].parameter(name)
            if param is None or not param.tolerates_failures:
                return False
            fed = taker.inputs[name]
            siblings = fed if isinstance(fed, list) else [fed]
            if all(s is node or id(s) in self.failures for s in siblings):
                return False
        return bool(takers)

    def run_node(self, node: Node) -> Any:
        op = self.catalog[node.operation]
        if self.reuse is not None and op.reusable:
            found, output = self.reuse.load(node)
            if found:
                self.on_event(NodeEvent(NodeEventKind.REUSED, node, summary=summarize(output), output=output))
                return output
        self.on_event(NodeEvent(NodeEventKind.STARTED, node))
        start = time.perf_counter()
        took_failures = False
        try:
            self._needs_met(op, node)
            kwargs, took_failures = self._arguments(node)
            assert op.function is not None, f"{op.name} has no implementation in this catalog"
            output = op.function(replace(self.context, node_key=node.key), **kwargs)
        except Exception as exc:  # every failure becomes one message naming the instruction
            message = self.context.redact(_describe(exc, self.context))
            self.on_event(NodeEvent(NodeEventKind.FAILED, node, time.perf_counter() - start, error=message))
            raise InstructionFailed(node.path, node.operation, message) from exc
        duration = time.perf_counter() - start
        if self.reuse is not None and op.reusable and not took_failures:  # a retry runs it again, with them all
            self.reuse.save(node, output)
        self.on_event(NodeEvent(NodeEventKind.FINISHED, node, duration, summary=summarize(output), output=output))
        return output

    def _needs_met(self, op: Operation, node: Node) -> None:
        for name in op.needs(node.literals) if op.needs is not None else ():
            failed = self.unavailable.get(name)
            if failed is not None:
                raise OperationError(
                    f"not run: it needs {name}, which {failed.operation} at {failed.path} did not provide: "
                    f"{failed.message}"
                )

    def _arguments(self, node: Node) -> tuple[Mapping[str, Any], bool]:
        """The operation's arguments, and whether a list of them holds failures."""
        op = self.catalog[node.operation]
        assert op.function is not None, f"{op.name} has no implementation in this catalog"
        kwargs: dict[str, Any] = {}
        took_failures = False
        for name, value in node.literals.items():
            kwargs[name] = coerce(op.function, name, value)
        for name, fed in node.inputs.items():
            if isinstance(fed, list):
                kwargs[name] = [self._output(n) for n in fed]
                took_failures = took_failures or any(id(n) in self.failures for n in fed)
            else:
                kwargs[name] = self._output(fed)
        return kwargs, took_failures

    def _output(self, node: Node) -> Any:
        failed = self.failures.get(id(node))
        if failed is None:
            return self.outputs[id(node)]
        return Failed(failed.path, failed.operation, failed.message, dict(node.literals))


def _takers(plan: Plan) -> dict[int, list[tuple[Node, str]]]:
    """For each instruction, the instructions taking its output and the parameter they take it in."""
    takers: dict[int, list[tuple[Node, str]]] = {}
    seen: set[int] = set()
    for root in plan.roots:
        for node in _post_order(root):
            if id(node) in seen:
                continue
            seen.add(id(node))
            for name, fed in node.inputs.items():
                for child in fed if isinstance(fed, list) else [fed]:
                    takers.setdefault(id(child), []).append((node, name))
    return takers


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


def coerce(function: Callable[..., Any], name: str, value: Any) -> Any:
    """Turn a validated JSON literal into the Python type the op declares (e.g. 3.0 -> 3), its validators run
    (those JSON Schema cannot say, such as a CRS pyproj parses); OperationError names the parameter."""
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
