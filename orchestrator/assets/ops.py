"""The operations a pipeline can use. Each is declared by its signature alone.

Each op imports the data modules it uses when it runs: a run pays for boto3, the Google
client, SQLAlchemy or Pillow only when its instructions need them.

Parameter types, `Field` constraints and descriptions, defaults, the return type and the
docstring's first line become the catalog, the validation and the docs. Keep each op thin:
the work lives in the rooms beside this package (`orchestrator.sources`, `.transforms`, `.models`,
`.compare`, `.sinks`), plain Python tested on its own.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, TypeAdapter, WithJsonSchema

from orchestrator import names
from orchestrator.datasets import (
    ArrayList,
    Batches,
    Comparison,
    Exported,
    FileDict,
    FileList,
    FileRef,
    Predictions,
    Table,
    as_refs,
)
from orchestrator.engine import Failed, OperationError, RunContext, needs, never_reused, provides, reads_from, writes_to
from orchestrator.models import tasks as model_tasks
from orchestrator.transforms.arithmetic import OperatorName as MathOperator

Pixels = Annotated[int, Field(ge=1, le=16384)]
ColourMode = Literal["RGB", "RGBA", "L", "LA", "CMYK", "1", "P", "I", "F"]
ImageFormat = Literal["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"]


# Where an import reads and an export writes, as the parts of an asset's name (orchestrator/assets/lineage.py
# records them in Dagster's asset catalog): from the instruction's literal parameters, and an export's output.
def _segments(text: object) -> list[str]:
    return str(text).strip("/").split("/")


def _url_source(given: Mapping[str, Any], _: object) -> list[str]:
    url = urlsplit(str(given.get("url", "")))
    return ["url", url.hostname or "", *_segments(url.path)]


def _database_source(given: Mapping[str, Any], _: object) -> list[str]:
    query = "query-" + hashlib.sha256(str(given.get("query")).encode()).hexdigest()[:12]
    return ["database", given["connection"], given.get("table") or query]


def _s3_destination(given: Mapping[str, Any], exported: Exported) -> list[str]:
    bucket = given.get("bucket") or exported.destination.removeprefix("s3://").split("/")[0]
    return ["s3", bucket, *_segments(given.get("prefix") or "constellation")]


@reads_from(lambda given, _: ["local", *_segments(given.get("path", ""))])
def import_from_local(
    ctx: RunContext,
    path: Annotated[
        str,
        Field(min_length=1, max_length=4096, description="a file or folder, relative to the server's data root"),
    ],
) -> FileDict:
    """Read a file, or every file in a folder, from the server's data root."""
    from orchestrator.sources import local

    workspace = ctx.resources.workspace
    reserved = local.reserved_folders(workspace.artifact_root, ctx.run_dir)  # never runs' files, nor Dagster's
    return FileDict(local.find_local_files(workspace.data_path, path, reserved))


@reads_from(_url_source)
def import_from_url(
    ctx: RunContext,
    url: Annotated[str, Field(min_length=1, max_length=8192, description="an http(s) URL of one file")],
    unpack: Annotated[bool, Field(description="unpack a zip or tar into its files")] = True,
) -> FileDict:
    """Download one file over HTTP(S) into the run's folder (public addresses only)."""
    from orchestrator.sources import archives
    from orchestrator.sources.url import download

    workspace = ctx.resources.workspace
    target = download(url, ctx.node_dir, workspace.url_policy(), ctx.check_cancelled)
    if unpack:
        return FileDict(archives.expand(target, workspace.archive_limits()))
    return FileDict({target.name: target})


# STAC: optional parameters are published as their plain type (omit one rather than send null).
_Lon, _Lat = {"type": "number", "minimum": -180, "maximum": 180}, {"type": "number", "minimum": -90, "maximum": 90}
StacBbox = Annotated[
    list[float] | None,
    Field(min_length=4, max_length=4),
    WithJsonSchema({"type": "array", "prefixItems": [_Lon, _Lat, _Lon, _Lat], "items": False, "minItems": 4}),
]
_INSTANT = r"\d{4}(-\d{2}(-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?)?)?"


def _stac_interval(text: str | None) -> str | None:
    """A datetime pystac-client reads (a real date: no month 13), and an interval that does not end before it
    starts (which would find nothing, silently)."""
    from datetime import datetime

    from orchestrator.sources import stac

    try:
        normalized = stac.normalized_datetime(text)
    except OperationError as exc:
        raise ValueError(str(exc)) from None
    start, _, end = (normalized or "").partition("/")
    bounded = start not in ("", "..") and end not in ("", "..")
    if bounded and datetime.fromisoformat(start) > datetime.fromisoformat(end):
        raise ValueError(f"datetime {text!r} ends before it starts ({normalized})")
    return text


StacDatetime = Annotated[
    str | None,
    Field(pattern=rf"^({_INSTANT}|\.\.)?(/({_INSTANT}|\.\.)?)?$", min_length=4, max_length=100),
    AfterValidator(_stac_interval),
    WithJsonSchema(
        {"type": "string", "pattern": rf"^({_INSTANT}|\.\.)?(/({_INSTANT}|\.\.)?)?$", "minLength": 4, "maxLength": 100}
    ),
]
StacNames = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
    Field(min_length=1, max_length=100),
    WithJsonSchema(
        {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 256}, "minItems": 1, "maxItems": 100}
    ),
]
StacObject = Annotated[dict[str, object] | None, WithJsonSchema({"type": "object"})]


def import_from_stac(
    ctx: RunContext,
    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=8192,
            description="a STAC API root, or a static catalog / collection / item JSON: an http(s) URL, or a "
            "path relative to the server's data root",
        ),
    ],
    collections: Annotated[StacNames, Field(description="search these collections only (ids)")] = None,
    bbox: Annotated[
        StacBbox,
        Field(
            description="[west, south, east, north] in WGS84 degrees: items that intersect it, and "
            "of each GeoTIFF only the window covering it"
        ),
    ] = None,
    datetime: Annotated[
        StacDatetime, Field(description="an RFC 3339 instant or interval, e.g. 2024-06-01/2024-06-30, ../2024-01-01")
    ] = None,
    query: Annotated[
        StacObject, Field(description='the STAC API query extension, e.g. {"eo:cloud_cover": {"lt": 20}}')
    ] = None,
    filter: Annotated[
        StacObject, Field(description="a CQL2-JSON filter, for STAC APIs that support it (not static catalogs)")
    ] = None,
    assets: Annotated[
        StacNames, Field(description='asset keys to fetch, e.g. ["B04", "B08"] (default: every GeoTIFF asset)')
    ] = None,
    stack: Annotated[
        bool,
        Field(
            description="one multi-band GeoTIFF per item, bands in the order of assets, on the finest "
            "asset's grid (coarser assets resampled, nearest)"
        ),
    ] = False,
    max_items: Annotated[int, Field(ge=1, le=1000, description="at most this many items")] = 10,
) -> FileList:
    """Find items in a STAC API or static catalog and fetch their assets (a bbox's window only, by range reads)."""
    from orchestrator.sources import local, stac

    workspace = ctx.resources.workspace
    request = stac.StacRequest(url, collections, bbox, datetime, query, filter, assets, stack, max_items)
    return FileList(
        stac.import_from_stac(
            request,
            data_root=workspace.data_path,
            policy=workspace.url_policy(),
            out_dir=ctx.node_dir,
            max_samples=workspace.max_raster_samples,
            check_cancelled=ctx.check_cancelled,
            log=ctx.log,
            reserved=local.reserved_folders(workspace.artifact_root, ctx.run_dir),  # never runs' files, nor Dagster's
        )
    )


