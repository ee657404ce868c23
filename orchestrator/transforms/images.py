"""Image preparation with Pillow, streamed one file at a time on one worker process per core.

Decoding, resampling and encoding are CPU work. Threads share one interpreter lock, and the
Python around each image (opening, naming, checks) holds it, so two threads fall short of two
cores; `map_images` therefore forks a `ProcessPoolExecutor` of one worker per core for a long
list (a short one stays on two threads, where forking would cost more than it saves). Workers
are handed runs of indices into the list they inherited, never pixels, and only a few runs ahead
of the oldest unfinished image, so memory is bounded by the images in flight, not by the dataset.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError
from orchestrator.transforms.threads import map_in_order

IMAGE_THREADS = 2
# One worker process per core this process may use (a container's CPU set, not the host's).
IMAGE_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# Fewer images than this stay on threads: forking the workers costs tens of milliseconds.
PROCESS_MIN_IMAGES = 16
RUN_IMAGES = 16  # images handed to a worker process at once, answered in one message
RUNS_AHEAD = 4  # per worker: how far past the oldest unfinished image the work may go, in runs
WORKER_IMAGES = 2000  # images one set of worker processes prepares before fresh forks take over
CANCEL_CHECK_S = 0.1
# Our own cap (a server setting) replaces Pillow's global one, so the limit and its message
# are ours; every open checks the header's size before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# Python 3.12+ warns on every fork of a process that has threads (a run worker has several):
# a worker only runs Pillow on what it inherited, and never takes a lock another thread held.
warnings.filterwarnings(
    "ignore", r"This process .* is multi-threaded, use of fork\(\) may lead to deadlocks", DeprecationWarning
)

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}

Transform = Callable[[FileRef], list[FileRef]]


def map_images(
    refs: list[FileRef], transform: Transform, check_cancelled: Callable[[], None] = lambda: None
) -> list[FileRef]:
    """Apply `transform` to every image; results keep the input order.

    `check_cancelled` raises to stop: it is called before each image (threads) or every
    0.1 s while the workers run (processes), and stopping kills the workers at once. The first
    image that fails, in input order, raises its own error (which names it).
    """
    workers = min(IMAGE_WORKERS, len(refs))
    if len(refs) < PROCESS_MIN_IMAGES or workers < 2 or not _can_fork():
        return _map_on_threads(refs, transform, check_cancelled)
    _hold_the_heap(True)
    try:
        return _map_on_processes(refs, transform, check_cancelled, workers)
    finally:
        _hold_the_heap(False)


def _can_fork() -> bool:
    # Linux only (forking a process with threads is unsafe on macOS); and a process started as a
    # daemon by multiprocessing may not have children of its own.
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


def _map_on_threads(refs: list[FileRef], transform: Transform, check_cancelled: Callable[[], None]) -> list[FileRef]:
    """`IMAGE_THREADS` threads with a few images in flight (not one task per image queued up front)."""

    def one(ref: FileRef) -> list[FileRef]:
        check_cancelled()
        return transform(ref)

    produced = map_in_order(one, refs, threads=IMAGE_THREADS, ahead=4 * IMAGE_THREADS, name="image")
    return [out for outs in produced for out in outs]


def _map_on_processes(
    refs: list[FileRef], transform: Transform, check_cancelled: Callable[[], None], workers: int
) -> list[FileRef]:
    """Runs of images on forked pools, in order, a bounded number ahead of the oldest unfinished one.

    A pool is replaced by fresh forks once it has been handed WORKER_IMAGES images: what its
    workers copied of this process's memory by touching the images' objects (their reference
    counts) goes with them, so no worker's memory grows with the dataset. (ProcessPoolExecutor's
    own max_tasks_per_child refuses the fork start method, and the work is a closure that only a
    fork carries over.)
    """
    size = max(1, min(RUN_IMAGES, len(refs) // (workers * 4)))  # short lists: several runs for every worker
    runs = [(start, min(start + size, len(refs))) for start in range(0, len(refs), size)]
    ahead = RUNS_AHEAD * workers * size
    results: list[FileRef] = []
    folders: dict[str, Path] = {}  # the results' folders, each parsed once
    pending: deque[Future[bytes]] = deque()  # in input order
    sent = emitted = 0  # runs handed out; images whose results were handed back
    while sent < len(runs):
        with _Pool(refs, transform, workers) as pool:
            handed = 0
            while pending or (sent < len(runs) and handed < WORKER_IMAGES):
                # bounded however slow one image is
                while sent < len(runs) and handed < WORKER_IMAGES and runs[sent][0] < emitted + ahead:
                    pending.append(pool.submit(*runs[sent]))
                    handed += runs[sent][1] - runs[sent][0]
                    sent += 1
                oldest = pending.popleft()
                while not oldest.done():
                    check_cancelled()
                    wait([oldest], timeout=CANCEL_CHECK_S)
                for index, ok, value in pool.replies(oldest):
                    if not ok:
                        error, remote = value
                        if remote:
                            error.__cause__ = _RemoteTraceback(remote)
                        raise error
                    results.extend(_received(refs[index], value, folders))
                    emitted = index + 1
    return results


class _Forks(multiprocessing.context.ForkContext):
    """The fork start method, keeping the processes it makes and numbering them.

    ProcessPoolExecutor (3.11) neither says which worker died nor stops one at work: with its
    processes at hand, a death is named by exit code and a cancel kills them at once. A worker
    finds its number in the object it inherited, the slot where it says which image it holds.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[multiprocessing.context.ForkProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> multiprocessing.context.ForkProcess:  # type: ignore[override]  # noqa: N802
        process = multiprocessing.context.ForkProcess(*args, **kwargs)
        process.number = len(self.processes)  # type: ignore[attr-defined]
        self.processes.append(process)
        return process


class _Pool:
    """One set of forked workers for a `map_images` call, killed at once if the call stops early."""

    def __init__(self, refs: list[FileRef], transform: Transform, workers: int):
        self.refs, self.forks = refs, _Forks()
        # Shared memory: 1 + the index of the image each worker has in hand (0: none), for the parent
        # to name should that worker die.
        self.in_hand = self.forks.RawArray("q", workers)
        self.executor = ProcessPoolExecutor(
            workers, mp_context=self.forks, initializer=_adopt, initargs=(refs, transform, self.in_hand, os.getpid())
        )

    def __enter__(self) -> _Pool:
        return self

    def submit(self, start: int, stop: int) -> Future[bytes]:
        try:
            return self.executor.submit(_prepare, start, stop)
        except BrokenProcessPool:  # a worker died since the last result was taken
            raise self._died() from None

    def replies(self, future: Future[bytes]) -> list[tuple[int, bool, Any]]:
        try:
            # Bytes pickle.dumps made in our own forked worker from what it built (file references, errors), sent
            # over the executor's pipe: an image's bytes go to Pillow there and never reach a pickle stream.
            return pickle.loads(future.result())
        except BrokenProcessPool:
            raise self._died() from None

    def _died(self) -> OperationError:
        # The executor terminates the others once one dies (SIGTERM): the one that died first did not end so.
        # The pool may say it is broken before the dead one's exit status is collected: wait a little for it.
        processes, deadline = self.forks.processes, time.monotonic() + 5
        while True:
            ended = [process for process in processes if process.exitcode is not None]
            dead = [process for process in ended if process.exitcode != -signal.SIGTERM]
            running = [process.sentinel for process in processes if process.exitcode is None]
            if dead or not running or time.monotonic() > deadline:
                break
            multiprocessing.connection.wait(running, timeout=0.05)
        for process in ended:
            process.join()
        dead = dead or ended
        for process in dead:
            held = self.in_hand[process.number]  # type: ignore[attr-defined]
            if held:
                return OperationError(
                    f"{self.refs[held - 1].name!r}: the process preparing it ended unexpectedly "
                    f"(exit code {process.exitcode}; out of memory?)"
                )
        code = dead[0].exitcode if dead else None
        return OperationError(f"a process preparing images ended unexpectedly (exit code {code})")

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:  # stopped or failed: do not wait for the images in hand
            for process in self.forks.processes:
                if process.exitcode is None:
                    process.kill()
        # The executor sees the killed ones as a broken pool, fails what is pending, and reaps them.
        self.executor.shutdown(wait=True, cancel_futures=True)


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a worker process, kept as the error's cause."""

    def __str__(self) -> str:
        return self.args[0]


# In a worker process: what it inherited from the parent when it was forked.
_work: tuple[list[FileRef], Transform, Any] | None = None


def _adopt(refs: list[FileRef], transform: Transform, in_hand: Any, parent: int) -> None:
    """A worker's start: keep the work it inherited (a fork: nothing was pickled) and watch its parent."""
    global _work
    # Everything inherited from the parent is shared with it until written to; the cyclic
    # collector would write to every object it walks (a copy of the parent's whole heap per
    # worker), so it leaves the inherited objects alone.
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _work = (refs, transform, in_hand)
    threading.Thread(target=_leave_with, args=(parent,), daemon=True).start()


def _leave_with(parent: int) -> None:
    """The parent was killed: nobody will read our results (the executor's queues never say so)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _prepare(start: int, stop: int) -> bytes:
    """In a worker: the images refs[start:stop], answered as one pickled list [(index, ok, value), ...].

    The list ends at the run's first failure. It is pickled here, so that an error or a result that
    cannot be pickled is named by its image rather than failing the whole run anonymously.
    """
    assert _work is not None
    refs, transform, in_hand = _work
    number = multiprocessing.current_process().number  # type: ignore[attr-defined]
    replies: list[tuple[int, bool, Any]] = []
    for index in range(start, stop):
        in_hand[number] = index + 1
        try:
            produced = [(out.name, os.fspath(out.path), out.meta) for out in transform(refs[index])]
            replies.append((index, True, produced))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            replies.append((index, False, (_portable(exc, refs[index]), traceback.format_exc())))
            break
    in_hand[number] = 0
    try:
        return pickle.dumps(replies, pickle.HIGHEST_PROTOCOL)
    except Exception:  # a result that cannot be pickled: those before it, and its error
        return pickle.dumps(_picklable(replies, refs), pickle.HIGHEST_PROTOCOL)


def _picklable(replies: list[tuple[int, bool, Any]], refs: list[FileRef]) -> list[tuple[int, bool, Any]]:
    kept: list[tuple[int, bool, Any]] = []
    for index, ok, value in replies:
        try:
            pickle.dumps(value)
        except Exception as exc:
            error = OperationError(f"{refs[index].name!r}: its result cannot be sent back: {type(exc).__name__}: {exc}")
            return [*kept, (index, False, (error, ""))]
        kept.append((index, ok, value))
    return kept


def _portable(exc: BaseException, ref: FileRef) -> BaseException:
    """`exc` if it survives pickling (type, message, errno...), else an OperationError that names the image."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return OperationError(f"{ref.name!r}: {type(exc).__name__}: {exc}")


_frozen = 0
_frozen_lock = threading.Lock()


def _hold_the_heap(hold: bool) -> None:
    """While workers share this process's memory, keep the cyclic collector off what exists.

    A collection writes to every object it walks: each page it touches would be copied, this
    process keeping the copy and the workers the original, up to the whole heap twice over.
    Frozen objects are not walked; new ones (the results) are. Nested and concurrent calls
    (two image instructions at once) count, and the last one out unfreezes.
    """
    global _frozen
    with _frozen_lock:
        if hold:
            if _frozen == 0:
                gc.freeze()
            _frozen += 1
        else:
            _frozen -= 1
            if _frozen == 0:
                gc.unfreeze()


def _received(ref: FileRef, produced: list[tuple[str, str, Any]], folders: dict[str, Path]) -> list[FileRef]:
    """A worker's results as FileRefs, as small as the same made in this process.

    A path arrives as text; made as its (cached) folder / its name, it shares the folder's
    parts. A name or facts equal to the input's share the input's objects.
    """
    refs = []
    for name, path, meta in produced:
        folder, sep, base = path.rpartition(os.sep)
        parent = folders.get(folder + sep)
        if parent is None:
            parent = folders[folder + sep] = Path(folder + sep)
        shared_name, shared_meta = ref.name if name == ref.name else name, ref.meta if meta == ref.meta else meta
        refs.append(FileRef(shared_name, parent / base, shared_meta))
    return refs


@contextmanager
def open_image(ref: FileRef, max_pixels: int) -> Iterator[Image.Image]:
    """Open an image lazily, refusing unreadable files and ones over `max_pixels`."""
    try:
        with Image.open(ref.path) as image:
            if image.width * image.height > max_pixels:
                raise OperationError(
                    f"{ref.name!r} is {image.width}×{image.height} pixels, over the limit of {max_pixels} "
                    "(a decompression bomb, or a scene to cut with tile_image after raising the limit)"
                )
            yield image
    except (UnidentifiedImageError, OSError) as exc:
        raise OperationError(f"{ref.name!r} is not a readable image: {exc}") from None


def output_path(out_dir: Path, name: str) -> Path:
    """Where a derived file named `name` goes: inside `out_dir`, whatever the name says.

    The folder is resolved once; the name is resolved lexically (`..`, `/`), which is the
    same here because an instruction's own folder holds only the files and folders it wrote,
    never a link.
    """
    base = _resolved(out_dir)
    target = os.path.normpath(os.path.join(base, name))
    if not target.startswith(base + os.sep):
        raise OperationError(f"{name!r} would be written outside the run's folder; refused")
    return Path(target)


@lru_cache(maxsize=64)
def _resolved(folder: Path) -> str:
    return str(folder.resolve())


def save(image: Image.Image, target: Path, fmt: str) -> Path:
    """Write `image` as `fmt`, converting the mode when the format cannot hold it."""
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    try:
        image.save(target, format=fmt, **options)
    except FileNotFoundError:  # its folder is not there yet (a name with folders in it, or the first file)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format=fmt, **options)
    return target


def distinct_names(names: list[str], derive: Callable[[str], str] = lambda name: name) -> list[str]:
    """`derive(name)` for each name, kept apart so that no output is written over another.

    Where two would collide (a.png and a.jpg both becoming a.jpg), a name that changes keeps
    its old extension in front (a.png.jpg); a name `derive` leaves as it is keeps it. Two inputs
    of the same name, or what still collides, fail clearly.
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise OperationError(f"two images are named {name!r}; their outputs would overwrite each other")
        seen.add(name)
    derived = [derive(name) for name in names]
    counts = Counter(derived)
    taken = {new: name for name, new in zip(names, derived, strict=True) if new == name}
    result = []
    for name, new in zip(names, derived, strict=True):
        if taken.get(new) == name:
            result.append(new)
            continue
        candidate = name + Path(new).suffix if new in taken or counts[new] > 1 else new
        if candidate in taken:
            raise OperationError(
                f"{name!r} and {taken[candidate]!r} would both be written as {candidate!r}; rename one of them"
            )
        taken[candidate] = name
        result.append(candidate)
    return result


def resize(ref: FileRef, out_dir: Path, width: int, height: int, max_pixels: int) -> FileRef:
    """Resize one image to exactly width × height, keeping its format; the output is held to the pixel cap too."""
    check_output_pixels(width, height, max_pixels)
    with open_image(ref, max_pixels) as image:
        fmt = image.format or "PNG"
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less work for thumbnails.
        image.draft("RGB", (width, height))
        # Phone photos store their rotation in EXIF; apply it so nothing comes out sideways
        # (in place: no copy of the pixels when there is nothing to turn).
        ImageOps.exif_transpose(image, in_place=True)
        resized = image.resize((width, height), Image.Resampling.LANCZOS)
    return FileRef(ref.name, save(resized, output_path(out_dir, ref.name), fmt), ref.meta)


def check_output_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise OperationError(
            f"an output of {width}×{height} pixels is over the limit of {max_pixels} (the server's "
            "CONSTELLATION_MAX_IMAGE_PIXELS)"
        )


def converted_name(name: str, fmt: str | None) -> str:
    """The name an image gets from convert: its extension follows the new format."""
    return str(Path(name).with_suffix(EXTENSIONS[fmt])) if fmt else name


def convert(
    ref: FileRef, out_dir: Path, mode: str, fmt: str | None, max_pixels: int, name: str | None = None
) -> FileRef:
    """Change an image's colour mode and/or file format (the name's extension follows the format).

    `name` is the output's name when the caller has kept names apart (see `distinct_names`).
    """
    with open_image(ref, max_pixels) as image:
        target_format = fmt or image.format or "PNG"
        converted = ImageOps.exif_transpose(image).convert(mode)
    name = name or converted_name(ref.name, fmt)
    return FileRef(name, save(converted, output_path(out_dir, name), target_format), ref.meta)


def crop(ref: FileRef, out_dir: Path, box: tuple[int, int, int, int], max_pixels: int) -> FileRef:
    """Cut the box (left, top, width, height) out of one image; the box must lie inside it."""
    left, top, width, height = box
    with open_image(ref, max_pixels) as image:
        if left + width > image.width or top + height > image.height:
            raise OperationError(
                f"{ref.name!r} is {image.width}×{image.height}; the box {width}×{height} at ({left}, {top}) "
                "does not fit inside it"
            )
        fmt = image.format or "PNG"
        cropped = image.crop((left, top, left + width, top + height))
    return FileRef(ref.name, save(cropped, output_path(out_dir, ref.name), fmt), ref.meta)


def tile_origins(length: int, tile: int, step: int) -> list[int]:
    """Tile starts along one axis; the last tile is moved back to end at the edge (never padded)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile(
    ref: FileRef, out_dir: Path, size: tuple[int, int], overlap: int, max_pixels: int, max_tiles: int = 10_000
) -> list[FileRef]:
    """Cut one image into size-d tiles overlapping by `overlap` pixels; each tile keeps its origin.

    The tile count is checked from the header before any pixel is decoded or any tile written.
    """
    tile_w, tile_h = size
    with open_image(ref, max_pixels) as image:
        rows = tile_origins(image.height, tile_h, tile_h - overlap)
        columns = tile_origins(image.width, tile_w, tile_w - overlap)
        if len(rows) * len(columns) > max_tiles:
            raise OperationError(
                f"{ref.name!r} ({image.width}×{image.height}) would make {len(rows) * len(columns)} tiles of "
                f"{tile_w}×{tile_h} with overlap {overlap}, over the limit of {max_tiles} per image (the server's "
                "CONSTELLATION_MAX_TILES_PER_IMAGE); use larger tiles or less overlap"
            )
        fmt = image.format or "PNG"
        image.load()
        stem, suffix = Path(ref.name).with_suffix(""), Path(ref.name).suffix or EXTENSIONS.get(fmt, ".png")
        tiles = []
        for y in rows:
            for x in columns:
                box = (x, y, min(x + tile_w, image.width), min(y + tile_h, image.height))
                name = f"{stem}/x{x}_y{y}{suffix}"
                meta = {**ref.meta, "source": ref.name, "x": x, "y": y, "width": box[2] - x, "height": box[3] - y}
                tiles.append(FileRef(name, save(image.crop(box), output_path(out_dir, name), fmt), meta))
    return tiles


