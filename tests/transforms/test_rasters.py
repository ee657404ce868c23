"""Rasters (issue 19): the GeoTIFF ops called as a run calls them, checked against rasterio and NumPy
computing the same thing on the same files."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileDict, FileList, FileRef
from orchestrator.engine import OperationError, PipelineInvalid, RunContext, build_plan, execute
from orchestrator.transforms import rasters
from sample_data import write_eo_samples


@pytest.fixture(scope="module")
def eo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding make run's sample scene: samples-eo/scene.tif (4 bands) and labels.tif."""
    root = tmp_path_factory.mktemp("data")
    write_eo_samples(root)
    return root


@pytest.fixture
def ctx(tmp_path: Path, eo_root: Path) -> RunContext:
    workspace = Workspace(data_root=str(eo_root), artifact_root=str(tmp_path / "art"))
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))


def node(ctx: RunContext, key: str) -> RunContext:
    return dataclasses.replace(ctx, node_key=key)


@pytest.fixture
def scene(ctx: RunContext) -> FileList:
    return FileList([r for r in ops.import_from_local(ctx, "samples-eo").refs() if r.name == "scene.tif"])


def read(path: Path, **kwargs):
    with rasterio.open(path) as dataset:
        return dataset.read(**kwargs), dataset.profile, dataset.descriptions, dataset.transform


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def forged_tiff(path: Path, width: int, height: int) -> Path:
    """A 130-byte TIFF whose header declares width × height 16-bit pixels (one strip, no pixel data)."""
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 16),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 1),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", 16) + b"\x00" * 8 + ifd + struct.pack("<I", 0))
    return path


# Imports report raster facts


def test_an_import_reports_each_geotiffs_facts_and_leaves_images_alone(ctx, eo_root):
    Image.new("RGB", (8, 8)).save(eo_root / "samples-eo" / "photo.png")
    try:
        files = {f["name"]: f for f in ops.import_from_local(ctx, "samples-eo").to_result()["files"]}
    finally:
        (eo_root / "samples-eo" / "photo.png").unlink()
    assert {k: v for k, v in files["scene.tif"].items() if k not in ("name", "uri")} == {
        "crs": "EPSG:32633",
        "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4650000.0],
        "width": 512,
        "height": 512,
        "bands": ["B02", "B03", "B04", "B08"],
        "dtype": "uint16",
        "nodata": 0,
    }
    assert files["labels.tif"]["nodata"] == 255 and files["labels.tif"]["dtype"] == "uint8"
    assert set(files["photo.png"]) == {"name", "uri"}


# tile_image and mosaic


def test_tiles_carry_rasterios_geotransforms_the_crs_bands_and_nodata(ctx, scene):
    tiles = ops.tile_image(ctx, scene, tile_width=200, tile_height=160, overlap=24)
    source, profile, descriptions, transform = read(scene.refs[0].path)
    assert [t.name for t in tiles][:3] == ["scene/x0_y0.tif", "scene/x176_y0.tif", "scene/x312_y0.tif"]
    assert len(tiles) == 3 * 4
    for t in tiles:
        origin = t.meta["tile"]
        window = Window(origin["col_off"], origin["row_off"], origin["width"], origin["height"])
        pixels, tile_profile, tile_descriptions, tile_transform = read(t.path)
        assert tile_transform == window_transform(window, transform)
        assert t.meta["transform"] == list(tile_transform)[:6]
        assert tile_profile["crs"] == profile["crs"] and t.meta["crs"] == "EPSG:32633"
        assert tile_profile["nodata"] == 0 and tile_profile["dtype"] == "uint16"
        assert tile_descriptions == descriptions == ("B02", "B03", "B04", "B08")
        np.testing.assert_array_equal(
            pixels,
            source[:, window.row_off : window.row_off + window.height, window.col_off : window.col_off + window.width],
        )
    assert tiles.refs[0].meta["tile"] == {
        "source": "scene.tif",
        "col_off": 0,
        "row_off": 0,
        "width": 200,
        "height": 160,
    }


def test_a_mosaic_of_the_tiles_is_the_source_grid(ctx, scene):
    tiles = ops.tile_image(node(ctx, "tiles"), scene, tile_width=100, tile_height=128, overlap=20)
    [merged] = ops.mosaic(node(ctx, "mosaic"), tiles)
    assert merged.name == "scene.tif"
    pixels, profile, descriptions, transform = read(merged.path)
    source, source_profile, source_descriptions, source_transform = read(scene.refs[0].path)
    assert transform == source_transform and profile["crs"] == source_profile["crs"]
    assert (profile["width"], profile["height"], profile["nodata"]) == (512, 512, 0)
    assert descriptions == source_descriptions
    np.testing.assert_array_equal(pixels, source)
    assert "tile" not in merged.meta and merged.meta["mosaic"] == {"tiles": len(tiles)}