def dict_to_list(
    ctx: RunContext,
    data: Annotated[FileDict, Field(description="the files of an import")],
) -> FileList:
    """Turn an import's files into a list ordered by name."""
    return FileList(data.refs())


def resize_image(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the images to resize")],
    width: Annotated[Pixels, Field(description="target width in pixels")],
    height: Annotated[Pixels, Field(description="target height in pixels")],
) -> FileList:
    """Resize every image to width × height pixels, keeping its format and order (GeoTIFFs: georeferenced)."""
    from orchestrator.transforms import images, raster_ops

    images.distinct_names([ref.name for ref in as_refs(data)])  # two inputs of one name: fail, never overwrite
    caps = ctx.resources.workspace.max_raster_samples
    return FileList(
        _each_file(
            ctx,
            data,
            lambda ref, out, cap: images.resize(ref, out, width, height, cap),
            lambda ref: raster_ops.resize(ref, ctx.node_dir, width, height, caps, ctx.check_cancelled),
        )
    )


def batch_formatted_data(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the files to batch")],
    batch_size: Annotated[int, Field(ge=1, le=100_000, description="files per batch")] = 32,
) -> Batches:
    """Cut files into consecutive batches of batch_size (the last may be smaller)."""
    refs = as_refs(data)
    return Batches([refs[i : i + batch_size] for i in range(0, len(refs), batch_size)])


def convert_image(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the images to convert")],
    mode: Annotated[ColourMode, Field(description="colour mode: RGB, RGBA, L (grey), CMYK...")] = "RGB",
    format: Annotated[
        ImageFormat | None, Field(description="file format to write; null keeps each image's own")
    ] = None,
) -> FileList:
    """Convert every image to a colour mode and, optionally, another file format."""
    from orchestrator.transforms import images

    # a.png and a.jpg both become a.<ext>: keep both (the second as a.png.<ext>), never one over the other.
    inputs = FileList(as_refs(data))
    derived = images.distinct_names([r.name for r in inputs], lambda name: images.converted_name(name, format))
    names = {id(ref): name for ref, name in zip(inputs, derived, strict=True)}
    return FileList(
        _each_image(ctx, inputs, lambda ref, out, cap: images.convert(ref, out, mode, format, cap, names[id(ref)]))
    )


def normalize_image(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the images to normalize")],
    mean: Annotated[
        PerBand,
        Field(
            description="per-channel mean: images 1 (grey) or 3 (RGB) values, default ImageNet's "
            "[0.485, 0.456, 0.406]; GeoTIFFs one per band, in the units stored"
        ),
    ] = None,
    std: Annotated[
        PerBandPositive,
        Field(
            description="per-channel standard deviation, same length as mean (images: default ImageNet's "
            "[0.229, 0.224, 0.225])"
        ),
    ] = None,
    stats: Annotated[
        Literal["given", "dataset"],
        Field(
            description='GeoTIFFs: "dataset" computes each band\'s mean and std over all inputs (nodata '
            "excluded) instead of mean/std"
        ),
    ] = "given",
) -> ArrayList:
    """Turn images into float32 arrays (C×H×W): pixels / 255, minus mean, over std (GeoTIFFs: float32 GeoTIFFs)."""
    from orchestrator.transforms import images, raster_ops, raster_values

    if (mean is None) != (std is None):
        raise OperationError("give both mean and std (one value per channel), or neither")
    if mean is not None and std is not None and len(mean) != len(std):
        raise OperationError(f"mean has {len(mean)} values but std has {len(std)}; give one per channel")
    if stats == "dataset" and mean is not None:
        raise OperationError('give mean and std, or stats "dataset", not both')
    # a.png and a.jpg both become a.npy: keep both (the second as a.png.npy), never one over the other.
    inputs = FileList(as_refs(data))
    runs = list(raster_ops.runs_by_kind(inputs.refs))
    geo = {id(ref) for is_raster, run in runs if is_raster for ref in run}
    if stats == "dataset" and len(geo) != len(inputs):
        image = next(r.name for r in inputs if id(r) not in geo)
        raise OperationError(f'stats "dataset" is for GeoTIFFs; {image!r} is an image: give it mean and std')
    mean_i, std_i = mean or [0.485, 0.456, 0.406], std or [0.229, 0.224, 0.225]
    if len(geo) < len(inputs):  # images: as before
        if len(mean_i) not in (1, 3):
            raise OperationError(f"mean and std have {len(mean_i)} values; give 1 (grey images) or 3 (RGB)")
    caps = ctx.resources.workspace.max_raster_samples
    mean_g: list[float] = []  # the GeoTIFFs' (given, or the dataset's), when there are GeoTIFFs
    std_g: list[float] = []
    if geo and stats == "dataset":
        mean_g, std_g = raster_values.dataset_stats([r for r in inputs if id(r) in geo], caps, ctx.check_cancelled)
    elif geo:
        if mean is None or std is None:
            raise OperationError('GeoTIFFs need mean and std (one value per band), or stats "dataset"')
        mean_g, std_g = mean, std
    derived = images.distinct_names(
        [r.name for r in inputs],
        lambda name: name if name.lower().endswith((".tif", ".tiff")) else images.normalized_name(name),
    )
    names = {id(ref): name for ref, name in zip(inputs, derived, strict=True)}
    refs = _each_file(
        ctx,
        inputs,
        lambda ref, out, cap: images.normalize(ref, out, mean_i, std_i, cap, names[id(ref)]),
        lambda ref: raster_values.normalize(ref, ctx.node_dir, mean_g, std_g, stats, caps, ctx.check_cancelled),
        runs,
    )
    return ArrayList(refs)


def crop_image(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the images to crop")],
    left: Annotated[int, Field(ge=0, description="left edge of the box, in pixels")],
    top: Annotated[int, Field(ge=0, description="top edge of the box, in pixels")],
    width: Annotated[Pixels, Field(description="width of the box")],
    height: Annotated[Pixels, Field(description="height of the box")],
) -> FileList:
    """Cut the same box out of every image (it must lie inside each one; GeoTIFFs stay georeferenced)."""
    from orchestrator.transforms import images, raster_ops

    box = (left, top, width, height)
    caps = ctx.resources.workspace.max_raster_samples
    return FileList(
        _each_file(
            ctx,
            data,
            lambda ref, out, cap: images.crop(ref, out, box, cap),
            lambda ref: raster_ops.crop(ref, ctx.node_dir, box, caps),
        )
    )