NORMALIZE_BAND_PIXELS = 1 << 20  # pixels turned into floats at a time: about 4 MB per channel


def normalized_name(name: str) -> str:
    return str(Path(name).with_suffix(".npy"))


def normalize(
    ref: FileRef, out_dir: Path, mean: list[float], std: list[float], max_pixels: int, name: str | None = None
) -> FileRef:
    """Scale pixels to [0, 1], subtract `mean` and divide by `std` per channel; save float32 CHW .npy.

    Streamed in bands of rows, channel by channel, straight into the .npy file: memory is the
    decoded 8-bit image (1 byte a pixel per channel) plus one band of floats, not ~30 bytes a
    pixel for float copies of the whole image.
    """
    import numpy as np  # here: a run that only resizes does not pay for numpy's import (~60 ms)

    channels = len(mean)
    with open_image(ref, max_pixels) as image:
        ImageOps.exif_transpose(image, in_place=True)
        converted = image.convert("L" if channels == 1 else "RGB")
    with converted:
        pixels = np.asarray(converted)  # uint8, H×W or H×W×3
    height, width = pixels.shape[:2]
    pixels = pixels.reshape(height, width, -1)
    band = max(1, NORMALIZE_BAND_PIXELS // max(1, width))
    name = name or normalized_name(ref.name)
    target = output_path(out_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as sink:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
            "fortran_order": False,
            "shape": (channels, height, width),
        }
        np.lib.format.write_array_header_1_0(sink, header)
        for channel in range(channels):
            for top in range(0, height, band):
                rows = pixels[top : top + band, :, channel].astype("<f4")
                rows /= np.float32(255.0)  # the same float32 arithmetic as on the whole image, a band at a time
                rows -= np.float32(mean[channel])
                rows /= np.float32(std[channel])
                sink.write(rows.tobytes())
    return FileRef(name, target, {**ref.meta, "shape": [channels, height, width]})
