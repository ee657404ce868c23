"""Write a small labelled image set for the sample pipelines: DATA_ROOT/samples/<label>/*.jpg."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import os
import sys
from pathlib import Path

import sqlalchemy as sa
from PIL import Image, ImageDraw
from sqlalchemy.dialects import mysql

import comparison_samples

LABELS = {"Fire": (220, 80, 20), "Normal": (60, 140, 60), "Smoke": (150, 150, 160)}


def write_samples(root: Path, per_label: int = 4, size: tuple[int, int] = (320, 240)) -> Path:
    """Create the sample images under `root` (idempotent) and return their folder."""
    folder = root / "samples"
    for label, colour in LABELS.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            path = folder / label / f"{label.lower()}_{i}.jpg"
            if path.exists():
                continue
            image = Image.new("RGB", size, colour)
            ImageDraw.Draw(image).ellipse((20 + 30 * i, 20, 140 + 30 * i, 140), fill=(255 - 40 * i, 200, 40 * i))
            image.save(path, quality=90)
    return folder


SAMPLES_TABLE = "constellation_samples"
SAMPLE_COLOURS = {"fire-1": (220, 60, 20), "fire-2": (250, 120, 0), "forest-1": (20, 140, 40), "lake-1": (30, 60, 200)}


def sample_image(colour: tuple[int, int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(out, format=fmt)
    return out.getvalue()


def sample_rows() -> list[dict]:
    """The rows of `constellation_samples`: names, labels, times, scores, an image each, a note or NULL."""
    rows = []
    for i, (name, colour) in enumerate(SAMPLE_COLOURS.items(), start=1):
        rows.append(
            {
                "id": i,
                "name": name,
                "label": name.split("-")[0],
                "taken_at": dt.datetime(2024, 5, i, 12, 30, 15),
                "score": decimal.Decimal(f"{i}.125"),
                "image": sample_image(colour, "PNG" if i % 2 else "JPEG"),
                "note": None if i % 2 else f"note {i}",
            }
        )
    return rows


def samples_table(metadata: sa.MetaData, name: str = SAMPLES_TABLE) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("taken_at", sa.DateTime, nullable=False),
        sa.Column("score", sa.Numeric(10, 3), nullable=False),
        sa.Column("image", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
        sa.Column("note", sa.Text),
    )


def seed_samples(engine: sa.Engine, name: str = SAMPLES_TABLE) -> None:
    """Create the samples table (`constellation_samples` unless named) in the engine's default schema; fill it."""
    table = samples_table(sa.MetaData(), name)
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), sample_rows())


def write_sample_database(root: Path) -> str:
    """An SQLite file holding `constellation_samples`, for the database examples; its URL."""
    path = root / "samples.db"
    url = f"sqlite:///{path.resolve()}"
    root.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if SAMPLES_TABLE not in sa.inspect(engine).get_table_names():
        seed_samples(engine)
    comparison_samples.write_tables(engine)  # labelled rows and texts for the comparisons
    engine.dispose()
    return url


EO_CLASSES = ["water", "vegetation", "bare"]  # class ids 0, 1, 2 of the sample label raster (255: nodata)
# Surface reflectance × 10,000 per class in bands B02, B03, B04, B08 (blue, green, red, near infrared).
EO_REFLECTANCE = {0: (600, 500, 300, 150), 1: (400, 700, 450, 3500), 2: (1200, 1400, 1600, 2200)}


def write_eo_samples(root: Path, size: int = 512, border: int = 16) -> Path:
    """A small satellite scene and its labels under `root`/samples-eo/ (idempotent); returns the folder.

    scene.tif: 4 bands (B02, B03, B04, B08), uint16 reflectance × 10,000 (scale 0.0001 in the file),
    UTM zone 33N (EPSG:32633) at 10 m, nodata 0 on a `border`-pixel frame. labels.tif: the class id of
    each pixel (0 water, 1 vegetation, 2 bare), uint8, nodata 255 on the same frame.
    """
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    folder = root / "samples-eo"
    scene, labels = folder / "scene.tif", folder / "labels.tif"
    if scene.exists() and labels.exists():
        write_eo_truth(folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[0:size, 0:size]
    classes = np.full((size, size), 2, dtype=np.uint8)  # bare ground, with a lake and fields on it
    classes[(rows - size * 0.3) ** 2 + (cols - size * 0.35) ** 2 < (size * 0.18) ** 2] = 0
    classes[(rows > size * 0.55) & (cols > size * 0.1) & (cols < size * 0.9)] = 1
    classes[(rows > size * 0.1) & (rows < size * 0.45) & (cols > size * 0.6)] = 1
    noise = np.random.default_rng(19).normal(0, 60, (4, size, size))
    table = np.array([EO_REFLECTANCE[c] for c in range(len(EO_CLASSES))], dtype=np.float64)
    pixels = np.moveaxis(table[classes], -1, 0) + noise
    pixels = np.clip(pixels, 1, 10_000).astype(np.uint16)
    frame = np.zeros((size, size), dtype=bool)
    frame[:border], frame[-border:], frame[:, :border], frame[:, -border:] = True, True, True, True
    pixels[:, frame] = 0
    classes[frame] = 255
    geo = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "crs": "EPSG:32633",
        "transform": from_origin(500_000, 4_650_000, 10, 10),
        "compress": "deflate",
    }
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(scene, "w", count=4, dtype="uint16", nodata=0, **geo) as out:
            out.write(pixels)
            out.descriptions = ("B02", "B03", "B04", "B08")
            out.scales = (0.0001,) * 4
        with rasterio.open(labels, "w", count=1, dtype="uint8", nodata=255, **geo) as out:
            out.write(classes, 1)
            out.descriptions = ("class",)
            out.update_tags(CLASSES=",".join(EO_CLASSES))
    write_eo_truth(folder)
    return folder


