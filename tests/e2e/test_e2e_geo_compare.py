"""compare_models on the Earth through the real stack (issue 20): sample_dags.txt's comparison of the two land-cover
models against the sample labels as GeoJSON (with regions) and as a label raster, checked against scikit-learn on
the scene GeoTIFFs the results link."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import rasterio
from sklearn.metrics import confusion_matrix

from harness import Stack
from sample_data import EO_CLASSES, write_eo_samples
from samples import sample_with

pytestmark = pytest.mark.e2e


def test_two_land_cover_models_against_geojson_and_a_label_raster(stack: Stack, api: httpx.Client, browser):
    folder = write_eo_samples(stack.data_root)
    body = sample_with("samples-eo/labels.geojson", "samples-eo/labels.tif", "regions.geojson")
    launched = api.post("/execute", json=body).json()
    assert launched["status"] == "success", launched
    run = stack.wait_for_run(launched["run_id"], timeout_s=180)
    assert run["run_status"] == "SUCCESS", (run, stack.log_tail())
    results = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    outputs = [r["output"] for r in results if isinstance(r["output"], dict)]
    by_geojson, by_raster = [output for output in outputs if output.get("type") == "Comparison"]
    with rasterio.open(folder / "labels.tif") as src:
        labels = src.read(1)
    predicted = {}
    for name in ("land-cover-a", "land-cover-b"):
        with rasterio.open(io.BytesIO(stack.fetch(by_raster["files"][f"maps/scene/{name}.tif"]))) as src:
            predicted[name] = src.read(1)
    scored = (labels != 255) & (predicted["land-cover-a"] != 255) & (predicted["land-cover-b"] != 255)
    for comparison in (by_geojson, by_raster):
        assert comparison["scored_pixels"] == int(scored.sum())
        assert comparison["ignored_pixels"] == labels.size - int(scored.sum())
        for model in comparison["models"]:
            matrix = confusion_matrix(labels[scored], predicted[model["model"]][scored], labels=[0, 1, 2])
            diag, union = np.diag(matrix), matrix.sum(axis=0) + matrix.sum(axis=1) - np.diag(matrix)
            iou = {EO_CLASSES[c]: diag[c] / union[c] for c in range(3) if union[c]}
            assert model["per_class_iou"] == pytest.approx(iou, abs=1e-12)
            assert model["miou"] == pytest.approx(np.mean(list(iou.values())), abs=1e-12)
    assert by_geojson["models"] == by_raster["models"]
    assert by_geojson["best"] == "land-cover-a"
    assert [r["region"] for r in by_geojson["regions"]] == ["north", "south"]
    assert "regions" in by_geojson["verdict"]
    with rasterio.open(io.BytesIO(stack.fetch(by_geojson["files"]["maps/scene/disagreement.tif"]))) as src:
        disagreement = src.read(1)
    both = (predicted["land-cover-a"] != 255) & (predicted["land-cover-b"] != 255)
    np.testing.assert_array_equal(
        disagreement, np.where(both, predicted["land-cover-a"] != predicted["land-cover-b"], 255)
    )
    page = api.get(f"/runs/{run['run_id']}/report", params={"path": results[2]["path"]})
    assert page.status_code == 200
    assert "On the map" in page.text and "By region" in page.text and page.text.count("data:image/png") >= 5
    # Like every report, the page names its run and holds the pipeline it was launched with (issue 22).
    assert f"run <code>{run['run_id']}</code>" in page.text
    assert f"The request body run {run['run_id']} was launched with" in page.text and "labels.geojson" in page.text
    # The page's GeoTIFF links download in a real browser (the gateway serves the page sandboxed, scripts off).
    context = browser.new_context(accept_downloads=True)
    try:
        tab = context.new_page()
        tab.goto(str(page.url))
        with tab.expect_download(timeout=30_000) as download:
            tab.locator("a[download]", has_text="disagreement").first.click()
        with rasterio.open(download.value.path()) as src:
            np.testing.assert_array_equal(src.read(1), disagreement)
    finally:
        context.close()
