"""A run's folder: its progress and results as JSON files beside its data.

The code location writes them while the run goes; the gateway reads them to answer
`GET /runs/{id}` and `GET /runs/{id}/results`. Both sides share only this format.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.engine import InstructionFailed, NodeEvent, Plan

PROGRESS = "progress.json"
RESULTS = "results.json"
MAX_MESSAGE_CHARS = 2000  # an error message stored or served is cut to this (a 100 MB file name was served whole)
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_run_id(value: str) -> bool:
    """Dagster run ids are lowercase UUIDs; anything else never names a folder."""
    return bool(_RUN_ID.match(value))


def run_dir(artifact_root: Path | str, run_id: str) -> Path:
    if not is_run_id(run_id):
        raise ValueError(f"{run_id!r} is not a run id")
    return Path(artifact_root) / "runs" / run_id


def clip(message: str | None, limit: int = MAX_MESSAGE_CHARS) -> str | None:
    """`message` cut to `limit` characters, saying how much was cut."""
    if message is None or len(message) <= limit:
        return message
    return f"{message[:limit]}... [{len(message) - limit} more characters cut]"


def write_json(path: Path, document: Any) -> None:
    """Replace `path` atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class ProgressLog:
    """Keeps `progress.json` up to date from the engine's node events."""

    def __init__(self, folder: Path, plan: Plan):
        self.path = folder / PROGRESS
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        for node in [*plan.shared.values(), *plan.roots]:
            self._entries[node.key + node.path] = {
                "path": node.path,
                "also_at": node.paths[1:],
                "operation": node.operation,
                "state": "pending",
            }
        self._keys = {id(n): n.key + n.path for n in [*plan.shared.values(), *plan.roots]}
        self._error: dict[str, str] | None = None
        self._flush()

    def record(self, event: NodeEvent) -> None:
        with self._lock:
            entry = self._entries[self._keys[id(event.node)]]
            now = time.time()
            if event.kind == "started":
                entry.update(state="running", started_at=now)
            elif event.kind == "reused":
                entry.update(state="reused", ended_at=now, duration_s=0.0, summary=clip(event.summary))
            else:
                entry.update(
                    state="succeeded" if event.kind == "finished" else "failed",
                    ended_at=now,
                    duration_s=round(event.duration_s, 4),
                )
                entry["summary" if event.kind == "finished" else "error"] = clip(event.summary or event.error)
            self._flush()

    def fail(self, failure: InstructionFailed) -> None:
        with self._lock:
            self._error = {"path": failure.path, "operation": failure.operation, "message": clip(failure.message)}
            self._flush()

    def _flush(self) -> None:
        entries = sorted(self._entries.values(), key=lambda e: _pointer_order(e["path"]))
        done = sum(e["state"] in ("succeeded", "reused") for e in entries)
        write_json(
            self.path, {"done": done, "total": len(entries), "instructions": entries, "error": self._error}
        )


class KeptOutputs:
    """Each instruction's output, pickled in its node folder, for a resumed run (the engine's `Reuse`).

    A resumed run reads its parent's folder. The files an output names stay in the parent's
    folder, which is why the parent's artifacts must be kept while its retries may run.
    """

    FILE = "output.pickle"

    def __init__(self, folder: Path, parent: Path | None):
        self.folder, self.parent = folder, parent

    def load(self, node: Any) -> tuple[bool, Any]:
        if self.parent is None:
            return False, None
        path = self.parent / "nodes" / node.key / self.FILE
        try:
            kept = path.read_bytes()
            # Written by this code location into the server's own artifact root, never user input.
            output = pickle.loads(kept)  # noqa: S301
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return False, None
        # Kept again here, so that a retry of this run finds it too.
        target = self.folder / "nodes" / node.key / self.FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(kept)
        return True, output

    def save(self, node: Any, output: Any) -> None:
        target = self.folder / "nodes" / node.key / self.FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{threading.get_ident()}.tmp")
        try:
            with partial.open("wb") as sink:
                pickle.dump(output, sink, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(partial, target)
        except (pickle.PicklingError, TypeError, AttributeError):
            partial.unlink(missing_ok=True)  # an output that cannot be kept is simply run again


def _pointer_order(path: str) -> list[tuple[int, Any]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.split("/")]