def test_where_tiles_overlap_the_nearest_tile_centre_wins(ctx, tmp_path):
    grid = from_origin(500_000, 4_650_000, 10, 10)
    tiles = []
    for value, col in ((1, 0), (2, 60)):  # two 100-pixel-wide tiles overlapping on columns 60..99
        path = tmp_path / "in" / f"x{col}.tif"
        profile = rasters.output_profile(
            100, 50, 1, "uint8", "EPSG:32633", window_transform(Window(col, 0, 100, 50), grid), 255
        )
        with rasters.write_like(path, profile) as out:
            out.write(np.full((1, 50, 100), value, dtype=np.uint8))
        tiles.append(FileRef(f"field/x{col}_y0.tif", path))
    [merged] = ops.mosaic(ctx, FileList(tiles))
    pixels, profile, _, transform = read(merged.path)
    assert merged.name == "field.tif" and profile["width"] == 160 and transform == grid
    # centres at columns 50 and 110: pixel centres up to 79.5 are nearer the first
    assert (pixels[0, :, :80] == 1).all() and (pixels[0, :, 80:] == 2).all()


def test_a_segmentation_models_masks_are_merged_back_in_place(ctx, scene):
    from orchestrator.datasets import Predictions

    tiles = ops.tile_image(node(ctx, "tiles"), scene, tile_width=256, tile_height=256, overlap=32)
    items = []
    for tile in tiles:  # a "model" whose class is 1 where band 4 > 3000, nodata 255 where the input was nodata
        pixels, profile, _, transform = read(tile.path)
        mask = np.where(pixels[0] == 0, 255, (pixels[3] > 3000).astype(np.uint8))
        path = ctx.run_dir / "masks" / (tile.name.replace("/", "_"))
        out = rasters.output_profile(mask.shape[1], mask.shape[0], 1, "uint8", profile["crs"], transform, 255)
        with rasters.write_like(path, out) as dst:
            dst.write(mask, 1)
        items.append({"name": tile.name, "mask": str(path)})
    predictions = Predictions(
        "seg", items, {}, ctx.run_dir / "p.json", task="image-segmentation", inputs={t.name: t.path for t in tiles}
    )
    [merged] = ops.mosaic(node(ctx, "mosaic"), predictions)
    source = read(scene.refs[0].path)[0]
    pixels, profile, _, transform = read(merged.path)
    assert merged.name == "scene.tif" and transform == read(scene.refs[0].path)[3] and profile["nodata"] == 255
    np.testing.assert_array_equal(pixels[0], np.where(source[0] == 0, 255, (source[3] > 3000).astype(np.uint8)))


# select_bands


def test_select_bands_by_name_and_index_in_the_order_asked(ctx, scene):
    [picked] = ops.select_bands(ctx, scene, bands=["b08", 3, "B02"])
    pixels, profile, descriptions, transform = read(picked.path)
    source, source_profile, _, source_transform = read(scene.refs[0].path)
    np.testing.assert_array_equal(pixels, source[[3, 2, 0]])
    assert descriptions == ("B08", "B04", "B02") and picked.meta["bands"] == ["B08", "B04", "B02"]
    assert transform == source_transform and profile["crs"] == source_profile["crs"] and profile["nodata"] == 0
    with rasterio.open(picked.path) as dataset:
        assert dataset.scales == (0.0001,) * 3


def test_a_band_that_does_not_exist_is_named_with_the_bands_listed(ctx, scene):
    with pytest.raises(
        OperationError,
        match=r"band 'B11' is not in 'scene.tif'; its bands are 1: B02, 2: B03, "
        r"3: B04, 4: B08",
    ):
        ops.select_bands(ctx, scene, bands=["B04", "B11"])
    with pytest.raises(OperationError, match=r"band 5 is not in 'scene.tif', which has 4 band\(s\)"):
        ops.select_bands(ctx, scene, bands=[5])


# spectral_index


