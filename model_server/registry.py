"""The loaded models: load, classify, unload — plain Python, no web framework.

Every method blocks (loading and inference are slow); the web layer calls them from worker
threads. One lock per model: a model is never loaded twice at once, never unloaded while it
runs, and runs one request at a time (a forward pass already uses every core).
"""

from __future__ import annotations

import ctypes
import gc
import io
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
from PIL import Image, UnidentifiedImageError
from transformers import pipeline
from transformers.utils import logging as transformers_logging

log = logging.getLogger(__name__)
SUPPORTED_TASKS = ("image-classification",)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
# Progress bars would flood the server's log with every load.
transformers_logging.disable_progress_bar()


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


class ModelError(Exception):
    """A request the registry refuses; the subclass says which kind (and so which HTTP status)."""


class InvalidRequest(ModelError):
    """Bad load parameters: unsupported task, a source that is not allowed, a bad name."""


class UnknownModel(ModelError):
    """No model of that name is loaded."""


class ModelLoading(ModelError):
    """The model is being loaded; asking again shortly will work."""


class SourceNotFound(ModelError):
    """Neither a folder under the models root nor a Hugging Face id that can be found."""


class LoadFailed(ModelError):
    """The library could not build a pipeline from the source."""


class InvalidInput(ModelError):
    """An input image that cannot be decoded."""


@dataclass
class ModelEntry:
    name: str
    source: str = ""
    task: str = ""
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = ""
    labels: list[str] = field(default_factory=list)
    pipeline: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


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
        location = self.resolve(source)
        entry = self._entry(name, create=True)
        with entry.lock:
            if entry.state is ModelState.READY and (entry.source, entry.task) == (source, task):
                return entry
            self._release(entry)  # loading another source under the same name replaces it
            entry.state, entry.source, entry.task, entry.reason = ModelState.LOADING, source, task, ""
            started = time.monotonic()
            log.info("loading model %s from %s (%s)", name, source, location)
            try:
                loaded = pipeline(task, model=location, **({"device": self.device} if self.device else {}))
            except Exception as exc:  # the library raises many types; its message is what the user needs
                entry.state, entry.reason = ModelState.UNAVAILABLE, f"load failed: {exc}"
                raise self._load_error(name, source, exc) from None
            entry.pipeline = loaded
            entry.labels = [label for _, label in sorted(loaded.model.config.id2label.items())]
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

    def index(self) -> list[ModelEntry]:
        with self._guard:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def classify(self, name: str, images: list[bytes], top_k: int) -> tuple[int, list[list[tuple[str, float]]]]:
        """Top-k (label, score) per image, best first; k is top_k capped at the number of labels."""
        entry = self.ready(name)
        with entry.lock:
            entry = self.ready(name)  # it may have been unloaded while we waited
            k = min(top_k, len(entry.labels))
            results: list[list[tuple[str, float]]] = []
            # Decode one batch at a time: a request's compressed images may be far smaller than its pixels.
            for start in range(0, len(images), self.batch_size):
                batch = [open_image(images[i], i) for i in range(start, min(start + self.batch_size, len(images)))]
                answers = entry.pipeline(batch, top_k=k, batch_size=self.batch_size)
                results.extend([(a["label"], float(a["score"])) for a in answer] for answer in answers)
            return k, results

    def resolve(self, source: str) -> str:
        """The folder (under the models root) or Hugging Face id that `source` names."""
        if not source or source != source.strip():
            raise InvalidRequest(f"model source {source!r} is empty or has surrounding spaces")
        posix = PurePosixPath(source)
        if posix.is_absolute() or Path(source).is_absolute() or ".." in posix.parts or "\\" in source:
            raise InvalidRequest(
                f"model source {source!r} is refused: name a Hugging Face id or a folder under the models root "
                "(no absolute paths, no '..')"
            )
        folder = (self.models_root / source).resolve()
        if folder.is_dir() and folder.is_relative_to(self.models_root):
            return str(folder)
        if os.path.exists(source):
            # transformers would read it relative to our working folder; only the models root is served.
            raise InvalidRequest(
                f"model source {source!r} is a path outside the models root {self.models_root}; "
                "put local models under the models root"
            )
        return source

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

    def _load_error(self, name: str, source: str, exc: Exception) -> ModelError:
        where = f"not a folder under the models root {self.models_root}, so it was read as a Hugging Face id"
        if not (self.models_root / source).is_dir() and isinstance(exc, OSError):
            return SourceNotFound(f"could not load model {name!r}: source {source!r} is {where}: {exc}")
        return LoadFailed(f"could not load model {name!r} from {source!r}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _release(entry: ModelEntry) -> None:
        if entry.pipeline is None:
            return
        entry.pipeline, entry.labels = None, []
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        _trim_heap()


def open_image(data: bytes, index: int) -> Image.Image:
    """Decode one image; InvalidInput names its index."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise InvalidInput(f"input 'image' item {index} is not an image in a format Pillow reads") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"input 'image' item {index} is not a decodable image: {exc}") from None


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