def tile_image(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the scenes to cut")],
    tile_width: Annotated[Pixels, Field(description="tile width in pixels")],
    tile_height: Annotated[Pixels, Field(description="tile height in pixels")],
    overlap: Annotated[int, Field(ge=0, le=16383, description="pixels shared by neighbouring tiles")] = 0,
) -> FileList:
    """Cut large scenes into model-sized tiles; each keeps its source and origin (GeoTIFFs: georeferenced tiles)."""
    from orchestrator.transforms import images

    if overlap >= min(tile_width, tile_height):
        raise OperationError(f"overlap {overlap} must be smaller than the tile ({tile_width}×{tile_height})")
    size = (tile_width, tile_height)
    images.distinct_names([ref.name for ref in as_refs(data)])  # two inputs of one name: fail, never overwrite
    max_tiles = ctx.resources.workspace.max_tiles_per_image
    caps = ctx.resources.workspace.max_raster_samples
    from orchestrator.transforms import raster_ops  # GeoTIFFs: windowed reads, georeferenced tiles

    return FileList(
        _each_file(
            ctx,
            data,
            lambda ref, out, cap: images.tile(ref, out, size, overlap, cap, max_tiles),
            lambda ref: raster_ops.tile(ref, ctx.node_dir, size, overlap, caps, max_tiles, ctx.check_cancelled),
        )
    )


# Rasters (GeoTIFF / COG), read and written by windows: orchestrator/transforms/raster_ops.py,
# indices.py, raster_values.py and mosaic.py.
BandRef = Annotated[int, Field(ge=1, le=100_000)] | Annotated[str, Field(min_length=1, max_length=200)]
PerBand = Annotated[
    list[float] | None,
    Field(min_length=1, max_length=10_000),
    WithJsonSchema({"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 10_000}),
]
PerBandPositive = Annotated[
    list[Annotated[float, Field(gt=0)]] | None,
    Field(min_length=1, max_length=10_000),
    WithJsonSchema(
        {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1, "maxItems": 10_000}
    ),
]


def _parses_as_crs(text: str) -> str:
    from orchestrator.transforms import rasters

    try:
        rasters.parse_crs(text)
    except OperationError as exc:
        raise ValueError(str(exc)) from None
    return text


def _index_pattern() -> str:
    from orchestrator.transforms import indices  # reads spyndex's catalog file, without importing spyndex

    return "^(" + "|".join(indices.index_names()) + ")$"


# An AUTHORITY:CODE checked before launch by its form, and parsed by pyproj before any pixel is read.
CrsName = Annotated[
    str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}:[A-Za-z0-9_.]{1,32}$"), AfterValidator(_parses_as_crs)
]
IndexName = Annotated[str, Field(pattern=_index_pattern())]
IndexBands = Annotated[
    dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$")], BandRef] | None,
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Za-z][A-Za-z0-9]{0,15}$"},
            "additionalProperties": {
                "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "minLength": 1, "maxLength": 200}]
            },
        }
    ),
]
IndexConstants = Annotated[
    dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$")], float] | None,
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Za-z][A-Za-z0-9]{0,15}$"},
            "additionalProperties": {"type": "number"},
        }
    ),
]
Resolution = Annotated[float | None, Field(gt=0), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})]
Resampling = Literal[
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "min",
    "max",
    "med",
    "q1",
    "q3",
    "sum",
    "rms",
]


def _each_raster(
    ctx: RunContext, data: FileList | FileDict, work: Callable[[FileRef], FileRef | list[FileRef]]
) -> list[FileRef]:
    """`work` on every input, a GeoTIFF each (two of one name would overwrite each other: refused)."""
    from orchestrator.transforms import images, raster_ops

    refs = as_refs(data)
    images.distinct_names([ref.name for ref in refs])
    return raster_ops.map_rasters(refs, work, ctx.check_cancelled)


def select_bands(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="GeoTIFFs")],
    bands: Annotated[
        list[BandRef],
        Field(
            min_length=1,
            max_length=10_000,
            description='the bands to keep, in order: 1-based indexes or names such as "B08" or "nir"',
        ),
    ],
) -> FileList:
    """Keep the bands asked for, in that order: a GeoTIFF per input, georeferencing and nodata kept."""
    from orchestrator.transforms import raster_ops

    caps = ctx.resources.workspace.max_raster_samples
    return FileList(
        _each_raster(
            ctx, data, lambda ref: raster_ops.select_bands(ref, ctx.node_dir, bands, caps, ctx.check_cancelled)
        )
    )


def reproject_raster(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="GeoTIFFs")],
    crs: Annotated[CrsName, Field(description='the target CRS as AUTHORITY:CODE, e.g. "EPSG:32633"')],
    resolution: Annotated[
        Resolution, Field(description="pixel size in the target CRS's units (default: GDAL's estimate of the source's)")
    ] = None,
    resampling: Annotated[Resampling, Field(description="how pixels are resampled")] = "nearest",
) -> FileList:
    """Warp GeoTIFFs to another CRS (and resolution) with GDAL's warper, window by window."""
    from orchestrator.transforms import raster_ops

    caps = ctx.resources.workspace.max_raster_samples
    return FileList(
        _each_raster(
            ctx,
            data,
            lambda ref: raster_ops.reproject(ref, ctx.node_dir, crs, resolution, resampling, caps, ctx.check_cancelled),
        )
    )


def spectral_index(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="multi-band GeoTIFFs")],
    index: Annotated[
        IndexName,
        Field(description='an index of the Awesome Spectral Indices catalog (spyndex), e.g. "NDVI", "NDWI", "NBR"'),
    ],
    bands: Annotated[
        IndexBands,
        Field(
            description="which band is which of the index's bands, by 1-based index or "
            'name, e.g. {"N": 4, "R": 3} (default: bands named like '
            "their common names, nir, red...)"
        ),
    ] = None,
    constants: Annotated[
        IndexConstants, Field(description="values of the index's constants, e.g. {\"L\": 0.5} (default: spyndex's)")
    ] = None,
) -> FileList:
    """Compute a spectral index (NDVI, NDWI, NBR...) with spyndex: one float32 GeoTIFF band per input."""
    from orchestrator.transforms import indices

    caps = ctx.resources.workspace.max_raster_samples
    indices.constant_values(index, constants)  # a wrong constant fails before any file is read
    return FileList(
        _each_raster(
            ctx,
            data,
            lambda ref: indices.spectral_index(ref, ctx.node_dir, index, bands, constants, caps, ctx.check_cancelled),
        )
    )


def composite_rgb(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="multi-band GeoTIFFs")],
    bands: Annotated[
        list[BandRef], Field(min_length=3, max_length=3, description="red, green and blue: indexes or names")
    ] = [3, 2, 1],  # noqa: B006 - a declaration's default, never mutated
    stretch: Annotated[
        list[Annotated[float, Field(ge=0, le=100)]],
        Field(
            min_length=2,
            max_length=2,
            description="the low and high percentiles mapped to 0 and 255, over valid pixels",
        ),
    ] = [2, 98],  # noqa: B006
    format: Annotated[Literal["png", "tif"], Field(description="png, or tif (a georeferenced GeoTIFF)")] = "png",
) -> FileList:
    """Make 8-bit RGB images (PNG or GeoTIFF) of three bands, each stretched between two percentiles."""
    from orchestrator.transforms import raster_values

    if stretch[0] >= stretch[1]:
        raise OperationError(f"stretch {stretch}: the low percentile must be below the high one")
    caps = ctx.resources.workspace.max_raster_samples
    return FileList(
        _each_raster(
            ctx,
            data,
            lambda ref: raster_values.composite(ref, ctx.node_dir, bands, stretch, format, caps, ctx.check_cancelled),
        )
    )


