"""Checking a pipeline against what this server knows, before a run exists.

The gateway checks a pipeline against the operation catalog; only the code location knows the data
root, the database connections, the URL policy, the S3 settings and the model server (with its token).
Dagster validates a launch's run config in the code location (the code server builds the execution
plan, post-processing the config: orchestrator/assets/checked_config.py), so that is where these
checks run: a launch through the gateway or the launchpad that one of them refuses creates no run,
and the gateway answers every problem at once, each at its JSON Pointer, like its own.

Each operation's check lives beside the code that does its work, as a `preflight*` function of its
room, listed in CHECKS. A check gets the instruction's literal parameters and a `Preflight` (the
server's resources, what the pipeline deploys before the instruction) and yields a `Finding` per
problem. It is quick, changes nothing and names no server path; what only a run can find out (a
file's contents, a query's rows, a download) is left to the run, whose operations check again.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.engine import Catalog, Node, OperationError, PipelineInvalid, Plan, Problem, coerce, plan_launch
from orchestrator.engine.errors import pointer_join

log = logging.getLogger("constellation.preflight")


@dataclass(frozen=True)
class Finding:
    """One problem of an instruction: the parameter at fault ("" for the instruction itself) and what is wrong."""

    parameter: str
    message: str


Check = Callable[["Preflight", Mapping[str, Any]], Iterable[Finding]]

# Each operation's check, "module:function", imported when a pipeline first uses the operation (a code
# location that serves no database import never loads SQLAlchemy for it).
CHECKS: dict[str, str] = {
    "import_from_local": "orchestrator.sources.local:preflight",
    "import_from_url": "orchestrator.sources.url:preflight",
    "import_from_stac": "orchestrator.sources.stac_documents:preflight",
    "import_from_database": "orchestrator.sources.databases:preflight",
    "export_to_database": "orchestrator.sources.databases:preflight_export",
    "import_from_s3": "orchestrator.sources.s3:preflight_import",
    "export_to_s3": "orchestrator.sources.s3:preflight_export",
    "deploy_model": "orchestrator.models.preflight:deploy",
    "model_inference": "orchestrator.models.preflight:inference",
}


@dataclass
class Preflight:
    """What a check may consult: the server's resources (as ops reach them), and the models the pipeline
    deploys before the instruction being checked runs. `cache` lets checks share what they asked once."""

    resources: Any
    deployed: frozenset[str] = frozenset()
    cache: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def once(self, key: str, compute: Callable[[], Any], close: Callable[[Any], None] | None = None) -> Any:
        """`compute()`'s value, computed once per pipeline checked (and given to `close` when the check ends)."""
        if key not in self.cache:
            value = self.cache[key] = compute()
            if close is not None and value is not None:
                self.closers.append(lambda: close(value))
        return self.cache[key]

    def close(self) -> None:
        for close in self.closers:
            try:
                close()
            except Exception:  # closing a client must not turn a check into an error
                log.exception("closing a pre-launch check's client failed")
        self.closers.clear()


def check_request(raw: Any, catalog: Catalog, resources: Any, checks: Mapping[str, str] = CHECKS) -> list[Problem]:
    """Every problem of the instruction list `raw`: the catalog's (as the gateway finds them), else the server's."""
    try:
        plan = plan_launch(raw, catalog)
    except PipelineInvalid as invalid:
        return invalid.problems
    return literal_problems(plan, catalog) or check_plan(plan, resources, checks)


def literal_problems(plan: Plan, catalog: Catalog) -> list[Problem]:
    """Each literal parameter as the run will take it (`coerce`): the validators a JSON Schema cannot carry (a CRS
    that pyproj parses...) run before launch, not only when the run reaches the instruction."""
    problems: list[Problem] = []
    seen: set[int] = set()
    for root in plan.roots:
        for node in _post_order(root, seen):
            function = catalog[node.operation].function
            if function is None:  # a catalog read from JSON (the gateway's): the code location checks
                continue
            for name, value in node.literals.items():
                try:
                    coerce(function, name, value)
                except OperationError as refused:
                    problems += [Problem(pointer_join(path, "parameters", name), str(refused)) for path in node.paths]
    return problems


