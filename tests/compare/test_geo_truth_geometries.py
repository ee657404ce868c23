"""compare_models against geographic truth a GIS user really has: polygons that are not valid, or not polygons;
predictions on rotated grids."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely.geometry import box, mapping

from harness import write_geotiff
from orchestrator.assets import ops
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileList, FileRef, Predictions
from orchestrator.engine import OperationError, RunContext

TILE = 8
WEST, NORTH = 500_000, 4_650_000
GRID = from_origin(WEST, NORTH, 10, 10)
CLASSES = ["a", "b"]


def context(root: Path) -> RunContext:
    workspace = Workspace(data_root=str(root / "data"), artifact_root=str(root / "art"), output_root=str(root / "out"))
    return RunContext(run_dir=root / "run", resources=SimpleNamespace(workspace=workspace))


def tile_grid(col: int, degrees: float) -> rasterio.Affine:
    """The tile at `col` pixels east of the scene's corner, its grid turned by `degrees` about that corner."""
    return GRID * rasterio.Affine.translation(col, 0) * rasterio.Affine.rotation(degrees)


def predictions(root: Path, scene: np.ndarray, degrees: float = 0.0) -> list[Predictions]:
    """Two models' masks (both `scene`) on the two 8 x 8 tiles of a 16 x 8 scene (classes a, b; nodata 255)."""
    results = []
    for model in ("m1", "m2"):
        items = []
        for col in (0, TILE):
            transform = tile_grid(col, degrees)
            path = write_geotiff(root / model / f"{col}.tif", scene[:, col : col + TILE], transform, nodata=255)
            items.append(
                {
                    "name": f"scene/x{col}_y0.tif",
                    "mask": str(path),
                    "nodata": 255,
                    "crs": "EPSG:32633",
                    "transform": list(transform)[:6],
                    "width": TILE,
                    "height": TILE,
                    "tile": {"source": "scene.tif", "col_off": col, "row_off": 0, "width": TILE, "height": TILE},
                }
            )
        results.append(
            Predictions(
                model,
                items,
                {"inputs": 2, "seconds": 1.0},
                root / f"{model}.json",
                task="image-segmentation",
                labels=CLASSES,
                inputs={},
            )
        )
    return results


@pytest.fixture
def masks(tmp_path: Path) -> tuple[list[Predictions], np.ndarray]:
    scene = np.random.default_rng(3).integers(0, 2, (TILE, 2 * TILE)).astype(np.uint8)
    return predictions(tmp_path, scene), scene


def geojson(root: Path, name: str, features: list[tuple[dict, str]]) -> FileList:
    document = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
        "features": [{"type": "Feature", "properties": {"label": c}, "geometry": g} for g, c in features],
    }
    path = root / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return FileList([FileRef(name, path)])


def test_a_collapsed_polygon_labels_no_pixel(masks, tmp_path):
    """A ring of zero area (its points on one line) covers no pixel centre; repaired, it must not become a line that
    rasterize burns across a row of pixels."""
    results, scene = masks
    south = box(WEST, NORTH - 80, WEST + 160, NORTH - 40)  # the bottom 4 rows of the scene, class a
    line = [[WEST, NORTH - 5], [WEST + 80, NORTH - 5], [WEST + 160, NORTH - 5], [WEST, NORTH - 5]]
    flat = {"type": "Polygon", "coordinates": [line]}  # across the scene's first row of pixel centres
    truth = geojson(tmp_path, "flat.geojson", [(mapping(south), "a"), (flat, "b")])
    comparison = ops.compare_models(context(tmp_path), results, truth=truth)
    labelled = rasterize([(south, 1)], out_shape=scene.shape, transform=GRID) == 1
    assert comparison.report["scored_pixels"] == int(labelled.sum()) == 64
    accuracy = float((scene[labelled] == 0).mean())
    assert comparison.report["models"][0]["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-12)


def test_a_self_intersecting_polygon_labels_the_pixels_of_both_its_lobes(masks, tmp_path):
    results, scene = masks
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [[WEST, NORTH], [WEST + 160, NORTH - 80], [WEST + 160, NORTH], [WEST, NORTH - 80], [WEST, NORTH]]
        ],
    }
    comparison = ops.compare_models(context(tmp_path), results, truth=geojson(tmp_path, "bow.geojson", [(bowtie, "b")]))
    import shapely
    from shapely.geometry import shape

    repaired = shapely.make_valid(shape(bowtie))
    labelled = rasterize([(repaired, 1)], out_shape=scene.shape, transform=GRID) == 1
    assert comparison.report["scored_pixels"] == int(labelled.sum()) > 0


def test_a_collection_holding_a_line_is_refused_like_a_line(masks, tmp_path):
    results, _ = masks
    collection = {
        "type": "GeometryCollection",
        "geometries": [
            mapping(box(WEST, NORTH - 80, WEST + 160, NORTH - 40)),
            {"type": "LineString", "coordinates": [[WEST, NORTH - 5], [WEST + 160, NORTH - 5]]},
        ],
    }
    with pytest.raises(OperationError, match="holds points or lines; polygons are needed to label pixels"):
        ops.compare_models(context(tmp_path), results, truth=geojson(tmp_path, "gc.geojson", [(collection, "a")]))


def test_rotated_tiles_are_scored_on_their_own_grids_and_the_report_says_why_no_map_is_drawn(tmp_path):
    """Tiles on a rotated grid have no north-up mosaic, but their pixels still have truth: the scores stand (each
    tile's truth rasterized onto its own rotated grid, as rasterio does), and the report and page say why the
    scene has no map."""
    scene = np.random.default_rng(4).integers(0, 2, (TILE, 2 * TILE)).astype(np.uint8)
    results = predictions(tmp_path, scene, degrees=20)
    west, east = (
        box(WEST - 200, NORTH - 300, WEST + 80, NORTH + 200),
        box(WEST + 80, NORTH - 300, WEST + 400, NORTH + 200),
    )
    truth = geojson(tmp_path, "halves.geojson", [(mapping(west), "a"), (mapping(east), "b")])
    comparison = ops.compare_models(context(tmp_path), results, truth=truth)
    right = scored = 0
    for col in (0, TILE):
        codes = rasterize([(west, 0), (east, 1)], out_shape=(TILE, TILE), transform=tile_grid(col, 20), fill=255)
        labelled = codes != 255
        right += int((scene[:, col : col + TILE][labelled] == codes[labelled]).sum())
        scored += int(labelled.sum())
    assert comparison.report["scored_pixels"] == scored == 2 * TILE * TILE
    assert comparison.report["models"][0]["pixel_accuracy"] == pytest.approx(right / scored, abs=1e-12)
    assert "maps" not in comparison.report
    [undrawn] = comparison.report["maps_not_drawn"]
    assert undrawn["scene"] == "scene.tif" and "is rotated" in undrawn["why"]
    assert f"no map of scene.tif: {undrawn['why']}".replace("'", "&#39;") in comparison.html.read_text()
