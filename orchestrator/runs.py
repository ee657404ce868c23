"""A run's folder: its progress and results as JSON files beside its data.

The code location writes them while the run goes; the gateway reads them to answer
`GET /runs/{id}` and `GET /runs/{id}/results`. Both sides share only this format, kept in a
store (runstore.py): a local folder, or `s3://bucket/prefix` — then instructions work in a
scratch folder per run (`RunFolder`), and what they produce goes to the store as they finish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload
from urllib.parse import unquote, urlparse

from orchestrator import kept
from orchestrator.contract import (
    DONE_STATES,
    OUTPUT_EVENTS,
    STATE_OF_EVENT,
    InstructionProgress,
    InstructionState,
    NodeEventKind,
)
from orchestrator.engine import InstructionFailed, NodeEvent, Plan
from orchestrator.runstore import TRANSFER_THREADS, RunStore, RunStoreError, clean_relative, is_run_id

log = logging.getLogger("constellation")

PROGRESS = "progress.json"
RESULTS = "results.json"
# Outputs kept for a retry: beside the node folders (`nodes/<key>/`), never inside one (KeptOutputs).
KEPT = "kept"
KEPT_MANIFEST = f"{KEPT}/manifest.json"
_NODE_KEY = re.compile(r"^[0-9a-f]{16}$")  # engine.plan.canonical_key
# Progress goes to a remote store at most this often (the final state is always written).
PROGRESS_INTERVAL_S = 0.25
MAX_MESSAGE_CHARS = 2000  # an error message stored or served is cut to this (a 100 MB file name was served whole)


def run_dir(artifact_root: Path | str, run_id: str) -> Path:
    if not is_run_id(run_id):
        raise ValueError(f"{run_id!r} is not a run id")
    return Path(artifact_root) / "runs" / run_id


@overload
def clip(message: str, limit: int = ...) -> str: ...
@overload
def clip(message: None, limit: int = ...) -> None: ...
def clip(message: str | None, limit: int = MAX_MESSAGE_CHARS) -> str | None:
    """`message` cut to `limit` characters, saying how much was cut."""
    if message is None or len(message) <= limit:
        return message
    return f"{message[:limit]}... [{len(message) - limit} more characters cut]"


def write_json(path: Path, document: Any) -> None:
    """Replace `path` atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=1, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: no half-written file left beside `path`
        raise


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunFolder:
    """A run's folder as the code location writes it: a local folder for the instructions, and its store.

    With a local store the folder is the store's own (`<root>/runs/<run id>`), as it always was.
    With a remote one it is `<scratch>/runs/<run id>` in a temporary folder of the worker, removed
    by `close()`: each instruction's node folder is uploaded as it finishes (`upload_node`),
    progress and results are written to the store, and files of other runs (a resumed run's
    parent) are downloaded to `<scratch>/runs/<their run>/...` when needed (`fetch`). Local paths
    under `runs_root` and the store's objects correspond one to one.
    """

    def __init__(self, path: Path, store: RunStore | None = None, scratch: Path | None = None):
        self.path = path
        self.run_id = path.name
        self.runs_root = path.parent
        self.store = store
        self.scratch = scratch
        self._pool = ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="runstore") if self.remote else None
        self._uploads: list[Future[None]] = []
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        self._closed = False

    @classmethod
    def open(cls, store: RunStore, run_id: str) -> RunFolder:
        """Run `run_id`'s folder in `store`: a fresh scratch folder when the store is remote."""
        if not is_run_id(run_id):
            raise ValueError(f"{run_id!r} is not a run id")
        if not store.remote:
            return cls(store.folder(run_id), store)  # type: ignore[attr-defined]
        scratch = Path(tempfile.mkdtemp(prefix=f"constellation-run-{run_id[:8]}-")).resolve()
        path = scratch / "runs" / run_id
        path.mkdir(parents=True)
        return cls(path, store, scratch)

    @property
    def remote(self) -> bool:
        return self.store is not None and self.store.remote

    def local(self, run_id: str, rel: str = "") -> Path:
        """Where run `run_id`'s file `rel` is (or would be, once fetched) on this machine."""
        return self.runs_root / run_id / rel if rel else self.runs_root / run_id

    def write_json(self, rel: str, document: Any) -> None:
        if self.remote:
            self.store.write_json(self.run_id, rel, document)  # type: ignore[union-attr]
        else:
            write_json(self.path / rel, document)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace the run's file `rel` (atomically in a local folder)."""
        if self.remote:
            self.store.write_bytes(self.run_id, rel, data)  # type: ignore[union-attr]
            return
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def later(self, work: Callable[[], None]) -> None:
        """Run `work` now with a local store; with a remote one, in the transfer pool (`sync()` waits for it)."""
        if not self.remote:
            work()
            return
        with self._lock:
            self._uploads.append(self._pool.submit(work))  # type: ignore[union-attr]

    def location(self, rel: str) -> str:
        """Where the run's file `rel` is kept, for people: a store URI, or the local path."""
        return self.store.uri(self.run_id, rel) if self.remote else str(self.path / rel)  # type: ignore[union-attr]

    def upload_node(self, key: str) -> None:
        """Start storing the node folder of instruction `key` (every file in it); `close()` waits."""
        if not self.remote:
            return
        folder = self.path / "nodes" / key
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        inside = f"nodes/{key}/"
        with self._lock:
            for file in files:
                rel = file.relative_to(self.path).as_posix()
                if not rel.startswith(inside) or clean_relative(rel) is None:  # only the node's own folder
                    log.warning(f"not stored: {rel!r} is not a plain path in the node folder {inside}")
                    continue
                self._uploads.append(self._pool.submit(self.store.upload, self.run_id, rel, file))  # type: ignore

    def fetch(self, refs: set[str] | list[str]) -> None:
        """Have the files `<run id>/<rel>` of `refs` on this machine (downloaded once, in parallel)."""
        if not self.remote or not refs:
            return
        missing = [r for r in refs if "/" in r.strip("/") and not (self.runs_root / r).exists()]
        for future in [self._pool.submit(self._fetch_one, ref) for ref in missing]:  # type: ignore[union-attr]
            future.result()

    def _fetch_one(self, ref: str) -> None:
        with self._lock:
            lock = self._fetching.setdefault(ref, threading.Lock())
        with lock:
            target = self.runs_root / ref
            if not target.exists():
                run_id, _, rel = ref.partition("/")
                self.store.download(run_id, rel, target)  # type: ignore[union-attr]

    def public(self, document: Any) -> Any:
        """`document` with file:// URIs of run files turned into the store's URIs (s3://...)."""
        if not self.remote:
            return document
        prefix = str(self.runs_root) + os.sep

        def convert(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, list):
                return [convert(v) for v in value]
            if isinstance(value, str) and value.startswith("file://"):
                path = unquote(urlparse(value).path)
                if path.startswith(prefix):
                    run_id, _, rel = path[len(prefix) :].partition("/")
                    return self.store.uri(run_id, rel)  # type: ignore[union-attr]
            return value

        return convert(document)

    def sync(self) -> None:
        """Wait for the uploads started so far; raise RunStoreError if one failed."""
        with self._lock:
            uploads, self._uploads = self._uploads, []
        wait(uploads)
        errors = [e for e in (f.exception() for f in uploads) if e is not None]
        if errors:
            where = self.store.root if self.store is not None else self.path
            raise RunStoreError(f"could not store the run's files in {where}: {errors[0]}") from errors[0]

    def close(self) -> None:
        """Wait for the uploads started (a failure is logged), then remove the scratch folder, if any."""
        if self._closed:
            return
        try:
            self.sync()
        except RunStoreError as exc:
            log.warning(str(exc))
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _as_folder(folder: Path | RunFolder) -> RunFolder:
    return folder if isinstance(folder, RunFolder) else RunFolder(folder)


