"""compare_models on the Earth (issue 20): truth matched by place, figures checked against rasterio, shapely and
scikit-learn computing the same thing directly on the same grid.

The land is the sample scene's (scripts/sample_data.py: samples-eo/scene.tif, labels.tif, labels.geojson,
regions.geojson). The same land is given as truth three ways (a label raster in another CRS at another
resolution, GeoJSON in lon/lat, a PostGIS table) and must score the same; two "models" are masks on the
scene's 128 x 128 tiles (cut by the real tile_image): the labels with some pixels changed, nodata where the
scene has none. PostGIS runs in a throwaway database this module creates.
"""

from __future__ import annotations

import dataclasses
import html
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import sqlalchemy as sa
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely.geometry import box, mapping, shape
from sklearn.metrics import confusion_matrix

from harness import write_geotiff
from orchestrator.assets import ops
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileDict, Predictions
from orchestrator.engine import Failed, OperationError, RunContext
from orchestrator.sources.databases import Connections
from sample_data import EO_CLASSES, write_eo_samples
from services_databases import PG_ADMIN_URL

TILE = 128
MODELS = {"model-a": 0.04, "model-b": 0.15}  # share of labelled pixels each model gets wrong


@pytest.fixture(scope="module")
def postgis() -> Iterator[str]:
    """A throwaway PostgreSQL database with PostGIS; its URL."""
    name = f"constellation_geo_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(sa.make_url(PG_ADMIN_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION postgis")
        yield url
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def land(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The sample scene, its tiles, two models' masks on them, and the labels as UTM polygons."""
    root = tmp_path_factory.mktemp("geo")
    data = root / "data"
    folder = write_eo_samples(data)
    ctx = context(root / "tiling", data)
    tiles = ops.tile_image(ctx, ops.import_from_local(ctx, "samples-eo/scene.tif"), tile_width=TILE, tile_height=TILE)
    with rasterio.open(folder / "labels.tif") as src:
        labels, grid, crs = src.read(1), src.transform, src.crs
    with rasterio.open(folder / "scene.tif") as src:
        valid = src.dataset_mask() > 0
    results = []
    for number, (model, wrong) in enumerate(MODELS.items()):
        rng = np.random.default_rng(number)
        scene = labels.copy()
        flip = (rng.random(scene.shape) < wrong) & (scene != 255)
        scene[flip] = (scene[flip] + 1 + rng.integers(0, 2, scene.shape)[flip]) % 3
        scene[~valid] = 255
        items = []
        for index, ref in enumerate(tiles):
            col, row = ref.meta["tile"]["col_off"], ref.meta["tile"]["row_off"]
            path = write_geotiff(
                root / model / f"{index:03d}.tif",
                scene[row : row + TILE, col : col + TILE],
                rasterio.Affine(*ref.meta["transform"]),
                crs,
                nodata=255,
            )
            items.append(
                {
                    "name": ref.name,
                    "mask": str(path),
                    "nodata": 255,
                    **{k: ref.meta[k] for k in ("crs", "transform", "width", "height", "tile")},
                }
            )
        results.append(
            Predictions(
                model,
                items,
                {"inputs": len(items), "seconds": 1.0},
                root / f"{model}.json",
                task="image-segmentation",
                labels=EO_CLASSES,
                inputs={ref.name: ref.path for ref in tiles},
            )
        )
    with rasterio.open(folder / "labels.tif") as src:
        polygons = [
            (shape(g), EO_CLASSES[int(v)])
            for g, v in rasterio.features.shapes(labels, mask=labels != 255, transform=grid)
        ]
    return SimpleNamespace(
        root=root,
        data=data,
        folder=folder,
        tiles=list(tiles),
        results=results,
        labels=labels,
        valid=valid,
        grid=grid,
        crs=crs,
        polygons=polygons,
        predicted=[],
        scenes={},
    )


def context(run: Path, data: Path, databases: dict[str, str] | None = None) -> RunContext:
    workspace = Workspace(data_root=str(data), artifact_root=str(run / "art"), output_root=str(run / "out"))
    resources = SimpleNamespace(workspace=workspace, databases=Connections(databases or {}))
    return RunContext(run_dir=run / "run", resources=resources)


def scene_masks(land: SimpleNamespace) -> list[np.ndarray]:
    """Each model's masks put back on the scene grid (the reference reads them as files, not from the report)."""
    out = []
    for result in land.results:
        scene = np.full(land.labels.shape, 255, dtype=np.uint8)
        for item in result.items:
            col, row = item["tile"]["col_off"], item["tile"]["row_off"]
            with rasterio.open(item["mask"]) as src:
                scene[row : row + TILE, col : col + TILE] = src.read(1)
        out.append(scene)
    return out


def reference(land: SimpleNamespace, truth: np.ndarray, where: np.ndarray | None = None) -> list[dict]:
    """Per model: per-class IoU, mIoU and pixel accuracy from scikit-learn's confusion matrix, on the pixels where
    the truth has a class and every model predicted (and `where`)."""
    masks = scene_masks(land)
    scored = (truth != 255) & np.all([m != 255 for m in masks], axis=0)
    if where is not None:
        scored &= where
    figures = []
    for mask in masks:
        matrix = confusion_matrix(truth[scored], mask[scored], labels=[0, 1, 2])
        diag, rows, cols = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
        present = rows + cols > 0
        iou = {EO_CLASSES[c]: diag[c] / (rows[c] + cols[c] - diag[c]) for c in range(3) if present[c]}
        figures.append(
            {
                "per_class_iou": iou,
                "miou": float(np.mean(list(iou.values()))),
                "pixel_accuracy": diag.sum() / matrix.sum(),
                "scored": int(scored.sum()),
            }
        )
    return figures


def assert_figures(report: dict, expected: list[dict]) -> None:
    for model, figures in zip(report["models"], expected, strict=True):
        assert model["miou"] == pytest.approx(figures["miou"], abs=1e-12)
        assert model["pixel_accuracy"] == pytest.approx(figures["pixel_accuracy"], abs=1e-12)
        assert model["per_class_iou"] == pytest.approx(figures["per_class_iou"], abs=1e-12)
        intervals = model["per_class_iou_intervals"]
        for name, iou in figures["per_class_iou"].items():
            assert intervals[name]["iou"] == pytest.approx(iou, abs=1e-12)
            low, high = intervals[name]["ci"]
            assert low <= iou + 1e-12 and iou - 1e-12 <= high
    assert report["scored_pixels"] == expected[0]["scored"]


def label_raster_in_another_crs(land: SimpleNamespace) -> Path:
    """The labels at 5 m in ETRS89 / UTM 33N (EPSG:25833), rasterized from the polygons, with the class names in
    a CRS tag: another CRS and another resolution, describing the same land."""
    path = land.data / "other" / "labels-25833.tif"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    west, north = land.grid.c, land.grid.f
    height, width = land.labels.shape[0] * 2, land.labels.shape[1] * 2
    transform = from_origin(west, north, 5, 5)
    burnt = rasterize(
        ((g, EO_CLASSES.index(c)) for g, c in land.polygons),
        out_shape=(height, width),
        transform=transform,
        fill=255,
        dtype="uint8",
    )
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs="EPSG:25833",
        transform=transform,
        nodata=255,
    ) as out:
        out.write(burnt, 1)
        out.update_tags(CLASSES=json.dumps(EO_CLASSES))
    return path