def test_ndvi_equals_the_numpy_formula_on_scaled_bands_with_nodata_kept(ctx, scene):
    [ndvi] = ops.spectral_index(ctx, scene, index="NDVI", bands={"N": "B08", "R": 3})
    pixels, profile, descriptions, transform = read(ndvi.path)
    source, _, _, source_transform = read(scene.refs[0].path)
    nir, red = source[3].astype(np.float32) * np.float32(1e-4), source[2].astype(np.float32) * np.float32(1e-4)
    with np.errstate(invalid="ignore"):  # 0/0 on the nodata frame
        expected = (nir - red) / (nir + red)
    valid = (source[3] != 0) & (source[2] != 0)
    assert profile["dtype"] == "float32" and profile["nodata"] == -9999.0 and descriptions == ("NDVI",)
    assert transform == source_transform
    np.testing.assert_allclose(pixels[0][valid], expected[valid], rtol=1e-6)
    assert (pixels[0][~valid] == -9999.0).all() and (~valid).sum() > 0
    assert ndvi.meta["bands"] == ["NDVI"] and ndvi.meta["dtype"] == "float32"


def test_an_index_with_a_constant_uses_the_one_given(ctx, scene):
    [savi] = ops.spectral_index(ctx, scene, index="SAVI", bands={"N": 4, "R": 3}, constants={"L": 0.25})
    pixels = read(savi.path)[0][0]
    source = read(scene.refs[0].path)[0].astype(np.float32) * np.float32(1e-4)
    nir, red = source[3, 200, 200], source[2, 200, 200]
    assert pixels[200, 200] == pytest.approx((1 + 0.25) * (nir - red) / (nir + red + 0.25), rel=1e-6)


def test_index_bands_that_cannot_be_found_say_what_to_give(ctx, scene):
    with pytest.raises(
        OperationError,
        match=r"NDVI needs bands N \(nir\), R \(red\); say which band of 'scene.tif' "
        r"is N, e\.g\. bands \{\"N\": 1, \"R\": 2\}",
    ):
        ops.spectral_index(ctx, scene, index="NDVI")
    with pytest.raises(OperationError, match="NDVI uses bands N, R; G is not one of them"):
        ops.spectral_index(ctx, scene, index="NDVI", bands={"N": 4, "R": 3, "G": 2})


def test_an_unknown_index_or_crs_is_refused_before_launch():
    for params in (
        {
            "operation": "spectral_index",
            "parameters": {
                "data": {
                    "operation": "dict_to_list",
                    "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "x"}}},
                },
                "index": "NDVX",
            },
        },
        {
            "operation": "reproject_raster",
            "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "x"}}, "crs": "not a crs"},
        },
    ):
        with pytest.raises(PipelineInvalid) as refused:
            build_plan([params], CATALOG)
        assert "does not match" in str(refused.value.problems)


# reproject_raster, resize_image, crop_image


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_reprojection_equals_rasterio_warp_on_the_whole_array(ctx, scene, resampling):
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    [warped] = ops.reproject_raster(ctx, scene, crs="EPSG:4326", resampling=resampling)
    pixels, profile, descriptions, transform = read(warped.path)
    source, source_profile, _, _ = read(scene.refs[0].path)
    with rasterio.open(scene.refs[0].path) as src:
        expected_transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds
        )
    expected = np.zeros((4, height, width), dtype=np.uint16)
    reproject(
        source,
        expected,
        src_transform=source_profile["transform"],
        src_crs=source_profile["crs"],
        src_nodata=0,
        dst_transform=expected_transform,
        dst_crs="EPSG:4326",
        dst_nodata=0,
        resampling=Resampling[resampling],
    )
    assert transform == expected_transform and profile["crs"].to_epsg() == 4326
    assert warped.meta["crs"] == "EPSG:4326" and descriptions == ("B02", "B03", "B04", "B08")
    np.testing.assert_array_equal(pixels, expected)


def test_a_crs_that_does_not_parse_is_a_clear_error(ctx, eo_root):
    imported = {"operation": "import_from_local", "parameters": {"path": "samples-eo/scene.tif"}}
    warp = {"operation": "reproject_raster", "parameters": {"data": imported, "crs": "EPSG:999999"}}
    with pytest.raises(Exception, match=r"'EPSG:999999' is not a CRS that parses"):
        execute(build_plan([warp], CATALOG), CATALOG, ctx)


def test_resize_keeps_the_extent_and_crs(ctx, scene):
    [resized] = ops.resize_image(ctx, scene, width=128, height=64)
    pixels, profile, _, transform = read(resized.path)
    assert pixels.shape == (4, 64, 128) and profile["crs"].to_epsg() == 32633
    assert transform == from_origin(500_000, 4_650_000, 40, 80)
    source = read(scene.refs[0].path)[0]
    assert (pixels[:, 40, 64] == source[:, 40 * 8 + 4, 64 * 4 + 2]).all()  # nearest: the centre's source pixel


