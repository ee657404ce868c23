"""import_from_stac on static catalogs: over HTTP (range reads, counted), under the data root, stacked; bad inputs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pystac
import pytest
import rasterio
from pytest_httpserver import HTTPServer
from rasterio.windows import Window, from_bounds
from stac_samples import (
    catalog,
    inner_bbox,
    item,
    ranged_files,
    wgs84_bounds,
    write_cog,
)

from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileList
from orchestrator.engine import OperationError, PipelineInvalid, RunContext, build_plan

RED_NIR = {"B04": ("B04.tif", [("B04", "red")]), "B08": ("B08.tif", [("B08", "nir")])}


def context(tmp_path: Path, data: Path, allow_private: bool = True) -> RunContext:
    workspace = Workspace(data_root=str(data), artifact_root=str(tmp_path / "art"), url_allow_private=allow_private)
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def ctx(tmp_path: Path, data: Path) -> RunContext:
    return context(tmp_path, data)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 10 m bands of 1024² (128² tiles) and one 20 m band of 512², as one item's assets would be."""
    folder = tmp_path_factory.mktemp("scene")
    write_cog(folder / "B04.tif", 1024, seed=4)
    write_cog(folder / "B08.tif", 1024, seed=8)
    write_cog(folder / "B11.tif", 512, pixel=20.0, seed=11, block=128)
    return folder


def one_item_catalog(folder: Path, scene: Path, assets: dict = RED_NIR, **item_args) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for href, _ in assets.values():
        (folder / "S2A_1").mkdir(exist_ok=True)
        target = folder / "S2A_1" / href
        if not target.exists():
            target.write_bytes((scene / Path(href).name).read_bytes())
    made = item(
        "S2A_1",
        wgs84_bounds(scene / "B04.tif"),
        item_args.get("when", "2024-06-01T10:00:00+00:00"),
        item_args.get("cloud", 5.0),
        {key: (str(folder / "S2A_1" / href), bands) for key, (href, bands) in assets.items()},
    )
    return catalog(folder, [made])


@pytest.fixture
def served(tmp_path: Path, scene: Path, httpserver: HTTPServer) -> tuple[str, list[tuple[str, int]]]:
    """A static catalog of one item (B04, B08 COGs) served over HTTP with Range support; (catalog URL, bodies)."""
    site = tmp_path / "site"
    one_item_catalog(site, scene)
    bodies: list[tuple[str, int]] = []
    httpserver.expect_request(re.compile("/.*")).respond_with_handler(ranged_files(site, bodies))
    return httpserver.url_for("/catalog.json"), bodies


def window_of(path: Path, bbox: list[float]) -> tuple[np.ndarray, Window]:
    """The pixels a bbox covers, read with rasterio from the source file: what the import must give."""
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        exact = from_bounds(*transform_bounds("EPSG:4326", src.crs, *bbox, densify_pts=21), transform=src.transform)
        window = Window(int(np.floor(exact.col_off + 1e-9)), int(np.floor(exact.row_off + 1e-9)), 0, 0)
        window = Window(
            window.col_off,
            window.row_off,
            int(np.ceil(exact.col_off + exact.width - 1e-9)) - window.col_off,
            int(np.ceil(exact.row_off + exact.height - 1e-9)) - window.row_off,
        )
        return src.read(window=window), window


# Over HTTP


def test_a_bbox_reads_its_window_from_a_remote_cog_with_names_bands_and_item(ctx, served, scene):
    url, _ = served
    bbox = inner_bbox(scene / "B04.tif", 256, 384, 256, 256)
    files = ops.import_from_stac(ctx, url, bbox=bbox, assets=["B08", "B04"]).refs
    assert [ref.name for ref in files] == ["S2A_1/B08.tif", "S2A_1/B04.tif"]
    for ref, key in zip(files, ["B08", "B04"], strict=True):
        expected, window = window_of(scene / f"{key}.tif", bbox)
        with rasterio.open(ref.path) as got, rasterio.open(scene / f"{key}.tif") as src:
            assert np.array_equal(got.read(), expected)
            assert got.crs == src.crs and got.transform == src.window_transform(window)
            assert got.nodata == 0
        assert ref.meta["crs"] == "EPSG:32633"
        assert ref.meta["width"] == window.width and ref.meta["dtype"] == "uint16" and ref.meta["nodata"] == 0
        assert ref.meta["bands"] == [{"B04": "red", "B08": "nir"}[key]]
        assert ref.meta["stac_item"] == {
            "id": "S2A_1",
            "collection": None,
            "datetime": "2024-06-01T10:00:00Z",
            "bbox": pytest.approx(wgs84_bounds(scene / "B04.tif")),
            "eo:cloud_cover": 5.0,
        }
    with rasterio.open(files[0].path) as got:
        assert got.tags(1) == {"name": "B08", "common_name": "nir"}  # STAC's band name kept beside the common name


