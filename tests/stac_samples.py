"""Scenes and STAC catalogs for the import_from_stac tests: COGs written with rasterio, catalogs with pystac."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from pystac.extensions.eo import Band, EOExtension
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from werkzeug import Request, Response

UTM = "EPSG:32633"
ORIGIN = (500_000.0, 5_000_000.0)  # UTM 33N, near 45.1° N 15° E


def write_cog(
    path: Path, size: int, bands: int = 1, pixel: float = 10.0, block: int = 128, seed: int = 0, nodata: int | None = 0
) -> np.ndarray:
    """A COG of `bands` uint16 bands of noise (values 1..4000, so deflate cannot shrink it much); returns the pixels."""
    data = np.random.default_rng(seed).integers(1, 4000, (bands, size, size), dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="COG",
        width=size,
        height=size,
        count=bands,
        dtype="uint16",
        crs=UTM,
        transform=from_origin(*ORIGIN, pixel, pixel),
        nodata=nodata,
        compress="deflate",
        blocksize=block,
        overviews="NONE",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


def wgs84_bounds(path: Path) -> list[float]:
    with rasterio.open(path) as src:
        return list(transform_bounds(src.crs, "EPSG:4326", *src.bounds))


def inner_bbox(path: Path, col: int, row: int, width: int, height: int) -> list[float]:
    """A WGS84 box inside the pixel window (col, row, width, height): its envelope back in UTM stays in it."""
    with rasterio.open(path) as src:
        t = src.transform
        xs = [t.c + t.a * c for c in (col, col + width)]
        ys = [t.f + t.e * r for r in (row, row + height)]
    from pyproj import Transformer

    to_wgs = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lons_w = [to_wgs.transform(xs[0], y)[0] for y in ys]
    lons_e = [to_wgs.transform(xs[1], y)[0] for y in ys]
    lats_s = [to_wgs.transform(x, min(ys))[1] for x in xs]
    lats_n = [to_wgs.transform(x, max(ys))[1] for x in xs]
    eps = 1e-7
    return [max(lons_w) + eps, max(lats_s) + eps, min(lons_e) - eps, min(lats_n) - eps]


def item(
    item_id: str,
    footprint: Sequence[float],
    when: str,
    cloud: float | None,
    assets: dict[str, tuple[str, list[tuple[str, str]]]],
    collection: str | None = None,
) -> pystac.Item:
    """An item over `footprint` (WGS84 bbox) whose assets are {key: (href, [(band name, common name)])}."""
    west, south, east, north = footprint
    geometry = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    properties = {} if cloud is None else {"eo:cloud_cover": cloud}
    made = pystac.Item(
        item_id, geometry, list(footprint), datetime.fromisoformat(when), properties, collection=collection
    )
    EOExtension.ext(made, add_if_missing=True)
    for key, (href, bands) in assets.items():
        asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"])
        made.add_asset(key, asset)
        EOExtension.ext(asset).bands = [Band.create(name=name, common_name=common) for name, common in bands]
    return made


def catalog(folder: Path, items: Sequence[pystac.Item], catalog_id: str = "samples") -> Path:
    """A self-contained static catalog of `items` in `folder`; returns catalog.json's path."""
    made = pystac.Catalog(catalog_id, "test scenes")
    for one in items:
        made.add_item(one)
    made.normalize_hrefs(str(folder))
    made.make_all_asset_hrefs_relative()
    made.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def ranged_files(folder: Path, served: list[tuple[str, int]]) -> Callable[[Request], Response]:
    """A pytest-httpserver handler serving `folder`'s files with Range support; appends (path, body length)."""

    def handler(request: Request) -> Response:
        path = (folder / request.path.lstrip("/")).resolve()
        if not path.is_relative_to(folder.resolve()) or not path.is_file():
            return Response("not found", status=404)
        blob = path.read_bytes()
        mimetype = "application/json" if path.suffix == ".json" else "image/tiff"
        response = Response(blob, mimetype=mimetype).make_conditional(
            request, accept_ranges=True, complete_length=len(blob)
        )
        served.append((request.path, response.content_length or 0))
        return response

    return handler