def mosaic(
    ctx: RunContext,
    data: Annotated[
        FileList | FileDict | Predictions,
        Field(description="georeferenced tiles (tile_image's, or a segmentation model's predicted masks)"),
    ],
) -> FileList:
    """Merge tiles back into one GeoTIFF per source scene; where tiles overlap, the nearest tile's centre wins."""
    from orchestrator.transforms import mosaic as mosaics
    from orchestrator.transforms import raster_ops

    caps = ctx.resources.workspace.max_raster_samples
    refs = mosaics.mask_refs(data) if isinstance(data, Predictions) else as_refs(data)
    scenes = mosaics.group(refs, caps)
    return FileList(
        raster_ops.map_rasters(
            [FileRef(scene, tiles[0].path) for scene, tiles in scenes.items()],
            lambda key: mosaics.mosaic(key.name, scenes[key.name], ctx.node_dir, caps, ctx.check_cancelled),
            ctx.check_cancelled,
        )
    )


def vectorize_mask(
    ctx: RunContext,
    data: Annotated[
        Predictions | FileList | FileDict,
        Field(description="a segmentation model's predictions, or class-id GeoTIFFs (e.g. mosaic's)"),
    ],
    classes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
        Field(max_length=1000, description="the classes to turn into polygons, by name (default: all; nodata never)"),
    ] = None,
) -> Table:
    """Turn class masks into polygons: a table of class, source and geometry (GeoJSON, its SRID kept with the table)."""
    from orchestrator.transforms import vectorize

    table = vectorize.vectorize(
        vectorize.masks_of(data),
        classes,
        ctx.node_dir / "polygons.jsonl",
        ctx.resources.workspace.max_raster_samples,
        ctx.check_cancelled,
    )
    ctx.log.info(f"vectorize_mask: {table.count} polygons")
    return table


def filter_files(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the files to filter")],
    pattern: Annotated[
        str | None, Field(max_length=1024, description="glob on names, e.g. 'Fire/*' or '*.png'")
    ] = None,
    extensions: Annotated[
        list[Annotated[str, Field(pattern=r"^\.?[A-Za-z0-9]{1,10}$")]] | None,
        Field(max_length=50, description="keep these extensions, e.g. ['jpg', 'png'] (any case)"),
    ] = None,
) -> FileList:
    """Keep the files whose name matches a glob and/or has one of the given extensions."""
    if pattern is None and extensions is None:
        raise OperationError("give a pattern, extensions, or both")
    wanted = {"." + e.lower().lstrip(".") for e in extensions or []}
    kept = [
        ref
        for ref in as_refs(data)
        if (pattern is None or fnmatch.fnmatchcase(ref.name, pattern))
        and (not wanted or Path(ref.name).suffix.lower() in wanted)
    ]
    return FileList(kept)


def sample(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the files to sample from")],
    n: Annotated[int, Field(ge=1, le=10_000_000, description="how many files to keep")],
    mode: Annotated[Literal["first", "random"], Field(description="the first n, or n at random")] = "first",
    seed: Annotated[int, Field(description="random seed: the same seed picks the same files")] = 0,
) -> FileList:
    """Keep n files: the first n in order, or n drawn at random (reproducible by seed, order kept)."""
    refs = as_refs(data)
    if mode == "first" or n >= len(refs):
        return FileList(refs[:n])
    picked = sorted(random.Random(seed).sample(range(len(refs)), n))
    return FileList([refs[i] for i in picked])


@writes_to(lambda given, _: ["local_output", given.get("folder", "constellation")])
def export_to_local(
    ctx: RunContext,
    data: Annotated[Exportable, Field(description="the files, table, predictions or comparison to write out")],
    folder: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", description="a folder under the server's output root"),
    ] = "constellation",
) -> Exported:
    """Copy files (or a table as JSON Lines) to <output root>/<folder>/<run id>/, never over another run's."""
    from orchestrator.sources import local

    workspace = ctx.resources.workspace
    target = Path(workspace.output_root).resolve() / folder / ctx.run_id
    reserved = local.reserved_folders(workspace.artifact_root, ctx.run_dir)  # never runs' files, nor Dagster's
    return _with_rows(local.export_files(_files_of(data, ctx.node_dir), target, ctx.check_cancelled, reserved), data)


def _with_rows(exported: Exported, data: Exportable) -> Exported:
    """An export of a table or predictions also says how many rows its file holds."""
    if isinstance(data, Table):
        exported.rows = data.count
    elif isinstance(data, Predictions):
        exported.rows = len(data.items)
    return exported


def _each_image(
    ctx: RunContext, data: FileList | FileDict, work: Callable[[FileRef, Path, int], FileRef | list[FileRef]]
) -> list[FileRef]:
    """Run `work(ref, out_dir, max_pixels)` on every image (a worker process per core), stopping on cancel."""
    from orchestrator.transforms import images

    out_dir, cap = ctx.node_dir, ctx.resources.workspace.max_image_pixels

    def one(ref: FileRef) -> list[FileRef]:
        produced = work(ref, out_dir, cap)
        return produced if isinstance(produced, list) else [produced]

    return images.map_images(as_refs(data), one, ctx.check_cancelled)


def _each_file(
    ctx: RunContext,
    data: FileList | FileDict,
    image_work: Callable[[FileRef, Path, int], FileRef | list[FileRef]],
    raster_work: Callable[[FileRef], FileRef | list[FileRef]],
    runs: list | None = None,
) -> list[FileRef]:
    """Images through Pillow (`_each_image`, as before), GeoTIFFs through rasterio, results in input order."""
    from orchestrator.transforms import raster_ops

    done: list[FileRef] = []
    for is_raster, run in runs if runs is not None else raster_ops.runs_by_kind(as_refs(data)):
        if is_raster:
            done.extend(raster_ops.map_rasters(run, raster_work, ctx.check_cancelled))
        else:
            done.extend(_each_image(ctx, FileList(run), image_work))
    return done


def _files_of(data: Exportable, work_dir: Path | None = None) -> list[FileRef]:
    from orchestrator.sinks import exports

    if isinstance(data, Table):
        if data.geometry and work_dir is not None:  # polygons: a GeoJSON file any GIS opens
            from orchestrator.sinks.geojson import write_geojson

            return [FileRef("table.geojson", write_geojson(data, work_dir / "table.geojson"))]
        return [FileRef("table.jsonl", data.path)]
    if isinstance(data, Batches):
        return [ref for batch in data.batches for ref in batch]
    if isinstance(data, Predictions | Comparison):
        assert work_dir is not None
        return exports.result_files(data, work_dir)
    return as_refs(data)