def test_a_bbox_covering_a_sixteenth_of_a_cog_fetches_at_most_an_eighth_of_it(ctx, served, scene):
    url, bodies = served
    size = (scene / "B04.tif").stat().st_size
    bbox = inner_bbox(scene / "B04.tif", 384, 256, 256, 256)  # 256² of 1024²: 1/16 of the scene
    ops.import_from_stac(ctx, url, bbox=bbox, assets=["B04"])
    fetched = sum(length for path, length in bodies if path.endswith(".tif"))
    assert fetched <= size / 8, f"{fetched} bytes fetched of a {size}-byte COG"
    assert 0 < sum(length for path, length in bodies if path.endswith(".json")) < 10_000


def test_without_a_bbox_the_asset_is_fetched_as_published(ctx, served, scene):
    url, _ = served
    [ref] = ops.import_from_stac(ctx, url, assets=["B04"])
    assert ref.name == "S2A_1/B04.tif"
    assert ref.path.read_bytes() == (scene / "B04.tif").read_bytes()
    assert ref.meta["width"] == 1024 and ref.meta["bands"] == ["red"]


def test_an_item_json_and_its_relative_assets_over_http(ctx, served, scene):
    url, _ = served
    item_url = url.replace("catalog.json", "S2A_1/S2A_1.json")
    [ref] = ops.import_from_stac(ctx, item_url, assets=["B08"], bbox=inner_bbox(scene / "B08.tif", 0, 0, 64, 64))
    assert ref.name == "S2A_1/B08.tif" and ref.meta["width"] == 64


def test_a_server_that_ignores_range_costs_a_whole_download_with_the_same_window(ctx, tmp_path, scene, httpserver):
    site = tmp_path / "plain"
    one_item_catalog(site, scene, {"B04": ("B04.tif", [("B04", "red")])})
    for path in ("/catalog.json", "/S2A_1/S2A_1.json", "/S2A_1/B04.tif"):  # whole bodies, 200, Range or not
        httpserver.expect_request(path).respond_with_data((site / path.lstrip("/")).read_bytes())
    bbox = inner_bbox(scene / "B04.tif", 256, 256, 128, 128)
    [ref] = ops.import_from_stac(ctx, httpserver.url_for("/catalog.json"), bbox=bbox)
    expected, _ = window_of(scene / "B04.tif", bbox)
    with rasterio.open(ref.path) as got:
        assert np.array_equal(got.read(), expected)
    asked = [
        (request.headers.get("Range"), response.status_code)
        for request, response in httpserver.log
        if request.path == "/S2A_1/B04.tif"
    ]
    assert asked[0][0] is not None and asked[0][1] == 200  # a range asked for, the whole file answered
    assert not any((ctx.node_dir / ".whole").iterdir())  # the whole download is not left behind