def load_polygons(url: str, table: str, polygons: list, srid: int = 32633) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
            conn.exec_driver_sql(f'CREATE TABLE "{table}" (id serial, landcover text, geom geometry(Polygon, {srid}))')
            conn.execute(
                sa.text(
                    f'INSERT INTO "{table}" (landcover, geom) VALUES (:c, ST_SetSRID(ST_GeomFromText(:wkt), :srid))'
                ),
                [{"c": c, "wkt": g.wkt, "srid": srid} for g, c in polygons],
            )
    finally:
        engine.dispose()


def test_the_same_land_scores_the_same_from_a_label_raster_in_another_crs_geojson_and_postgis(
    land: SimpleNamespace, postgis: str, tmp_path: Path
):
    label_raster_in_another_crs(land)
    load_polygons(postgis, "landcover", land.polygons)
    ctx = context(tmp_path, land.data, {"CONSTELLATION_DB_GEO_URL": postgis})
    expected = reference(land, land.labels)
    raster = ops.compare_models(ctx, land.results, truth=ops.import_from_local(ctx, "other/labels-25833.tif"))
    geojson = ops.compare_models(
        context(tmp_path / "2", land.data),
        land.results,
        truth_column="class",
        truth=ops.import_from_local(ctx, "samples-eo/labels.geojson"),
    )
    table = ops.import_from_database(ctx, "geo", table="landcover")
    assert table.geometry == {"geom": {"srid": 32633, "crs": "EPSG:32633"}}
    assert next(table.rows())["geom"]["type"] == "Polygon"
    database = ops.compare_models(
        context(tmp_path / "3", land.data), land.results, truth=table, truth_column="landcover"
    )
    for comparison in (raster, geojson, database):
        assert_figures(comparison.report, expected)
    assert raster.report["models"] == geojson.report["models"] == database.report["models"]
    report = raster.report
    assert report["scored_pixels"] + report["ignored_pixels"] == land.labels.size
    assert report["classes"] == {
        "truth": ["water", "bare", "vegetation"]
        if report["classes"]["truth"][1] == "bare"
        else report["classes"]["truth"],
        "truth_only": [],
        "model_only": {"model-a": [], "model-b": []},
    }
    assert report["verdict"].startswith("model-a is best (mIoU")
    # The scene GeoTIFFs: each model's prediction equals its masks put back; the disagreement is where they differ.
    files = raster.to_result()["files"]
    masks = scene_masks(land)
    with (
        rasterio.open(raster.files["maps/scene/model-a.tif"]) as a,
        rasterio.open(raster.files["maps/scene/disagreement.tif"]) as d,
    ):
        assert a.crs == land.crs and a.transform == land.grid
        np.testing.assert_array_equal(a.read(1), masks[0])
        valid = (masks[0] != 255) & (masks[1] != 255)
        np.testing.assert_array_equal(d.read(1), np.where(valid, masks[0] != masks[1], 255))
    assert set(files) == {
        "maps/scene/model-a.tif",
        "maps/scene/model-b.tif",
        "maps/scene/truth.tif",
        "maps/scene/disagreement.tif",
    }
    page = raster.html.read_text()
    assert "On the map" in page and page.count("data:image/png") >= 4 and "IoU per class" in page


