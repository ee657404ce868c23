"""Rasters end to end (issue 19): a satellite scene cut into tiles, two bands kept, NDVI computed, through
the real stack; the results show each tile's raster facts and the files hold what NumPy computes."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import rasterio

from harness import Stack
from sample_data import write_eo_samples

pytestmark = pytest.mark.e2e


def test_tiles_bands_and_ndvi_keep_their_place_on_earth_in_the_results(stack: Stack, api: httpx.Client):
    folder = write_eo_samples(stack.data_root)
    imported = {"operation": "import_from_local", "parameters": {"path": "samples-eo/scene.tif"}}
    tiles = {"operation": "tile_image", "parameters": {"data": imported, "tile_width": 256, "tile_height": 256}}
    bands = {"operation": "select_bands", "parameters": {"data": tiles, "bands": ["B04", "B08"]}}
    ndvi = {
        "operation": "spectral_index",
        "parameters": {"data": bands, "index": "NDVI", "bands": {"N": "B08", "R": "B04"}},
    }
    launched = api.post("/execute", json={"instructions": [ndvi]}).json()
    assert launched["status"] == "success", launched
    run = stack.wait_for_run(launched["run_id"], timeout_s=120)
    assert run["run_status"] == "SUCCESS", run
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    files = result["output"]["files"]
    assert [f["name"] for f in files] == [
        "scene/x0_y0.tif",
        "scene/x256_y0.tif",
        "scene/x0_y256.tif",
        "scene/x256_y256.tif",
    ]
    last = files[3]
    assert {key: last[key] for key in ("crs", "transform", "width", "height", "bands", "dtype", "nodata", "tile")} == {
        "crs": "EPSG:32633",
        "transform": [10.0, 0.0, 502560.0, 0.0, -10.0, 4647440.0],
        "width": 256,
        "height": 256,
        "bands": ["NDVI"],
        "dtype": "float32",
        "nodata": -9999.0,
        "tile": {"source": "scene.tif", "col_off": 256, "row_off": 256, "width": 256, "height": 256},
    }
    with rasterio.open(io.BytesIO(stack.fetch(last["uri"]))) as got, rasterio.open(folder / "scene.tif") as scene:
        source = scene.read(window=((256, 512), (256, 512))).astype(np.float32) * np.float32(1e-4)
        assert got.transform == scene.window_transform(((256, 512), (256, 512))) and got.crs == scene.crs
        pixels = got.read(1)
    nir, red = source[3], source[2]
    valid = nir > 0
    with np.errstate(invalid="ignore"):  # 0/0 on the nodata frame
        expected = (nir - red) / (nir + red)
    np.testing.assert_allclose(pixels[valid], expected[valid], rtol=1e-6)
    assert (pixels[~valid] == -9999.0).all()