def test_a_window_of_an_asset_that_is_not_a_geotiff_is_refused(ctx, data, scene):
    folder = data / "stac"
    (folder / "S2A_1").mkdir(parents=True)
    (folder / "S2A_1" / "preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    made = item("S2A_1", wgs84_bounds(scene / "B04.tif"), "2024-06-01T00:00:00+00:00", 1.0, {})
    made.add_asset("preview", pystac.Asset(str(folder / "S2A_1" / "preview.png"), media_type=pystac.MediaType.PNG))
    catalog(folder, [made])
    corner = inner_bbox(scene / "B04.tif", 0, 0, 8, 8)
    with pytest.raises(OperationError, match="asset 'preview' of item 'S2A_1' is image/png: a window"):
        ops.import_from_stac(ctx, "stac/catalog.json", assets=["preview"], bbox=corner)
    [ref] = ops.import_from_stac(ctx, "stac/catalog.json", assets=["preview"])  # without a bbox: the file as it is
    assert ref.name == "S2A_1/preview.png" and ref.meta["stac_item"]["id"] == "S2A_1"


def test_a_private_address_is_refused_before_any_request(tmp_path, data, served):
    url, bodies = served
    with pytest.raises(OperationError, match="non-public address; the server refuses"):
        ops.import_from_stac(context(tmp_path, data, allow_private=False), url)
    assert bodies == []


def test_a_catalog_over_http_may_not_name_the_servers_files(ctx, tmp_path, httpserver):
    secret = tmp_path / "secret.tif"
    write_cog(secret, 64)
    made = item(
        "leak", [14.9, 45.0, 15.1, 45.2], "2024-06-01T00:00:00+00:00", 1.0, {"B04": (secret.as_uri(), [("B04", "red")])}
    )  # file:///...: a file of the server
    made.set_self_href(None)
    httpserver.expect_request("/leak.json").respond_with_json(made.to_dict(include_self_link=False))
    with pytest.raises(OperationError, match="not an http\\(s\\) URL; refused"):
        ops.import_from_stac(ctx, httpserver.url_for("/leak.json"))


# Under the data root


def test_a_local_catalog_is_read_as_files_with_bbox_datetime_and_query(ctx, data, scene):
    folder = data / "stac"
    write_cog(folder / "june" / "B04.tif", 256, seed=1)
    write_cog(folder / "july" / "B04.tif", 256, seed=2)
    footprint = wgs84_bounds(folder / "june" / "B04.tif")
    items = [
        item(
            "june",
            footprint,
            "2024-06-10T10:00:00+00:00",
            4.0,
            {"B04": (str(folder / "june" / "B04.tif"), [("B04", "red")])},
        ),
        item(
            "july",
            footprint,
            "2024-07-10T10:00:00+00:00",
            60.0,
            {"B04": (str(folder / "july" / "B04.tif"), [("B04", "red")])},
        ),
        item(
            "away",
            [-70.0, -10.0, -69.0, -9.0],
            "2024-06-10T10:00:00+00:00",
            1.0,
            {"B04": (str(folder / "june" / "B04.tif"), [("B04", "red")])},
        ),
    ]
    catalog(folder, items)
    scene_box = footprint
    assert [r.name for r in ops.import_from_stac(ctx, "stac/catalog.json", bbox=scene_box)] == [
        "june/B04.tif",
        "july/B04.tif",
    ]
    june = ops.import_from_stac(ctx, "stac", bbox=scene_box, datetime="2024-06").refs  # a folder: its catalog.json
    assert [r.name for r in june] == ["june/B04.tif"]
    assert june[0].path.read_bytes() != b"" and june[0].meta["stac_item"]["id"] == "june"
    clear = ops.import_from_stac(ctx, "stac/catalog.json", query={"eo:cloud_cover": {"lt": 20}}, max_items=5).refs
    assert [r.name for r in clear] == ["june/B04.tif", "away/B04.tif"]
    # Without a bbox, a local asset is the data root's file itself (nothing copied).
    assert clear[0].path == (folder / "june" / "B04.tif").resolve()


def test_a_local_catalog_whose_asset_lies_outside_the_data_root_is_refused(ctx, data, tmp_path):
    outside = tmp_path / "elsewhere" / "B04.tif"
    write_cog(outside, 64)
    made = item("out", wgs84_bounds(outside), "2024-06-01T00:00:00+00:00", 1.0, {"B04": (str(outside), [])})
    catalog(data / "stac", [made])
    catalog_json = json.loads((data / "stac" / "out" / "out.json").read_text())
    catalog_json["assets"]["B04"]["href"] = "../../../elsewhere/B04.tif"
    (data / "stac" / "out" / "out.json").write_text(json.dumps(catalog_json))
    with pytest.raises(OperationError, match="outside the data root"):
        ops.import_from_stac(ctx, "stac/catalog.json")


def test_a_local_catalog_may_not_reach_where_runs_are_kept(tmp_path, data):
    kept = data / "runs" / "some-run" / "nodes" / "x" / "B04.tif"  # the artifact root lies in the data root here
    write_cog(kept, 64)
    made = item("kept", wgs84_bounds(kept), "2024-06-01T00:00:00+00:00", 1.0, {"B04": (str(kept), [])})
    catalog(data / "stac", [made])
    workspace = Workspace(data_root=str(data), artifact_root=str(data / "runs"), url_allow_private=True)
    ctx = RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))
    with pytest.raises(OperationError, match="lies in CONSTELLATION_ARTIFACT_ROOT"):
        ops.import_from_stac(ctx, "stac/catalog.json")


# stack=true


