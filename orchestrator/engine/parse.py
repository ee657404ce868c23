"""Reading a request body: size and nesting limits, duplicate keys, the outer shape."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.engine.errors import PipelineInvalid, Problem, pointer_join

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one request from exhausting the gateway or the run worker."""

    max_body_bytes: int = 1_000_000
    max_json_depth: int = 64  # raw JSON nesting, checked before parsing
    max_instruction_depth: int = 16  # nested instructions inside one another
    max_nodes: int = 1_000  # instructions in one pipeline, nested ones included


DEFAULT_LIMITS = Limits()


class _ObjectWithDuplicates(dict[str, Any]):
    """A parsed JSON object that repeated keys; remembered so the error can name where."""

    duplicates: list[str]


def parse_request(body: bytes | str, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """Parse a `POST /execute` body into its instruction list, or raise PipelineInvalid."""
    size = len(body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass"))
    if size > limits.max_body_bytes:
        raise PipelineInvalid([Problem("", f"body is {size} bytes; the limit is {limits.max_body_bytes}")])
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise PipelineInvalid([Problem("", f"body is not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    depth = json_depth(text)
    if depth > limits.max_json_depth:
        raise PipelineInvalid([Problem("", f"JSON nests {depth} levels deep; the limit is {limits.max_json_depth}")])
    try:
        document = json.loads(
            text,
            object_pairs_hook=_note_duplicates,
            parse_constant=_not_json,
            parse_float=_finite_float,
            parse_int=_readable_int,
        )
    except _NotJson as exc:
        raise PipelineInvalid([Problem("", str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise PipelineInvalid(
            [Problem("", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    # Checked first: a path or message holding a lone surrogate could not itself be sent as UTF-8.
    not_text = list(_unpaired_surrogates(document, ""))
    if not_text:
        raise PipelineInvalid(not_text)
    duplicates = list(_duplicate_keys(document, ""))
    if duplicates:
        raise PipelineInvalid(duplicates)
    return instructions_of(document)


def instructions_of(document: Any) -> list[Any]:
    """The `instructions` list of a request body already parsed as JSON."""
    if not isinstance(document, dict):
        raise PipelineInvalid([Problem("", f'expected an object {{"instructions": [...]}}, got {json_kind(document)}')])
    problems = [
        Problem(pointer_join("", key), f"unknown key {key!r}; the body holds only 'instructions'")
        for key in document
        if key != "instructions"
    ]
    if "instructions" not in document:
        problems.insert(0, Problem("", "missing required key 'instructions' (a list of instructions)"))
    elif not isinstance(document["instructions"], list):
        kind = json_kind(document["instructions"])
        problems.insert(0, Problem("/instructions", f"expected a list of instructions, got {kind}"))
    elif not document["instructions"]:
        problems.insert(0, Problem("/instructions", "the list is empty; give at least one instruction"))
    if problems:
        raise PipelineInvalid(problems)
    instructions: list[Any] = document["instructions"]
    return instructions


def json_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def json_kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class _NotJson(ValueError):
    pass


def _not_json(constant: str) -> Any:
    raise _NotJson(f"{constant} is not a JSON value; use a number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise _NotJson(f"the number {shown} is out of range (beyond ±1.8e308)")
    return value


def _readable_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > sys.get_int_max_str_digits():
        raise _NotJson(f"an integer of {digits} digits is too long; the limit is {sys.get_int_max_str_digits()}")
    return int(text)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unpaired_surrogates(value: Any, path: str) -> Iterator[Problem]:
    """Strings that escape half of a UTF-16 pair (\\ud800 alone): valid JSON, but not Unicode text."""
    why = "holds an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape); send valid Unicode text"
    if isinstance(value, str) and not _is_text(value):
        yield Problem(path, f"the string {value[:40]!r} {why}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _is_text(key):
                yield from _unpaired_surrogates(item, pointer_join(path, key))
            else:
                yield Problem(path, f"the key {key[:40]!r} {why}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unpaired_surrogates(item, pointer_join(path, index))


def _note_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) == len(keys):
        return dict(pairs)
    obj = _ObjectWithDuplicates(pairs)
    obj.duplicates = sorted({k for k in keys if keys.count(k) > 1})
    return obj


def _duplicate_keys(value: Any, path: str) -> Iterator[Problem]:
    if isinstance(value, _ObjectWithDuplicates):
        for key in value.duplicates:
            yield Problem(pointer_join(path, key), f"duplicate key {key!r}; each key may appear once in an object")
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _duplicate_keys(item, pointer_join(path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _duplicate_keys(item, pointer_join(path, index))
