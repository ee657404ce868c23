"""Fetching a STAC item's assets: whole files, the window a bbox covers, or one stack per item.

A remote GeoTIFF with a bbox is read through `remote.RangeFile` (HTTP range requests through the
URL policy, handed to rasterio as a Python file object): GDAL reads the header and the tiles the
window touches, never the whole file, and never opens a socket itself. Local assets (a catalog
under the data root) are opened as files, by `rasters.open_raster`. Outputs are written by
`rasters.write_like`, block by block, so memory follows a strip of blocks, not the window.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.engine import OperationError
from orchestrator.sources.remote import PolicedClient, RangeFile, RangesUnsupported, shown
from orchestrator.transforms import rasters

WGS84 = "EPSG:4326"
STRIP_ROWS = 512  # rows copied (or resampled) at a time


@dataclass(frozen=True)
class Asset:
    """One asset to fetch: where it is, what it is called, and what STAC says of its bands."""

    item_id: str
    key: str
    href: str  # absolute: http(s) URL, or a local path already checked to lie under the data root
    media_type: str | None
    band_names: list[str | None] | None
    band_tags: list[dict[str, str]] | None  # per band: STAC's name and common_name, kept as band metadata
    scales: list[float] | None
    offsets: list[float] | None

    @property
    def remote(self) -> bool:
        return self.href.startswith(("http://", "https://"))

    @property
    def is_geotiff(self) -> bool:
        if self.media_type:
            return "tiff" in self.media_type.lower()
        return rasters.named_like_raster(self.href.split("?", 1)[0])

    @property
    def shown(self) -> str:
        return f"asset {self.key!r} of item {self.item_id!r}"


@dataclass
class Fetcher:
    """What fetching needs: the policed HTTP client, the run's folder, the caps, the cancel check."""

    client: PolicedClient
    out_dir: Path
    max_samples: int | None
    check_cancelled: Callable[[], None]
    log: Any = None

    @contextmanager
    def open(self, asset: Asset) -> Iterator[Any]:
        """The asset as an open rasterio dataset (GTiff driver only), its header checked against the caps."""
        if not asset.is_geotiff:
            raise OperationError(
                f"{asset.shown} is {asset.media_type or 'not a GeoTIFF'}: a window or a stack can "
                "only be cut from a GeoTIFF / COG; leave bbox and stack out to fetch the file as is"
            )
        if not asset.remote:
            with rasters.open_raster(asset.href, self.max_samples, name=f"{asset.item_id}/{asset.key}") as dataset:
                yield dataset
            return
        try:
            source = RangeFile(self.client, asset.href)
        except RangesUnsupported:
            if self.log is not None:
                self.log.warning(f"{shown(asset.href)} does not answer range requests: the whole file is fetched")
            whole = self.client.download(asset.href, self.out_dir / ".whole" / f"{uuid.uuid4().hex}.tif")
            try:
                with rasters.open_raster(whole, self.max_samples, name=f"{asset.item_id}/{asset.key}") as dataset:
                    yield dataset
            finally:
                whole.unlink(missing_ok=True)
            return
        with _remote_dataset(source, asset) as dataset:
            rasters.check_caps(
                f"{asset.item_id}/{asset.key}", dataset.width, dataset.height, dataset.count, self.max_samples
            )
            yield dataset

    def fetch_whole(self, asset: Asset, target: Path) -> Path:
        """The asset's file as published: downloaded into the run's folder, or the data root's file itself."""
        if not asset.remote:
            return Path(asset.href)
        return self.client.download(asset.href, target)

    def fetch_window(self, asset: Asset, bbox: Sequence[float], target: Path) -> Path:
        """The part of the asset that `bbox` (WGS84) covers, as a GeoTIFF at `target`."""
        with self.open(asset) as src:
            window = bbox_window(src, bbox, asset.shown)
            rasters.check_caps(target.name, int(window.width), int(window.height), src.count, self.max_samples)
            profile = rasters.output_profile(
                int(window.width),
                int(window.height),
                src.count,
                src.dtypes[0],
                src.crs,
                src.window_transform(window),
                src.nodata,
            )
            with _writer(target, profile, [(asset, src)], self.max_samples) as dst:
                for row in range(0, int(window.height), STRIP_ROWS):
                    self.check_cancelled()
                    rows = min(STRIP_ROWS, int(window.height) - row)
                    strip = _window(window.col_off, window.row_off + row, window.width, rows)
                    dst.write(src.read(window=strip), window=_window(0, row, window.width, rows))
                    if src.nodata is None and _has_mask(src):
                        dst.write_mask(src.dataset_mask(window=strip), window=_window(0, row, window.width, rows))
        return target

    def fetch_stack(self, assets: Sequence[Asset], bbox: Sequence[float] | None, target: Path) -> Path:
        """The assets as one GeoTIFF, bands in the order given, on the finest asset's grid (coarser ones resampled)."""
        import numpy as np
        from affine import Affine

        with _all_open(self, assets) as sources:
            finest = min(range(len(sources)), key=lambda i: _pixel_size(sources[i]))
            grid = sources[finest]
            window = bbox_window(grid, bbox, assets[finest].shown) if bbox else _window(0, 0, grid.width, grid.height)
            width, height = int(window.width), int(window.height)
            transform = grid.window_transform(window)
            count = sum(src.count for src in sources)
            dtype = np.result_type(*[src.dtypes[0] for src in sources]).name
            nodata = next((src.nodata for src in sources if src.nodata is not None), None)
            profile = rasters.output_profile(width, height, count, dtype, grid.crs, transform, nodata)
            with _writer(target, profile, list(zip(assets, sources, strict=True)), self.max_samples) as dst:
                for row in range(0, height, STRIP_ROWS):
                    self.check_cancelled()
                    rows = min(STRIP_ROWS, height - row)
                    strip_transform = transform * Affine.translation(0, row)
                    band = 1
                    for src in sources:
                        data = _on_grid(src, grid.crs, strip_transform, width, rows, dtype, nodata)
                        dst.write(
                            data, indexes=list(range(band, band + src.count)), window=_window(0, row, width, rows)
                        )
                        band += src.count
        return target