def test_stack_puts_bands_in_the_order_asked_on_the_finest_grid(ctx, data, scene):
    assets = {"B11": ("B11.tif", [("B11", "swir16")]), "B04": ("B04.tif", [("B04", "red")])}
    one_item_catalog(data / "stac", scene, assets)
    bbox = inner_bbox(scene / "B04.tif", 200, 300, 100, 60)
    [ref] = ops.import_from_stac(ctx, "stac/catalog.json", bbox=bbox, assets=["B11", "B04"], stack=True)
    assert ref.name == "S2A_1.tif"
    red, window = window_of(scene / "B04.tif", bbox)
    with (
        rasterio.open(ref.path) as got,
        rasterio.open(scene / "B04.tif") as fine,
        rasterio.open(scene / "B11.tif") as coarse,
    ):
        assert got.count == 2 and got.descriptions == ("swir16", "red")
        assert got.transform == fine.window_transform(window) and got.crs == fine.crs  # the 10 m grid
        assert np.array_equal(got.read(2), red[0])
        # Each 10 m pixel takes the 20 m pixel it lies in (nearest): rows and columns halved.
        rows = np.arange(window.row_off, window.row_off + window.height) // 2
        cols = np.arange(window.col_off, window.col_off + window.width) // 2
        assert np.array_equal(got.read(1), coarse.read(1)[np.ix_(rows, cols)])
    assert ref.meta["bands"] == ["swir16", "red"]
    # A band answers to STAC's own name as well as its common name.
    [by_name] = ops.select_bands(replace(ctx, node_key="by-name"), FileList([ref]), ["B04", "swir16"]).refs
    [by_common] = ops.select_bands(replace(ctx, node_key="by-common"), FileList([ref]), ["red", "B11"]).refs
    with rasterio.open(by_name.path) as a, rasterio.open(by_common.path) as b:
        assert np.array_equal(a.read(1), red[0]) and np.array_equal(b.read(1), red[0])
        assert a.descriptions == ("red", "swir16") and np.array_equal(a.read(2), b.read(2))


# Bad inputs


def test_a_bbox_out_of_range_is_refused_before_launch():
    pipeline = [{"operation": "import_from_stac", "parameters": {"url": "stac/catalog.json", "bbox": [15, 95, 16, 46]}}]
    with pytest.raises(PipelineInvalid) as refused:
        build_plan(pipeline, CATALOG)
    assert "/instructions/0/parameters/bbox" in str(refused.value.problems)


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ([15.0, 46.0, 16.0, 45.0], "bbox south 46.0 must be below north 45.0"),
        ([16.0, 45.0, 15.0, 46.0], "bbox west 16.0 must be left of east 15.0"),
    ],
)
def test_a_bbox_out_of_order_is_refused(ctx, bbox, message):
    with pytest.raises(OperationError, match=message):
        ops.import_from_stac(ctx, "stac/catalog.json", bbox=bbox)


def test_an_asset_key_that_does_not_exist_lists_the_items_assets(ctx, served):
    url, _ = served
    with pytest.raises(OperationError, match="item 'S2A_1' has no asset 'B8A'; its assets: B04, B08"):
        ops.import_from_stac(ctx, url, assets=["B04", "B8A"])


def test_no_matching_item_says_what_was_asked(ctx, served):
    url, _ = served
    with pytest.raises(OperationError, match=r"no item of http://.*/catalog.json matches \(datetime=\"2019"):
        ops.import_from_stac(ctx, url, datetime="2019-01-01/2019-12-31")


def test_filter_on_a_static_catalog_is_refused(ctx, served):
    url, _ = served
    with pytest.raises(OperationError, match="static catalog, not a STAC API: filter"):
        ops.import_from_stac(ctx, url, filter={"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]})


def test_a_bbox_outside_the_scene_is_refused_naming_the_asset(ctx, data):
    raster = data / "stac" / "wide" / "B04.tif"
    write_cog(raster, 64)
    west, south, east, north = wgs84_bounds(raster)
    footprint = [west, south, east + 1.0, north]  # the item claims more ground than its raster covers
    catalog(data / "stac", [item("wide", footprint, "2024-06-01T00:00:00+00:00", 1.0, {"B04": (str(raster), [])})])
    with pytest.raises(OperationError, match=r"bbox \[.*\] lies outside asset 'B04' of item 'wide', which covers"):
        ops.import_from_stac(ctx, "stac/catalog.json", bbox=[east + 0.2, south, east + 0.5, north])
