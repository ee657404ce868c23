"""Earth-observation ops fed what satellite imagery really holds (masks instead of nodata, class ids of any
integer type, float masks): each result is checked against rasterio and NumPy on the same data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from harness import write_geotiff
from orchestrator.assets import ops
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileList, FileRef
from orchestrator.engine import OperationError, RunContext

GRID = from_origin(500_000, 4_650_000, 10, 10)


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    workspace = Workspace(data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "art"))
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))


def node(ctx: RunContext, key: str) -> RunContext:
    return dataclasses.replace(ctx, node_key=key)


def geotiff(path: Path, data: np.ndarray, nodata: float | None = None, mask: np.ndarray | None = None) -> FileList:
    return FileList([FileRef(path.name, write_geotiff(path, data, GRID, nodata=nodata, mask=mask))])


# A scene with an internal mask (no nodata value): its first 10 rows are not valid.


@pytest.fixture
def masked(tmp_path: Path) -> tuple[FileList, np.ndarray, np.ndarray]:
    data = np.random.default_rng(0).integers(1, 10_000, (3, 40, 40)).astype(np.uint16)
    mask = np.full((40, 40), 255, dtype=np.uint8)
    mask[:10] = 0
    return geotiff(tmp_path / "in" / "masked.tif", data, mask=mask), data, mask


def valid_pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.dataset_mask() > 0


def test_a_mosaic_of_masked_tiles_keeps_the_scenes_mask(ctx, masked):
    scene, data, mask = masked
    tiles = ops.tile_image(node(ctx, "tiles"), scene, tile_width=16, tile_height=16, overlap=4)
    [merged] = ops.mosaic(node(ctx, "mosaic"), tiles)
    with rasterio.open(merged.path) as dataset:
        np.testing.assert_array_equal(dataset.read(), data)
        assert dataset.transform == GRID and dataset.nodata is None
    np.testing.assert_array_equal(valid_pixels(merged.path), mask > 0)


def test_resize_keeps_the_mask(ctx, masked):
    scene, _, mask = masked
    [resized] = ops.resize_image(ctx, scene, width=20, height=20)
    np.testing.assert_array_equal(valid_pixels(resized.path), mask[::2, ::2] > 0)


def test_reprojection_keeps_the_mask_as_rasterio_warps_it(ctx, masked):
    from rasterio import band
    from rasterio.warp import calculate_default_transform, reproject

    scene, _, _ = masked
    [warped] = ops.reproject_raster(ctx, scene, crs="EPSG:4326")
    with rasterio.open(scene.refs[0].path) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        expected = np.zeros((4, height, width), dtype=np.uint16)
        reproject(
            band(src, [1, 2, 3]),
            expected,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:4326",
            dst_alpha=4,
        )
    with rasterio.open(warped.path) as dataset:
        np.testing.assert_array_equal(dataset.read(), expected[:3])
    valid = valid_pixels(warped.path)
    np.testing.assert_array_equal(valid, expected[3] > 0)
    assert 0 < valid.sum() < valid.size  # the masked rows (and the corners outside the scene) are not valid


# vectorize_mask on class ids of any type


def polygons(table) -> dict[str, float]:
    """Area per class of a vectorize_mask table."""
    from shapely.geometry import shape

    areas: dict[str, float] = {}
    for row in table.rows():
        areas[row["class"]] = areas.get(row["class"], 0.0) + shape(row["geometry"]).area
    return areas


def expected_areas(ids: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    values, counts = np.unique(ids[valid], return_counts=True)
    return {str(int(v)): float(c) * 100.0 for v, c in zip(values, counts, strict=True)}


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [("int16", None), ("int16", -9999), ("float32", float("nan")), ("uint32", 0)],
)
def test_vectorize_takes_class_ids_of_any_type(ctx, tmp_path, dtype, nodata):
    rng = np.random.default_rng(1)
    if dtype == "uint32":  # ids past what int32 (and a bincount's memory) holds
        ids = rng.choice(np.array([1, 70_000, 4_000_000_000], dtype=np.uint32), (20, 30))
    else:
        ids = rng.integers(-2, 3, (20, 30)).astype(dtype)
    if nodata is not None:
        ids[:3] = nodata
    mask = geotiff(tmp_path / "in" / f"{dtype}.tif", ids, nodata=nodata)
    table = ops.vectorize_mask(ctx, mask)
    valid = ~np.isnan(ids) if nodata is not None and np.isnan(nodata) else ids != nodata
    assert polygons(table) == pytest.approx(expected_areas(ids, valid))


def test_negative_ids_are_not_named_from_the_end_of_the_class_list(ctx, tmp_path):
    ids = np.array([[-1, -1], [0, 1]], dtype=np.int16)
    path = tmp_path / "in" / "named.tif"
    geotiff(path, ids)
    with rasterio.open(path, "r+") as dataset:
        dataset.update_tags(CLASSES=json.dumps(["water", "land"]))
    table = ops.vectorize_mask(ctx, FileList([FileRef(path.name, path)]))
    assert polygons(table) == pytest.approx({"-1": 200.0, "water": 100.0, "land": 100.0})
    kept = ops.vectorize_mask(node(ctx, "water"), FileList([FileRef(path.name, path)]), classes=["land"])
    assert polygons(kept) == pytest.approx({"land": 100.0})


def test_a_float_mask_of_fractions_is_refused_naming_it(ctx, tmp_path):
    mask = geotiff(tmp_path / "in" / "fractions.tif", np.array([[0.5, 1.0]], dtype=np.float32))
    with pytest.raises(OperationError, match=r"'fractions.tif' holds 0.5, which is not a class id"):
        ops.vectorize_mask(ctx, mask)


# Two bands of one name (a stack assembled by hand, an export that named every band "red"): a name that picks one
# of them silently would compute the wrong index or keep the wrong band.


@pytest.fixture
def twice_red(tmp_path: Path) -> FileList:
    data = np.random.default_rng(5).integers(1, 10_000, (3, 8, 8)).astype(np.uint16)
    files = geotiff(tmp_path / "in" / "stack.tif", data)
    with rasterio.open(files.refs[0].path, "r+") as dataset:
        dataset.descriptions = ("red", "red", "nir")
    return files


def test_a_band_name_two_bands_share_is_refused_naming_both(ctx, twice_red):
    with pytest.raises(OperationError, match=r"band 'red' is ambiguous in 'stack.tif': bands 1, 2 are named so"):
        ops.select_bands(ctx, twice_red, ["red"])
    [kept] = ops.select_bands(node(ctx, "by_index"), twice_red, [2, "nir"])
    with rasterio.open(kept.path) as dataset, rasterio.open(twice_red.refs[0].path) as source:
        assert np.array_equal(dataset.read(), source.read([2, 3]))


def test_a_spectral_index_refuses_to_guess_between_two_bands_of_its_name(ctx, twice_red):
    with pytest.raises(OperationError, match=r"NDVI: band 'red' is ambiguous in 'stack.tif': bands 1, 2"):
        ops.spectral_index(ctx, twice_red, "NDVI")


def test_an_rgb_composite_of_a_float_raster_with_nan_nodata_is_black_there_and_warns_nothing(ctx, tmp_path):
    import warnings

    data = np.random.default_rng(6).uniform(0, 1, (3, 16, 16)).astype(np.float32)
    data[:, :4] = np.nan
    files = geotiff(tmp_path / "in" / "float.tif", data, nodata=float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's "invalid value encountered in cast"
        [rgb] = ops.composite_rgb(ctx, files, bands=[1, 2, 3], format="tif")
    with rasterio.open(rgb.path) as dataset:
        assert (dataset.read()[:, :4] == 0).all() and (dataset.read_masks(1)[:4] == 0).all()
        assert (dataset.read_masks(1)[4:] == 255).all()
