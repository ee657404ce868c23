"""The model registry alone, in this process: no web server between the test and the models."""

from __future__ import annotations

import base64
import io
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from services_models import FOLDER_MODEL, MID_MODEL
from tiny_models import FIRE_LABELS


@pytest.fixture
def registry(models_env: dict[str, str]):
    from model_server.registry import ModelRegistry

    return ModelRegistry(Path(models_env["CONSTELLATION_MODELS_ROOT"]), batch_size=2)


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(out, format="PNG")
    return out.getvalue()


def test_unload_drops_every_reference_to_the_model(registry):
    entry = registry.load("b", FOLDER_MODEL, "image-classification")
    k, results = registry.classify("b", [png((200, 0, 0)), png((0, 200, 0)), png((0, 0, 200))], top_k=2)
    assert k == 2 and len(results) == 3 and all({label for label, _ in row} <= set(FIRE_LABELS) for row in results)
    model = weakref.ref(entry.pipeline.model)
    registry.unload("b")
    assert model() is None, "something still holds the unloaded model"


def test_concurrent_loads_build_one_pipeline(registry, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="model_server.registry")
    with ThreadPoolExecutor(6) as pool:
        states = list(pool.map(lambda _: registry.load("b", FOLDER_MODEL, "image-classification").state, range(6)))
    assert states == ["READY"] * 6
    assert [r.getMessage() for r in caplog.records].count(
        f"loading model b from {FOLDER_MODEL} ({registry.models_root / FOLDER_MODEL})"
    ) == 1


def test_sources_are_confined_to_the_models_root(registry):
    from model_server.registry import InvalidRequest

    assert registry.resolve(FOLDER_MODEL) == str(registry.models_root / FOLDER_MODEL)
    assert registry.resolve("Org/some-model") == "Org/some-model"  # a Hugging Face id
    for source in ("/etc", "../x", f"{FOLDER_MODEL}/../../x", "", " padded"):
        with pytest.raises(InvalidRequest):
            registry.resolve(source)


def test_unload_drops_an_onnx_session(tmp_path: Path):
    from model_server.registry import ModelRegistry
    from tiny_models import make_tabular_regressor

    make_tabular_regressor(tmp_path / "reg.onnx")
    registry = ModelRegistry(tmp_path)
    entry = registry.load("reg", "reg.onnx", "tabular-regression")
    session = weakref.ref(entry.pipeline)
    registry.unload("reg")
    assert session() is None, "something still holds the unloaded ONNX Runtime session"


def test_a_segmenter_of_more_than_256_classes_answers_16_bit_masks(tmp_path: Path):
    import base64

    import numpy as np

    from model_server.protocol import InferRequest
    from model_server.registry import ModelRegistry
    from tiny_models import make_semantic_segmenter

    make_semantic_segmenter(tmp_path / "seg", labels=tuple(f"class {i}" for i in range(300)))
    registry = ModelRegistry(tmp_path)
    registry.load("seg", "seg", "image-segmentation")
    image = base64.b64encode(png((200, 30, 90))).decode()
    request = InferRequest.model_validate(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}]}
    )
    (mask,) = registry.infer("seg", request)
    decoded = Image.open(io.BytesIO(base64.b64decode(mask.data[0])))
    assert decoded.mode.startswith("I") and decoded.size == (20, 20)
    assert set(np.unique(np.asarray(decoded)).tolist()) <= set(range(300))


# One copy per source, caps on copies and their memory, leases: the registry alone, on a clock the test moves.


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def leased_registry(root: str, clock: Clock | None = None, **limits):
    from model_server.registry import Limits, ModelRegistry

    return ModelRegistry(Path(root), batch_size=2, limits=Limits(**limits), clock=clock or Clock())


def test_one_source_under_many_names_is_one_copy(models_env: dict[str, str], caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="model_server.registry")
    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"])
    entries = [registry.load(f"copy-{i}", FOLDER_MODEL, "image-classification") for i in range(20)]
    assert len({id(e.model) for e in entries}) == 1 and len(registry.loaded_models()) == 1
    assert sum("loading model copy-" in r.getMessage() for r in caplog.records) == 1
    model = weakref.ref(entries[0].pipeline.model)
    for i in range(19):
        registry.unload(f"copy-{i}")
    assert registry.classify("copy-19", [png((10, 200, 30))], top_k=1)[0] == 1, "the last name lost its model"
    registry.unload("copy-19")
    assert model() is None and registry.loaded_models() == []