Bucket = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$", description="bucket name, e.g. constellation-samples (no s3://)"
    ),
]


@reads_from(lambda given, _: ["s3", given["bucket"], *_segments(given.get("key") or given.get("prefix") or "")])
def import_from_s3(
    ctx: RunContext,
    bucket: Bucket,
    key: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=1024,
            description="one object's key; named by its last segment (an archive: by its members' paths)",
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        Field(
            max_length=1024,
            description='every object whose key starts with this ("" = the whole bucket); each is named '
            "by its key after the prefix's last /, an archive's members by <archive name>/<member path>",
        ),
    ] = None,
    unpack: Annotated[bool, Field(description="unpack zip and tar objects into their files")] = True,
) -> FileDict:
    """Download one object (key) or a folder of objects (prefix) from S3 into the run's folder."""
    from orchestrator.sources import archives, s3

    limits = ctx.resources.workspace.archive_limits()
    store = s3.client(ctx.resources.s3.settings())
    files = s3.import_objects(
        store,
        bucket,
        key=key,
        prefix=prefix,
        out_dir=ctx.node_dir,
        expand=(lambda path: archives.expand(path, limits)) if unpack else None,
        check_cancelled=ctx.check_cancelled,
        reserved=s3.reserved_areas(ctx.resources.workspace.artifact_root),  # never the runs' own objects
    )
    return FileDict(files)


Exportable = FileDict | FileList | ArrayList | Batches | Table | Predictions | Comparison
OptionalBucket = Annotated[
    str | None,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$"),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$"}),
]


@writes_to(_s3_destination)
def export_to_s3(
    ctx: RunContext,
    data: Annotated[
        Exportable | None,
        Field(description="the files, table, predictions or comparison to upload (or give inference_results)"),
    ] = None,
    bucket: Annotated[
        OptionalBucket,
        Field(
            description="bucket name, e.g. constellation-samples (no s3://); default: the server's "
            "CONSTELLATION_EXPORT_BUCKET"
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        Field(min_length=1, max_length=512, description="key prefix; objects go to <prefix>/<run id>/<name>"),
    ] = None,
    inference_results: Annotated[
        Predictions | Comparison | Table | None,
        Field(description="the original clients' name for data: model_inference results, uploaded as JSON Lines"),
    ] = None,
) -> Exported:
    """Upload files, a table or predictions (JSON Lines) to s3://bucket/<prefix or constellation>/<run id>/<name>."""
    from orchestrator.sources import s3

    chosen = _one_of(data, inference_results)
    target = bucket or ctx.resources.s3.export_bucket
    if target is None:
        raise OperationError("give bucket: this server has no default export bucket (CONSTELLATION_EXPORT_BUCKET)")
    store = s3.client(ctx.resources.s3.settings())
    files = _files_of(chosen, ctx.node_dir)
    reserved = s3.reserved_areas(ctx.resources.workspace.artifact_root)  # never into the runs' own objects
    return _with_rows(
        s3.export_files(store, files, target, s3.run_base(prefix, ctx.run_id), ctx.check_cancelled, reserved), chosen
    )


def write_csv(
    ctx: RunContext,
    result: Annotated[Table | Predictions, Field(description="a table, or a model's predictions, to write as CSV")],
    name: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}$", description="the file's name, without .csv")
    ] = "output",
) -> FileDict:
    """Write a table or predictions to a CSV file (one row per row or per input), ready for an export."""
    from orchestrator.sinks import exports
    from orchestrator.transforms import tables

    path = ctx.node_dir / f"{name}.csv"
    columns = result.columns if isinstance(result, Table) else exports.prediction_columns(result)
    count = tables.write_csv(_rows_of(result), columns, path)
    ctx.log.info(f"write_csv: {count} rows written to {path.name}")
    return FileDict({path.name: path})


def _one_of(data, inference_results):
    if (data is None) == (inference_results is None):
        raise OperationError("give exactly one of data or inference_results (its original name): what to upload")
    return data if data is not None else inference_results


def _rows_of(result: Table | Predictions):
    from orchestrator.sinks import exports

    if isinstance(result, Table):
        return result.rows()
    return (exports.prediction_row(result, item) for item in result.items)


def mock_csv_data(ctx: RunContext) -> Table:
    """A fixed table to try pipelines with: columns column1, column2, column3 holding 1 to 9, row by row."""
    from orchestrator.sources import mock

    return mock.mock_table(ctx.node_dir / "rows.jsonl")


def math_block(
    ctx: RunContext,
    data: Annotated[
        Table | Predictions,
        Field(
            description="a table, or a regression model's predictions (their values; the result is then the "
            "table name, model, value)"
        ),
    ],
    operand: Annotated[
        MathOperator,
        Field(
            description="the operator, by its name in Python's operator module: add, sub, mul, truediv "
            "(/), floordiv (//), mod (%) or pow (**)"
        ),
    ],
    constant: Annotated[float, Field(allow_inf_nan=False, description="the number on the operator's right")],
) -> Table:
    """Apply an arithmetic operator with a constant to every number of a table (as floats; other values kept)."""
    from orchestrator.transforms import arithmetic

    out = ctx.node_dir / "rows.jsonl"
    if isinstance(data, Table):
        return arithmetic.compute(data.rows(), data.columns, operand, constant, out, ctx.check_cancelled)
    from orchestrator.sinks import exports

    if data.task != "tabular-regression":
        raise OperationError(
            f"math_block computes on a regression model's values; {data.model}'s predictions "
            f"are {data.task} results, which hold no value to compute on"
        )
    # A model's predictions become their table (name, model, value): only the value is computed on.
    return arithmetic.compute(
        _rows_of(data),
        exports.prediction_columns(data),
        operand,
        constant,
        out,
        ctx.check_cancelled,
        only={"value"},
        row_name=lambda number, row: f"row {row['name']!r}",
    )


# Published as a string (omit the parameter rather than send null), so a bad id is refused
# before launch with the pattern it misses.
DriveId = Annotated[
    str | None,
    Field(pattern=names.DRIVE_ID_PATTERN),
    WithJsonSchema({"type": "string", "pattern": names.DRIVE_ID_PATTERN}),
]


@reads_from(lambda given, _: ["google_drive", given.get("file_id") or given.get("folder_id") or ""])
def import_from_google_drive(
    ctx: RunContext,
    file_id: Annotated[
        DriveId, Field(description="the id of one Drive file, as in its share link; or give folder_id")
    ] = None,
    folder_id: Annotated[
        DriveId, Field(description="the id of a Drive folder: every file under it, subfolders included")
    ] = None,
    unpack: Annotated[bool, Field(description="unpack zip and tar files into their files")] = True,
) -> FileDict:
    """Download a Google Drive file, or every file under a folder, into the run's folder."""
    from orchestrator.sources import archives, drive

    if (file_id is None) == (folder_id is None):
        raise OperationError("give exactly one of file_id (one file) or folder_id (a folder's files)")
    limits = ctx.resources.workspace.archive_limits()
    client = ctx.resources.google_drive.connect()
    if file_id is not None:
        path = drive.download_file(client, file_id, ctx.node_dir, ctx.check_cancelled)
        return FileDict(archives.expand(path, limits) if unpack else {path.name: path})
    assert folder_id is not None  # exactly one of the two is given (checked above)
    files = drive.download_folder(client, folder_id, ctx.node_dir, ctx.check_cancelled, ctx.log)
    return FileDict(drive.expand_each(files, limits) if unpack else files)