def write_eo_truth(folder: Path) -> None:
    """The sample labels as polygons and two regions, GeoJSON in lon/lat beside the scene (idempotent).

    labels.geojson: labels.tif's classes as polygons (property `class`), so that a comparison against either
    scores the same pixels; regions.geojson: the scene's northern and southern halves (property `name`).
    """
    import json

    import rasterio
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    truth, regions = folder / "labels.geojson", folder / "regions.geojson"
    if truth.exists() and regions.exists():
        return
    with rasterio.open(folder / "labels.tif") as src:
        ids, crs, transform = src.read(1), src.crs, src.transform
        west, south, east, north = src.bounds
    features = [
        {
            "type": "Feature",
            "properties": {"class": EO_CLASSES[int(value)]},
            "geometry": transform_geom(crs, "EPSG:4326", geometry),
        }
        for geometry, value in shapes(ids, mask=ids != 255, transform=transform)
    ]
    truth.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    middle = (north + south) / 2
    halves = {"north": (middle, north), "south": (south, middle)}
    regions.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": name},
                        "geometry": transform_geom(
                            crs,
                            "EPSG:4326",
                            {
                                "type": "Polygon",
                                "coordinates": [[(west, low), (east, low), (east, high), (west, high), (west, low)]],
                            },
                        ),
                    }
                    for name, (low, high) in halves.items()
                ],
            }
        )
    )


# The sample scene's bands as STAC describes them: (name, common name, centre wavelength in µm).
EO_BANDS = [("B02", "blue", 0.49), ("B03", "green", 0.56), ("B04", "red", 0.665), ("B08", "nir", 0.842)]


def write_stac_sample(root: Path) -> Path:
    """A static STAC catalog of the sample scene, `root`/samples-eo/stac/catalog.json (idempotent); returns it.

    One item, `sample-scene` (2024-06-15, 3 % cloud cover), whose asset `scene` is ../../scene.tif with
    its four bands in eo:bands and raster:bands (scale 0.0001, nodata 0): import_from_stac reads it
    as files, since it lies under the data root.
    """
    import pystac
    import rasterio
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension
    from rasterio.warp import transform_bounds, transform_geom

    folder = write_eo_samples(root)
    target = folder / "stac" / "catalog.json"
    if target.exists():
        return target
    scene = folder / "scene.tif"
    with rasterio.open(scene) as src:
        bbox = [round(v, 6) for v in transform_bounds(src.crs, "EPSG:4326", *src.bounds)]
        west, south, east, north = src.bounds
        outline = {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        }
        geometry = transform_geom(src.crs, "EPSG:4326", outline)
        shape, transform, epsg = [src.height, src.width], list(src.transform)[:6], src.crs.to_epsg()
    item = pystac.Item(
        "sample-scene",
        geometry,
        bbox,
        dt.datetime(2024, 6, 15, 10, 0, tzinfo=dt.UTC),
        {"eo:cloud_cover": 3.0, "platform": "constellation-sample"},
        collection=None,
    )
    asset = pystac.Asset(
        str(scene.resolve()),
        title="4-band surface reflectance (× 10,000)",
        media_type=pystac.MediaType.GEOTIFF,
        roles=["data"],
    )
    item.add_asset("scene", asset)
    EOExtension.ext(item, add_if_missing=True)
    EOExtension.ext(asset).bands = [Band.create(name=n, common_name=c, center_wavelength=w) for n, c, w in EO_BANDS]
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(nodata=0, data_type=DataType.UINT16, scale=0.0001) for _ in EO_BANDS
    ]
    projection = ProjectionExtension.ext(asset, add_if_missing=True)
    projection.code, projection.shape, projection.transform = f"EPSG:{epsg}", shape, transform
    catalog = pystac.Catalog("constellation-samples", "The sample satellite scene of `make run`")
    catalog.add_item(item)
    catalog.normalize_hrefs(str(target.parent))
    catalog.make_all_asset_hrefs_relative()  # ../../scene.tif: the folder can move with its catalog
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return target


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CONSTELLATION_DATA_ROOT", "data"))
    print(f"sample images in {write_samples(root)}")
    print(f"sample satellite scene in {write_eo_samples(root)}")
    print(f"sample STAC catalog: {write_stac_sample(root)}")
    print(f"sample database: {write_sample_database(root)}")
    print(f"comparison samples: {', '.join(str(p) for p in comparison_samples.write_files(root))}")
