"""Error types of the instruction language, one per family."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline, located by a JSON Pointer into the request body."""

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class PipelineInvalid(ValueError):
    """A pipeline failed validation; `problems` lists every error found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        first = problems[0] if problems else Problem("", "invalid pipeline")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first.path or '/'}: {first.message}{more}")


# How a pipeline's problems cross a boundary that carries only text: the code location refuses a launch
# (orchestrator/preflight.py) with a Dagster config error, which reaches the gateway as the message of a
# Python error, among Dagster's own words and stack. One marked line of JSON says them exactly.
PROBLEMS_MARKER = "constellation-pipeline-problems: "


def problems_text(problems: list[Problem]) -> str:
    """`problems` as one marked line of JSON (ASCII: nothing in it can break the line)."""
    return PROBLEMS_MARKER + json.dumps([p.to_json() for p in problems])


def problems_in(text: str) -> list[Problem] | None:
    """The problems of the last marked line in `text` (a Dagster error may quote the pipeline before it); None
    when there is none."""
    start = text.rfind(PROBLEMS_MARKER)
    if start < 0:
        return None
    try:
        found, _ = json.JSONDecoder().raw_decode(text, start + len(PROBLEMS_MARKER))
    except ValueError:
        return None
    if not isinstance(found, list):
        return None
    return [Problem(str(p.get("path", "")), str(p.get("message", ""))) for p in found if isinstance(p, dict)]


class OperationError(RuntimeError):
    """Raised by an operation for a failure the user can act on (bad file, missing path...)."""


class InstructionFailed(RuntimeError):
    """An instruction failed while the pipeline ran; names where and what."""

    def __init__(self, path: str, operation: str, message: str):
        self.path = path
        self.operation = operation
        self.message = message
        super().__init__(f"{operation} at {path} failed: {message}")


def pointer_join(base: str, *parts: str | int) -> str:
    """Extend the JSON Pointer `base` (RFC 6901) with parts, escaping `~` and `/`."""
    return base + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