def test_the_same_source_for_another_task_is_another_copy(models_env: dict[str, str]):
    from model_server.registry import LoadFailed

    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"])
    registry.load("a", FOLDER_MODEL, "image-classification")
    with pytest.raises(LoadFailed, match="not text-classification"):
        registry.load("b", FOLDER_MODEL, "text-classification")
    assert [m.key[1] for m in registry.loaded_models()] == ["image-classification"]


def test_another_source_under_a_loaded_name_is_refused_not_swapped(models_env: dict[str, str]):
    from model_server.exceptions import ModelConflict

    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"])
    registry.load("m", FOLDER_MODEL, "image-classification", lease="run-1")
    labels_before = registry.classify("m", [png((200, 0, 0))], top_k=3)
    with pytest.raises(ModelConflict) as refused:
        registry.load("m", MID_MODEL, "image-classification", lease="run-2")
    message = str(refused.value)
    assert all(words in message for words in (repr(FOLDER_MODEL), repr(MID_MODEL), "run-1", "another name")), message
    assert registry.classify("m", [png((200, 0, 0))], top_k=3) == labels_before, "the model under run-1 changed"
    assert registry.ready("m").source == FOLDER_MODEL and set(registry.ready("m").leases) == {"run-1"}
    registry.unload("m", lease="run-1")
    assert registry.load("m", MID_MODEL, "image-classification").source == MID_MODEL  # once let go of, it may


def test_the_cap_on_models_names_itself(models_env: dict[str, str]):
    from model_server.exceptions import TooManyModels

    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"], max_models=1)
    registry.load("a", FOLDER_MODEL, "image-classification")
    registry.load("a-again", FOLDER_MODEL, "image-classification")  # the same copy: no new model
    with pytest.raises(TooManyModels, match="CONSTELLATION_MODEL_SERVER_MAX_MODELS=1"):
        registry.load("b", MID_MODEL, "image-classification")
    assert registry.index()[-1].state == "UNAVAILABLE" and "MAX_MODELS" in registry.index()[-1].reason
    registry.unload("a")
    registry.unload("a-again")
    registry.load("b", MID_MODEL, "image-classification")


def test_the_cap_on_names_counts_loaded_names(models_env: dict[str, str]):
    from model_server.exceptions import TooManyModels

    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"], max_names=2)
    registry.load("a", FOLDER_MODEL, "image-classification")
    registry.load("b", FOLDER_MODEL, "image-classification")
    with pytest.raises(TooManyModels, match="CONSTELLATION_MODEL_SERVER_MAX_NAMES=2"):
        registry.load("c", FOLDER_MODEL, "image-classification")


def test_a_model_too_big_for_the_memory_cap_is_refused_before_it_loads(
    models_env: dict[str, str], caplog: pytest.LogCaptureFixture
):
    from model_server.exceptions import OutOfModelMemory
    from model_server.registry import weights_on_disk

    caplog.set_level(logging.INFO, logger="model_server.registry")
    root = Path(models_env["CONSTELLATION_MODELS_ROOT"])
    on_disk = weights_on_disk(str(root / MID_MODEL), "image-classification")
    assert on_disk is not None and on_disk > 40e6  # mid-vit: about 12 M float32 weights
    registry = leased_registry(str(root), max_model_bytes=int(on_disk) - 1)
    with pytest.raises(OutOfModelMemory) as refused:
        registry.load("big", MID_MODEL, "image-classification")
    assert "CONSTELLATION_MODEL_SERVER_MAX_MODEL_BYTES" in str(refused.value) and MID_MODEL in str(refused.value)
    assert not any("loading model big" in r.getMessage() for r in caplog.records), "it was loaded before the refusal"
    # Room for it alone, not beside a small model already loaded.
    registry = leased_registry(str(root), max_model_bytes=int(on_disk) + 1000)
    registry.load("small", FOLDER_MODEL, "image-classification")
    with pytest.raises(OutOfModelMemory, match=r"with the 0\.\d MB of the models loaded"):
        registry.load("big", MID_MODEL, "image-classification")
    registry.unload("small")
    assert registry.load("big", MID_MODEL, "image-classification").weight_bytes >= on_disk * 0.9