# SQL databases: a pipeline names a connection; its URL and password live only in the server's environment.
DbConnection = Annotated[
    str,
    Field(
        pattern=names.DB_CONNECTION_PATTERN,
        description="a connection name; the server holds its URL in `CONSTELLATION_DB_<NAME>_URL`",
    ),
]
DbParam = str | int | float | bool | None
DbParams = dict[str, DbParam | list[DbParam]]
# Optional parameters are published as their plain type: omit one rather than send null.
DbQuery = Annotated[
    str | None,
    Field(min_length=1, max_length=100_000),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 100_000}),
]
DbTable = Annotated[
    str | None,
    Field(pattern=names.DB_TABLE_PATTERN),
    WithJsonSchema({"type": "string", "pattern": names.DB_TABLE_PATTERN}),
]
DbColumn = Annotated[
    str | None,
    Field(min_length=1, max_length=256),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 256}),
]


@reads_from(_database_source)
def import_from_database(
    ctx: RunContext,
    connection: DbConnection,
    query: Annotated[
        DbQuery,
        Field(description="one SQL query that reads (SELECT ...), :name where a params value goes; or give table"),
    ] = None,
    params: Annotated[
        DbParams | None,
        WithJsonSchema(TypeAdapter(DbParams).json_schema()),
        Field(description="values bound to the query's :name placeholders, never pasted in (a list fills IN :name)"),
    ] = None,
    table: Annotated[DbTable, Field(description="a table (or schema.table) to read; or give query")] = None,
    limit: Annotated[
        int | None,
        Field(ge=1),
        WithJsonSchema({"type": "integer", "minimum": 1}),
        Field(description="read at most this many rows"),
    ] = None,
) -> Table:
    """Read rows from a SQL database in a read-only transaction, streamed into a table (JSON Lines)."""
    from orchestrator.sources import databases

    engine = ctx.resources.databases.engine(connection)
    out = ctx.node_dir / "rows.jsonl"
    imported = databases.import_rows(
        engine,
        connection,
        out,
        query=query,
        params=params,
        table=table,
        limit=limit,
        check_cancelled=ctx.check_cancelled,
        limits=ctx.resources.workspace.database_limits(),
    )
    if imported.binary_columns:
        ctx.log.info(f"{connection}: column(s) {', '.join(sorted(imported.binary_columns))} hold bytes, kept as base64")
    if imported.geometry:
        ctx.log.info(f"{connection}: geometry column(s) {', '.join(imported.geometry)} as GeoJSON, SRID kept")
    return Table(out, imported.columns, imported.count, imported.geometry)


@writes_to(lambda given, _: ["database", given["connection"], given["table"]])
def export_to_database(
    ctx: RunContext,
    data: Annotated[
        Table | Predictions,
        Field(
            description="the rows to write: a table, or a model's predictions (a row per input, as write_csv writes)"
        ),
    ],
    connection: DbConnection,
    table: Annotated[
        str,
        Field(pattern=names.DB_TABLE_PATTERN, description="the table (or schema.table); created if missing"),
    ],
    if_exists: Annotated[
        Literal["append", "fail"], Field(description="when the table exists: append this run's rows, or fail")
    ] = "append",
) -> Exported:
    """Insert a table's rows, or predictions, into a SQL database table in one transaction, each tagged with run_id."""
    from orchestrator.sinks import database as database_export
    from orchestrator.sinks import exports

    engine = ctx.resources.databases.engine(connection)
    columns = data.columns if isinstance(data, Table) else exports.prediction_columns(data)
    count = database_export.export_rows(
        engine,
        connection,
        table,
        columns,
        lambda: _rows_of(data),
        ctx.run_id,
        if_exists,
        ctx.check_cancelled,
        allow_any_schema=ctx.resources.workspace.db_export_any_schema,
        geometry=data.geometry if isinstance(data, Table) else None,
    )
    return Exported(
        f"database:{connection}/{table}", [{"table": table, "rows": count, "run_id": ctx.run_id}], rows=count, files=0
    )


def table_to_images(
    ctx: RunContext,
    data: Annotated[Table, Field(description="a table with a column of image bytes, e.g. from import_from_database")],
    image_column: Annotated[
        str,
        Field(min_length=1, max_length=256, description="the column of image bytes (URIs and paths are not fetched)"),
    ],
    name_column: Annotated[
        DbColumn, Field(description="a column naming each file (an extension is added if missing); default: row number")
    ] = None,
) -> FileDict:
    """Write the images held in a table column (bytes) as files, one per row with an image."""
    from orchestrator.transforms import table_images

    files, skipped = table_images.write_images(
        data.rows(),
        data.columns,
        image_column,
        name_column,
        ctx.node_dir,
        total=data.count,
        max_pixels=ctx.resources.workspace.max_image_pixels,
        check_cancelled=ctx.check_cancelled,
    )
    if skipped:
        ctx.log.info(f"table_to_images: {skipped} row(s) have no image in {image_column!r} and were skipped")
    if not files:
        raise OperationError(f"no row of the table holds an image in column {image_column!r}")
    return FileDict(files)


# Models: deployed, used and deleted on a model server through the Open Inference Protocol.
ModelId = Annotated[
    str,
    Field(pattern=names.MODEL_ID_PATTERN, description="the model's Hugging Face id, e.g. org/name"),
]


# The names of the task table (orchestrator/models/tasks.py), a menu in the catalog.
Task = Literal[model_tasks.NAMES]  # type: ignore[valid-type]
# Optional parameters are published as their plain type: omit one rather than send null.
Columns = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
    Field(min_length=1, max_length=10_000),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 256},
            "minItems": 1,
            "maxItems": 10_000,
        }
    ),
]
CandidateLabels = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=200)]] | None,
    Field(min_length=1, max_length=1000),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "minItems": 1,
            "maxItems": 1000,
        }
    ),
]


def _the_model(given: Mapping[str, Any]) -> str:
    """What deploy_model provides and model_inference needs: the model, by its id."""
    return f"model {given['model']!r}"