def test_crop_is_georeferenced_and_a_box_outside_the_scene_is_refused(ctx, scene):
    [cropped] = ops.crop_image(node(ctx, "in"), scene, left=100, top=50, width=64, height=32)
    pixels, _, _, transform = read(cropped.path)
    assert transform == from_origin(500_000 + 1000, 4_650_000 - 500, 10, 10)
    np.testing.assert_array_equal(pixels, read(scene.refs[0].path)[0][:, 50:82, 100:164])
    with pytest.raises(OperationError, match=r"'scene.tif' is 512×512; the box 64×32 at \(480, 50\) does not fit"):
        ops.crop_image(node(ctx, "out"), scene, left=480, top=50, width=64, height=32)


# normalize_image, composite_rgb


def test_normalize_with_dataset_statistics_equals_numpy_over_valid_pixels(ctx, scene):
    tiles = ops.tile_image(node(ctx, "tiles"), scene, tile_width=256, tile_height=256)
    arrays = ops.normalize_image(node(ctx, "norm"), tiles, stats="dataset")
    source = read(scene.refs[0].path)[0].astype(np.float64)
    valid = source[0] != 0
    mean, std = source[:, valid].mean(1), source[:, valid].std(1)
    used = arrays.refs[0].meta["normalization"]
    assert used["stats"] == "dataset"
    np.testing.assert_allclose(used["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(used["std"], std, rtol=1e-9)
    pixels, profile, _, transform = read(arrays.refs[3].path)
    assert profile["dtype"] == "float32" and profile["nodata"] == -9999.0
    assert transform == read(tiles.refs[3].path)[3]
    tile = source[:, 256:, 256:]
    expected = (tile.astype(np.float32) - mean[:, None, None].astype(np.float32)) / std[:, None, None].astype(
        np.float32
    )
    inside = tile[0] != 0
    np.testing.assert_allclose(pixels[:, inside], expected[:, inside], rtol=1e-5)
    assert (pixels[:, ~inside] == -9999.0).all()
    assert arrays.refs[0].meta["shape"] == [4, 256, 256]


def test_normalize_given_needs_one_value_per_band(ctx, scene):
    with pytest.raises(OperationError, match=r"'scene.tif' has 4 band\(s\) but mean and std have 3 values"):
        ops.normalize_image(ctx, scene, mean=[1, 2, 3], std=[1, 1, 1])
    [arrays] = ops.normalize_image(ctx, scene, mean=[1000, 1000, 1000, 2000], std=[500, 500, 500, 1000])
    assert read(arrays.path)[0][3, 100, 100] == pytest.approx((read(scene.refs[0].path)[0][3, 100, 100] - 2000) / 1000)


def test_composite_rgb_stretches_between_percentiles_of_valid_pixels(ctx, scene):
    [tif] = ops.composite_rgb(node(ctx, "tif"), scene, bands=["B04", "B03", "B02"], format="tif")
    [png] = ops.composite_rgb(node(ctx, "png"), scene)
    source = read(scene.refs[0].path)[0]
    valid = source[0] != 0
    red = source[2][valid]
    low, high = np.percentile(red, [2, 98], method="inverted_cdf")
    pixels, profile, _, transform = read(tif.path)
    assert profile["dtype"] == "uint8" and profile["count"] == 3 and transform == read(scene.refs[0].path)[3]
    expected = np.clip(np.rint((source[2, 300, 300] - low) * 255.0 / (high - low)), 0, 255)
    assert pixels[0, 300, 300] == expected
    assert tif.meta["stretch"][0] == [float(low), float(high)] or tuple(tif.meta["stretch"][0]) == (low, high)
    with Image.open(png.path) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (512, 512)
        assert png.name == "scene.png" and image.getpixel((3, 3)) == (0, 0, 0)  # the nodata frame is black


# Safety: caps, side files, images untouched


def test_a_tiny_tiff_declaring_a_trillion_pixels_is_refused_before_any_read(ctx, tmp_path):
    bomb = forged_tiff(tmp_path / "bomb.tif", 10**6, 10**6)
    assert bomb.stat().st_size < 1024
    for run in (
        lambda data: ops.tile_image(ctx, data, tile_width=256, tile_height=256),
        lambda data: ops.select_bands(ctx, data, bands=[1]),
        lambda data: ops.spectral_index(ctx, data, index="NDVI", bands={"N": 1, "R": 1}),
    ):
        with pytest.raises(
            OperationError,
            match=r"'bomb.tif' is 1000000×1000000 pixels × 1 band\(s\) = "
            r"1,000,000,000,000 samples, over the limit of 4,000,000,000",
        ):
            run(FileDict({"bomb.tif": bomb}))


def test_a_damaged_geotiff_is_named_without_the_servers_path(ctx, scene, tmp_path):
    damaged = bytearray(scene.refs[0].path.read_bytes())
    damaged[len(damaged) // 3 : len(damaged) // 3 + 50_000] = b"\xff" * 50_000  # compressed pixels overwritten
    cut = tmp_path / "cut.tif"
    cut.write_bytes(bytes(damaged))
    with pytest.raises(OperationError, match="'cut.tif' could not be read or written as a GeoTIFF") as failed:
        ops.select_bands(ctx, FileDict({"cut.tif": cut}), bands=[1, 2])
    assert str(tmp_path) not in str(failed.value)
    cut.write_bytes(bytes(damaged[: len(damaged) // 2]))  # its header (at the end of this file) cut off
    with pytest.raises(OperationError, match="'cut.tif' is not a readable GeoTIFF"):
        ops.select_bands(ctx, FileDict({"cut.tif": cut}), bands=[1, 2])


def test_the_cap_is_a_server_setting(ctx, scene):
    small = dataclasses.replace(
        ctx,
        resources=SimpleNamespace(
            workspace=ctx.resources.workspace.model_copy(update={"max_raster_samples": 512 * 512 * 4 - 1})
        ),
    )
    with pytest.raises(OperationError, match="CONSTELLATION_MAX_RASTER_SAMPLES"):
        ops.select_bands(small, scene, bands=[1])


def test_no_op_writes_beside_its_inputs(ctx, scene, eo_root):
    before = snapshot(eo_root)
    labels = FileList([r for r in ops.import_from_local(ctx, "samples-eo").refs() if r.name == "labels.tif"])
    ops.tile_image(node(ctx, "a"), scene, tile_width=256, tile_height=256)
    ops.crop_image(node(ctx, "b"), scene, left=0, top=0, width=10, height=10)
    ops.resize_image(node(ctx, "c"), scene, width=10, height=10)
    ops.select_bands(node(ctx, "d"), scene, bands=[1])
    ops.reproject_raster(node(ctx, "e"), scene, crs="EPSG:3857", resolution=20.0)
    ops.spectral_index(node(ctx, "f"), scene, index="NDWI", bands={"G": 2, "N": 4})
    ops.composite_rgb(node(ctx, "g"), scene)
    ops.normalize_image(node(ctx, "h"), scene, stats="dataset")
    ops.mosaic(node(ctx, "i"), FileList([FileRef("labels/x0_y0.tif", labels.refs[0].path)]))
    assert snapshot(eo_root) == before
    assert not [p for p in ctx.run_dir.rglob("*") if p.suffix in (".xml", ".msk", ".ovr")]


def test_pngs_and_plain_tiffs_still_go_through_pillow(ctx, tmp_path):
    Image.new("RGB", (64, 40), (10, 20, 30)).save(tmp_path / "photo.png")
    Image.new("RGB", (64, 40), (10, 20, 30)).save(tmp_path / "scan.tif")
    tiles = ops.tile_image(
        ctx,
        FileDict({"photo.png": tmp_path / "photo.png", "scan.tif": tmp_path / "scan.tif"}),
        tile_width=32,
        tile_height=40,
    )
    assert [t.name for t in tiles] == ["photo/x0_y0.png", "photo/x32_y0.png", "scan/x0_y0.tif", "scan/x32_y0.tif"]
    assert all("x" in t.meta and "tile" not in t.meta for t in tiles)  # Pillow's tiles, as before


def test_tiling_memory_follows_the_tile_not_the_scene(ctx, tmp_path):
    size = 2048  # 2048² × 4 bands × 2 bytes = 32 MiB of pixels
    path = tmp_path / "big.tif"
    profile = rasters.output_profile(size, size, 4, "uint16", "EPSG:32633", from_origin(0, 0, 10, -10), 0)
    with rasters.write_like(path, profile) as out:
        for window in (Window(0, row, size, 256) for row in range(0, size, 256)):
            out.write(np.full((4, 256, size), 7, dtype=np.uint16), window=window)
    tracemalloc.start()
    try:
        tiles = ops.tile_image(ctx, FileDict({"big.tif": path}), tile_width=256, tile_height=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tiles) == 64
    # A whole-scene read would hold 32 MiB; a tile at a time holds a small fraction of it.
    assert peak < 32 * 1024**2 / 6, f"peak {peak / 1024**2:.1f} MiB of Python/NumPy memory for a 32 MiB scene"
