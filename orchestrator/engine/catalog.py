"""Operation declarations: one typed Python function per op is the single source of truth.

`operation(fn)` reads the function's signature — parameter types, pydantic `Field`
constraints and descriptions, defaults, return type, docstring — and derives everything
else from it: the catalog served by `GET /operations`, validation, and the launchpad docs.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

import annotated_types
from pydantic import TypeAdapter
from pydantic.fields import FieldInfo

from orchestrator.engine.cleanup import RunCleanup
from orchestrator.engine.errors import OperationError

JSON_TYPE = "Json"
F = TypeVar("F", bound=Callable[..., Any])
# A place outside the run an operation reads or writes (a bucket's objects, a table, a folder), as the parts
# of its name, from the instruction's literal parameters and its output: e.g. ["s3", bucket, *key segments].
# The host records them (the code location: Dagster's asset catalog, orchestrator/assets/lineage.py).
AssetName = Callable[[Mapping[str, Any], Any], Sequence[str]]
# What an operation makes available to later instructions beyond its output, or needs from earlier ones, named
# from its literal parameters: e.g. deploy_model provides ["model 'fire-vit-a'"], model_inference needs the same.
# A failed provider does not stop the run; an instruction that needs what it would have provided fails instead.
Provision = Callable[[Mapping[str, Any]], Sequence[str]]


class DataType:
    """Base of the values that flow between instructions (datasets, results...).

    A subclass's name is its type name in the catalog; its docstring describes it.
    """

    def summary(self) -> str:
        """A short, human-readable description of the value for logs."""
        return type(self).__name__

    def to_result(self) -> Any:
        """The JSON the API returns for this value (large data as URIs)."""
        return {"type": type(self).__name__}


@dataclass(frozen=True)
class Failed:
    """An instruction that failed, in its place in a list parameter declared to take failures
    (`list[Predictions | Failed]`): the operation receives what the others produced, and these."""

    path: str
    operation: str
    error: str
    parameters: Mapping[str, Any] = field(default_factory=dict)  # its literal parameters (e.g. the model)


@dataclass
class RunContext:
    """What an operation may use while it runs: its folders, a logger and the host's resources."""

    run_dir: Path
    resources: Any = None
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger("constellation")
    )
    node_key: str = "adhoc"
    # Set when the run is being stopped (cancel, failure elsewhere): long ops check it often.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Shared by every instruction of the run (dataclasses.replace keeps the same object).
    cleanup: RunCleanup = field(default_factory=RunCleanup)
    # Applied to every failure message: server paths become names relative to their folder (engine/redact.py).
    redact: Callable[[str], str] = field(default=lambda text: text, repr=False)
    # The run's instructions as submitted, for what must stand alone (a comparison's report names its pipeline).
    pipeline: Any = field(default=None, repr=False)

    def check_cancelled(self) -> None:
        """Raise if the run is being stopped; call it between units of work."""
        if self.cancelled.is_set():
            raise OperationError("stopped: the run is being cancelled or another instruction failed")

    @property
    def run_id(self) -> str:
        """The run's id: its folder's name."""
        return self.run_dir.name

    @property
    def node_dir(self) -> Path:
        """A folder private to the running instruction, inside the run's folder."""
        path = self.run_dir / "nodes" / self.node_key
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Parameter:
    """One declared parameter: either a JSON literal (`schema`) or an instruction output (`accepts`)."""

    name: str
    description: str
    schema: Mapping[str, Any]
    required: bool
    default: Any = None
    accepts: tuple[str, ...] = ()
    many: bool = False  # a list of instruction outputs, e.g. several models' results
    # A list whose instructions may fail without stopping the run, as long as one of them succeeds: the
    # operation receives a `Failed` in place of each that failed (declared as `list[X | Failed]`).
    tolerates_failures: bool = False

    @property
    def takes_instructions(self) -> bool:
        return bool(self.accepts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "schema": dict(self.schema),
            "required": self.required,
            "default": self.default,
            "accepts": list(self.accepts),
            "many": self.many,
            "tolerates_failures": self.tolerates_failures,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Parameter:
        return cls(
            name=raw["name"],
            description=raw.get("description", ""),
            schema=raw.get("schema", {}),
            required=raw.get("required", False),
            default=raw.get("default"),
            accepts=tuple(raw.get("accepts", ())),
            many=raw.get("many", False),
            tolerates_failures=raw.get("tolerates_failures", False),
        )


@dataclass(frozen=True)
class Operation:
    """A declared operation. `function` is None when the catalog was read from JSON."""

    name: str
    description: str
    output: str
    parameters: tuple[Parameter, ...]
    function: Callable[..., Any] | None = None
    # False for operations whose effect a resumed run needs again (a deployment is undone at run end).
    reusable: bool = True
    # What it reads or writes outside the run, named from its parameters and output (reads_from, writes_to).
    reads: AssetName | None = None
    writes: AssetName | None = None
    # What it makes available to later instructions (a deployed model), and what it needs of earlier ones.
    provides: Provision | None = None
    needs: Provision | None = None

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of this op's `parameters` object."""
        properties: dict[str, Any] = {}
        for p in self.parameters:
            prop = dict(p.schema)
            prop["description"] = p.description
            if not p.required:
                prop["default"] = p.default
            properties[p.name] = prop
        return {
            "type": "object",
            "properties": properties,
            "required": [p.name for p in self.parameters if p.required],
            "additionalProperties": False,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "output": self.output,
            "parameters": [p.to_json() for p in self.parameters],
            "parameters_schema": self.json_schema(),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Operation:
        return cls(
            name=raw["name"],
            description=raw.get("description", ""),
            output=raw.get("output", JSON_TYPE),
            parameters=tuple(Parameter.from_json(p) for p in raw.get("parameters", ())),
        )


class Catalog:
    """The set of operations a pipeline may use, and the data types they exchange."""

    def __init__(self, operations: Iterable[Operation], type_docs: Mapping[str, str] | None = None):
        self.operations: dict[str, Operation] = {}
        for op in operations:
            if op.name in self.operations:
                raise ValueError(f"operation {op.name!r} is declared twice")
            self.operations[op.name] = op
        self.type_docs = dict(type_docs or {})

    def __contains__(self, name: object) -> bool:
        return name in self.operations

    def __getitem__(self, name: str) -> Operation:
        return self.operations[name]

    def with_default(self, op_name: str, param_name: str, value: Any, unset: str = "") -> Catalog:
        """A copy where a parameter defaults to a server setting's `value`, or, when unset (None), must be given.

        `unset` is the description the parameter gets when it must be given (say which setting is missing).
        """
        op = self.operations[op_name]

        def changed_one(p: Parameter) -> Parameter:
            if value is None:
                return dataclasses.replace(p, required=True, default=None, description=unset or p.description)
            return dataclasses.replace(p, required=False, default=value)

        changed = tuple(changed_one(p) if p.name == param_name else p for p in op.parameters)
        operations = [dataclasses.replace(op, parameters=changed) if o is op else o for o in self.operations.values()]
        return Catalog(operations, self.type_docs)

    def names(self) -> list[str]:
        return sorted(self.operations)

    def to_json(self) -> dict[str, Any]:
        return {
            "operations": [self.operations[n].to_json() for n in self.names()],
            "types": self.type_docs,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Catalog:
        return cls((Operation.from_json(o) for o in raw["operations"]), raw.get("types", {}))

    @classmethod
    def from_functions(cls, functions: Iterable[Callable[..., Any] | Operation]) -> Catalog:
        ops = [f if isinstance(f, Operation) else operation(f) for f in functions]
        docs: dict[str, str] = {JSON_TYPE: "any JSON value"}
        for fn in (o.function for o in ops if o.function is not None):
            for t in _data_types_in(fn):
                docs[t.__name__] = _first_line(t.__doc__)
        return cls(ops, docs)


def operation(fn: Callable[..., Any]) -> Operation:
    """Declare `fn` as an operation. Its first parameter receives the `RunContext`."""
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())[1:]  # the first one is the RunContext
    return Operation(
        name=fn.__name__,
        description=_first_line(fn.__doc__),
        output=_type_name(hints.get("return", Any)),
        parameters=tuple(_parameter(p, hints[p.name]) for p in params),
        function=fn,
        reusable=not getattr(fn, "never_reused", False),
        reads=getattr(fn, "reads_from", None),
        writes=getattr(fn, "writes_to", None),
        provides=getattr(fn, "provides", None),
        needs=getattr(fn, "needs", None),
    )


def reads_from(name: AssetName) -> Callable[[F], F]:
    """Mark an operation that reads a source outside the run (an import), named by `name(parameters, output)`."""

    def mark(fn: F) -> F:
        fn.reads_from = name  # type: ignore[attr-defined]
        return fn

    return mark


def writes_to(name: AssetName) -> Callable[[F], F]:
    """Mark an operation that writes a destination outside the run (an export), named by `name(parameters, output)`."""

    def mark(fn: F) -> F:
        fn.writes_to = name  # type: ignore[attr-defined]
        return fn

    return mark


def provides(name: Provision) -> Callable[[F], F]:
    """Mark an operation that makes something available to later instructions (a model it deploys), named by
    `name(parameters)`. When it fails, the run goes on: the instructions that need it fail in its stead."""

    def mark(fn: F) -> F:
        fn.provides = name  # type: ignore[attr-defined]
        return fn

    return mark


def needs(name: Provision) -> Callable[[F], F]:
    """Mark an operation that needs what an earlier instruction provides (`provides`), named by `name(parameters)`:
    when the instruction that would have provided it failed, this one fails without running, saying why."""

    def mark(fn: F) -> F:
        fn.needs = name  # type: ignore[attr-defined]
        return fn

    return mark


def never_reused(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an operation that a resumed run always runs again, even where an earlier run succeeded."""
    fn.never_reused = True  # type: ignore[attr-defined]
    return fn


def _parameter(param: inspect.Parameter, hint: Any) -> Parameter:
    base, description = _split_annotated(hint)
    required = param.default is inspect.Parameter.empty
    default = None if required else param.default
    data, many = _data_types(base)
    tolerates = _takes_failures(base)
    if tolerates and not many:
        raise TypeError(f"parameter {param.name!r}: only a list of instruction outputs may take Failed")
    if data:
        item = {"type": "object", "required": ["operation"], "x-accepts": [t.__name__ for t in data]}
        schema = {"type": "array", "items": item, **_length_bounds(hint)} if many else item
        accepts = tuple(t.__name__ for t in data)
        return Parameter(param.name, description, schema, required, default, accepts, many, tolerates)
    schema = TypeAdapter(hint).json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    return Parameter(param.name, description, schema, required, default)


def _length_bounds(hint: Any) -> dict[str, int]:
    """minItems / maxItems from a `Field(min_length=..., max_length=...)` on a list parameter."""
    bounds: dict[str, int] = {}
    if get_origin(hint) is Annotated:
        for extra in get_args(hint)[1:]:
            for rule in getattr(extra, "metadata", []) if isinstance(extra, FieldInfo) else []:
                if isinstance(rule, annotated_types.MinLen):
                    bounds["minItems"] = rule.min_length
                elif isinstance(rule, annotated_types.MaxLen):
                    bounds["maxItems"] = rule.max_length
    return bounds


def _split_annotated(hint: Any) -> tuple[Any, str]:
    """The bare type and the description given by any `Field` in its (flattened) metadata."""
    if get_origin(hint) is Annotated:
        base, *extras = get_args(hint)
        described = [e.description for e in extras if isinstance(e, FieldInfo) and e.description]
        return base, described[-1] if described else ""
    return hint, ""


def _union_members(tp: Any) -> tuple[Any, ...]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        return get_args(tp)
    return (tp,)


def _is_data_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, DataType)


def _data_types(tp: Any) -> tuple[list[type], bool]:
    """The DataType classes a parameter accepts, and whether it takes a list of them."""
    if get_origin(tp) is list:
        inner = [m for m in _union_members(get_args(tp)[0]) if _is_data_type(m)]
        return inner, True
    return [m for m in _union_members(tp) if _is_data_type(m)], False


def _takes_failures(tp: Any) -> bool:
    """Whether a parameter's type takes `Failed` in place of an instruction's output (`list[X | Failed]`)."""
    inner = get_args(tp)[0] if get_origin(tp) is list else tp
    return Failed in _union_members(inner)


def _type_name(tp: Any) -> str:
    return tp.__name__ if _is_data_type(tp) else JSON_TYPE


def _data_types_in(fn: Callable[..., Any]) -> list[type]:
    found: list[type] = []
    for hint in typing.get_type_hints(fn, include_extras=True).values():
        base, _ = _split_annotated(hint)
        found.extend(_data_types(base)[0])
        if _is_data_type(base):
            found.append(base)
    return found


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