def test_a_model_bigger_in_memory_than_on_disk_is_refused_after_loading(
    models_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    import model_server.registry as registry_module
    from model_server.exceptions import OutOfModelMemory

    monkeypatch.setattr(registry_module, "weights_on_disk", lambda location, task: None)  # e.g. an id not cached
    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"], max_model_bytes=1_000_000)
    with pytest.raises(OutOfModelMemory, match="in memory"):
        registry.load("big", MID_MODEL, "image-classification")
    assert registry.loaded_models() == [] and registry.index()[0].state == "UNAVAILABLE"


def test_two_leases_share_a_model_until_the_last_lets_go(models_env: dict[str, str]):
    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"])
    registry.load("shared", FOLDER_MODEL, "image-classification", lease="run-a")
    registry.load("shared", FOLDER_MODEL, "image-classification", lease="run-b")
    assert set(registry.ready("shared").leases) == {"run-a", "run-b"}
    after_a = registry.unload("shared", lease="run-a")
    assert (after_a.state, after_a.leases) == ("READY", 1)
    assert registry.classify("shared", [png((0, 0, 200))], top_k=1)[0] == 1  # run-b still infers
    assert registry.unload("shared", lease="run-a").leases == 1  # letting go twice changes nothing
    after_b = registry.unload("shared", lease="run-b")
    assert after_b.state == "UNAVAILABLE"
    assert "last lease (run-b)" in registry.index()[0].reason and registry.loaded_models() == []


def test_expired_leases_free_the_model_and_renewals_keep_it(models_env: dict[str, str]):
    from model_server.protocol import InferRequest

    clock = Clock()
    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"], clock, lease_ttl_s=60)
    registry.load("idle", FOLDER_MODEL, "image-classification", lease="crashed-run")
    registry.load("busy", FOLDER_MODEL, "image-classification", lease="live-run", lease_ttl_s=60)
    image = base64.b64encode(png((1, 2, 3))).decode()
    request = InferRequest.model_validate(
        {
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}],
            "parameters": {"lease": "live-run"},
        }
    )
    for _ in range(3):  # 3 x 40 s: past the TTL for the idle one; the busy one renews on each inference
        clock.now += 40
        registry.infer("busy", request)
        registry.sweep()
    assert registry.ready("busy").state == "READY"
    assert registry.index()[1].state == "UNAVAILABLE" and "every lease expired" in registry.index()[1].reason
    assert "crashed-run" in registry.index()[1].reason
    registry.renew("busy", "live-run", lease_ttl_s=500)
    clock.now += 400
    assert registry.sweep() == [] and registry.ready("busy").state == "READY"
    clock.now += 101
    assert registry.sweep() == ["busy"] and registry.loaded_models() == []


def test_a_load_without_a_lease_pins_and_a_plain_unload_unloads_whoever_holds_it(models_env: dict[str, str]):
    clock = Clock()
    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"], clock, lease_ttl_s=10)
    registry.load("pinned", FOLDER_MODEL, "image-classification")  # Triton's load: no lease
    registry.load("pinned", FOLDER_MODEL, "image-classification", lease="run-a")
    assert registry.unload("pinned", lease="run-a").state == "READY"  # the pin holds it
    clock.now += 1000
    assert registry.sweep() == []
    registry.load("pinned", FOLDER_MODEL, "image-classification", lease="run-b")
    assert registry.unload("pinned").state == "UNAVAILABLE"  # the protocol's unload: outright, run-b or not


def test_image_headers_are_checked_before_anything_is_decoded(models_env: dict[str, str]):
    import struct
    import zlib

    from model_server.exceptions import ImageTooLarge
    from model_server.protocol import InferRequest

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    def header_only_png(width: int, height: int) -> bytes:  # says its size; its pixels are not there
        header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")

    registry = leased_registry(models_env["CONSTELLATION_MODELS_ROOT"], max_models=2)
    registry.load("px", FOLDER_MODEL, "image-classification")

    def infer(*images: bytes) -> None:
        data = [base64.b64encode(i).decode() for i in images]
        registry.infer(
            "px",
            InferRequest.model_validate(
                {"inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}]}
            ),
        )

    with pytest.raises(ImageTooLarge, match="item 1 is 7000x7000 = 49,000,000 pixels.*MAX_IMAGE_PIXELS"):
        infer(png((1, 1, 1)), header_only_png(7000, 7000))
    # Past Pillow's own bomb cap (twice Image.MAX_IMAGE_PIXELS, which the process may have raised): too large too.
    with pytest.raises(ImageTooLarge, match="item 0 (is 30000x30000|has too many pixels)"):
        infer(header_only_png(30000, 30000))
    with pytest.raises(ImageTooLarge, match="8 images hold 288,000,000 pixels.*MAX_REQUEST_PIXELS"):
        infer(*[header_only_png(6000, 6000)] * 8)


def test_images_are_decoded_in_batches_of_count_and_pixels():
    from model_server.tasks.vision import pixel_batches

    assert list(pixel_batches([1] * 5, 2, 100)) == [range(0, 2), range(2, 4), range(4, 5)]
    assert list(pixel_batches([30, 30, 50, 10, 100], 8, 60)) == [range(0, 2), range(2, 4), range(4, 5)]
    assert list(pixel_batches([], 8, 60)) == []
