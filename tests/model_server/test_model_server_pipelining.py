"""How the model server runs a request's images (model_server/tasks/vision.py and hf.py, model_server/cpus.py):
a batch's images decoded and preprocessed by the preparation threads (the next batch's while the model runs
this one when the CPUs suffice for both), the decoded images within the pixel budget, the forward pass in
torch's inference mode, torch's threads set for the CPUs the process may use. The answers themselves are the
pipeline's: tests/model_server/test_model_server_tasks.py compares them."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tiny_models import make_image_classifier

ROOT = Path(__file__).resolve().parents[2]


def jpeg(index: int, size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, ((index * 53) % 256, (index * 97) % 256, 90)).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipelining")
    make_image_classifier(root / "vit", seed=11)
    return root


def registry_of(root: Path, **limits):
    from model_server.registry import Limits, ModelRegistry
    from model_server.tasks.base import InferLimits

    batch_size = limits.pop("batch_size", 2)
    registry = ModelRegistry(root, batch_size, limits=Limits(infer=InferLimits(batch_size, **limits)))
    registry.load("vit", "vit", "image-classification")
    return registry


def request(files: list[bytes]):
    from model_server.protocol import InferRequest

    data = [base64.b64encode(f).decode() for f in files]
    return InferRequest.model_validate(
        {
            "inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}],
            "parameters": {"top_k": 2},
        }
    )


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_batch_is_prepared_while_the_model_runs_this_one(
    models_root: Path, monkeypatch: pytest.MonkeyPatch, overlap: bool
):
    from model_server.tasks.hf import TransformersModel

    registry = registry_of(models_root, prepare_threads=2, overlap=overlap)
    events: list[tuple[str, float, str]] = []
    preprocess, run_batch = TransformersModel.preprocess, TransformersModel.run_batch

    def slow_run_batch(self, items, forward, postprocess):
        events.append(("forward starts", time.monotonic(), threading.current_thread().name))
        time.sleep(0.3)
        try:
            return run_batch(self, items, forward, postprocess)
        finally:
            events.append(("forward ends", time.monotonic(), threading.current_thread().name))

    def recorded_preprocess(self, item, parameters):
        try:
            return preprocess(self, item, parameters)
        finally:
            events.append(("prepared", time.monotonic(), threading.current_thread().name))

    monkeypatch.setattr(TransformersModel, "run_batch", slow_run_batch)
    monkeypatch.setattr(TransformersModel, "preprocess", recorded_preprocess)
    files = [jpeg(i) for i in range(6)]
    outputs = registry.infer("vit", request(files))
    assert outputs[0].shape == [6, 2]
    starts = [t for kind, t, _ in events if kind == "forward starts"]
    ends = [t for kind, t, _ in events if kind == "forward ends"]
    assert len(starts) == len(ends) == 3
    prepared = [t for kind, t, _ in events if kind == "prepared"]
    assert len(prepared) == 6
    if overlap:  # each forward pass (0.3 s here) finds the next batch ready when it ends: prepared meanwhile
        assert sum(t < ends[0] for t in prepared) == 4, "batch 2 was not prepared during batch 1's forward"
        assert sum(ends[0] < t < ends[1] for t in prepared) == 2, "batch 3 was not prepared during batch 2's forward"
    else:  # each batch is prepared after the forward pass before it: they never compete for the CPUs
        assert [sum(t < end for t in prepared) for end in ends] == [2, 4, 6]
        assert all(not (start < t < end) for start, end in zip(starts, ends, strict=True) for t in prepared)
    assert {name for kind, _, name in events if kind == "prepared"} <= {f"prepare_{i}" for i in range(2)}


def test_the_next_batch_is_prepared_meanwhile_only_when_the_cpus_suffice_for_both(monkeypatch: pytest.MonkeyPatch):
    import torch

    from model_server import cpus
    from model_server.tasks.base import InferLimits

    monkeypatch.setattr(cpus, "available_cpus", lambda: 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert InferLimits(prepare_threads=2).overlaps()
        assert not InferLimits(prepare_threads=3).overlaps()
        assert not InferLimits().overlaps()  # one preparation thread per CPU: none left for torch
        assert InferLimits(overlap=True).overlaps() and not InferLimits(prepare_threads=1, overlap=False).overlaps()
    finally:
        torch.set_num_threads(threads)


def test_a_single_image_is_prepared_by_the_thread_that_runs_the_model(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
):
    from model_server.tasks.hf import TransformersModel

    registry = registry_of(models_root, prepare_threads=2)
    threads: list[str] = []
    preprocess = TransformersModel.preprocess

    def recorded(self, item, parameters):
        threads.append(threading.current_thread().name)
        return preprocess(self, item, parameters)

    monkeypatch.setattr(TransformersModel, "preprocess", recorded)
    registry.infer("vit", request([jpeg(0)]))
    assert threads == [threading.current_thread().name]  # no hand-off to a preparation thread and back


def test_the_answers_are_the_same_however_many_preparation_threads(models_root: Path):
    files = [jpeg(i, (30 + i, 20 + 2 * i)) for i in range(7)]
    answers = [registry_of(models_root, prepare_threads=threads).infer("vit", request(files)) for threads in (1, 3)]
    assert answers[0] == answers[1]


def test_images_being_decoded_hold_no_more_than_the_pixel_budget(models_root: Path, monkeypatch: pytest.MonkeyPatch):
    from model_server.tasks import vision
    from model_server.tasks.hf import TransformersModel

    registry = registry_of(models_root, batch_size=8, prepare_threads=4, max_image_pixels=2 * 40 * 30)
    held, most, guard = [0], [0], threading.Lock()
    open_image, preprocess = vision.open_image, TransformersModel.preprocess

    def counted_open(data, index):
        image = open_image(data, index)
        with guard:
            held[0] += image.width * image.height
            most[0] = max(most[0], held[0])
        return image

    def slow_preprocess(self, image, parameters):  # the image as an array (image-classification)
        time.sleep(0.05)
        try:
            return preprocess(self, image, parameters)
        finally:
            with guard:
                held[0] -= image.shape[0] * image.shape[1]

    monkeypatch.setattr(vision, "open_image", counted_open)
    monkeypatch.setattr(TransformersModel, "preprocess", slow_preprocess)
    registry.infer("vit", request([jpeg(i) for i in range(8)]))
    assert most[0] == 2 * 40 * 30, most  # two at once (of four threads): the budget, and no more
    most[0] = 0
    registry.infer("vit", request([jpeg(0, (60, 40)), jpeg(1), jpeg(2)]))  # one image the size of the budget: alone
    assert most[0] == 60 * 40


def test_a_pixel_budget_lets_an_image_larger_than_itself_through_alone():
    from model_server.tasks.vision import PixelBudget

    budget = PixelBudget(100)
    order: list[str] = []
    with budget.held(60):
        waiting = threading.Thread(target=lambda: budget.held(500).__enter__() or order.append("big"))
        waiting.start()
        time.sleep(0.1)
        order.append("small done")
    waiting.join(5)
    assert order == ["small done", "big"]


def test_an_undecodable_image_fails_the_request_and_nothing_of_it_goes_on(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
):
    from model_server.exceptions import InvalidInput
    from model_server.tasks.hf import TransformersModel

    registry = registry_of(models_root, prepare_threads=2)
    calls: list[float] = []
    preprocess = TransformersModel.preprocess

    def counted(self, image, parameters):
        time.sleep(0.05)
        calls.append(time.monotonic())
        return preprocess(self, image, parameters)

    monkeypatch.setattr(TransformersModel, "preprocess", counted)
    files = [jpeg(i) for i in range(8)]
    files[3] = b"\xff\xd8\xff\xe0 not really a JPEG"
    with pytest.raises(InvalidInput, match="item 3"):
        registry.infer("vit", request(files))
    done = len(calls)
    time.sleep(0.3)
    assert len(calls) == done, "the request's images were still being prepared after it failed"
    assert registry.infer("vit", request(files[:2]))[0].shape == [2, 2]  # and the model answers the next one


def test_the_forward_pass_runs_in_inference_mode(models_root: Path):
    import torch

    registry = registry_of(models_root)
    modes: list[bool] = []
    model = registry.ready("vit").pipeline.model
    hook = model.register_forward_pre_hook(lambda module, args: modes.append(torch.is_inference_mode_enabled()))
    try:
        registry.infer("vit", request([jpeg(i) for i in range(3)]))
    finally:
        hook.remove()
    assert modes == [True, True]  # two batches of at most 2


def test_the_cgroup_quota_caps_the_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from model_server import cpus

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.cgroup_cpu_quota(tmp_path) is None
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 1.5)
    assert cpus.available_cpus() == min(2, len(__import__("os").sched_getaffinity(0)))
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 0.2)
    assert cpus.available_cpus() == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "available"), ({"OMP_NUM_THREADS": "1"}, "1"), ({"CONSTELLATION_MODEL_SERVER_TORCH_THREADS": "3"}, "3")],
)
def test_torch_gets_the_threads_of_the_cpus_available(env: dict[str, str], expected: str):
    import os

    code = (
        "import torch\nfrom model_server.config import Settings\nfrom model_server.cpus import available_cpus, "
        "configure_torch\nconfigure_torch(Settings().torch_threads)\n"
        "print(torch.get_num_threads(), torch.get_num_interop_threads(), available_cpus())"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") and not k.startswith("CONSTELLATION_MODEL_SERVER_")
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    threads, interop, available = map(int, out)
    assert threads == (available if expected == "available" else int(expected))
    assert interop == 1


def test_a_float_output_that_json_cannot_carry_is_refused():
    from model_server.exceptions import InvalidInput
    from model_server.protocol import InferOutput
    from model_server.routes import finite

    finite(
        [
            InferOutput(name="label", shape=[1], datatype="BYTES", data=["nan"]),
            InferOutput(name="score", shape=[2], datatype="FP32", data=[0.5, 1]),
        ]
    )
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="'score' holds a value that is not a finite number"):
            finite([InferOutput(name="score", shape=[2], datatype="FP32", data=[0.5, bad])])


def rotated_jpeg() -> bytes:
    """40×30 pixels as stored, with EXIF orientation 6: 30×40 upright."""
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    image.paste((20, 20, 220), (0, 0, 10, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_an_image_is_classified_upright_as_the_pipeline_does(models_root: Path):
    from transformers import pipeline

    registry = registry_of(models_root)
    files = [rotated_jpeg(), jpeg(1), jpeg(2, (16, 50))]
    outputs = registry.infer("vit", request(files))
    expected = pipeline("image-classification", model=str(models_root / "vit"))(
        [Image.open(io.BytesIO(f)) for f in files], top_k=2, batch_size=2
    )
    assert outputs[0].data == [a["label"] for answer in expected for a in answer]
    assert outputs[1].data == pytest.approx([a["score"] for answer in expected for a in answer], abs=1e-6)


def test_a_segmentation_mask_has_the_upright_images_size(tmp_path: Path):
    from model_server.registry import ModelRegistry
    from tiny_models import make_semantic_segmenter

    make_semantic_segmenter(tmp_path / "seg", seed=2)
    registry = ModelRegistry(tmp_path, 2)
    registry.load("seg", "seg", "image-segmentation")
    (mask,) = registry.infer("seg", request([rotated_jpeg(), jpeg(0)]))
    sizes = [Image.open(io.BytesIO(base64.b64decode(m))).size for m in mask.data]
    assert sizes == [(30, 40), (40, 30)]