def test_nodata_in_the_input_is_not_scored(land: SimpleNamespace, tmp_path: Path):
    """Truth labels the scene's nodata frame too (a polygon of 'bare' under everything): were the frame scored,
    every model would be wrong on it."""
    folder = land.data / "framed"
    folder.mkdir(exist_ok=True)
    with rasterio.open(land.folder / "labels.tif") as src:
        everything = box(*src.bounds)
    features = [(everything, "bare"), *land.polygons]
    document = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
        "features": [{"type": "Feature", "properties": {"class": c}, "geometry": mapping(g)} for g, c in features],
    }
    (folder / "truth.geojson").write_text(json.dumps(document))
    ctx = context(tmp_path, land.data)
    comparison = ops.compare_models(
        ctx, land.results, truth_column="class", truth=ops.import_from_local(ctx, "framed/truth.geojson")
    )
    framed = np.where(land.valid, land.labels, 2).astype(np.uint8)  # the frame labelled bare
    expected = reference(land, framed)
    assert_figures(comparison.report, expected)
    assert comparison.report["ignored_pixels"] == int((~land.valid).sum())
    # Scoring the frame (nodata predicted as a wrong class) would give other figures.
    masks = scene_masks(land)
    everywhere = confusion_matrix(framed.ravel(), np.where(masks[0] == 255, 0, masks[0]).ravel(), labels=[0, 1, 2])
    diag = np.diag(everywhere)
    assert diag.sum() / everywhere.sum() < comparison.report["models"][0]["pixel_accuracy"] - 0.01


