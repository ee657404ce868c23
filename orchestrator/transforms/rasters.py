"""Rasters (GeoTIFF / Cloud Optimized GeoTIFF) read and written with rasterio: the shared core.

A raster is an ordinary entry of the file lists; its FileRef.meta carries the facts later steps
and users need (`facts`): crs, transform, width, height, bands, dtype, nodata. Everything here
opens LOCAL files only, with the GTiff driver only, inside `gdal_env()`:

- user text never reaches GDAL as a path, a /vsi… prefix, a driver or a connection string
  (paths are the files an import or an op wrote; a path GDAL would read as anything but a
  local file is refused);
- GDAL's network access is off (no /vsicurl… reads), and it writes no side files (.aux.xml)
  beside inputs, nor lists their folders looking for some;
- a raster's width × height × bands is checked against a cap read from the header, before
  any pixel is read: a 1 KB file may declare 10^12 pixels.

The ops on rasters live in `raster_ops` (tiles, windows, mosaic) and `indices` (band maths).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.engine import OperationError

# width × height × bands. Reads are windowed, so this bounds time and output disk, not memory:
# a whole Sentinel-2 tile at 10 m with its 13 bands is 10980² × 13 ≈ 1.6e9 samples, an 8-band
# 20000 × 20000 aerial mosaic 3.2e9; 4e9 uint16 samples are 8 GB of pixels to write out, which a
# server's disk takes, while a forged header declaring 10^12 is refused at once.
DEFAULT_MAX_SAMPLES = 4_000_000_000
SETTING = "CONSTELLATION_MAX_RASTER_SAMPLES"

# The first bytes of a classic TIFF and of a BigTIFF, either byte order.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
RASTER_SUFFIXES = (".tif", ".tiff")

# GDAL's block cache is process-wide and defaults to 5 % of RAM: a windowed pass over a scene
# would keep up to that much of it cached. 64 MB holds a few rows of 512² blocks of any scene.
GDAL_CACHE_BYTES = 64 * 1024**2
GDAL_OPTIONS = {
    "GDAL_PAM_ENABLED": "NO",  # no .aux.xml written (nor read) beside a file
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of an input's folder for side files
    # No /vsicurl/ read can match this extension: GDAL's network stays off. The ops that fetch
    # remote rasters do it themselves, through the URL policy.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".constellation-no-network",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GTIFF_REPORT_COMPD_CS": "NO",
    "GDAL_CACHEMAX": GDAL_CACHE_BYTES,  # rasterio sets the process-wide cache size from it
}

# Outputs: tiled above one block, deflate with the predictor suiting the type.
BLOCK = 512


@lru_cache(maxsize=1)
def _quiet() -> None:
    # A plain TIFF (no georeferencing) is a raster too: its facts say so (crs null), not a warning per open.
    # Once per process: each change to the warning filters costs every later warning check a cache miss.
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


@contextmanager
def gdal_env() -> Iterator[Any]:
    """A rasterio.Env with GDAL's network off, no side files, and a bounded block cache.

    rasterio's options are per thread: every thread that opens a raster enters its own.
    """
    import rasterio

    _quiet()
    with rasterio.Env(**GDAL_OPTIONS) as env:
        yield env


def has_tiff_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as head:
            return head.read(4) in TIFF_MAGIC
    except OSError:
        return False


def _local(path: Path | str) -> Path:
    """`path` as an absolute local file, handed to rasterio as a Path (never parsed as a URL).

    An absolute path starts with '/', so no GDAL prefix (GTIFF_DIR:, NETCDF:...) can lead it;
    only a virtual file system (/vsicurl/, /vsizip/...) could, and those are refused.
    """
    absolute = os.path.abspath(os.fspath(path))
    if absolute.startswith("/vsi"):
        raise OperationError(f"{os.fspath(path)!r} is not a local file; refused")
    return Path(absolute)


def is_raster(path: Path | str) -> bool:
    """True for a TIFF (by its first bytes) that GDAL's GTiff driver opens."""
    try:
        local = _local(path)
    except OperationError:
        return False
    if not local.is_file() or not has_tiff_magic(local):
        return False
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with gdal_env(), rasterio.open(local, driver="GTiff"):
            return True
    except (RasterioError, OSError):
        return False


def samples(dataset: Any) -> int:
    return int(dataset.width) * int(dataset.height) * int(dataset.count)


def check_caps(name: str, width: int, height: int, count: int, max_samples: int | None) -> None:
    """Refuse a raster (read or to be written) of more than `max_samples` samples."""
    cap = DEFAULT_MAX_SAMPLES if max_samples is None else max_samples
    total = width * height * count
    if total > cap:
        raise OperationError(
            f"{name!r} is {width}×{height} pixels × {count} band(s) = {total:,} samples, over the limit of "
            f"{cap:,} (the server's {SETTING}); refused before reading any pixel"
        )