@contextmanager
def _remote_dataset(source: RangeFile, asset: Asset) -> Iterator[Any]:
    """rasterio reading `source` through its Python-opener plugin, under a name of our own (never user text)."""
    import rasterio
    from rasterio.errors import RasterioError

    if source.read(4) not in rasters.TIFF_MAGIC:
        raise OperationError(f"{asset.shown} ({shown(asset.href)}) is not a TIFF file")
    source.seek(0)
    token = f"stac-{uuid.uuid4().hex}.tif"  # one opener per name: concurrent reads never share one

    def opener(path: str, mode: str = "rb") -> RangeFile:
        if os.path.basename(path) != token:  # GDAL probing side files (.ovr, .msk): there are none
            raise FileNotFoundError(path)
        return source

    with rasters.gdal_env():
        try:
            dataset = rasterio.open(token, driver="GTiff", opener=opener)
        except (RasterioError, OSError) as exc:
            raise OperationError(f"{asset.shown} ({shown(asset.href)}) is not a readable GeoTIFF: {exc}") from None
        with dataset:
            yield dataset


@contextmanager
def _all_open(fetcher: Fetcher, assets: Sequence[Asset]) -> Iterator[list[Any]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(fetcher.open(asset)) for asset in assets]


@contextmanager
def _writer(target: Path, profile: dict[str, Any], parts: Sequence[tuple[Asset, Any]], caps: int | None):
    """A GeoTIFF open for writing, each band with its name, scale/offset and STAC names as band tags."""
    names: list[str | None] = []
    scales: list[float] = []
    offsets: list[float] = []
    tags: list[dict[str, str]] = []
    for asset, src in parts:
        described = asset.band_names if asset.band_names and len(asset.band_names) == src.count else None
        names += described or _names_of(asset, src)
        scales += asset.scales if asset.scales and len(asset.scales) == src.count else list(src.scales)
        offsets += asset.offsets if asset.offsets and len(asset.offsets) == src.count else list(src.offsets)
        tags += asset.band_tags if asset.band_tags and len(asset.band_tags) == src.count else [{}] * src.count
    with rasters.write_like(target, profile, names, scales, offsets, caps=caps) as dst:
        for index, band_tags in enumerate(tags, start=1):
            if band_tags:
                dst.update_tags(index, **band_tags)
        yield dst


def _names_of(asset: Asset, src: Any) -> list[str | None]:
    """Bands STAC does not name: the file's descriptions, else the asset key (key_1, key_2... for several)."""
    if any(src.descriptions):
        return [d or None for d in src.descriptions]
    return [asset.key] if src.count == 1 else [f"{asset.key}_{i}" for i in range(1, src.count + 1)]