def test_each_regions_figures_are_those_of_its_pixels_alone(land: SimpleNamespace, tmp_path: Path):
    ctx = context(tmp_path, land.data)
    comparison = ops.compare_models(
        ctx,
        land.results,
        truth=ops.import_from_local(ctx, "samples-eo/labels.tif"),
        regions=ops.import_from_local(ctx, "samples-eo/regions.geojson"),
    )
    report = comparison.report
    regions = json.loads((land.folder / "regions.geojson").read_text())["features"]
    assert [r["region"] for r in report["regions"]] == [f["properties"]["name"] for f in regions]
    rows = np.arange(land.labels.shape[0])[:, None] * np.ones(land.labels.shape[1], dtype=bool)[None, :]
    middle = land.labels.shape[0] // 2
    for region, inside in zip(report["regions"], (rows < middle, rows >= middle), strict=True):
        expected = reference(land, land.labels, inside)
        assert region["scored_pixels"] == expected[0]["scored"]
        for model, figures in zip(region["models"], expected, strict=True):
            assert model["miou"] == pytest.approx(figures["miou"], abs=1e-12)
            assert model["per_class_iou"] == pytest.approx(figures["per_class_iou"], abs=1e-12)
            assert model["miou_ci"] is not None and "seconds" not in model
        assert region["pairs"][0]["models"] == ["model-a", "model-b"] and region["pairs"][0]["p_value"] is not None
    assert sum(r["scored_pixels"] for r in report["regions"]) == report["scored_pixels"]
    assert "ranking is the same in each of the 2 regions" in report["verdict"]
    assert "By region" in comparison.html.read_text()


def test_predictions_go_into_postgis_as_polygons_that_st_area_measures(
    land: SimpleNamespace, postgis: str, tmp_path: Path
):
    ctx = context(tmp_path, land.data, {"CONSTELLATION_DB_GEO_URL": postgis})
    polygons = ops.vectorize_mask(ctx, land.results[1])
    assert polygons.columns == ["class", "source", "geometry"]
    assert polygons.geometry == {"geometry": {"srid": 32633, "crs": "EPSG:32633"}}
    exported = ops.export_to_database(ctx, polygons, "geo", "predicted")
    assert exported.items[0]["rows"] == polygons.count
    masks = scene_masks(land)[1]
    engine = sa.create_engine(postgis)
    try:
        with engine.connect() as conn:
            areas = dict(
                conn.exec_driver_sql("SELECT class, sum(ST_Area(geometry)) FROM predicted GROUP BY class").all()
            )
            srids = conn.exec_driver_sql("SELECT DISTINCT ST_SRID(geometry) FROM predicted").scalars().all()
            west, north = land.grid.c, land.grid.f
            corner = conn.exec_driver_sql(
                "SELECT count(DISTINCT source) FROM predicted WHERE ST_Intersects(geometry, "
                f"ST_MakeEnvelope({west + 10}, {north - 1270}, {west + 1270}, {north - 10}, 32633))"
            ).scalar()
    finally:
        engine.dispose()
    assert srids == [32633]
    assert areas == {name: pytest.approx(100.0 * np.sum(masks == i)) for i, name in enumerate(EO_CLASSES)}
    assert corner == 1  # inside the first tile (128 px of 10 m), off its edges: only its polygons
    # Only some classes, and as a GeoJSON file (RFC 7946, lon/lat) for a GIS.
    water = ops.vectorize_mask(context(tmp_path / "w", land.data), land.results[1], classes=["WATER"])
    assert {row["class"] for row in water.rows()} == {"water"}
    written = ops.export_to_local(context(tmp_path / "w", land.data), water, folder="polygons")
    document = json.loads(Path(written.items[0]["uri"].removeprefix("file://")).read_text())
    assert len(document["features"]) == water.count and "crs" not in document
    x, y = document["features"][0]["geometry"]["coordinates"][0][0]
    assert 14 < x < 16 and 41 < y < 43  # longitude, latitude of the scene