class Passed:
    """The pipelines that passed the checks a moment ago in this process, so they are not checked again.

    Dagster post-processes one launch's config several times, each a round of model server calls, database
    connections and file stats: in the code server once per request (POST /validate, then the launch), and
    in the run worker three times within a third of a second as its run starts (measured: 5 rounds for one
    pipeline sent to /validate then /execute). A pipeline that passed is remembered `keep_s` seconds by its
    canonical JSON, `kept` at most: long enough for one launch's rounds, too short to reach a retry (its run
    must start and fail first, 5 s at least), which must find what changed since. A refusal is never
    remembered: whoever fixes the server and tries again is checked again.
    """

    def __init__(self, keep_s: float = 3.0, kept: int = 64, clock: Callable[[], float] = time.monotonic):
        self.keep_s, self.kept, self.clock = keep_s, kept, clock
        self._passed: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, raw: Any, catalog: Catalog, resources: Any, checks: Mapping[str, str] = CHECKS) -> list[Problem]:
        """`check_request`'s problems, or none at once for a pipeline that passed less than `keep_s` ago."""
        key = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
        now = self.clock()
        with self._lock:
            when = self._passed.get(key)
            if when is not None and now - when < self.keep_s:
                return []
        problems = check_request(raw, catalog, resources, checks)
        if not problems:
            with self._lock:
                self._passed[key] = now
                self._passed.move_to_end(key)
                while len(self._passed) > self.kept:
                    self._passed.popitem(last=False)
        return problems


def check_plan(plan: Plan, resources: Any, checks: Mapping[str, str] = CHECKS) -> list[Problem]:
    """The server's problems with a valid plan, in the order its instructions run.

    A model counts as deployed for an instruction when a deploy_model in an earlier top-level
    instruction, or in the same one, deploys it (nested instructions of one top-level instruction
    may run side by side, so their order is not known), and no delete_model at the top level between
    them unloads it.
    """
    problems: list[Problem] = []
    context = Preflight(resources)
    try:
        _check_roots(plan, context, checks, problems)
    finally:
        context.close()
    return problems


def _check_roots(plan: Plan, context: Preflight, checks: Mapping[str, str], problems: list[Problem]) -> None:
    deployed: set[str] = set()
    seen: set[int] = set()
    for root in plan.roots:
        nodes = [n for n in _post_order(root, seen)]
        here = deployed | {n.literals["model"] for n in nodes if n.operation == "deploy_model"}
        for node in nodes:
            found = _run(checks.get(node.operation), replace(context, deployed=frozenset(here)), node)
            for finding in found:
                for path in node.paths:  # a shared instruction: wherever the pipeline wrote it
                    where = pointer_join(path, "parameters", finding.parameter) if finding.parameter else path
                    problems.append(Problem(where, finding.message))
        deployed = here
        if root.operation == "delete_model":
            deployed.discard(root.literals.get("model"))


def _run(target: str | None, context: Preflight, node: Node) -> list[Finding]:
    if target is None:
        return []
    module, _, name = target.partition(":")
    try:
        check: Check = getattr(importlib.import_module(module), name)
        return list(check(context, node.literals))
    except Exception:  # a check that breaks must not stop launches: the run checks again
        log.exception("the pre-launch check of %s at %s failed; left to the run", node.operation, node.path)
        return []


def _post_order(root: Node, seen: set[int]) -> Iterator[Node]:
    """`root`'s instructions not yet seen, each after those it needs."""
    if id(root) in seen:
        return
    seen.add(id(root))
    for child in root.children():
        yield from _post_order(child, seen)
    yield root
