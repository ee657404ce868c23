"""The loaded models: load, infer, unload, leases — plain Python, no web framework.

Every method blocks (loading and inference are slow); the web layer calls them from worker
threads. What a model of each task takes and answers is model_server/tasks/' business; here:
where its source is, its state, who holds it, what it may cost, and giving its memory back.

Names and copies: a name (the model's name in URLs) is loaded from a source for a task; the copy
in memory is keyed by the resolved source and the task, so every name loaded from one source for
one task shares one copy, which goes with its last name. The caps count copies: how many
(max_models) and their weights together (max_model_bytes).

Leases: a load with a lease holder (a run id) holds the name for that holder until the holder
unloads with the same lease or its lease expires (renewed by a renew, or an inference naming the
holder). The name is unloaded when its last lease is let go of or has expired. A load without a
lease pins it, as Triton's load does: it stays until a plain unload, which unloads it whoever
holds it (the protocol's own unload).

Locks: a name's lock orders its load, unload and lease changes (a name is never loaded twice at
once); a copy's lock runs one request at a time on it (a forward pass already uses every core)
and its close waits for the running one; `_guard` protects the two dictionaries only. A thread
takes a name's lock before `_guard` or a copy's lock, never after.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from model_server.exceptions import (
    InputMismatch,
    InvalidInput,
    InvalidRequest,
    LoadFailed,
    ModelConflict,
    ModelError,
    ModelLoading,
    OutOfModelMemory,
    SourceNotFound,
    TooManyModels,
    UnknownModel,
)
from model_server.private_paths import hide_folders, hugging_face_cache
from model_server.protocol import InferOutput, InferRequest
from model_server.tasks import SUPPORTED_TASKS, TaskModel, model_class, reads_a_file
from model_server.tasks.base import InferLimits
from model_server.tasks.vision import ImageClassifier

log = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
GiB = 1024**3
MAX_LEASES_PER_MODEL = 10_000
# A source's length, and one of its folder or file names' in bytes (the file systems' NAME_MAX): longer ones the
# system cannot open (ENAMETOOLONG), and no Hugging Face id is that long.
MAX_SOURCE_CHARS, MAX_SOURCE_PART_BYTES = 1024, 255
# Weight files, by preference: transformers loads safetensors when a folder has them.
WEIGHT_SUFFIXES = ((".safetensors",), (".bin", ".pt", ".pth"), (".h5", ".msgpack", ".ckpt", ".onnx", ".gguf"))
__all__ = [
    "SUPPORTED_TASKS",
    "InputMismatch",
    "InvalidInput",
    "InvalidRequest",
    "Limits",
    "LoadFailed",
    "ModelEntry",
    "ModelError",
    "ModelLoading",
    "ModelRegistry",
    "ModelState",
    "SourceNotFound",
    "UnknownModel",
]


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class Limits:
    """What the loaded models may cost, and how long a lease lasts (model_server/config.py says each one's setting)."""

    max_models: int = 8
    max_model_bytes: int = 8 * GiB
    max_names: int = 256
    lease_ttl_s: float = 300.0
    max_lease_ttl_s: float = 24 * 3600.0
    infer: InferLimits = InferLimits()

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_models=settings.max_models,
            max_model_bytes=settings.max_model_bytes,
            max_names=settings.max_names,
            lease_ttl_s=settings.lease_ttl_s,
            max_lease_ttl_s=settings.max_lease_ttl_s,
            infer=InferLimits(
                settings.batch_size,
                settings.max_image_pixels,
                settings.max_request_pixels,
                settings.prepare_threads or 0,
                settings.overlap,
            ),
        )


@dataclass
class Lease:
    expires: float  # on the registry's clock
    ttl_s: float


@dataclass
class LoadedModel:
    """One copy of a model in memory, shared by every name loaded from its source for its task."""

    key: tuple[str, str]  # (resolved source, task)
    names: set[str]
    weight_bytes: int  # the weight files' size while it loads, then its weights in memory
    model: TaskModel | None = None
    failure: str = ""  # why it could not be loaded
    done: threading.Event = field(default_factory=threading.Event, repr=False)  # set when loading ended
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class Stats:
    """What a name has served since it was loaded (GET /v2/models/{name}/stats)."""

    requests: int = 0
    inferences: int = 0  # the inputs' first dimension, summed: images, rows, tiles
    binary_requests: int = 0  # requests whose tensors came in binary (the binary tensor data extension)


