"""Models over many bands end to end (issue 19): the sample scene tiled, two 4-band ONNX segmenters deployed on the
real model server, their masks put back together by mosaic, through the real stack. The mosaics lie exactly on
the scene's grid and hold what ONNX Runtime in this process predicts on the same tiles, nodata where the scene
has none."""

from __future__ import annotations

import io

import httpx
import numpy as np
import onnxruntime
import pytest
import rasterio
from rasterio.windows import Window

from harness import Stack
from sample_data import write_eo_samples
from sample_models import land_cover_segmenter

pytestmark = pytest.mark.e2e

MODELS = {"land-cover-a": "a", "land-cover-b": "b"}


def segmented(model: str) -> dict:
    tiles = {
        "operation": "tile_image",
        "parameters": {
            "tile_width": 256,
            "tile_height": 256,
            "data": {"operation": "import_from_local", "parameters": {"path": "samples-eo/scene.tif"}},
        },
    }
    return {
        "operation": "mosaic",
        "parameters": {
            "data": {"operation": "model_inference", "parameters": {"model": model, "data": tiles, "batch_size": 3}}
        },
    }


def test_two_band_models_segment_the_scene_back_onto_its_grid(stack: Stack, api: httpx.Client, tmp_path):
    folder = write_eo_samples(stack.data_root)
    deploys = [
        {
            "operation": "deploy_model",
            "parameters": {"model": name, "task": "image-segmentation", "source": f"{name}.onnx"},
        }
        for name in MODELS
    ]
    launched = api.post("/execute", json={"instructions": [*deploys, *(segmented(m) for m in MODELS)]}).json()
    assert launched["status"] == "success", launched
    run = stack.wait_for_run(launched["run_id"], timeout_s=180)
    assert run["run_status"] == "SUCCESS", run
    results = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    mosaics = [r["output"]["files"] for r in results if r["operation"] == "mosaic"]
    assert [len(files) for files in mosaics] == [1, 1]
    with rasterio.open(folder / "scene.tif") as scene:
        pixels, valid, grid = scene.read().astype(np.float32), scene.dataset_mask() > 0, scene.profile
        windows = [Window(col, row, 256, 256) for row in (0, 256) for col in (0, 256)]
    masks = []
    for (mosaic,), variant in zip(mosaics, MODELS.values(), strict=True):
        session = onnxruntime.InferenceSession(
            str(land_cover_segmenter(tmp_path / f"{variant}.onnx", variant)), providers=["CPUExecutionProvider"]
        )
        expected = np.full(pixels.shape[1:], 255, dtype=np.uint8)
        for window in windows:  # the same tiles the pipeline cut, each run on its own
            rows, cols = window.toslices()
            (logits,) = session.run(None, {"bands": pixels[None, :, rows, cols]})
            expected[rows, cols] = logits[0].argmax(axis=0)
        expected[~valid] = 255
        with rasterio.open(io.BytesIO(stack.fetch(mosaic["uri"]))) as got:
            assert (got.crs, got.transform, got.width, got.height) == (
                grid["crs"],
                grid["transform"],
                grid["width"],
                grid["height"],
            )
            assert (got.count, got.dtypes[0], got.nodata) == (1, "uint8", 255)
            mask = got.read(1)
        np.testing.assert_array_equal(mask, expected)
        masks.append(mask)
    assert 0.05 < np.mean(masks[0][valid] != masks[1][valid]) < 0.2, "the two sample models should differ by ~10 %"
