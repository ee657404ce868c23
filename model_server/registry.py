"""The loaded models: load, infer, unload — plain Python, no web framework.

Every method blocks (loading and inference are slow); the web layer calls them from worker
threads. One lock per model: a model is never loaded twice at once, never unloaded while it
runs, and runs one request at a time (a forward pass already uses every core). What a model of
each task takes and answers is model_server/tasks/' business; here: where its source is, its state,
and giving its memory back.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from model_server.exceptions import (
    InputMismatch,
    InvalidInput,
    InvalidRequest,
    LoadFailed,
    ModelError,
    ModelLoading,
    SourceNotFound,
    UnknownModel,
)
from model_server.protocol import InferOutput, InferRequest
from model_server.tasks import SUPPORTED_TASKS, TASKS, TaskModel, reads_a_file
from model_server.tasks.vision import ImageClassifier

log = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
__all__ = ["SUPPORTED_TASKS", "InputMismatch", "InvalidInput", "InvalidRequest", "LoadFailed", "ModelEntry",
           "ModelError", "ModelLoading", "ModelRegistry", "ModelState", "SourceNotFound", "UnknownModel"]


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class ModelEntry:
    name: str
    source: str = ""
    task: str = ""
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = ""
    model: TaskModel | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def labels(self) -> list[str]:
        return self.model.labels if self.model is not None else []

    @property
    def pipeline(self) -> Any:
        """The transformers pipeline (or ONNX Runtime session) the model runs on; None when unloaded."""
        return getattr(self.model, "pipeline", None) or getattr(self.model, "session", None)


@dataclass(frozen=True)
class Memory:
    """Resident memory of this process around an unload, in bytes (None where unknown)."""

    before: int | None
    after: int | None


class ModelRegistry:
    def __init__(self, models_root: Path, batch_size: int = 8, device: str | None = None):
        self.models_root = Path(models_root).resolve()
        self.batch_size = batch_size
        self.device = device
        self._entries: dict[str, ModelEntry] = {}
        self._guard = threading.Lock()  # guards _entries only; each entry has its own lock

    def load(self, name: str, source: str, task: str) -> ModelEntry:
        """Load `source` as `name`; a no-op when it is already loaded from the same source and task."""
        if task not in SUPPORTED_TASKS:
            raise InvalidRequest(f"task {task!r} is not supported; supported tasks: {', '.join(SUPPORTED_TASKS)}")
        try:
            location = self.resolve_file(source, task) if reads_a_file(task) else self.resolve(source, task)
        except ModelError as exc:
            raise type(exc)(f"could not load model {name!r}: {exc}") from None
        entry = self._entry(name, create=True)
        with entry.lock:
            if entry.state is ModelState.READY and (entry.source, entry.task) == (source, task):
                return entry
            self._release(entry)  # loading another source under the same name replaces it
            entry.state, entry.source, entry.task, entry.reason = ModelState.LOADING, source, task, ""
            started = time.monotonic()
            log.info("loading model %s from %s (%s)", name, source, location)
            error = None
            try:
                model = TASKS[task].load(location, self.device)
            except Exception as exc:  # the libraries raise many types; their message is what the user needs
                error = self._load_error(name, source, task, exc)
            if error is not None:  # out of the except block: the traceback, and what it holds, is gone
                entry.state, entry.reason = ModelState.UNAVAILABLE, f"load failed: {error}"
                gc.collect()  # a model refused once loaded (the wrong task) leaves its weights to collect
                _trim_heap()
                raise error
            entry.model = model
            entry.state = ModelState.READY
            log.info("loaded model %s from %s in %.2f s", name, source, time.monotonic() - started)
            return entry

    def unload(self, name: str) -> Memory:
        """Drop the model and give its memory back; unloading an unloaded model is a no-op."""
        entry = self._entry(name)
        with entry.lock:
            before = resident_bytes()
            self._release(entry)
            entry.state, entry.reason = ModelState.UNAVAILABLE, "unloaded"
            memory = Memory(before, resident_bytes())
        if memory.before is not None and memory.after is not None:
            log.info("unloaded model %s; resident memory %.1f MB -> %.1f MB", name, memory.before / 1e6,
                     memory.after / 1e6)
        return memory

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

    def infer(self, name: str, request: InferRequest) -> list[InferOutput]:
        """The model's outputs for the request; InputMismatch names the model, its task and the inputs it takes."""
        entry = self.ready(name)
        with entry.lock:
            entry, model = self.model(name)  # it may have been unloaded while we waited
            try:
                return model.infer(request.inputs, request.parameters, self.batch_size)
            except InputMismatch as exc:
                raise InputMismatch(f"model {name!r} (task {entry.task}) takes {model.describe_inputs()}; "
                                    f"{exc}") from None

    def classify(self, name: str, images: list[bytes], top_k: int) -> tuple[int, list[list[tuple[str, float]]]]:
        """An image classifier's top-k (label, score) per image, best first; k is top_k capped at the label count."""
        entry = self.ready(name)
        with entry.lock:
            entry, model = self.model(name)
            if not isinstance(model, ImageClassifier):
                raise InputMismatch(f"model {name!r} (task {entry.task}) is not an image-classification model")
            return model.classify(images, top_k, self.batch_size)

    def resolve(self, source: str, task: str = "image-classification") -> str:
        """The folder (under the models root) or Hugging Face id that `source` names."""
        self._check_source(source)
        folder = (self.models_root / source).resolve()
        if folder.is_dir() and folder.is_relative_to(self.models_root):
            return str(folder)
        if folder.is_file() and folder.is_relative_to(self.models_root):
            raise InvalidRequest(
                f"model source {source!r} is a file; {task} loads a model folder under the models root or a Hugging "
                f"Face id (.onnx files are for {', '.join(t for t in SUPPORTED_TASKS if reads_a_file(t))})"
            )
        if os.path.exists(source):
            # transformers would read it relative to our working folder; only the models root is served.
            raise InvalidRequest(
                f"model source {source!r} is a path outside the models root {self.models_root}; "
                "put local models under the models root"
            )
        return source

    def resolve_file(self, source: str, task: str) -> str:
        """The .onnx file under the models root that `source` names."""
        self._check_source(source)
        path = (self.models_root / source).resolve()
        if not path.is_relative_to(self.models_root):
            raise InvalidRequest(f"model source {source!r} leads outside the models root {self.models_root}")
        if path.is_dir():
            raise InvalidRequest(f"model source {source!r} is a folder; {task} loads an .onnx file under the models "
                                 "root")
        if not path.is_file():
            raise SourceNotFound(f"model source {source!r}: no such file under the models root {self.models_root}; "
                                 f"{task} loads an .onnx file from there")
        if path.suffix.lower() != ".onnx":
            raise InvalidRequest(f"model source {source!r} is not an .onnx file; {task} loads ONNX models")
        return str(path)

    @staticmethod
    def _check_source(source: str) -> None:
        if not source or source != source.strip():
            raise InvalidRequest(f"model source {source!r} is empty or has surrounding spaces")
        posix = PurePosixPath(source)
        if posix.is_absolute() or Path(source).is_absolute() or ".." in posix.parts or "\\" in source:
            raise InvalidRequest(
                f"model source {source!r} is refused: name a Hugging Face id or a folder under the models root "
                "(no absolute paths, no '..')"
            )

    def _entry(self, name: str, create: bool = False) -> ModelEntry:
        if not NAME_PATTERN.match(name):
            raise InvalidRequest(f"model name {name!r} is not a valid name (letters, digits, '.', '_', '-')")
        with self._guard:
            entry = self._entries.get(name)
            if entry is None:
                if not create:
                    raise UnknownModel(f"model {name!r} is not known to this server; load it first")
                entry = self._entries[name] = ModelEntry(name)
            return entry

    def _load_error(self, name: str, source: str, task: str, exc: Exception) -> ModelError:
        what = f"could not load model {name!r} from {source!r} as {task}"
        if isinstance(exc, ModelError):
            return type(exc)(f"{what}: {exc}")
        where = f"not a folder under the models root {self.models_root}, so it was read as a Hugging Face id"
        if not reads_a_file(task) and not (self.models_root / source).is_dir() and isinstance(exc, OSError):
            return SourceNotFound(f"could not load model {name!r}: source {source!r} is {where}: {exc}")
        return LoadFailed(f"{what}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _release(entry: ModelEntry) -> None:
        if entry.model is None:
            return
        entry.model.close()
        entry.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        _trim_heap()


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