@contextmanager
def open_raster(path: Path | str, caps: int | None = None, name: str | None = None) -> Iterator[Any]:
    """Open a local GeoTIFF for reading (driver GTiff only, inside `gdal_env`), held to `caps` samples.

    `caps` is the most width × height × bands a raster may have (None: DEFAULT_MAX_SAMPLES); it is
    checked from the header, before any pixel is read. `name` is how errors name the file.
    """
    import rasterio
    from rasterio.errors import RasterioError

    local = _local(path)
    shown = name or local.name
    if not local.is_file():
        raise OperationError(f"{shown!r} is not a file")
    if not has_tiff_magic(local):
        raise OperationError(f"{shown!r} is not a GeoTIFF (it does not start like a TIFF file)")
    with gdal_env():
        try:
            dataset = rasterio.open(local, driver="GTiff")
        except (RasterioError, OSError) as exc:
            raise OperationError(f"{shown!r} is not a readable GeoTIFF: {exc}") from None
        with dataset:
            check_caps(shown, dataset.width, dataset.height, dataset.count, caps)
            yield dataset


def crs_text(crs: Any) -> str | None:
    """'EPSG:32633' when the CRS has an EPSG code, else its WKT; None without one."""
    if not crs:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def json_number(value: float | None, dtype: str) -> int | float | str | None:
    """A nodata value as JSON: an integer for integer types; NaN and ±inf (not JSON numbers) as text."""
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        return str(value)  # "nan", "inf", "-inf"
    return int(value) if not dtype.startswith("float") and float(value).is_integer() else float(value)


def band_names(dataset: Any) -> list[str | None] | None:
    """The bands' descriptions (None where a band has none), or None when no band has one."""
    described = [d or None for d in dataset.descriptions]
    return described if any(described) else None


def facts(dataset: Any) -> dict[str, Any]:
    """What results show of a raster: crs, transform (a, b, c, d, e, f), width, height, bands, dtype, nodata."""
    dtype = dataset.dtypes[0]
    return {
        "crs": crs_text(dataset.crs),
        "transform": [float(v) for v in tuple(dataset.transform)[:6]],
        "width": int(dataset.width),
        "height": int(dataset.height),
        "bands": band_names(dataset),
        "dtype": dtype,
        "nodata": json_number(dataset.nodata, dtype),
    }


def facts_of(path: Path | str) -> dict[str, Any] | None:
    """A file's raster facts from its header (no pixel read), or None when it is not a raster."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        local = _local(path)
    except OperationError:
        return None
    if not has_tiff_magic(local):
        return None
    try:
        with gdal_env(), rasterio.open(local, driver="GTiff") as dataset:
            return facts(dataset)
    except (RasterioError, OSError):
        return None


def named_like_raster(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES)


def output_profile(
    width: int, height: int, count: int, dtype: str, crs: Any, transform: Any, nodata: float | None
) -> dict[str, Any]:
    """A GeoTIFF's creation profile: tiled (512² blocks) when larger than a block, deflate-compressed."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3 if dtype.startswith("float") else 2,
        "bigtiff": "IF_SAFER",
    }
    if width > BLOCK or height > BLOCK:
        profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
    return profile


@contextmanager
def write_like(
    path: Path,
    profile: Mapping[str, Any],
    descriptions: Sequence[str | None] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    tags: Mapping[str, str] | None = None,
    caps: int | None = None,
) -> Iterator[Any]:
    """Create a GeoTIFF at `path` (a file in the run's folder) from `profile`, open for writing.

    `profile` is `output_profile(...)`, or a dataset's `.profile` with changes: crs, transform and
    nodata are written as given; band descriptions, scales/offsets and dataset tags too. The output
    is held to `caps` samples like any input.
    """
    import rasterio

    local = _local(path)
    chosen = dict(profile)
    chosen["driver"] = "GTiff"  # never a driver a caller passed along
    check_caps(local.name, int(chosen["width"]), int(chosen["height"]), int(chosen["count"]), caps)
    local.parent.mkdir(parents=True, exist_ok=True)
    with gdal_env(), rasterio.open(local, "w", **chosen) as dataset:
        if descriptions is not None and any(descriptions):
            dataset.descriptions = tuple(d or "" for d in descriptions)
        if scales is not None and any(s != 1 for s in scales):
            dataset.scales = tuple(scales)
        if offsets is not None and any(o != 0 for o in offsets):
            dataset.offsets = tuple(offsets)
        if tags:
            dataset.update_tags(**tags)
        yield dataset


def parse_crs(text: str) -> Any:
    """A rasterio CRS from a user's text (e.g. 'EPSG:32633'), or an error naming it."""
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError
    from rasterio.crs import CRS

    try:
        ProjCRS.from_user_input(text)  # pyproj's parse: no file or network is read for an AUTHORITY:CODE
        return CRS.from_user_input(text)
    except (CRSError, ValueError, Exception) as exc:  # rasterio raises CRSError of its own
        raise OperationError(f"{text!r} is not a CRS that parses: {str(exc).splitlines()[0]}") from None
