"""Hypothesis strategies for instruction trees: well-typed pipelines of the catalog's ops, near misses and
hostile JSON. Shared by the engine's fuzzing (tests/engine/test_fuzz_engine.py) and the gateway's
(tests/api/test_fuzz_gateway.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from orchestrator.assets.repository import CATALOG
from orchestrator.engine.catalog import JSON_TYPE, Operation, Parameter

# Gaps in orchestrator/engine/ that this fuzzing found; each has a strict xfail regression test at the end of
# tests/engine/test_fuzz_engine.py. Generation steers around a gap while it is open; once the engine is fixed its
# test XPASSes (and fails, being strict): then delete its name here and its xfail marker, and the fuzzing covers
# it too.
GAPS: set[str] = set()  # engine gaps found by fuzzing and not yet fixed: none open

OPS: list[Operation] = [CATALOG[name] for name in CATALOG.names()]
PARAMETER_NAMES = sorted({p.name for op in OPS for p in op.parameters})


# ---- strategies -------------------------------------------------------------------------------------


def near_misses(name: str) -> list[str]:
    return [
        name.upper(),
        name + " ",
        " " + name,
        name[:-1],
        name[1:],
        name.replace("_", "-"),
        name.replace("i", "ı"),
        name + "\u200b",
        name[::-1],
    ]


NAN_LIKE = [
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1e400",
    "-0",
    "0x10",
    "null",
    "None",
    "undefined",
    "",
    " ",
    "\x00",
    "true",
    "[]",
    "{}",
]
OP_NAMES = st.one_of(
    st.sampled_from(CATALOG.names()),
    st.sampled_from([m for n in CATALOG.names() for m in near_misses(n)]),
    st.text(max_size=12),
)
POINTER_HOSTILE = ["a/b", "~", "~0", "~1", "/", "", "operation", "parameters", "0", "-", "é", "🙂"]
PARAM_NAMES = st.one_of(
    st.sampled_from(PARAMETER_NAMES),
    st.sampled_from([m for n in PARAMETER_NAMES for m in near_misses(n)]),
    st.sampled_from(POINTER_HOSTILE),
    st.text(max_size=8),
)
TOP_KEYS = st.one_of(
    st.just("instructions"),
    st.sampled_from(["Instructions", "instruction", "pipeline", "operation"]),
    st.text(max_size=6, alphabet=st.characters(exclude_characters="/~"))
    if "top-level-key-pointer" in GAPS
    else st.text(max_size=6),
)
TEXT = (
    st.text(max_size=20)
    if "lone-surrogates" in GAPS
    else st.text(max_size=20, alphabet=st.characters(exclude_categories=()))  # surrogates (Cs) included
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, -(2**63) - 1, 10**30, 16384, 16385]),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN / Infinity
    TEXT,
    st.sampled_from(NAN_LIKE),
    st.sampled_from(CATALOG.names()),
)


@st.composite
def from_schema(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A value the parameter's JSON Schema accepts (the subset of JSON Schema that pydantic emits here)."""
    if "anyOf" in schema:
        return draw(st.one_of([from_schema(s) for s in schema["anyOf"]]))
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return draw(st.sampled_from(schema["enum"]))
    kind = schema.get("type")
    if kind == "null":
        return None
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "integer":
        return draw(st.integers(schema.get("minimum"), schema.get("maximum")))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return draw(
            st.floats(
                low,
                schema.get("maximum"),
                allow_nan=False,
                allow_infinity=False,
                exclude_min="exclusiveMinimum" in schema,
            )
        )
    if kind == "string":
        low = schema.get("minLength", 0)
        if "pattern" in schema:  # the pattern bounds the length, within minLength/maxLength when given
            high = schema.get("maxLength", 10**9)
            return draw(st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high))
        return draw(st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 12), 12))))
    if kind == "array" and "prefixItems" in schema:  # a tuple (e.g. a bbox): each position its own schema
        return [draw(from_schema(item)) for item in schema["prefixItems"]]
    if kind == "array":
        low = schema.get("minItems", 0)
        items = from_schema(schema.get("items", {"type": "integer"}))
        return draw(st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", 3), 3))))
    if kind == "object":
        values = from_schema(schema.get("additionalProperties", {"type": "string"}))
        names = schema.get("propertyNames")
        keys = from_schema({"type": "string", **names}) if names else st.text(max_size=5)
        return draw(st.dictionaries(keys, values, max_size=3))
    raise AssertionError(f"no generator for the schema {schema}")


def producers(accepts: tuple[str, ...], ops: list[Operation]) -> list[Operation]:
    return [op for op in ops if JSON_TYPE in accepts or op.output in accepts]


def needs_input(op: Operation) -> bool:
    return any(p.required and p.takes_instructions for p in op.parameters)


@st.composite
def valid_instruction(
    draw: st.DrawFn, accepts: tuple[str, ...] | None = None, depth: int = 1, ops: list[Operation] = OPS
) -> dict[str, Any]:
    """A well-typed instruction tree of `ops`: every literal within its schema, every input of an accepted type."""
    candidates = ops if accepts is None else producers(accepts, ops)
    if depth >= 3:  # stop nesting where some op can stand alone
        candidates = [op for op in candidates if not needs_input(op)] or candidates
    op = draw(st.sampled_from(candidates))
    parameters: dict[str, Any] = {}
    for param in op.parameters:
        if not param.required and draw(st.booleans()):
            continue
        parameters[param.name] = draw(value_for(param, depth, ops))
    return {"operation": op.name, "parameters": parameters}


def value_for(param: Parameter, depth: int, ops: list[Operation]) -> st.SearchStrategy[Any]:
    if not param.takes_instructions:
        return from_schema(dict(param.schema))
    one = valid_instruction(param.accepts, depth + 1, ops)
    if not param.many:
        return one
    low = param.schema.get("minItems", 0)
    return st.lists(one, min_size=low, max_size=param.schema.get("maxItems", low + 2))


@st.composite
def fuzzy_instruction(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> dict[str, Any]:
    """An instruction-shaped object with something (or nothing) wrong with it."""
    instruction: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        instruction["operation"] = draw(st.one_of(OP_NAMES, children))
    shape = draw(st.integers(0, 9))
    if shape == 0:
        pass  # no parameters at all
    elif shape == 1:
        instruction["parameters"] = draw(children)  # anything, an object or not
    else:
        name = instruction.get("operation")
        real = [p.name for p in CATALOG[name].parameters] if isinstance(name, str) and name in CATALOG else []
        real = real or PARAMETER_NAMES
        names = st.one_of(st.sampled_from(real), PARAM_NAMES)
        instruction["parameters"] = draw(st.dictionaries(names, children, max_size=4))
    if not draw(st.integers(0, 7)):
        instruction[draw(PARAM_NAMES)] = draw(children)
    return instruction


JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(PARAM_NAMES, inner, max_size=4)),
    max_leaves=12,
)
TREES = st.recursive(
    st.one_of(SCALARS, valid_instruction()),
    lambda inner: st.one_of(
        fuzzy_instruction(inner),
        fuzzy_instruction(inner),
        st.lists(inner, max_size=3),
        st.dictionaries(PARAM_NAMES, inner, max_size=3),
    ),
    max_leaves=16,
)
BODIES = st.one_of(
    st.builds(lambda items: {"instructions": items}, st.lists(TREES, max_size=4)),
    st.builds(lambda items: {"instructions": items}, st.lists(valid_instruction(), min_size=1, max_size=3)),
    st.dictionaries(TOP_KEYS, st.one_of(st.lists(TREES, max_size=3), JSON_VALUES), max_size=3),
    SCALARS,
    st.lists(JSON_VALUES, max_size=3),
)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes a client might really send: garbage, broken or duplicated JSON, extreme numbers, deep nesting."""
    base = json.dumps(draw(BODIES)).encode()
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:  # cut short
        return base[: draw(st.integers(0, len(base)))]
    if kind == 2:  # one byte changed or inserted
        at = draw(st.integers(0, len(base)))
        return base[:at] + draw(st.binary(min_size=1, max_size=2)) + base[at + draw(st.integers(0, 1)) :]
    if kind == 3:  # a key repeated in the same object
        key = json.dumps(draw(st.one_of(TOP_KEYS, PARAM_NAMES)))
        return b'{"instructions": [{"operation": "sample", ' + f"{key}: 1, {key}: 2".encode() + b"}]}"
    if kind == 4:  # a literal that JSON does not have, or one that overflows, where a number is expected
        literals = ["NaN", "Infinity", "-Infinity", "1E-400", "-0.0", "1e308", "4.9e-324"]
        literals += [] if "non-finite-numbers" in GAPS else ["1e400", "-1e400", "1" + "0" * 400 + ".5"]
        literals += [] if "long-integers" in GAPS else ["9" * 5000, "-" + "1" * 4301]
        literal = draw(st.sampled_from(literals)).encode()
        imported = b'{"operation": "import_from_local", "parameters": {"path": "p"}}'
        return draw(
            st.sampled_from(
                [
                    b'{"instructions": [{"operation": "sample", "parameters": {"n": '
                    + literal
                    + b', "data": '
                    + imported
                    + b"}}]}",
                    b'{"instructions": [{"operation": "normalize_image", "parameters": {"mean": ['
                    + literal
                    + b'], "data": '
                    + imported
                    + b"}}]}",
                ]
            )
        )
    if kind == 5:  # nesting around the depth limit
        depth = draw(st.integers(1, 80))
        return b'{"instructions": ' + b"[" * depth + b"]" * depth + b"}"
    return base