def geojson_far_away(folder: Path) -> FileDict:
    path = folder / "far.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"label": "water"},
                        "geometry": {"type": "Polygon", "coordinates": [[[2, 48], [3, 48], [3, 49], [2, 49], [2, 48]]]},
                    }
                ],
            }
        )
    )
    return FileDict({"far.geojson": path})


def test_bad_truth_is_refused_saying_what_is_wrong(land: SimpleNamespace, postgis: str, tmp_path: Path):
    ctx = context(tmp_path, land.data, {"CONSTELLATION_DB_GEO_URL": postgis})
    with pytest.raises(OperationError) as far:
        ops.compare_models(ctx, land.results, truth=geojson_far_away(tmp_path))
    message = str(far.value)
    assert "does not overlap the predicted tiles" in message
    assert "the tiles cover [500000.0, 4644880.0, 505120.0, 4650000.0] (EPSG:32633)" in message
    assert message.count("EPSG:32633") == 2
    with pytest.raises(OperationError, match=r"labels.geojson' has no property 'kind' \(its properties: class\)"):
        ops.compare_models(
            ctx, land.results, truth_column="kind", truth=ops.import_from_local(ctx, "samples-eo/labels.geojson")
        )
    unnamed = land.data / "unnamed"
    unnamed.mkdir(exist_ok=True)
    with (
        rasterio.open(land.folder / "labels.tif") as src,
        rasterio.open(unnamed / "ids.tif", "w", **src.profile) as out,
    ):
        out.write(src.read(1), 1)  # the same ids, no CLASSES tag
    with pytest.raises(OperationError, match=r"the truth's classes \(0, 2, 1\)|match none of the models' labels"):
        ops.compare_models(ctx, land.results, truth=ops.import_from_local(ctx, "unnamed/ids.tif"))
    # ...which `classes` names.
    named = ops.compare_models(
        context(tmp_path / "n", land.data),
        land.results,
        classes=EO_CLASSES,
        truth=ops.import_from_local(ctx, "unnamed/ids.tif"),
    )
    assert named.report["models"][0]["miou"] == pytest.approx(reference(land, land.labels)[0]["miou"], abs=1e-12)
    # An SRID pyproj does not know: a custom one in spatial_ref_sys.
    engine = sa.create_engine(postgis)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM spatial_ref_sys WHERE srid = 990001")
            conn.exec_driver_sql(
                "INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) "
                "VALUES (990001, 'CONSTELLATION', 990001, '', '')"
            )
    finally:
        engine.dispose()
    load_polygons(postgis, "odd", land.polygons[:3], srid=990001)
    table = ops.import_from_database(ctx, "geo", query="SELECT landcover, geom FROM odd")
    assert table.geometry == {"geom": {"srid": 990001, "crs": "CONSTELLATION:990001"}}
    with pytest.raises(OperationError, match="SRID 990001 .*not a CRS pyproj knows"):
        ops.compare_models(ctx, land.results, truth=table, truth_column="landcover")