@dataclass
class ModelEntry:
    name: str
    source: str = ""
    task: str = ""
    location: str = ""  # the source resolved: a folder, an .onnx file or a Hugging Face id
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = ""
    loaded: LoadedModel | None = None
    leases: dict[str, Lease] = field(default_factory=dict)
    pinned: bool = False  # loaded without a lease: stays until a plain unload
    stats: Stats = field(default_factory=Stats)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self) -> TaskModel | None:
        loaded = self.loaded
        return loaded.model if loaded is not None else None

    @property
    def weight_bytes(self) -> int:
        loaded = self.loaded
        return loaded.weight_bytes if loaded is not None else 0

    @property
    def labels(self) -> list[str]:
        model = self.model
        return model.labels if model is not None else []

    @property
    def pipeline(self) -> Any:
        """The transformers pipeline (or ONNX Runtime session) the model runs on; None when unloaded."""
        model = self.model
        return getattr(model, "pipeline", None) or getattr(model, "session", None)

    def holders(self) -> str:
        held = ", ".join(sorted(self.leases)[:5]) + (
            f" and {len(self.leases) - 5} more" if len(self.leases) > 5 else ""
        )
        if self.leases and self.pinned:
            return f"the leases of {held} and a load without a lease"
        return f"the leases of {held}" if self.leases else "a load without a lease" if self.pinned else "nobody"


@dataclass(frozen=True)
class Unloaded:
    """What an unload did: the name's state after it, the leases left, and resident memory around it (bytes)."""

    state: ModelState
    leases: int
    before: int | None
    after: int | None


Memory = Unloaded  # the name of this answer before leases


