"""Validating an instruction list against a catalog and planning its execution.

Validation collects every problem (with its JSON Pointer) before giving up, so a user fixes
a pipeline in one round trip. The plan shares identical nested instructions: one import
that feeds several models runs once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from orchestrator.engine.catalog import JSON_TYPE, Catalog, Operation, Parameter
from orchestrator.engine.errors import PipelineInvalid, Problem, pointer_join
from orchestrator.engine.parse import DEFAULT_LIMITS, Limits, json_kind, parse_request

_INSTRUCTION_KEYS = ("operation", "parameters")


@dataclass(eq=False)
class Node:
    """One instruction of the plan; nested instructions it needs are its `inputs`."""

    key: str
    operation: str
    literals: dict[str, Any]
    inputs: dict[str, Node | list[Node]]
    paths: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.paths[0]

    def children(self) -> list[Node]:
        found: list[Node] = []
        for value in self.inputs.values():
            found.extend(value if isinstance(value, list) else [value])
        return found


@dataclass
class Plan:
    """Top-level instructions in order, plus every distinct nested instruction once."""

    roots: list[Node]
    shared: dict[str, Node]

    def __len__(self) -> int:
        return len(self.roots) + len(self.shared)


def build_plan(
    instructions: list[Any], catalog: Catalog, limits: Limits = DEFAULT_LIMITS, base: str = "/instructions"
) -> Plan:
    """Validate `instructions` and plan them, or raise PipelineInvalid listing every problem."""
    planner = _Planner(catalog, limits)
    roots = [planner.instruction(item, pointer_join(base, i), depth=1) for i, item in enumerate(instructions)]
    if planner.problems:
        raise PipelineInvalid(planner.problems)
    return Plan([r for r in roots if r is not None], planner.shared)


# The last plans of launch configs, per catalog: Dagster post-processes a run's config several times (in the
# code server, then in the run worker) and the job's first op checks it again, each time with the same list.
_LAUNCH_PLANS: OrderedDict[tuple[Catalog, Limits, str], Plan] = OrderedDict()
_LAUNCH_PLANS_KEPT = 16
_launch_plans_lock = threading.Lock()


def plan_launch(instructions: Any, catalog: Catalog, limits: Limits = DEFAULT_LIMITS) -> Plan:
    """The plan of an instruction list already decoded (a launch's run config), checked as the same list sent
    as a POST /execute body is (parse_request: limits, JSON values) and by the catalog; or PipelineInvalid.

    A list checked a moment ago in this process (the same JSON, catalog and limits) is not parsed and planned
    again: its plan is remembered. Only valid lists are: a refusal is found again each time.
    """
    text = json.dumps({"instructions": instructions})
    key = (catalog, limits, text)
    with _launch_plans_lock:
        plan = _LAUNCH_PLANS.get(key)
        if plan is not None:
            _LAUNCH_PLANS.move_to_end(key)
            return plan
    plan = build_plan(parse_request(text, limits), catalog, limits)
    with _launch_plans_lock:
        _LAUNCH_PLANS[key] = plan
        while len(_LAUNCH_PLANS) > _LAUNCH_PLANS_KEPT:
            _LAUNCH_PLANS.popitem(last=False)
    return plan


def canonical_key(instruction: Any) -> str:
    """A short stable id for an instruction: the hash of its canonical JSON."""
    canonical = json.dumps(instruction, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_instruction(value: Any) -> bool:
    return isinstance(value, dict) and "operation" in value


class _Planner:
    def __init__(self, catalog: Catalog, limits: Limits):
        self.catalog = catalog
        self.limits = limits
        self.problems: list[Problem] = []
        self.shared: dict[str, Node] = {}
        self.count = 0
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def instruction(self, value: Any, path: str, depth: int, nested: bool = False) -> Node | None:
        self.count += 1
        if self.count == self.limits.max_nodes + 1:
            self.problem(path, f"more than {self.limits.max_nodes} instructions in one pipeline")
        if self.count > self.limits.max_nodes:
            return None
        if depth > self.limits.max_instruction_depth:
            self.problem(path, f"instructions nest more than {self.limits.max_instruction_depth} deep")
            return None
        if not isinstance(value, dict):
            self.problem(
                path,
                f"expected an instruction {{operation, parameters}}, got {json_kind(value)}",
            )
            return None
        for key in value:
            if key not in _INSTRUCTION_KEYS:
                self.problem(
                    pointer_join(path, key),
                    f"unknown key {key!r}; an instruction has only 'operation' and 'parameters'",
                )
        op = self._operation(value.get("operation"), path)
        params = value.get("parameters", {})
        if not isinstance(params, dict):
            self.problem(pointer_join(path, "parameters"), f"expected an object of parameters, got {json_kind(params)}")
            return None
        if op is None:
            # Still look inside, so that errors in nested instructions are reported too.
            for name, given in params.items():
                self._nested_anyway(given, pointer_join(path, "parameters", name), depth)
            return None
        node = self._node(op, params, path, depth)
        if node is None or not nested:
            return node
        key = node.key
        if key in self.shared:
            self.shared[key].paths.append(path)
            return self.shared[key]
        self.shared[key] = node
        return node

    def _operation(self, name: Any, path: str) -> Operation | None:
        where = pointer_join(path, "operation")
        if name is None:
            self.problem(path, "missing 'operation': the name of the operation to run")
            return None
        if not isinstance(name, str):
            self.problem(where, f"expected an operation name (a string), got {json_kind(name)}")
            return None
        if name not in self.catalog:
            close = difflib.get_close_matches(name, self.catalog.names(), n=3, cutoff=0.6)
            hint = f"; did you mean {_or_list(close)}?" if close else "; GET /operations lists them"
            self.problem(where, f"unknown operation {_clip(name)!r}{hint}")
            return None
        return self.catalog[name]

    def _node(self, op: Operation, params: dict[str, Any], path: str, depth: int) -> Node | None:
        before = len(self.problems)
        literals: dict[str, Any] = {}
        inputs: dict[str, Node | list[Node]] = {}
        for name, given in params.items():
            where = pointer_join(path, "parameters", name)
            param = op.parameter(name)
            if param is None:
                close = difflib.get_close_matches(name, [p.name for p in op.parameters], n=2, cutoff=0.6)
                hint = f"did you mean {_or_list(close)}? " if close else ""
                takes = ", ".join(p.name for p in op.parameters) or "none"
                self.problem(where, f"unknown parameter {_clip(name)!r} of {op.name}; {hint}it takes: {takes}")
                self._nested_anyway(given, where, depth)
            elif param.takes_instructions:
                fed = self._input(op, param, given, where, depth)
                if fed is not None:
                    inputs[name] = fed
            else:
                self._literal(op, param, given, where, depth)
                literals[name] = given
        for param in op.parameters:
            if param.required and param.name not in params:
                about = f" ({param.description})" if param.description else ""
                self.problem(
                    pointer_join(path, "parameters"),
                    f"missing required parameter {param.name!r} of {op.name}{about}",
                )
        if len(self.problems) > before:
            return None
        key = canonical_key({"operation": op.name, "parameters": params})
        return Node(key, op.name, literals, inputs, [path])

    def _input(self, op: Operation, param: Parameter, given: Any, where: str, depth: int) -> Node | list[Node] | None:
        if param.many:
            if not isinstance(given, list):
                self.problem(
                    where,
                    f"{op.name}.{param.name} expects a list of instructions producing "
                    f"{_or_list(param.accepts)}, got {json_kind(given)}",
                )
                return None
            fewest, most = param.schema.get("minItems", 0), param.schema.get("maxItems", len(given))
            if not fewest <= len(given) <= most:
                bound = f"at least {fewest}" if len(given) < fewest else f"at most {most}"
                self.problem(where, f"{op.name}.{param.name} takes {bound} instructions, got {len(given)}")
            nodes = [self._one_input(op, param, item, pointer_join(where, i), depth) for i, item in enumerate(given)]
            return None if any(n is None for n in nodes) else nodes  # type: ignore[return-value]
        return self._one_input(op, param, given, where, depth)

    def _one_input(self, op: Operation, param: Parameter, given: Any, where: str, depth: int) -> Node | None:
        if not is_instruction(given):
            self.problem(
                where,
                f"{op.name}.{param.name} expects the output of an instruction producing "
                f"{_or_list(param.accepts)}, got {json_kind(given)}",
            )
            return None
        child = self.instruction(given, where, depth + 1, nested=True)
        if child is None:
            return None
        produced = self.catalog[child.operation].output
        if JSON_TYPE not in param.accepts and produced not in param.accepts:
            self.problem(
                where,
                f"{child.operation} produces {produced}, but {op.name}.{param.name} accepts {_or_list(param.accepts)}",
            )
            return None
        return child

    def _literal(self, op: Operation, param: Parameter, given: Any, where: str, depth: int) -> None:
        if _contains_instruction(given):
            self.problem(where, f"{op.name}.{param.name} takes a literal value, not an instruction")
            return
        validator = self._validators.get((op.name, param.name))
        if validator is None:
            validator = self._validators[(op.name, param.name)] = Draft202012Validator(dict(param.schema))
        for error in sorted(validator.iter_errors(given), key=lambda e: list(e.absolute_path)):
            self.problem(
                pointer_join(where, *error.absolute_path),
                f"{op.name}.{param.name}: {_clip(error.message, 200)}",
            )

    def _nested_anyway(self, value: Any, where: str, depth: int) -> None:
        if is_instruction(value):
            self.instruction(value, where, depth + 1, nested=True)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if is_instruction(item):
                    self.instruction(item, pointer_join(where, i), depth + 1, nested=True)


def _contains_instruction(value: Any) -> bool:
    if is_instruction(value):
        return True
    if isinstance(value, list):
        return any(_contains_instruction(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_instruction(v) for v in value.values())
    return False


def _or_list(names: Iterable[Any]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