class ProgressLog:
    """Keeps `progress.json` up to date from the engine's node events.

    Written at each event into a local folder; into a remote store at most every
    PROGRESS_INTERVAL_S by a writer thread, and exactly by `close()` (the final state).
    """

    def __init__(self, folder: Path | RunFolder, plan: Plan, interval_s: float | None = None):
        self.folder = _as_folder(folder)
        self.path = self.folder.path / PROGRESS
        self.interval_s = (PROGRESS_INTERVAL_S if self.folder.remote else 0.0) if interval_s is None else interval_s
        self._lock = threading.Lock()
        self._entries: dict[str, InstructionProgress] = {}
        for node in [*plan.shared.values(), *plan.roots]:
            self._entries[node.key + node.path] = {
                "path": node.path,
                "also_at": node.paths[1:],
                "operation": node.operation,
                "state": InstructionState.PENDING,
            }
        self._keys = {id(n): n.key + n.path for n in [*plan.shared.values(), *plan.roots]}
        self._error: dict[str, str] | None = None
        self._changed = threading.Condition(self._lock)
        self._version = self._written = 0
        self._closed = False
        self._writer: threading.Thread | None = None
        if self.interval_s > 0:  # the writer thread writes this first state at once
            self._version = 1
            self._writer = threading.Thread(target=self._write_changes, name="progress-writer", daemon=True)
            self._writer.start()
        else:
            self._write(self._document())

    def record(self, event: NodeEvent) -> None:
        with self._lock:
            entry = self._entries[self._keys[id(event.node)]]
            now = time.time()
            entry["state"] = STATE_OF_EVENT[event.kind]
            if event.kind == NodeEventKind.STARTED:
                entry["started_at"] = now
            elif event.kind == NodeEventKind.REUSED:
                entry.update({"ended_at": now, "duration_s": 0.0, "summary": clip(event.summary)})
            elif event.kind == NodeEventKind.FINISHED:
                entry.update(
                    {
                        "ended_at": now,
                        "duration_s": round(event.duration_s, 4),
                        "summary": clip(event.summary or event.error),
                    }
                )
            else:
                entry.update(
                    {
                        "ended_at": now,
                        "duration_s": round(event.duration_s, 4),
                        "error": clip(event.summary or event.error),
                    }
                )
            self._flush()

    def fail(self, failure: InstructionFailed) -> None:
        with self._lock:
            self._error = {"path": failure.path, "operation": failure.operation, "message": clip(failure.message)}
            self._flush()

    def close(self) -> None:
        """Stop the writer thread and write the final state (a no-op for a local folder)."""
        if self._writer is None:
            return
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        self._writer.join()
        self._writer = None
        with self._lock:
            document, version = self._document(), self._version
        if version != self._written:
            self._write(document)
            self._written = version

    def _flush(self) -> None:  # with self._lock held
        self._version += 1
        if self._writer is None:
            try:
                self._write(self._document())
                self._written = self._version
            except OSError as exc:
                # A view of the run, not the run: a full disk must not hide the instruction's own
                # error (the gateway then reads it, with its path, from Dagster's step failure).
                log.warning(f"could not write the run's progress: {exc}")
        else:
            self._changed.notify_all()

    def _write_changes(self) -> None:
        """The writer thread: the latest state, at most every interval_s, until close()."""
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._closed or self._version != self._written)
                if self._closed:
                    return
                document, version = self._document(), self._version
            try:
                self._write(document)
                self._written = version
            except Exception as exc:  # the next change tries again; close() writes the final state
                log.warning(f"could not write the run's progress: {exc}")
            with self._lock:
                self._changed.wait_for(lambda: self._closed, timeout=self.interval_s)

    def _document(self) -> dict[str, Any]:
        entries = sorted(self._entries.values(), key=lambda e: _pointer_order(e["path"]))
        done = sum(e["state"] in DONE_STATES for e in entries)
        return {"done": done, "total": len(entries), "instructions": [dict(e) for e in entries], "error": self._error}

    def _write(self, document: dict[str, Any]) -> None:
        self.folder.write_json(PROGRESS, document)