class ModelRegistry:
    def __init__(
        self,
        models_root: Path,
        batch_size: int = 8,
        device: str | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.models_root = Path(models_root).resolve()
        self.batch_size = batch_size
        self.device = device
        self.limits = limits or Limits()
        self.infer_limits = replace(self.limits.infer, batch_size=batch_size)
        self.clock = clock
        self._entries: dict[str, ModelEntry] = {}
        self._copies: dict[tuple[str, str], LoadedModel] = {}
        self._guard = threading.Lock()  # guards _entries and _copies (and copies' names) only

    def load(
        self, name: str, source: str, task: str, lease: str | None = None, lease_ttl_s: float | None = None
    ) -> ModelEntry:
        """Load `source` as `name` for `task`, held by `lease` (or pinned, without one).

        A no-op but for the lease when it is already loaded from the same source for the same task;
        ModelConflict when it is loaded from another source or for another task.
        """
        if task not in SUPPORTED_TASKS:
            raise InvalidRequest(f"task {task!r} is not supported; supported tasks: {', '.join(SUPPORTED_TASKS)}")
        try:
            location, _ = self.locate(source, task)
        except ModelError as exc:
            raise type(exc)(f"could not load model {name!r}: {exc}") from None
        with self._locked(name, create=True) as entry:
            if entry.state is ModelState.READY:
                if (entry.location, entry.task) != (location, task):
                    raise ModelConflict(
                        f"model {name!r} is loaded from {entry.source!r} as {entry.task}, not from {source!r} as "
                        f"{task}: a different source is a different model. Load it under another name, or unload "
                        f"{name!r} first (held by {entry.holders()})"
                    )
                self._hold(entry, lease, lease_ttl_s)
                return entry
            with self._guard:
                active = sum(1 for e in self._entries.values() if e.state is not ModelState.UNAVAILABLE)
                if active >= self.limits.max_names:
                    raise TooManyModels(
                        f"could not load model {name!r}: {active} model names are loaded, the limit of this server "
                        f"(CONSTELLATION_MODEL_SERVER_MAX_NAMES={self.limits.max_names}); unload one first"
                    )
                entry.state = ModelState.LOADING
            entry.source, entry.task, entry.location, entry.reason = source, task, location, ""
            entry.leases.clear()
            entry.pinned = False
            try:
                entry.loaded = self._acquire(name, source, location, task)
            except ModelError as error:
                entry.state, entry.reason = ModelState.UNAVAILABLE, f"load failed: {error}"
                raise
            entry.state = ModelState.READY
            self._hold(entry, lease, lease_ttl_s)
            return entry

    def unload(self, name: str, lease: str | None = None) -> Unloaded:
        """Let go of `lease`'s hold (the model goes with the last one), or, without a lease, unload it outright.

        Unloading a model that is not loaded, or letting go of a lease not held, is a no-op.
        """
        with self._locked(name) as entry:
            if lease is not None:
                if entry.state is not ModelState.READY:
                    return Unloaded(entry.state, 0, None, None)
                entry.leases.pop(lease, None)
                self._drop_expired(entry)
                if entry.leases or entry.pinned:
                    log.info("model %s: %s let go of its lease; still held by %s", name, lease, entry.holders())
                    return Unloaded(entry.state, len(entry.leases), None, None)
                return self._unload_entry(entry, f"unloaded: its last lease ({lease}) was let go of")
            return self._unload_entry(entry, "unloaded")

    def renew(self, name: str, lease: str, lease_ttl_s: float | None = None) -> Lease:
        """Extend `lease` on a loaded model (taking it again if it expired while others held the model)."""
        with self._locked(name) as entry:
            if entry.state is not ModelState.READY:
                raise UnknownModel(f"model {name!r} is not loaded ({entry.reason or 'never loaded'}); load it again")
            self._hold(entry, lease, lease_ttl_s)
            return entry.leases[lease]

    def sweep(self) -> list[str]:
        """Unload every model whose every lease has expired; the names unloaded."""
        now = self.clock()
        with self._guard:
            candidates = [
                e
                for e in self._entries.values()
                if e.state is ModelState.READY
                and not e.pinned
                and all(lease.expires <= now for lease in list(e.leases.values()))
            ]
        unloaded = []
        for entry in candidates:
            if not entry.lock.acquire(blocking=False):
                continue  # busy (a load, an unload): the next sweep looks again
            try:
                if self._entries.get(entry.name) is not entry or entry.state is not ModelState.READY or entry.pinned:
                    continue
                last = max(entry.leases.items(), key=lambda item: item[1].expires, default=None)
                self._drop_expired(entry)
                if entry.leases:
                    continue
                why = f"held by {last[0]} for {last[1].ttl_s:g} s without renewal" if last else "held by nobody"
                self._unload_entry(entry, f"unloaded: every lease expired ({why})")
                unloaded.append(entry.name)
            finally:
                entry.lock.release()
        return unloaded

    def start_sweeping(self, interval_s: float) -> Callable[[], None]:
        """Sweep every `interval_s` in a thread of its own; returns the function that stops it."""
        stop = threading.Event()

        def sweep_until_stopped() -> None:
            while not stop.wait(interval_s):
                try:
                    self.sweep()
                except Exception:  # a bug of ours must not stop expiry for good
                    log.exception("the sweep of expired leases failed")

        threading.Thread(target=sweep_until_stopped, name="lease-sweep", daemon=True).start()
        return stop.set

    def ready(self, name: str) -> ModelEntry:
        """The entry of a loaded model, or the error saying why it cannot answer."""
        entry = self._entry(name)
        if entry.state is ModelState.LOADING:
            raise ModelLoading(f"model {name!r} is still loading from {entry.source!r}; try again shortly")
        if entry.state is not ModelState.READY:
            raise UnknownModel(f"model {name!r} is not loaded ({entry.reason or 'never loaded'})")
        return entry

    def model(self, name: str) -> tuple[ModelEntry, TaskModel]:
        """A loaded model with its entry, as they are now (for its metadata: no need to wait for its lock)."""
        entry = self.ready(name)
        model = entry.model
        if model is None:
            raise UnknownModel(f"model {name!r} is not loaded ({entry.reason or 'unloaded'})")
        return entry, model

    def index(self) -> list[ModelEntry]:
        with self._guard:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def infer(self, name: str, request: InferRequest, binary: bool = False) -> list[InferOutput]:
        """The model's outputs for the request; InputMismatch names the model, its task and the inputs it takes.

        `parameters.lease` renews that holder's lease first. `binary`: its tensors came in binary (counted).
        """
        entry = self.ready(name)
        if request.parameters.lease is not None:
            self.renew(name, request.parameters.lease)
        with self._running(entry) as model:
            try:
                outputs = model.infer(request.inputs, request.parameters, self.infer_limits)
                stats = entry.stats  # under the copy's lock: one request at a time counts
                stats.requests += 1
                stats.inferences += request.inputs[0].shape[0] if request.inputs[0].shape else 1
                stats.binary_requests += binary
                return outputs
            except InputMismatch as exc:
                raise InputMismatch(
                    f"model {name!r} (task {entry.task}) takes {model.describe_inputs()}; {exc}"
                ) from None

    def classify(self, name: str, images: list[bytes], top_k: int) -> tuple[int, list[list[tuple[str, float]]]]:
        """An image classifier's top-k (label, score) per image, best first; k is top_k capped at the label count."""
        entry = self.ready(name)
        with self._running(entry) as model:
            if not isinstance(model, ImageClassifier):
                raise InputMismatch(f"model {name!r} (task {entry.task}) is not an image-classification model")
            return model.classify(images, top_k, self.infer_limits)

    def loaded_models(self) -> list[LoadedModel]:
        """The copies in memory (each with the names that share it)."""
        with self._guard:
            return list(self._copies.values())

    def check(self, name: str, source: str, task: str) -> str:
        """Whether `source` would load as `name` for `task`, found without loading anything: where it would be read
        from ("models root", "Hugging Face cache" or "Hugging Face Hub"); else the ModelError a load would raise
        before it starts (an unknown task or source, a name loaded from another source or for another task)."""
        if task not in SUPPORTED_TASKS:
            raise InvalidRequest(f"task {task!r} is not supported; supported tasks: {', '.join(SUPPORTED_TASKS)}")
        location, found_in = self.locate(source, task)
        with self._guard:
            entry = self._entries.get(name)
        if entry is not None and entry.state is ModelState.READY and (entry.location, entry.task) != (location, task):
            raise ModelConflict(
                f"model {name!r} is loaded from {entry.source!r} as {entry.task}, not from {source!r} "
                f"as {task}: a different source is a different model. Load it under another name, or "
                f"unload {name!r} first (held by {entry.holders()})"
            )
        return found_in

    def locate(self, source: str, task: str) -> tuple[str, str]:
        """Where a load of `source` for `task` reads it from, (the location, "models root" | "Hugging Face cache" |
        "Hugging Face Hub"), checked before anything is loaded: a Hugging Face id must be in the local cache or,
        online, on the Hub (hub_source), so that an unknown one fails at once."""
        if reads_a_file(task, source):
            return self.resolve_file(source, task), "models root"
        location = self.resolve(source, task)
        if Path(location).is_dir():
            return location, "models root"
        return location, hub_source(location)

    def resolve(self, source: str, task: str = "image-classification") -> str:
        """The folder (under the models root) or Hugging Face id that `source` names."""
        self._check_source(source)
        folder = (self.models_root / source).resolve()
        if folder.is_dir() and folder.is_relative_to(self.models_root):
            return str(folder)
        if folder.is_file() and folder.is_relative_to(self.models_root):
            raise InvalidRequest(
                f"model source {source!r} is a file; {task} loads a model folder under the models root or a Hugging "
                f"Face id (.onnx files are for {', '.join(t for t in SUPPORTED_TASKS if reads_a_file(t, 'x.onnx'))})"
            )
        if os.path.exists(source):
            # transformers would read it relative to our working folder; only the models root is served.
            raise InvalidRequest(
                f"model source {source!r} is a path outside the models root; put local models under the models root"
            )
        return source

    def resolve_file(self, source: str, task: str) -> str:
        """The .onnx file under the models root that `source` names."""
        self._check_source(source)
        path = (self.models_root / source).resolve()
        if not path.is_relative_to(self.models_root):
            raise InvalidRequest(f"model source {source!r} leads outside the models root")
        if path.is_dir():
            raise InvalidRequest(
                f"model source {source!r} is a folder; {task} loads an .onnx file under the models root"
            )
        if not path.is_file():
            raise SourceNotFound(
                f"model source {source!r}: no such file under the models root; {task} loads an .onnx file from there"
            )
        if path.suffix.lower() != ".onnx":
            raise InvalidRequest(f"model source {source!r} is not an .onnx file; {task} loads ONNX models")
        return str(path)

    @staticmethod
    def _check_source(source: str) -> None:
        if not source or source != source.strip():
            raise InvalidRequest(f"model source {source!r} is empty or has surrounding spaces")
        if not source.isprintable():
            raise InvalidRequest(
                f"model source {source!r} holds a control character (e.g. a NUL); name a file or folder"
            )
        posix = PurePosixPath(source)
        if len(source) > MAX_SOURCE_CHARS or any(len(p.encode()) > MAX_SOURCE_PART_BYTES for p in posix.parts):
            raise InvalidRequest(
                f"model source {source[:60]!r}... is too long: at most {MAX_SOURCE_CHARS} characters, and "
                f"{MAX_SOURCE_PART_BYTES} bytes per folder or file name"
            )
        if posix.is_absolute() or Path(source).is_absolute() or ".." in posix.parts or "\\" in source:
            raise InvalidRequest(
                f"model source {source!r} is refused: name a Hugging Face id or a folder under the models root "
                "(no absolute paths, no '..')"
            )

    @contextmanager
    def _running(self, entry: ModelEntry) -> Iterator[TaskModel]:
        """The entry's model, under its copy's lock (one request at a time); UnknownModel if it went meanwhile."""
        loaded = entry.loaded
        if loaded is None:
            raise UnknownModel(f"model {entry.name!r} is not loaded ({entry.reason or 'unloaded'})")
        with loaded.lock:
            model = loaded.model
            if entry.loaded is not loaded or model is None:  # unloaded while we waited
                raise UnknownModel(f"model {entry.name!r} is not loaded ({entry.reason or 'unloaded'})")
            yield model

    def _acquire(self, name: str, source: str, location: str, task: str) -> LoadedModel:
        """The copy of (location, task) for `name`: the one in memory, or a new one within the caps."""
        key = (location, task)
        with self._guard:
            loaded = self._copies.get(key)
            if loaded is not None:
                loaded.names.add(name)
        if loaded is None:
            estimate = weights_on_disk(location, task)
            with self._guard:
                started = self._copies.get(key)  # another name may have started it meanwhile
                if started is None:
                    self._check_room(name, source, estimate)
                    loaded = self._copies[key] = LoadedModel(key, {name}, estimate or 0)
                else:
                    started.names.add(name)
                    loaded = started
            if started is None:  # this call made the copy: it loads it
                return self._load_copy(loaded, name, source)
        loaded.done.wait()
        if loaded.model is None:
            with self._guard:
                loaded.names.discard(name)
            raise LoadFailed(f"could not load model {name!r} from {source!r} as {task}: {loaded.failure}")
        others = sorted(loaded.names - {name})
        log.info(
            "model %s shares the copy of %s (%s) loaded for %s",
            name,
            source,
            task,
            ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "") or "another name",
        )
        return loaded

    def _check_room(self, name: str, source: str, estimate: int | None) -> None:
        """Under _guard: refuse a new copy past the caps on models and on their weights."""
        limits = self.limits
        if len(self._copies) >= limits.max_models:
            held = ", ".join(sorted(n for c in self._copies.values() for n in c.names)[:10])
            raise TooManyModels(
                f"could not load model {name!r}: {len(self._copies)} models are loaded ({held}), the limit of this "
                f"server (CONSTELLATION_MODEL_SERVER_MAX_MODELS={limits.max_models}); unload one first, or wait for "
                "the runs that hold one to end"
            )
        used = sum(c.weight_bytes for c in self._copies.values())
        if estimate is not None and used + estimate > limits.max_model_bytes:
            raise OutOfModelMemory(
                f"could not load model {name!r} from {source!r}: its weight files take {_mb(estimate)}, and with the "
                f"{_mb(used)} of the models loaded that is more than the {_mb(limits.max_model_bytes)} this server "
                "allows (CONSTELLATION_MODEL_SERVER_MAX_MODEL_BYTES); unload a model first"
            )

    def _load_copy(self, loaded: LoadedModel, name: str, source: str) -> LoadedModel:
        location, task = loaded.key
        started = time.monotonic()
        log.info("loading model %s from %s (%s)", name, source, location)
        error: ModelError | None = None
        model: TaskModel | None = None
        try:
            model = model_class(task, location).load(location, self.device)
        except Exception as exc:  # the libraries raise many types; their message is what the user needs
            error = self._load_error(name, source, task, exc)
        if model is not None:
            size = model.memory_bytes()
            with self._guard:
                used = sum(c.weight_bytes for c in self._copies.values() if c is not loaded)
                if used + size > self.limits.max_model_bytes:
                    error = OutOfModelMemory(
                        f"could not load model {name!r} from {source!r}: its weights take {_mb(size)} in memory, and "
                        f"with the {_mb(used)} of the models loaded that is more than the "
                        f"{_mb(self.limits.max_model_bytes)} this server allows "
                        "(CONSTELLATION_MODEL_SERVER_MAX_MODEL_BYTES); unload a model first"
                    )
                else:
                    loaded.weight_bytes, loaded.model = size, model
            if error is not None:
                model.close()
            model = None
        if error is not None:  # out of the except block: the traceback, and what it holds, is gone
            with self._guard:
                if self._copies.get(loaded.key) is loaded:
                    del self._copies[loaded.key]
            loaded.failure = str(error)
            loaded.done.set()
            gc.collect()  # a model refused once loaded (the wrong task, too big) leaves its weights to collect
            _trim_heap()
            raise error
        loaded.done.set()
        log.info(
            "loaded model %s from %s in %.2f s (%s of weights)",
            name,
            source,
            time.monotonic() - started,
            _mb(loaded.weight_bytes),
        )
        return loaded

    def _hold(self, entry: ModelEntry, lease: str | None, lease_ttl_s: float | None) -> None:
        """Under the entry's lock: pin it (no lease), or take or renew `lease`."""
        if lease is None:
            entry.pinned = True
            return
        if lease not in entry.leases and len(entry.leases) >= MAX_LEASES_PER_MODEL:
            self._drop_expired(entry)
            if len(entry.leases) >= MAX_LEASES_PER_MODEL:
                raise TooManyModels(
                    f"model {entry.name!r} already has {len(entry.leases)} leases, the most one model may have"
                )
        held = entry.leases.get(lease)
        # A renewal without a length keeps the lease's own; a new lease without one gets the server's default.
        ttl = min(lease_ttl_s or (held.ttl_s if held else self.limits.lease_ttl_s), self.limits.max_lease_ttl_s)
        entry.leases[lease] = Lease(self.clock() + ttl, ttl)

    def _drop_expired(self, entry: ModelEntry) -> None:
        now = self.clock()
        for holder in [h for h, lease in entry.leases.items() if lease.expires <= now]:
            del entry.leases[holder]
            log.info("model %s: the lease of %s expired", entry.name, holder)

    def _unload_entry(self, entry: ModelEntry, reason: str) -> Unloaded:
        """Under the entry's lock: drop the name, and its copy with its last name."""
        before = resident_bytes()
        loaded, entry.loaded = entry.loaded, None
        was_ready = entry.state is ModelState.READY
        entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        entry.leases.clear()
        entry.pinned = False
        if loaded is not None:
            self._release(entry.name, loaded)
        memory = Unloaded(ModelState.UNAVAILABLE, 0, before, resident_bytes())
        if was_ready and memory.before is not None and memory.after is not None:
            log.info(
                "%s model %s; resident memory %.1f MB -> %.1f MB",
                reason.split(":")[0],
                entry.name,
                memory.before / 1e6,
                memory.after / 1e6,
            )
            if reason != "unloaded":
                log.info("model %s %s", entry.name, reason)
        return memory

    def _release(self, name: str, loaded: LoadedModel) -> None:
        """`name` lets go of its copy; the copy's last name closes it (after the request running on it)."""
        with self._guard:
            loaded.names.discard(name)
            if loaded.names:
                return
            if self._copies.get(loaded.key) is loaded:
                del self._copies[loaded.key]
        with loaded.lock:
            if loaded.model is not None:
                loaded.model.close()
                loaded.model = None
        gc.collect()
        torch = sys.modules.get("torch")  # imported by the first model that used it; a model on CUDA did
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        _trim_heap()

    @contextmanager
    def _locked(self, name: str, create: bool = False) -> Iterator[ModelEntry]:
        """The name's entry under its lock (still the registry's: a forgotten entry is looked up again)."""
        while True:
            entry = self._entry(name, create)
            with entry.lock:
                if self._entries.get(name) is entry:
                    yield entry
                    return

    def _entry(self, name: str, create: bool = False) -> ModelEntry:
        if not NAME_PATTERN.match(name):
            raise InvalidRequest(f"model name {name!r} is not a valid name (letters, digits, '.', '_', '-')")
        with self._guard:
            entry = self._entries.get(name)
            if entry is None:
                if not create:
                    raise UnknownModel(f"model {name!r} is not known to this server; load it first")
                self._forget_unloaded()
                entry = self._entries[name] = ModelEntry(name)
            return entry

    def _forget_unloaded(self) -> None:
        """Under _guard: past 4 x max_names entries, forget the oldest unloaded ones (kept for the index's reasons)."""
        keep = 4 * self.limits.max_names
        if len(self._entries) < keep:
            return
        for name, entry in list(self._entries.items()):
            if len(self._entries) < keep // 2:
                break
            if entry.state is ModelState.UNAVAILABLE and not entry.lock.locked():
                del self._entries[name]

    def _load_error(self, name: str, source: str, task: str, exc: Exception) -> ModelError:
        what = f"could not load model {name!r} from {source!r} as {task}"
        # The libraries' messages name the files they read: said relative to the models root (or HF cache).
        said = hide_folders(
            str(exc), [(self.models_root, "the models root"), (hugging_face_cache(), "the Hugging Face cache")]
        )
        if isinstance(exc, ModelError):
            return type(exc)(f"{what}: {said}")
        where = "not a folder under the models root, so it was read as a Hugging Face id"
        if not reads_a_file(task, source) and not (self.models_root / source).is_dir() and isinstance(exc, OSError):
            return SourceNotFound(f"could not load model {name!r}: source {source!r} is {where}: {said}")
        return LoadFailed(f"{what}: {type(exc).__name__}: {said}")