@never_reused  # a resumed run needs the model loaded again; the parent unloaded it
@provides(lambda given: [_the_model(given)])  # when it fails, the run goes on: what needs the model fails instead
def deploy_model(
    ctx: RunContext,
    model: ModelId,
    task: Annotated[Task, Field(description="what the model does")] = "image-classification",
    source: Annotated[
        str | None,
        Field(
            pattern=names.MODEL_ID_PATTERN,
            description="where the server loads it from: a Hugging Face id, a folder in its models root, "
            "or an .onnx file there (tabular tasks; image-classification and image-segmentation of float tensors "
            "[N, C, H, W], any number of bands) (default: the model id)",
        ),
    ] = None,
) -> dict:
    """Load a model on the model server for a task (a model already ready is not loaded twice)."""
    from orchestrator.models import client as model_server

    # Always asked for, even when the model is ready: the load holds it for this run (a lease: other runs
    # share it; the server unloads it when the last lets go), and the server refuses (409) an id loaded
    # from another source or for another task instead of answering with that other model.
    connection = ctx.resources.model_server
    with connection.connect(ctx.check_cancelled, lease=ctx.run_id) as server:
        answer = server.load(model, source or model, task)
    if answer.get("leases", 1) > 1 or answer.get("pinned"):
        ctx.log.info(f"{model} was already loaded; this run shares it ({answer.get('leases')} run(s) hold it)")
    # Deployments cost money: whatever happens next, the run lets go of what it holds.
    run = connection.for_run(ctx.run_id)
    ctx.cleanup.add(f"model:{model}", f"unloading {model}, deployed by this run", lambda: _unload(run, model))
    return {"model": model, "name": model_server.slug(model), "task": task, "source": source or model, "loaded": True}


def read_table(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="CSV, JSON Lines or Parquet files, e.g. from an import")],
    format: Annotated[
        Literal["auto", "csv", "jsonl", "parquet"], Field(description="the files' format; auto: by extension")
    ] = "auto",
) -> Table:
    """Read CSV, JSON Lines or Parquet files (same columns) into one table, in name order."""
    from orchestrator.transforms import tables

    return tables.read_tables(as_refs(data), ctx.node_dir / "rows.jsonl", format, ctx.check_cancelled)


@needs(lambda given: [_the_model(given)])
def model_inference(
    ctx: RunContext,
    model: ModelId,
    data: Annotated[
        FileList | FileDict | Batches | Table,
        Field(description="images (Batches keep their batching), or a Table for text and tabular models"),
    ],
    batch_size: Annotated[
        int | None,
        Field(ge=1, le=100_000),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100_000}),
        Field(
            description="inputs per request, unless data is Batches (default: 4096 rows for a tabular model, "
            "16 images or texts otherwise)"
        ),
    ] = None,
    top_k: Annotated[int, Field(ge=1, le=100, description="labels kept per input, best first")] = 3,
    features: Annotated[Columns, Field(description="tabular: the feature columns, in the model's order")] = None,
    key: Annotated[DbColumn, Field(description="table: the column naming each row (default: the row number)")] = None,
    text: Annotated[DbColumn, Field(description="text-classification: the column holding the text")] = None,
    candidate_labels: Annotated[CandidateLabels, Field(description="zero-shot: the labels to choose from")] = None,
    threshold: Annotated[
        float, Field(ge=0.0, le=1.0, description="object-detection: keep boxes scoring at least this")
    ] = 0.5,
) -> Predictions:
    """Run a deployed model over every input: one prediction per image (by name) or per row (by key)."""
    from orchestrator.models import client as model_server
    from orchestrator.models import inference, tensors

    with ctx.resources.model_server.connect(ctx.check_cancelled) as server:
        described = server.metadata(model)
        task = described.get("task") or model_server.parameter(described, "task") or "image-classification"
        if task == "zero-shot-image-classification" and not candidate_labels:
            raise OperationError(f"model {model!r} is zero-shot: give candidate_labels, the labels to choose from")
        classes = (
            len(candidate_labels or [])
            if task == "zero-shot-image-classification"
            else len(model_server.labels_of(described))
        )
        asked = inference.scores_wanted(task, top_k, classes)  # every class's score, for calibration and ROC
        if isinstance(data, Table):
            table_options = inference.TableOptions(asked, features, key, text, batch_size)
            items, stats = inference.predict_table(server, model, task, data, table_options, ctx.check_cancelled)
            stats["columns"] = list(features or []) if task != "text-classification" else [text]  # what it read
            sources: dict = {}
        else:
            if task not in inference.IMAGE_TASKS:
                raise OperationError(
                    f"model {model!r} serves {task!r}, which takes a table: give it read_table(...) "
                    "or a database import, not files"
                )
            if batch_size is not None and batch_size > inference.MAX_IMAGE_BATCH and not isinstance(data, Batches):
                raise OperationError(
                    f"batch_size {batch_size}: at most {inference.MAX_IMAGE_BATCH} images per "
                    "request (thousands are for a tabular model's rows)"
                )
            refs = (
                data.batches
                if isinstance(data, Batches)
                else _batched(as_refs(data), batch_size or inference.BATCH_SIZE)
            )
            image_options = inference.ImageOptions(
                asked, candidate_labels, threshold, ctx.node_dir / "masks", ctx.resources.workspace.max_raster_samples
            )
            if tensors.takes_tensors(described):  # bands as float32 tensors [N, C, H, W], in binary
                tensor_model = tensors.TensorModel.of(model, task, described)
                items, stats = inference.predict_tiles(server, tensor_model, refs, image_options, ctx.check_cancelled)
            else:
                items, stats = inference.predict_images(server, model, task, refs, image_options, ctx.check_cancelled)
            sources = {ref.name: ref.path for batch in refs for ref in batch}
    inference.keep_top_k(items, top_k, asked, classes)
    path = ctx.node_dir / "predictions.json"
    labels = model_server.labels_of(described)
    path.write_text(json.dumps({"model": model, "task": task, "labels": labels, "stats": stats, "predictions": items}))
    predictions = Predictions(model, items, stats, path, task=task, labels=labels, inputs=sources)
    if isinstance(data, Table):
        predictions.table, predictions.table_key = data, key  # the report shows the rows models disagree on
    return predictions


def _batched(refs: list[FileRef], size: int) -> list[list[FileRef]]:
    return [refs[i : i + size] for i in range(0, len(refs), size)]


@never_reused
@needs(lambda given: [_the_model(given)])
def delete_model(ctx: RunContext, model: ModelId) -> dict:
    """Unload a model from the model server."""
    from orchestrator.models import client as model_server

    # This run lets go of its lease; the model stays loaded while other runs hold it.
    with ctx.resources.model_server.connect(lease=ctx.run_id) as server:
        answer = server.unload(model)
    ctx.cleanup.discard(f"model:{model}")
    unloaded = answer.get("state") != "READY"
    if not unloaded:
        ctx.log.info(
            f"{model} stays loaded: {answer.get('leases', 0)} other run(s) hold it, or it was loaded without a lease"
        )
    return {"model": model, "name": model_server.slug(model), "unloaded": unloaded}


#: The metrics a champion gate can name (each kind of comparison has its own: compare/gate.py checks them).
GateMetric = Literal["accuracy", "macro_f1", "rmse", "mae", "r2", "map", "miou", "pixel_accuracy"]


