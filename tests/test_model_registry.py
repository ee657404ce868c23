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