# How long a load may wait for the Hugging Face Hub to say whether it has a model: offline, an unknown id fails
# at once instead of after huggingface_hub's retries (five, 23 s with no network).
HUB_PROBE_S = 5.0


def hub_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds `repo_id` (its config.json, which every transformers model has)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not an id the hub library takes: not cached
        return False
    return isinstance(found, str)


def hub_source(repo_id: str) -> str:
    """Where the Hugging Face id `repo_id` loads from, "Hugging Face cache" or "Hugging Face Hub" (online, asked
    once within HUB_PROBE_S; offline, HF_HUB_OFFLINE, nothing is asked); SourceNotFound when neither has it."""
    if hub_cached(repo_id):
        return "Hugging Face cache"
    missing = f"model source {repo_id!r} is not in the models root or the local Hugging Face cache"
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise SourceNotFound(
            f"{missing}, and this server is offline (HF_HUB_OFFLINE); put the model in its models "
            "root or its Hugging Face cache"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=HUB_PROBE_S, files_metadata=False)
    except GatedRepoError:
        return "Hugging Face Hub"  # it exists; the download says whether this server's HF_TOKEN may read it
    except RepositoryNotFoundError:
        raise SourceNotFound(
            f"{missing}, and the Hugging Face Hub has no model {repo_id!r} (or it is private: set "
            "HF_TOKEN on the server)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no answer"
        raise SourceNotFound(f"{missing}, and the Hugging Face Hub answered {status}; try again later") from None
    except Exception as exc:  # no network, no name resolution, a timeout: the Hub cannot be asked
        raise SourceNotFound(
            f"{missing}, and the Hugging Face Hub cannot be reached from this server "
            f"({type(exc).__name__}); set HF_HUB_OFFLINE=1 on a server without network"
        ) from None
    return "Hugging Face Hub"


def weights_on_disk(location: str, task: str) -> int | None:
    """The bytes of the weight files a load of `location` reads, when they are on this machine; None when unknown.

    A folder (or an id's snapshot in the Hugging Face cache): its safetensors files, else its PyTorch
    files, else its other weight files; an .onnx file: its size.
    """
    path = Path(location)
    try:
        if reads_a_file(task, location):
            return path.stat().st_size
        folder = path if path.is_dir() else _cached_snapshot(location)
        if folder is None:
            return None
        files = [p for p in folder.iterdir() if p.is_file()]
        for suffixes in WEIGHT_SUFFIXES:
            chosen = [p for p in files if p.suffix.lower() in suffixes]
            if chosen:
                return sum(p.stat().st_size for p in chosen)
    except OSError:
        return None
    return None


def _cached_snapshot(repo_id: str) -> Path | None:
    """The folder of a Hugging Face id's snapshot in the local cache, without going to the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, not an id the hub library takes: unknown until loaded
        return None


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def resident_bytes() -> int | None:
    """This process's resident set size, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _trim_heap() -> None:
    # glibc keeps freed heap pages (one arena per worker thread); malloc_trim returns them to the system.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