def compare_models(
    ctx: RunContext,
    results: Annotated[
        # Failed: a model that did not load or run is listed in the report; the others are still compared.
        list[Predictions | Failed],
        Field(min_length=2, max_length=20, description="model_inference results over the same data"),
    ],
    labels: Annotated[
        Literal["auto", "folders", "none"],
        Field(
            description="without truth: auto = class folders when every input has one, else agreement only; "
            "folders = require them; none = agreement only"
        ),
    ] = "auto",
    truth: Annotated[
        Table | FileDict | FileList | None,
        Field(
            description="ground truth: a Table (key and truth columns), a COCO JSON file (detection), "
            "mask PNGs named like the images (segmentation); for georeferenced tiles a label raster, "
            "GeoJSON/GeoPackage polygons or a PostGIS table, matched by place"
        ),
    ] = None,
    truth_key: Annotated[
        str, Field(min_length=1, max_length=256, description="truth table: the column matching the prediction keys")
    ] = "name",
    truth_column: Annotated[
        str,
        Field(
            min_length=1,
            max_length=256,
            description="truth table or polygons: the column (property) holding the class or value",
        ),
    ] = "label",
    iou_threshold: Annotated[
        float, Field(ge=0.05, le=0.95, description="detection: the IoU at which a box counts as found")
    ] = 0.5,
    classes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
        Field(
            max_length=65535,
            description="label raster truth: class names by id (0, 1, 2...); default: the raster's CLASSES tag",
        ),
    ] = None,
    truth_rule: Annotated[
        Literal["centre", "majority"],
        Field(
            description="classified tiles against geographic truth: the class at a tile's centre, or the one "
            "covering most of it"
        ),
    ] = "centre",
    regions: Annotated[
        Table | FileDict | FileList | None,
        Field(description="polygons (GeoJSON, GeoPackage or a PostGIS table) to score each region apart"),
    ] = None,
    region_column: Annotated[
        str, Field(min_length=1, max_length=256, description="regions: the property or column naming each region")
    ] = "name",
    baseline: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=256,
            description="the model in use (a compared model): each other model's gate is against it",
        ),
    ] = None,
    gate: Annotated[
        dict[GateMetric, dict[Literal["min_delta"], float]] | None,
        Field(
            description='what a challenger must beat the baseline by, per metric, e.g. {"accuracy": '
            '{"min_delta": 0.01}}: the lower end of the 95% interval of the difference'
        ),
    ] = None,
    fail_on_gate: Annotated[
        bool, Field(description="fail the run when no challenger passes the gate (after the report is written)")
    ] = False,
) -> Comparison:
    """Compare models on the same inputs against ground truth: metrics with 95% intervals, significance, a report."""
    from orchestrator import compare
    from orchestrator.assets import lineage
    from orchestrator.compare import drilldown, fingerprint, geotruth, reporting
    from orchestrator.compare import inputs as compare_inputs
    from orchestrator.compare.page import run_facts

    # Models that failed to load or run: the others are compared, and the report lists these (the run still fails).
    ran, failed = compare_inputs.without_failed(results)
    # The comparisons take the gate keyed by str (the parameter's Literal keys are its schema; a dict is invariant).
    gate_rules: dict[str, Any] | None = None if gate is None else dict(gate.items())
    task = ran[0].task
    names = [item["name"] for item in ran[0].items]
    runs = [compare.ModelRun(model=r.model, task=r.task, items=r.items, stats=r.stats, labels=r.labels) for r in ran]
    if geotruth.is_geographic(truth, ran[0].items):  # georeferenced tiles against truth on the Earth
        from orchestrator.compare import earth

        options = geotruth.Options(
            truth_column, classes, truth_rule, region_column, ctx.resources.workspace.max_raster_samples
        )
        on_earth = earth.compare_on_earth(
            ran,
            runs,
            truth,
            regions,
            options,
            ctx.node_dir,
            ctx.run_dir,
            iou_threshold=iou_threshold,
            baseline=baseline,
            gate=gate_rules,
            run=run_facts(ctx.run_id, ctx.pipeline),
            failed=failed,
            check=ctx.check_cancelled,
            log=ctx.log.info,
        )
        if fail_on_gate:
            _fail_on_gate(ctx, on_earth.report, on_earth.html)
        return on_earth
    if regions is not None:
        raise OperationError(
            "regions score georeferenced predictions against geographic truth (a label raster, "
            "GeoJSON, GeoPackage or a PostGIS table); give such truth, or no regions"
        )
    found = _truth_for(task, names, labels, truth, truth_key, truth_column)
    report = compare_inputs.compare_without(
        failed, lambda: compare.compare(runs, found, iou_threshold=iou_threshold, baseline=baseline, gate=gate_rules)
    )
    report["failed_models"] = failed
    listed = drilldown.Listing.of(ran, runs, found, report)
    # The table rows the page shows are kept while the fingerprint reads the table: one read, not one per model.
    keep = drilldown.rows_to_show(ran, runs, found, listed)
    report["dataset_fingerprint"], report["fingerprint_of"], kept = fingerprint.fingerprint_and_rows(
        ran, names, found, keep
    )
    report["earlier"] = lineage.earlier_comparisons(report["dataset_fingerprint"])
    folder = ctx.node_dir
    charts = compare.charts(report, folder / "charts")
    markdown = compare.markdown(report)
    (folder / "comparison.json").write_text(json.dumps(report, indent=1))
    shown = reporting.disagreements(drilldown.with_rows(ran, kept), runs, found)
    cells = listed.finish(drilldown.kept_rows(ran, kept)) if listed is not None else None
    html = folder / "report.html"
    html.write_text(
        compare.html_report(
            report,
            charts,
            shown,
            title=f"Comparison of {len(ran)} models",
            drilldown=cells,
            run=run_facts(ctx.run_id, ctx.pipeline),
        )
    )
    ctx.log.info(f"compare_models: {report.get('verdict', '')}")
    if fail_on_gate:
        _fail_on_gate(ctx, report, html)
    return Comparison(report, markdown, charts, html)


def _fail_on_gate(ctx: RunContext, report: dict[str, Any], html: Path | None) -> None:
    """Fail the step when the report's gate passed no challenger; after the report, which a CI reads beside this."""
    from orchestrator.compare import gate as gates

    if report.get("gate") and not report["gate"]["any_passed"]:
        where = f" The report: {html.relative_to(ctx.run_dir).as_posix()} in the run's files" if html else ""
        raise OperationError(f"{gates.summary(report)}{where}")


def _truth_for(task: str, names: list[str], labels: str, truth, key: str, column: str):
    from orchestrator.compare import truth as truth_sources

    if truth is None:
        found = None if labels == "none" else truth_sources.from_folders(names)
        if labels == "folders" and found is None:
            raise OperationError(
                "labels 'folders' needs every input in a folder named by its class (Fire/a.jpg); "
                "use labels 'auto' or 'none' to compare agreement only, or give truth"
            )
        return found if task in truth_sources.CLASSIFICATION else None
    if isinstance(truth, Table):
        if task in ("object-detection", "image-segmentation"):
            raise OperationError(f"{task} truth is a COCO JSON file or mask files, not a table")
        return truth_sources.from_table(truth, task, key, column)
    return truth_sources.from_files(as_refs(truth), task, names)


def _unload(connection, model: str) -> None:
    with connection.connect() as server:
        server.unload(model)