def test_classified_tiles_take_the_class_at_their_centre_or_of_most_of_them(land: SimpleNamespace, tmp_path: Path):
    items = []
    for ref in land.tiles:
        items.append(
            {
                "name": ref.name,
                "labels": ["vegetation", "bare", "water"],
                "scores": [0.5, 0.3, 0.2],
                **{k: ref.meta[k] for k in ("crs", "transform", "width", "height", "tile")},
            }
        )
    results = [
        Predictions(
            model,
            [dict(i, labels=i["labels"][::step]) for i in items],
            {"inputs": len(items)},
            tmp_path / f"{model}.json",
            task="image-classification",
            labels=EO_CLASSES,
        )
        for model, step in (("always-vegetation", 1), ("always-water", -1))
    ]
    ctx = context(tmp_path, land.data)
    truth = ops.import_from_local(ctx, "samples-eo/labels.geojson")
    for rule in ("centre", "majority"):
        comparison = ops.compare_models(
            context(tmp_path / rule, land.data), results, truth=truth, truth_column="class", truth_rule=rule
        )
        expected = {}
        for ref in land.tiles:
            col, row = ref.meta["tile"]["col_off"], ref.meta["tile"]["row_off"]
            window = land.labels[row : row + TILE, col : col + TILE]
            if rule == "centre":
                value = window[TILE // 2, TILE // 2]  # the pixel whose top-left corner is the tile's centre
            else:
                counts = np.bincount(window[window != 255], minlength=3)
                value = int(np.argmax(counts)) if counts.sum() else 255
            if value != 255:
                expected[ref.name] = EO_CLASSES[value]
        share = np.mean([c == "vegetation" for c in expected.values()])
        report = comparison.report
        assert report["inputs"] == len(expected) and report["ignored_inputs"] == len(land.tiles) - len(expected)
        assert report["models"][0]["accuracy"] == pytest.approx(share)


def test_the_alignments_counts_are_what_reading_the_truth_tiles_again_gives(land: SimpleNamespace, tmp_path: Path):
    """The alignment hands its per-tile counts to the scoring (one read of the masks): they equal a scan that reads
    the masks and the written truth tiles, with scikit-learn's confusion_matrix, and score the same report."""
    from orchestrator import compare
    from orchestrator.compare import geotruth, segmentation
    from orchestrator.compare.inputs import ModelRun, Truth, aligned_names

    rng = np.random.default_rng(3)
    truth_codes, predicted = rng.integers(0, 5, 5000), rng.integers(0, 5, 5000)
    np.testing.assert_array_equal(
        geotruth.confusion(truth_codes, predicted, 6), confusion_matrix(truth_codes, predicted, labels=np.arange(6))
    )
    ctx = context(tmp_path, land.data)
    runs = [ModelRun(r.model, r.task, r.items, r.stats, r.labels) for r in land.results]
    aligned = geotruth.align(
        runs,
        ops.import_from_local(ctx, "samples-eo/labels.geojson"),
        geotruth.Options(column="class"),
        tmp_path / "aligned",
    )
    names = aligned_names(aligned.runs)
    aligned.write_truth(names)  # as files only for the tiles a page draws: here all of them, to read them again
    aligned.close()
    handed = segmentation.Scan.of(aligned.runs, names, aligned.truth)
    assert handed is aligned.truth.counted
    unread = Truth(
        kind="masks",
        values=aligned.truth.values,
        source=aligned.truth.source,
        labels=aligned.truth.labels,
        ignore_index=aligned.truth.ignore_index,
    )
    read = segmentation.Scan.of(aligned.runs, names, unread)
    assert read is not handed and unread.counted is None
    assert read.shown == handed.shown and read.truth_shown == handed.truth_shown
    assert read.agreement.keys() == handed.agreement.keys()
    for pair, values in read.agreement.items():
        np.testing.assert_allclose(handed.agreement[pair], values, rtol=0, atol=1e-15)
    # Per class (by name), the same diagonal, truth and predicted counts on every tile (reading the truth tiles
    # again also meets their 'not scored' value, a class of no scored pixel).
    common = [name for name in read.vocab.names if name in handed.vocab.names]
    assert set(read.vocab.names) - set(common) <= {f"#{geotruth.IGNORE}"}
    np.testing.assert_array_equal(
        handed.sums[..., [handed.vocab.names.index(n) for n in common]],
        read.sums[..., [read.vocab.names.index(n) for n in common]],
    )
    assert handed.sums.sum() == read.sums.sum() > 0
    with_counts = compare.compare(aligned.runs, aligned.truth)
    without = compare.compare(aligned.runs, unread)
    for mine, theirs in zip(with_counts["models"], without["models"], strict=True):
        for key in ("miou", "miou_ci", "pixel_accuracy", "pixel_accuracy_ci", "per_class_iou"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-12), key
        assert mine["per_class_iou_ci"].keys() == theirs["per_class_iou_ci"].keys()
        for name, interval in theirs["per_class_iou_ci"].items():
            assert mine["per_class_iou_ci"][name] == pytest.approx(interval, abs=1e-12)
    assert with_counts["pairs"] == without["pairs"]
    assert compare.find_disagreements(aligned.runs, aligned.truth) == compare.find_disagreements(aligned.runs, unread)


def tile_counts(land: SimpleNamespace) -> np.ndarray:
    """Per scored tile (in the predictions' order) and model, scikit-learn's confusion matrix of the labels
    raster against the model's mask, on the tile's pixels with a class and every model's prediction."""
    masks = scene_masks(land)
    counts = []
    for item in land.results[0].items:
        col, row = item["tile"]["col_off"], item["tile"]["row_off"]
        window = (slice(row, row + TILE), slice(col, col + TILE))
        truth = land.labels[window]
        scored = (truth != 255) & np.all([m[window] != 255 for m in masks], axis=0)
        if scored.any():
            counts.append([confusion_matrix(truth[scored], m[window][scored], labels=[0, 1, 2]) for m in masks])
    return np.array(counts)


def test_a_champion_gate_on_the_earth_is_the_paired_bootstrap_over_tiles(land: SimpleNamespace, tmp_path: Path):
    """baseline and gate with truth from polygons: the challenger's delta of mIoU and of pixel accuracy is the
    difference of the two models' figures computed directly (scikit-learn on the scene grid), and its interval is
    the percentile interval of that difference over the same resamples of the tiles, each resample scoring both
    models on the same tiles (scipy.stats.bootstrap of the per-tile confusion matrices, seed 0, 200 resamples).
    A gate no challenger passes fails the step with fail_on_gate, after the report is written; the page names
    its run, its date and its pipeline as every report does."""
    from scipy.stats import bootstrap

    truth = ops.import_from_local(context(tmp_path / "import", land.data), "samples-eo/labels.geojson")
    gate = {"miou": {"min_delta": 0.05}, "pixel_accuracy": {"min_delta": 0.0}}
    pipeline = [{"operation": "compare_models", "parameters": {"baseline": "model-b", "gate": gate}}]
    ctx = dataclasses.replace(context(tmp_path / "gate", land.data), pipeline=pipeline)
    report = ops.compare_models(
        ctx, land.results, truth=truth, truth_column="class", baseline="model-b", gate=gate
    ).report
    expected = reference(land, land.labels)
    counts = tile_counts(land)

    def figures(idx: np.ndarray, model: int) -> tuple[np.ndarray, np.ndarray]:
        summed = counts[idx, model].sum(axis=-3)  # resamples x 3 x 3
        diag = np.diagonal(summed, axis1=-2, axis2=-1)
        rows, cols = summed.sum(axis=-1), summed.sum(axis=-2)
        present = rows + cols > 0
        iou = np.where(present, diag / np.maximum(rows + cols - diag, 1), 0.0)
        return iou.sum(axis=-1) / present.sum(axis=-1), diag.sum(axis=-1) / rows.sum(axis=-1)

    def difference(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        (miou_a, accuracy_a), (miou_b, accuracy_b) = figures(idx, 0), figures(idx, 1)
        return np.stack([miou_a - miou_b, accuracy_a - accuracy_b])

    direct = bootstrap(
        (np.arange(len(counts)),),
        difference,
        n_resamples=200,
        vectorized=True,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    [challenger] = [m for m in report["models"] if m["model"] == "model-a"]
    assert report["gate"]["baseline"] == "model-b" and report["gate"]["passed"] == ["model-a"]
    for row, (metric, margin) in enumerate((("miou", 0.05), ("pixel_accuracy", 0.0))):
        [check] = [c for c in challenger["gate"]["checks"] if c["metric"] == metric]
        assert check["delta"] == pytest.approx(expected[0][metric] - expected[1][metric], abs=1e-12)
        low, high = np.percentile(direct.bootstrap_distribution[row], [2.5, 97.5])
        assert check["delta_ci"] == pytest.approx([low, high], abs=1e-12)
        assert check["passed"] and low >= margin
    assert "model-b" not in [m["model"] for m in report["models"] if m.get("gate")]
    page = (ctx.node_dir / "report.html").read_text()
    assert f"run <code>{ctx.run_id}</code>" in page and "On the map" in page
    # The rows of disagreement draw the truth over each input: its tiles were written for those rows, and only them.
    drawn = page.count("with its truth drawn")
    assert drawn > 0 and len(list((ctx.node_dir / "truth").glob("*.png"))) == drawn
    assert json.dumps({"instructions": pipeline}, indent=1) in html.unescape(page)

    failing = context(tmp_path / "failing", land.data)
    with pytest.raises(OperationError, match="no challenger passes") as raised:
        ops.compare_models(
            failing,
            land.results,
            truth=truth,
            truth_column="class",
            baseline="model-b",
            gate={"miou": {"min_delta": 0.5}},
            fail_on_gate=True,
        )
    assert "report.html" in str(raised.value)
    written = json.loads((failing.node_dir / "comparison.json").read_text())
    assert written["gate"]["any_passed"] is False and (failing.node_dir / "report.html").exists()


def test_the_maps_are_the_same_when_the_tiles_are_held_in_files(
    land: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The alignment holds the masks and truth tiles in memory up to a budget, then in files: the report and every
    scene GeoTIFF are the same either way, and the prediction maps are what the mosaic operation makes of the
    masks."""
    from orchestrator.compare import geotruth

    truth = ops.import_from_local(context(tmp_path / "import", land.data), "samples-eo/labels.geojson")
    made = []
    for budget in (None, 0):
        if budget is not None:
            monkeypatch.setattr(geotruth, "HELD_BYTES", budget)
        ctx = context(tmp_path / f"budget-{budget}", land.data)
        made.append(ops.compare_models(ctx, land.results, truth=truth, truth_column="class"))
    held, spilt = made
    assert held.report["models"] == spilt.report["models"] and held.report["maps"] == spilt.report["maps"]
    assert held.files.keys() == spilt.files.keys() and len(held.files) == 4
    for name, path in held.files.items():
        with rasterio.open(path) as a, rasterio.open(spilt.files[name]) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.transform == b.transform and a.crs == b.crs and a.nodata == b.nodata
    ctx = context(tmp_path / "mosaic", land.data)
    [merged] = ops.mosaic(ctx, land.results[0])
    with rasterio.open(merged.path) as a, rasterio.open(held.files["maps/scene/model-a.tif"]) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform and a.nodata == b.nodata


def test_a_model_that_failed_is_named_by_the_report_and_page_on_the_earth(land: SimpleNamespace, tmp_path: Path):
    """The engine hands compare_models a Failed for a model that did not run: on the Earth as elsewhere, the
    others are compared and the JSON, the verdict and the page's 'Models that failed' section name it."""
    ctx = context(tmp_path, land.data)
    broken = Failed(
        "/instructions/3/parameters/results/2",
        "model_inference",
        "not run: it needs model 'land-cover-c', which deploy_model at /instructions/2 did not provide: <bad> file",
        {"model": "land-cover-c"},
    )
    truth = ops.import_from_local(ctx, "samples-eo/labels.geojson")
    compared = ops.compare_models(ctx, [*land.results, broken], truth_column="class", truth=truth)
    whole = ops.compare_models(context(tmp_path / "2", land.data), land.results, truth_column="class", truth=truth)
    report = compared.report
    assert [m["model"] for m in report["models"]] == [m["model"] for m in whole.report["models"]]
    assert [m["miou"] for m in report["models"]] == [m["miou"] for m in whole.report["models"]]
    assert [f["model"] for f in report["failed_models"]] == ["land-cover-c"] and whole.report["failed_models"] == []
    assert "'land-cover-c' failed to load or run" in report["verdict"]
    saved = json.loads((compared.html.parent / "comparison.json").read_text())
    assert saved["failed_models"] == report["failed_models"]
    page = compared.html.read_text()
    assert '<section id="failed-models">' in page and "&lt;bad&gt; file" in page and "<bad>" not in page
    assert 'id="failed-models"' not in whole.html.read_text()
