"""The pixel operations on rasters: tiles, crops, resizing, band selection, reprojection, normalisation.

Each reads its input by windows and writes its output by windows (512 × 512, or one tile), so its
memory follows the window, never the scene. Each output is a GeoTIFF that keeps the input's CRS,
bands (names, scales, offsets) and nodata, with the geotransform of the pixels it holds, and its
FileRef.meta keeps the input's facts (a STAC item, a tile's origin) with the raster facts updated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError
from orchestrator.transforms import rasters
from orchestrator.transforms.images import output_path, tile_origins
from orchestrator.transforms.threads import map_in_order

FLOAT_NODATA = -9999.0  # float32 outputs (indices, normalised bands): a JSON number, unlike NaN
RASTER_THREADS = 2  # rasterio releases the GIL while it reads, compresses and writes
TILE_TAG = "CONSTELLATION_TILE"  # a tile's origin, also inside the file: mosaic finds it if the meta is lost
# Names that are images for Pillow, whatever their bytes: never opened to ask whether they are rasters.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

Check = Callable[[], None]


def _no_check() -> None:
    pass


# Which path a file takes


def takes_raster_path(ref: FileRef) -> bool:
    """GeoTIFFs (a CRS or a geotransform) and TIFFs Pillow cannot hold (not 8-bit with 1, 3 or 4 bands).

    A plain 8-bit photo saved as TIFF stays an image (Pillow's path, as before); PNG/JPEG never
    take this path.
    """
    if ref.name.lower().endswith(IMAGE_SUFFIXES):
        return False
    if ref.meta.get("crs"):
        return True
    import rasterio
    from rasterio.errors import RasterioError

    if not rasters.has_tiff_magic(ref.path):
        return False
    try:
        with rasters.gdal_env(), rasterio.open(rasters._local(ref.path), driver="GTiff") as dataset:
            georeferenced = dataset.crs is not None or not dataset.transform.is_identity
            photo = set(dataset.dtypes) == {"uint8"} and dataset.count in (1, 3, 4)
            return georeferenced or not photo
    except (RasterioError, OSError):
        return False


def runs_by_kind(refs: list[FileRef]) -> Iterator[tuple[bool, list[FileRef]]]:
    """Consecutive runs of images and of rasters, in order: (is_raster, run)."""
    run: list[FileRef] = []
    kind = False
    for ref in refs:
        this = takes_raster_path(ref)
        if run and this != kind:
            yield kind, run
            run = []
        kind = this
        run.append(ref)
    if run:
        yield kind, run


def map_rasters(
    refs: list[FileRef], work: Callable[[FileRef], FileRef | list[FileRef]], check_cancelled: Check = _no_check
) -> list[FileRef]:
    """`work` on every raster on RASTER_THREADS threads, a few in flight; results in input order."""

    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    def one(ref: FileRef) -> list[FileRef]:
        check_cancelled()
        try:
            produced = work(ref)
        except (RasterioError, CPLE_BaseError) as exc:  # a damaged file: name it, not the server's path to it
            text = str(exc).replace(str(ref.path), ref.name)
            raise OperationError(f"{ref.name!r} could not be read or written as a GeoTIFF: {text}") from None
        return produced if isinstance(produced, list) else [produced]

    if len(refs) == 1:
        return one(refs[0])
    produced = map_in_order(one, refs, threads=RASTER_THREADS, ahead=2 * RASTER_THREADS, name="raster")
    return [out for outs in produced for out in outs]


# Shared pieces


def windows(width: int, height: int, size: int = rasters.BLOCK) -> Iterator[Any]:
    """Row-major windows of at most size × size covering width × height (the outputs' blocks)."""
    from rasterio.windows import Window

    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


class BandName(str):
    """A band's name, with the other names it answers to (STAC's `name` and `common_name` kept as band tags,
    so that `B08` and `nir` both find the band of a STAC import)."""

    aliases: frozenset[str] = frozenset()


def names_of(dataset: Any, ref: FileRef) -> list[str | None]:
    """Each band's name: the import's (a STAC asset's bands), else the file's band descriptions."""
    given = ref.meta.get("bands")
    if isinstance(given, list) and len(given) == dataset.count:
        primary = [str(n) if n is not None else None for n in given]
    else:
        primary = [d or None for d in dataset.descriptions]
    named: list[str | None] = []
    for index, name in enumerate(primary, 1):
        tags = dataset.tags(index)
        aliases = frozenset(str(tags[k]).casefold() for k in ("name", "common_name") if tags.get(k))
        if name is None or not aliases:
            named.append(name)
            continue
        band = BandName(name)
        band.aliases = aliases
        named.append(band)
    return named


def listed(names: Sequence[str | None]) -> str:
    return ", ".join(f"{i}: {n}" if n else str(i) for i, n in enumerate(names, 1))


def band_index(wanted: int | str, names: Sequence[str | None], source: str) -> int:
    """The 1-based index of a band given by index or by name (any case), or an error listing the bands; a name
    that several bands answer to is refused (taking the first would pick one silently)."""
    count = len(names)
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if 1 <= wanted <= count:
            return wanted
        raise OperationError(f"band {wanted} is not in {source!r}, which has {count} band(s): {listed(names)}")
    folded = str(wanted).casefold()
    found = [
        index
        for index, name in enumerate(names, 1)
        if name is not None and (name.casefold() == folded or folded in getattr(name, "aliases", ()))
    ]
    if len(found) == 1:
        return found[0]
    if found:
        raise OperationError(ambiguous(str(wanted), found, names, source))
    if any(names):
        raise OperationError(f"band {wanted!r} is not in {source!r}; its bands are {listed(names)}")
    raise OperationError(
        f"band {wanted!r} is not in {source!r}: its {count} band(s) have no names; give 1-based indexes (1 to {count})"
    )


def ambiguous(wanted: str, found: Sequence[int], names: Sequence[str | None], source: str) -> str:
    bands = ", ".join(str(i) for i in found)
    return (
        f"band {wanted!r} is ambiguous in {source!r}: bands {bands} are named so; give its 1-based index "
        f"({listed(names)})"
    )


def valid_mask(dataset: Any, data: Any, band_indexes: Sequence[int], window: Any) -> Any:
    """True where every band given is valid: not nodata (NaN-aware), and inside the file's own mask."""
    import numpy as np

    valid = np.ones(data.shape[1:], dtype=bool)
    nodata = dataset.nodata
    if nodata is not None:
        valid &= ~np.isnan(data).any(0) if np.isnan(nodata) else (data != nodata).all(0)
    elif _has_mask(dataset):
        valid &= dataset.read_masks(band_indexes[0], window=window) > 0
    return valid


def _has_mask(dataset: Any) -> bool:
    from rasterio.enums import MaskFlags

    return MaskFlags.per_dataset in dataset.mask_flag_enums[0] and MaskFlags.all_valid not in dataset.mask_flag_enums[0]


def derived(ref: FileRef, name: str, path: Path, dataset: Any, **extra: Any) -> FileRef:
    """The FileRef of an output: the input's facts (STAC item, tile...) with the written raster's."""
    return FileRef(name, path, {**ref.meta, **rasters.facts(dataset), **extra})


def _profile_like(
    src: Any,
    width: int,
    height: int,
    transform: Any,
    count: int | None = None,
    dtype: str | None = None,
    nodata: Any = "keep",
) -> dict[str, Any]:
    return rasters.output_profile(
        width,
        height,
        count or src.count,
        dtype or src.dtypes[0],
        src.crs,
        transform,
        src.nodata if nodata == "keep" else nodata,
    )


# tile_image, crop_image, resize_image on GeoTIFFs


def tile(
    ref: FileRef,
    out_dir: Path,
    size: tuple[int, int],
    overlap: int,
    caps: int | None,
    max_tiles: int = 10_000,
    check: Check = _no_check,
) -> list[FileRef]:
    """Cut a scene into GeoTIFF tiles read by windows; each has its own geotransform and `tile` origin.

    Named `<scene>/x<col>_y<row>.tif` like image tiles; the last row and column move back to end at
    the scene's edge (never padded). The tile count is checked from the header first.
    """
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    tile_w, tile_h = size
    with rasters.open_raster(ref.path, caps, ref.name) as src:
        rows = tile_origins(src.height, tile_h, tile_h - overlap)
        cols = tile_origins(src.width, tile_w, tile_w - overlap)
        if len(rows) * len(cols) > max_tiles:
            raise OperationError(
                f"{ref.name!r} ({src.width}×{src.height}) would make {len(rows) * len(cols)} tiles of "
                f"{tile_w}×{tile_h} with overlap {overlap}, over the limit of {max_tiles} per image (the server's "
                "CONSTELLATION_MAX_TILES_PER_IMAGE); use larger tiles or less overlap"
            )
        band_names = names_of(src, ref)
        masked = src.nodata is None and _has_mask(src)
        base = {**ref.meta, **rasters.facts(src), "bands": band_names if any(band_names) else None}
        stem, suffix = str(Path(ref.name).with_suffix("")), Path(ref.name).suffix or ".tif"
        tiles = []
        for y in rows:
            for x in cols:
                check()
                window = Window(x, y, min(tile_w, src.width - x), min(tile_h, src.height - y))
                name = f"{stem}/x{x}_y{y}{suffix}"
                width, height = int(window.width), int(window.height)
                origin = {"source": ref.name, "col_off": x, "row_off": y, "width": width, "height": height}
                transform = window_transform(window, src.transform)
                target = output_path(out_dir, name)
                profile = _profile_like(src, width, height, transform)
                with rasters.write_like(
                    target, profile, band_names, src.scales, src.offsets, {TILE_TAG: json.dumps(origin)}
                ) as dst:
                    dst.write(src.read(window=window))
                    if masked:
                        dst.write_mask(src.read_masks(1, window=window))
                meta = {
                    **base,
                    "transform": [float(v) for v in tuple(transform)[:6]],
                    "width": width,
                    "height": height,
                    "tile": origin,
                }
                tiles.append(FileRef(name, target, meta))
    return tiles


def crop(ref: FileRef, out_dir: Path, box: tuple[int, int, int, int], caps: int | None) -> FileRef:
    """Cut the box (left, top, width, height) out of a raster; it must lie inside the scene."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    left, top, width, height = box
    with rasters.open_raster(ref.path, caps, ref.name) as src:
        if left + width > src.width or top + height > src.height:
            raise OperationError(
                f"{ref.name!r} is {src.width}×{src.height}; the box {width}×{height} at ({left}, {top}) "
                "does not fit inside it"
            )
        box_window = Window(left, top, width, height)
        target = output_path(out_dir, ref.name)
        profile = _profile_like(src, width, height, window_transform(box_window, src.transform))
        masked = src.nodata is None and _has_mask(src)
        with rasters.write_like(target, profile, names_of(src, ref), src.scales, src.offsets) as dst:
            for part in windows(width, height):
                source = Window(left + part.col_off, top + part.row_off, part.width, part.height)
                dst.write(src.read(window=source), window=part)
                if masked:
                    dst.write_mask(src.read_masks(1, window=source), window=part)
            return derived(ref, ref.name, target, dst)


WARP_WINDOW = 1024  # output pixels warped per call: 1024² × bands × 8 bytes at most in flight


def _warp_windows(src: Any, dst: Any, resampling: Any, check: Check = _no_check) -> None:
    """Fill `dst` window by window from `src` with GDAL's warper (it reads only the source it needs).

    The kernel's scale (XSCALE/YSCALE) is the whole warp's, not each window's, so bilinear or
    average pixels do not change at window edges; GDAL's approximate transformer (0.125 px, as in
    gdalwarp, which chunks the same way) is what remains between windows. An output of up to
    1024 × 1024 is one call, the same as rasterio.warp.reproject over the whole array.
    """
    import numpy as np
    from rasterio import band
    from rasterio.warp import reproject
    from rasterio.windows import transform as window_transform

    indexes = list(range(1, src.count + 1))
    nodata = src.nodata
    scale = {"XSCALE": dst.width / src.width, "YSCALE": dst.height / src.height}
    # Validity kept by a mask, not a nodata value: the warper reads the source's mask and writes what it filled
    # as an alpha band, which becomes the output's mask (masked pixels and those outside the source not valid).
    alpha = {"dst_alpha": src.count + 1} if nodata is None and _has_mask(src) else {}
    for window in windows(dst.width, dst.height, WARP_WINDOW):
        check()
        out = np.full(
            (src.count + len(alpha), int(window.height), int(window.width)),
            nodata if nodata is not None else 0,
            dtype=src.dtypes[0],
        )
        reproject(
            band(src, indexes),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=nodata,
            dst_transform=window_transform(window, dst.transform),
            dst_crs=dst.crs,
            dst_nodata=nodata,
            resampling=resampling,
            **alpha,
            **(scale if dst.width > WARP_WINDOW or dst.height > WARP_WINDOW else {}),
        )
        dst.write(out[: src.count], window=window)
        if alpha:
            dst.write_mask(np.where(out[src.count] > 0, 255, 0).astype(np.uint8), window=window)


def resize(ref: FileRef, out_dir: Path, width: int, height: int, caps: int | None, check: Check = _no_check) -> FileRef:
    """Resample a raster to width × height over the same extent (nearest: class ids stay class ids)."""
    from rasterio.enums import Resampling
    from rasterio.transform import Affine

    with rasters.open_raster(ref.path, caps, ref.name) as src:
        transform = src.transform @ Affine.scale(src.width / width, src.height / height)
        target = output_path(out_dir, ref.name)
        profile = _profile_like(src, width, height, transform)
        with rasters.write_like(target, profile, names_of(src, ref), src.scales, src.offsets, caps=caps) as dst:
            _warp_windows(src, dst, Resampling.nearest, check)
            return derived(ref, ref.name, target, dst)


# select_bands, reproject_raster


def select_bands(
    ref: FileRef, out_dir: Path, bands: Sequence[int | str], caps: int | None, check: Check = _no_check
) -> FileRef:
    """A GeoTIFF of the bands asked for, in that order (by 1-based index or by name)."""
    with rasters.open_raster(ref.path, caps, ref.name) as src:
        names = names_of(src, ref)
        indexes = [band_index(b, names, ref.name) for b in bands]
        target = output_path(out_dir, ref.name)
        profile = _profile_like(src, src.width, src.height, src.transform, count=len(indexes))
        chosen = [names[i - 1] for i in indexes]
        masked = src.nodata is None and _has_mask(src)
        with rasters.write_like(
            target,
            profile,
            chosen,
            [src.scales[i - 1] for i in indexes],
            [src.offsets[i - 1] for i in indexes],
            caps=caps,
        ) as dst:
            for window in windows(src.width, src.height):
                check()
                dst.write(src.read(indexes, window=window), window=window)
                if masked:
                    dst.write_mask(src.read_masks(indexes[0], window=window), window=window)
            return derived(ref, ref.name, target, dst, bands=chosen if any(chosen) else None)


def reproject(
    ref: FileRef,
    out_dir: Path,
    crs: str,
    resolution: float | None,
    resampling: str,
    caps: int | None,
    check: Check = _no_check,
) -> FileRef:
    """Warp a raster to another CRS (and optionally a resolution in its units), window by window."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform

    target_crs = rasters.parse_crs(crs)
    with rasters.open_raster(ref.path, caps, ref.name) as src:
        if src.crs is None:
            raise OperationError(f"{ref.name!r} has no CRS: there is nothing to reproject from")
        try:
            transform, width, height = calculate_default_transform(
                src.crs, target_crs, src.width, src.height, *src.bounds, resolution=resolution
            )
        except Exception as exc:  # GDAL could not map the scene's extent into that CRS
            raise OperationError(f"{ref.name!r} cannot be reprojected to {crs}: {exc}") from None
        rasters.check_caps(ref.name + f" reprojected to {crs}", width, height, src.count, caps)
        target = output_path(out_dir, ref.name)
        profile = {**_profile_like(src, width, height, transform), "crs": target_crs}
        with rasters.write_like(target, profile, names_of(src, ref), src.scales, src.offsets, caps=caps) as dst:
            _warp_windows(src, dst, Resampling[resampling], check)
            return derived(ref, ref.name, target, dst)