def bbox_window(src: Any, bbox: Sequence[float], shown_as: str) -> Any:
    """The whole-pixel window of `src` that covers `bbox` (WGS84), clipped to the raster; refused when outside."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    if not src.crs:
        raise OperationError(f"{shown_as} has no CRS: a bbox cannot be placed on it")
    left, bottom, right, top = transform_bounds(WGS84, src.crs, *bbox, densify_pts=21)
    exact = from_bounds(left, bottom, right, top, transform=src.transform)
    col0, row0 = max(math.floor(exact.col_off + 1e-9), 0), max(math.floor(exact.row_off + 1e-9), 0)
    col1 = min(math.ceil(exact.col_off + exact.width - 1e-9), src.width)
    row1 = min(math.ceil(exact.row_off + exact.height - 1e-9), src.height)
    if col1 <= col0 or row1 <= row0:
        from rasterio.warp import transform_bounds as back

        scene = [round(v, 5) for v in back(src.crs, WGS84, *src.bounds, densify_pts=21)]
        raise OperationError(f"bbox {list(bbox)} lies outside {shown_as}, which covers {scene} (WGS84)")
    return _window(col0, row0, col1 - col0, row1 - row0)


def _window(col: float, row: float, width: float, height: float) -> Any:
    from rasterio.windows import Window

    return Window(int(col), int(row), int(width), int(height))


def _pixel_size(src: Any) -> float:
    return abs(src.transform.a * src.transform.e)


def _has_mask(src: Any) -> bool:
    from rasterio.enums import MaskFlags

    return any(MaskFlags.per_dataset in flags for flags in src.mask_flag_enums)


def _on_grid(src: Any, crs: Any, transform: Any, width: int, height: int, dtype: str, nodata: float | None) -> Any:
    """`src`'s bands on the grid (crs, transform, width × height): read directly when aligned, else resampled.

    Resampling is nearest-neighbour: a coarser band's pixel is repeated over the finer pixels it
    covers, so values stay as measured (and class codes stay codes) rather than invented by blending.
    """
    import numpy as np
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import from_bounds

    exact = from_bounds(*_bounds(transform, width, height), transform=src.transform)
    aligned = (
        src.crs == crs
        and src.transform.a == transform.a
        and src.transform.e == transform.e
        and _whole(exact.col_off)
        and _whole(exact.row_off)
    )
    if aligned:
        return _read_clipped(src, round(exact.col_off), round(exact.row_off), width, height, _fill(src, nodata), dtype)
    left, bottom, right, top = transform_bounds(crs, src.crs, *_bounds(transform, width, height), densify_pts=21)
    around = from_bounds(left, bottom, right, top, transform=src.transform)
    col0, row0 = max(math.floor(around.col_off) - 1, 0), max(math.floor(around.row_off) - 1, 0)
    col1 = min(math.ceil(around.col_off + around.width) + 1, src.width)
    row1 = min(math.ceil(around.row_off + around.height) + 1, src.height)
    out = np.full((src.count, height, width), _fill(src, nodata), dtype=dtype)
    if col1 <= col0 or row1 <= row0:
        return out  # this strip lies beyond the coarser asset: nodata
    window = _window(col0, row0, col1 - col0, row1 - row0)
    reproject(
        src.read(window=window),
        out,
        src_transform=src.window_transform(window),
        src_crs=src.crs,
        src_nodata=src.nodata,
        dst_transform=transform,
        dst_crs=crs,
        dst_nodata=nodata,
        resampling=Resampling.nearest,
    )
    return out


def _read_clipped(src: Any, col: int, row: int, width: int, height: int, fill: float, dtype: str) -> Any:
    """`src`'s pixels at (col, row, width, height), `fill` where that reaches beyond the raster."""
    import numpy as np

    out = np.full((src.count, height, width), fill, dtype=dtype)
    col0, row0 = max(col, 0), max(row, 0)
    col1, row1 = min(col + width, src.width), min(row + height, src.height)
    if col1 > col0 and row1 > row0:
        data = src.read(window=_window(col0, row0, col1 - col0, row1 - row0))
        out[:, row0 - row : row1 - row, col0 - col : col1 - col] = data
    return out


def _bounds(transform: Any, width: int, height: int) -> tuple[float, float, float, float]:
    from rasterio.transform import array_bounds

    return array_bounds(height, width, transform)  # west, south, east, north


def _whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-6


def _fill(src: Any, nodata: float | None) -> float:
    return nodata if nodata is not None else (src.nodata if src.nodata is not None else 0)
