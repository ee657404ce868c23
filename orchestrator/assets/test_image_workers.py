"""The image ops on worker processes (`images.map_images`): order, errors, cancellation, bounds."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from PIL import Image

from orchestrator.assets import ops
from orchestrator.datasets import FileDict, FileRef
from orchestrator.engine import OperationError, RunContext
from orchestrator.transforms import images

COUNT = 40  # over PROCESS_MIN_IMAGES: the ops fork their workers


@pytest.fixture(autouse=True)
def two_workers(monkeypatch):
    """Two worker processes even on a one-core machine; and no worker left behind by any test.

    Servers that other tests of the session started (a model server, a Dagster stack) are
    children too: only a process that was not there before the test counts.
    """
    monkeypatch.setattr(images, "IMAGE_WORKERS", 2)
    before = set(psutil.Process().children(recursive=True))
    yield
    assert [child for child in psutil.Process().children(recursive=True) if child not in before] == []


@pytest.fixture
def photos(data: Path) -> FileDict:
    folder = data / "photos"
    folder.mkdir()
    for i in range(COUNT):
        Image.new("RGB", (96 + i, 64), (i * 6, 100, 200 - i * 4)).save(folder / f"p{i:02d}.jpg", quality=90)
    return FileDict({p.name: p for p in folder.iterdir()})


def refs(count: int, folder: Path) -> list[FileRef]:
    return [FileRef(f"f{i:03d}", folder / f"f{i:03d}") for i in range(count)]


def test_a_long_list_is_prepared_on_worker_processes_in_input_order(tmp_path: Path):
    def where(ref: FileRef) -> list[FileRef]:
        time.sleep(0.005)  # as an image takes: an idle worker takes the next run, so both get some
        return [FileRef(ref.name, ref.path, {"pid": os.getpid()})]

    done = images.map_images(refs(100, tmp_path), where)
    assert [ref.name for ref in done] == [f"f{i:03d}" for i in range(100)]
    pids = {ref.meta["pid"] for ref in done}
    assert len(pids) == 2 and os.getpid() not in pids


def test_a_worker_is_replaced_by_a_fresh_fork_after_its_share_of_images(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(images, "WORKER_IMAGES", 20)

    def where(ref: FileRef) -> list[FileRef]:
        return [FileRef(ref.name, ref.path, {"pid": os.getpid()})]

    done = images.map_images(refs(400, tmp_path), where)
    assert [ref.name for ref in done] == [f"f{i:03d}" for i in range(400)]
    pids = [ref.meta["pid"] for ref in done]
    # handed whole runs: at most one run past its share
    assert len(set(pids)) > 2 and max(pids.count(pid) for pid in set(pids)) < 20 + images.RUN_IMAGES


def test_a_short_list_stays_on_threads(tmp_path: Path):
    def where(ref: FileRef) -> list[FileRef]:
        return [FileRef(ref.name, ref.path, {"pid": os.getpid()})]

    done = images.map_images(refs(images.PROCESS_MIN_IMAGES - 1, tmp_path), where)
    assert {ref.meta["pid"] for ref in done} == {os.getpid()}


def test_results_share_the_names_and_facts_of_their_inputs(tmp_path: Path):
    inputs = [FileRef(f"f{i:03d}", tmp_path / "x", {"label": "cat"}) for i in range(50)]
    done = images.map_images(inputs, lambda ref: [FileRef(ref.name, tmp_path / "y", dict(ref.meta))])
    assert all(out.name is ref.name and out.meta is ref.meta for out, ref in zip(done, inputs, strict=True))


def test_processes_write_the_same_files_as_threads(ctx: RunContext, photos: FileDict, monkeypatch):
    on_processes = ops.resize_image(ctx, ops.dict_to_list(ctx, photos), width=50, height=30)
    monkeypatch.setattr(images, "PROCESS_MIN_IMAGES", 10_000)
    threaded_ctx = RunContext(run_dir=ctx.run_dir, resources=ctx.resources, node_key="threads")
    on_threads = ops.resize_image(threaded_ctx, ops.dict_to_list(ctx, photos), width=50, height=30)
    assert [r.name for r in on_processes] == [r.name for r in on_threads] == sorted(photos.files)
    for a, b in zip(on_processes, on_threads, strict=True):
        assert a.path == ctx.node_dir.resolve() / a.name and b.path == threaded_ctx.node_dir.resolve() / b.name
        assert a.path.read_bytes() == b.path.read_bytes()
        with Image.open(a.path) as image:
            assert image.size == (50, 30) and image.format == "JPEG"


@pytest.mark.parametrize(
    "op, parameters",
    [
        (ops.convert_image, {"mode": "L", "format": "PNG"}),
        (ops.crop_image, {"left": 1, "top": 2, "width": 10, "height": 20}),
        (ops.tile_image, {"tile_width": 64, "tile_height": 64}),
        (ops.normalize_image, {}),
    ],
)
def test_every_image_op_gives_on_processes_what_it_gives_on_threads(
    ctx: RunContext, photos: FileDict, monkeypatch, op, parameters
):
    listed = ops.dict_to_list(ctx, photos)
    on_processes = op(ctx, listed, **parameters)
    monkeypatch.setattr(images, "PROCESS_MIN_IMAGES", 10_000)
    on_threads = op(RunContext(run_dir=ctx.run_dir, resources=ctx.resources, node_key="threads"), listed, **parameters)
    assert len(on_processes) >= COUNT
    assert [(r.name, r.meta) for r in on_processes] == [(r.name, r.meta) for r in on_threads]
    assert all(a.path.read_bytes() == b.path.read_bytes() for a, b in zip(on_processes, on_threads, strict=True))


def test_the_first_failure_in_input_order_names_its_image(ctx: RunContext, data: Path, photos: FileDict):
    for name in ("p10.jpg", "p30.jpg"):
        (data / "photos" / name).write_bytes(b"not an image")
    with pytest.raises(OperationError, match="'p10.jpg' is not a readable image"):
        ops.resize_image(ctx, ops.dict_to_list(ctx, photos), width=8, height=8)


def test_the_pixel_cap_is_checked_in_the_workers(ctx: RunContext, photos: FileDict):
    workspace = ctx.resources.workspace.model_copy(update={"max_image_pixels": 96 * 64})  # all but the first over it
    capped = RunContext(run_dir=ctx.run_dir, resources=SimpleNamespace(workspace=workspace))
    with pytest.raises(OperationError, match="'p01.jpg' is 97×64 pixels, over the limit of 6144"):
        ops.resize_image(capped, ops.dict_to_list(ctx, photos), width=8, height=8)


def test_an_error_keeps_its_type_and_the_workers_traceback(tmp_path: Path):
    def full(ref: FileRef) -> list[FileRef]:
        if ref.name == "f017":
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f017.jpg"))
        return [ref]

    with pytest.raises(OSError) as raised:
        images.map_images(refs(40, tmp_path), full)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename.endswith("f017.jpg")
    assert "in full" in str(raised.value.__cause__)  # where it happened, in the worker


def test_an_error_that_cannot_be_pickled_still_names_the_image(tmp_path: Path):
    class Odd(Exception):
        def __init__(self, lock):
            super().__init__("odd")
            self.lock = lock

    def odd(ref: FileRef) -> list[FileRef]:
        if ref.name == "f005":
            raise Odd(threading.Lock())
        return [ref]

    with pytest.raises(OperationError, match="'f005': Odd: odd"):
        images.map_images(refs(40, tmp_path), odd)


def test_a_result_that_cannot_be_pickled_names_the_image(tmp_path: Path):
    def locked(ref: FileRef) -> list[FileRef]:
        return [FileRef(ref.name, ref.path, {"lock": threading.Lock()} if ref.name == "f021" else {})]

    with pytest.raises(OperationError, match="'f021': its result cannot be sent back"):
        images.map_images(refs(40, tmp_path), locked)


def test_a_worker_that_dies_names_the_image_it_held(tmp_path: Path):
    def crash(ref: FileRef) -> list[FileRef]:
        if ref.name == "f023":
            os._exit(7)
        return [ref]

    with pytest.raises(OperationError, match="'f023': the process preparing it ended unexpectedly \\(exit code 7"):
        images.map_images(refs(40, tmp_path), crash)


def test_cancelling_stops_the_workers_at_once(ctx: RunContext, tmp_path: Path):
    def slow(ref: FileRef) -> list[FileRef]:
        time.sleep(0.2)
        return [ref]

    threading.Timer(0.5, ctx.cancelled.set).start()
    start = time.monotonic()
    with pytest.raises(OperationError, match="stopped: the run is being cancelled"):
        images.map_images(refs(400, tmp_path), slow, ctx.check_cancelled)
    assert time.monotonic() - start < 2.0  # not the 40 s of work, nor the 3 s of the runs in hand


def test_workers_leave_when_their_parent_is_killed(tmp_path: Path):
    script = textwrap.dedent(
        """
        import time
        from pathlib import Path
        from orchestrator.transforms import images
        from orchestrator.datasets import FileRef

        def slow(ref):
            time.sleep(0.1)
            return [ref]

        images.IMAGE_WORKERS = 2
        images.map_images([FileRef(str(i), Path(str(i))) for i in range(1000)], slow)
        """
    )
    root = Path(images.__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=root)
    try:
        deadline = time.monotonic() + 30
        while len(workers := psutil.Process(parent.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []


def test_work_runs_ahead_of_a_slow_image_by_a_bounded_number(tmp_path: Path):
    """Memory is bounded by the images in flight: one slow image does not let the rest run through the dataset."""
    started = tmp_path / "started"
    started.mkdir()

    def mark(ref: FileRef) -> list[FileRef]:
        (started / ref.name).touch()
        if ref.name == "f000":
            time.sleep(1.5)
            return [FileRef(ref.name, ref.path, {"seen": len(list(started.iterdir()))})]
        return [ref]

    done = images.map_images(refs(1000, tmp_path), mark)
    size = images.RUN_IMAGES
    assert done[0].meta["seen"] <= images.RUNS_AHEAD * 2 * size  # the runs handed out while the first is in hand
    assert len(done) == 1000


def test_distinct_names_grows_linearly_with_the_dataset():
    def seconds(count: int) -> float:
        names = [f"folder/img_{i:06d}.png" for i in range(count)]
        start = time.perf_counter()
        derived = images.distinct_names(names, lambda name: images.converted_name(name, "JPEG"))
        assert derived[:2] == ["folder/img_000000.jpg", "folder/img_000001.jpg"]
        return time.perf_counter() - start

    small, large = min(seconds(5_000) for _ in range(3)), min(seconds(50_000) for _ in range(3))
    assert large < 30 * small  # 10× the names: about 10× the time (it compared each with every earlier one: 100×)


@pytest.mark.parametrize("name", ["../escape.png", "a/../../escape.png", "/etc/passwd"])
def test_an_output_name_leading_out_of_the_folder_is_refused(tmp_path: Path, name: str):
    with pytest.raises(OperationError, match="would be written outside the run's folder"):
        images.output_path(tmp_path, name)


def test_an_output_name_with_folders_stays_inside(tmp_path: Path):
    assert images.output_path(tmp_path, "a/./b/../c.png") == tmp_path.resolve() / "a" / "c.png"
