"""compare_models against geographic truth a GIS user really has: polygons that are not valid, or not polygons."""

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


@pytest.fixture
def masks(tmp_path: Path) -> tuple[list[Predictions], np.ndarray]:
    """Two models' masks on the two 8 x 8 tiles of a 16 x 8 scene (classes a, b; nodata 255)."""
    scene = np.random.default_rng(3).integers(0, 2, (TILE, 2 * TILE)).astype(np.uint8)
    results = []
    for model in ("m1", "m2"):
        items = []
        for col in (0, TILE):
            transform = GRID * rasterio.Affine.translation(col, 0)
            path = tmp_path / model / f"{col}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=TILE,
                height=TILE,
                count=1,
                dtype="uint8",
                crs="EPSG:32633",
                transform=transform,
                nodata=255,
            ) as out:
                out.write(scene[:, col : col + TILE], 1)
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
                tmp_path / f"{model}.json",
                task="image-segmentation",
                labels=CLASSES,
                inputs={},
            )
        )
    return results, scene


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