class KeptOutputs:
    """Each instruction's output, kept as typed JSON for a resumed run (the engine's `Reuse`).

    A resumed run reads its parent's kept outputs: `kept/<node key>.json` in the parent's folder,
    documents of orchestrator/kept.py (data only: reading one runs no code). They lie outside
    `nodes/`, the folders operations write into, so no file an operation names can take their place,
    and `kept/manifest.json` lists each with the sha256 of its bytes, the instruction's path and its
    operation. An output is reused only when the parent's manifest lists it, the parent's progress
    says that instruction succeeded (or was itself reused), and the document read has the digest
    the manifest recorded; otherwise the instruction runs again. Runs kept before this format
    (`nodes/<key>/output.pickle`) are never read: their instructions all run again.

    The files an output names stay in the folder of the run that made them (the parent's, or an
    earlier one's), which is why those artifacts must be kept while retries may run. Paths under
    the runs' folders are kept relative to them (`<run id>/<rel>`), so that a run on another
    machine, whose scratch folder differs, maps them to its own copies: with a remote store those
    files are downloaded when an instruction that runs takes the reused output (`track`), or when
    the run's results show it (`fetch`).
    """

    FOLDER = KEPT
    MANIFEST = KEPT_MANIFEST

    def __init__(self, folder: Path | RunFolder, parent: Path | str | None):
        self.run = _as_folder(folder)
        self.parent = parent
        self.codec = kept.Codec(self.run.runs_root)
        self._refs: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._parent: _ParentKept | None = None
        self._manifest: dict[str, dict[str, str]] = {}
        self._version = self._written = 0
        self._write_lock = threading.Lock()  # manifest writes, one at a time and newest last

    @staticmethod
    def document(key: str) -> str:
        """Where the output of the instruction of key `key` is kept, in a run's folder."""
        if not _NODE_KEY.match(key):
            raise ValueError(f"{key!r} is not an instruction key")
        return f"{KEPT}/{key}.json"

    def load(self, node: Any) -> tuple[bool, Any]:
        if self.parent is None or not _NODE_KEY.match(node.key):
            return False, None
        parent = self._parent_kept()
        entry = parent.manifest.get(node.key)
        if entry is None:
            return False, None
        where = f"{node.operation} at {node.path}"
        if entry.get("operation") != node.operation or (entry.get("path"), node.operation) not in parent.completed:
            log.warning(
                f"{where}: the parent run {parent.name} kept an output but its progress does not say it "
                "succeeded; running it again"
            )
            return False, None
        rel = self.document(node.key)
        try:
            data = self._read_parent(rel)
        except (OSError, RunStoreError) as exc:
            log.warning(f"{where}: cannot read what the parent run {parent.name} kept ({exc}); running it again")
            return False, None
        if data is None:
            return False, None
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            log.warning(
                f"{where}: what the parent run {parent.name} kept is not what it wrote (its digest differs "
                "from the manifest's); running it again"
            )
            return False, None
        try:
            output, refs = self.codec.loads(data)
        except kept.BadKept as exc:
            log.warning(f"{where}: the parent run {parent.name} kept an unreadable output ({exc}); running it again")
            return False, None
        with self._lock:
            self._refs[node.key] = refs
        self._keep(node, data)  # kept again here, so that a retry of this run finds it too
        return True, output

    def save(self, node: Any, output: Any) -> None:
        if not _NODE_KEY.match(node.key):
            return
        try:
            data = self.codec.dumps(output)
        except kept.NotKept as exc:  # an output that cannot be kept is simply run again
            log.debug(f"{node.operation} at {node.path}: output not kept for a retry ({exc})")
            return
        self._keep(node, data)

    def _keep(self, node: Any, data: bytes) -> None:
        """Store the document `data` for `node`, then list it in the manifest (a remote store: in the background)."""
        rel = self.document(node.key)
        entry = {"sha256": hashlib.sha256(data).hexdigest(), "path": node.path, "operation": node.operation}

        def store() -> None:
            try:
                self.run.write_bytes(rel, data)
            except (OSError, RunStoreError) as exc:  # e.g. a full disk: the run goes on; a retry runs it again
                log.warning(f"could not keep the output of {node.operation} at {node.path} for a retry: {exc}")
                return
            with self._lock:
                self._manifest[node.key] = entry
                self._version += 1
            self._write_manifest()

        self.run.later(store)

    def _write_manifest(self) -> None:
        """Write the manifest as it is now, unless a newer one was written meanwhile."""
        with self._write_lock:
            with self._lock:
                if self._version == self._written:
                    return
                document, version = {"format": kept.FORMAT, "outputs": dict(self._manifest)}, self._version
            try:
                self.run.write_json(KEPT_MANIFEST, document)
                self._written = version
            except (OSError, RunStoreError) as exc:
                log.warning(f"could not write the list of outputs kept for a retry: {exc}")

    def _parent_kept(self) -> _ParentKept:
        with self._lock:
            if self._parent is None:
                self._parent = self._read_parent_state()
            return self._parent

    def _read_parent_state(self) -> _ParentKept:
        name = self.parent.name if isinstance(self.parent, Path) else str(self.parent)
        try:
            manifest = _json_or_none(self._read_parent(KEPT_MANIFEST))
            progress = _json_or_none(self._read_parent(PROGRESS))
        except (OSError, RunStoreError) as exc:
            log.warning(f"cannot read what the parent run {name} kept ({exc}): every instruction runs again")
            return _ParentKept(name, {}, set())
        readable = isinstance(manifest, dict) and manifest.get("format") == kept.FORMAT
        outputs = manifest.get("outputs") if readable else None
        if not isinstance(outputs, dict):
            log.info(f"the parent run {name} kept no outputs this version reads: every instruction runs again")
            return _ParentKept(name, {}, set())
        entries = progress.get("instructions") if isinstance(progress, dict) else None
        completed = {
            (e.get("path"), e.get("operation"))
            for e in (entries if isinstance(entries, list) else [])
            if isinstance(e, dict) and e.get("state") in DONE_STATES
        }
        listed = {k: v for k, v in outputs.items() if isinstance(k, str) and isinstance(v, dict)}
        return _ParentKept(name, listed, completed)

    def _read_parent(self, rel: str) -> bytes | None:
        if isinstance(self.parent, Path):
            try:
                return (self.parent / rel).read_bytes()
            except FileNotFoundError:
                return None
        if self.run.store is not None:
            return self.run.store.read_bytes(str(self.parent), rel)
        try:
            return self.run.local(str(self.parent), rel).read_bytes()
        except FileNotFoundError:
            return None

    def track(self, event: NodeEvent) -> None:
        """Move files as the run goes: before an instruction starts, the files of the reused outputs it
        takes come here; once it finished (or was reused), its node folder goes to the store."""
        if event.kind == NodeEventKind.STARTED:
            for child in event.node.children():
                self.fetch(child)
        elif event.kind in OUTPUT_EVENTS:
            self.run.upload_node(event.node.key)

    def fetch(self, node: Any) -> None:
        """Have on this machine the files that `node`'s reused output names (nothing if it was not reused)."""
        with self._lock:
            refs = self._refs.pop(node.key, set())
        try:
            self.run.fetch(refs)
        except (OSError, RunStoreError) as exc:  # the instruction that reads them says what is missing
            log.warning(f"could not fetch the files of reused instruction {node.path}: {exc}")


@dataclass(frozen=True)
class _ParentKept:
    """What a resumed run's parent kept: its manifest's entries, and the (path, operation) it completed."""

    name: str
    manifest: dict[str, dict[str, Any]]
    completed: set[tuple[Any, Any]]


def _json_or_none(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _pointer_order(path: str) -> list[tuple[int, Any]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.split("/")]
