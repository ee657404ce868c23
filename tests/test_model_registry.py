"""The model registry alone, in this process: no web server between the test and the models."""

from __future__ import annotations

import io
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from services_models import FOLDER_MODEL
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
    assert [r.getMessage() for r in caplog.records].count(f"loading model b from {FOLDER_MODEL} "
                                                          f"({registry.models_root / FOLDER_MODEL})") == 1


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
    request = InferRequest.model_validate({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                       "data": [image]}]})
    (mask,) = registry.infer("seg", request)
    decoded = Image.open(io.BytesIO(base64.b64decode(mask.data[0])))
    assert decoded.mode.startswith("I") and decoded.size == (20, 20)
    assert set(np.unique(np.asarray(decoded)).tolist()) <= set(range(300))
