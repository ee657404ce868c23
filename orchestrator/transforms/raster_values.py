"""Operations that look at a raster's values as a whole: RGB composites (percentile stretch) and
per-band normalisation (given or dataset statistics), both computed window by window.

Statistics over a scene are accumulated window by window: percentiles from a histogram (exact
for 8- and 16-bit data, 65,536 bins between the minimum and maximum otherwise), mean and standard
deviation by Chan's pairwise update (float64), so no band is ever held whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError
from orchestrator.transforms import rasters
from orchestrator.transforms.images import output_path
from orchestrator.transforms.raster_ops import (
    FLOAT_NODATA,
    Check,
    _no_check,
    band_index,
    derived,
    names_of,
    valid_mask,
    windows,
)

HISTOGRAM_BINS = 65_536
NORMALIZATION_TAG = "CONSTELLATION_NORMALIZATION"


# composite_rgb


def _histogram(src: Any, indexes: list[int], check: Check) -> tuple[Any, Any]:
    """Per band: (bin values, counts) of the pixels valid in all `indexes`."""
    import numpy as np

    dtype = np.dtype(src.dtypes[indexes[0] - 1])
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        values = np.arange(int(info.min), int(info.max) + 1)
        counts = np.zeros((len(indexes), len(values)), dtype=np.int64)
        for window in windows(src.width, src.height):
            check()
            data = src.read(indexes, window=window)
            valid = valid_mask(src, data, indexes, window)
            for i in range(len(indexes)):
                counts[i] += np.bincount(data[i][valid].astype(np.int64) - int(info.min), minlength=len(values))
        return np.broadcast_to(values, counts.shape), counts
    # Other types: the valid range first, then a fine histogram over it.
    low = np.full(len(indexes), np.inf)
    high = np.full(len(indexes), -np.inf)
    for window in windows(src.width, src.height):
        check()
        data = src.read(indexes, window=window).astype(np.float64)
        valid = valid_mask(src, data, indexes, window) & np.isfinite(data).all(0)
        if valid.any():
            low = np.minimum(low, [band[valid].min() for band in data])
            high = np.maximum(high, [band[valid].max() for band in data])
    counts = np.zeros((len(indexes), HISTOGRAM_BINS), dtype=np.int64)
    if not np.isfinite(low).all():
        return np.zeros_like(counts, dtype=np.float64), counts
    edges = [np.linspace(lo, hi if hi > lo else lo + 1, HISTOGRAM_BINS + 1) for lo, hi in zip(low, high, strict=True)]
    for window in windows(src.width, src.height):
        check()
        data = src.read(indexes, window=window).astype(np.float64)
        valid = valid_mask(src, data, indexes, window) & np.isfinite(data).all(0)
        for i in range(len(indexes)):
            counts[i] += np.histogram(data[i][valid], bins=edges[i])[0]
    return np.stack([e[:-1] for e in edges]), counts


def percentiles(
    src: Any, indexes: list[int], stretch: Sequence[float], check: Check = _no_check
) -> list[tuple[float, ...] | None]:
    """Per band: the smallest values with at least stretch[0] and stretch[1] % of the valid pixels
    at or below them (numpy's 'inverted_cdf' percentile); None for a band without valid pixels."""
    import numpy as np

    values, counts = _histogram(src, indexes, check)
    found: list[tuple[float, ...] | None] = []
    for band_values, band_counts in zip(values, counts, strict=True):
        cumulative = np.cumsum(band_counts)
        total = int(cumulative[-1])
        if total == 0:
            found.append(None)
            continue
        picks = [
            band_values[min(int(np.searchsorted(cumulative, total * p / 100.0, side="left")), len(cumulative) - 1)]
            for p in stretch
        ]
        found.append(tuple(float(v) for v in picks))
    return found


def composite(
    ref: FileRef,
    out_dir: Path,
    bands: Sequence[int | str],
    stretch: Sequence[float],
    fmt: str,
    caps: int | None,
    check: Check = _no_check,
) -> FileRef:
    """An 8-bit RGB image of three bands, each stretched between its percentiles over valid pixels.

    Pixels nodata in any of the three are black (a PNG) or masked (a GeoTIFF's internal mask).
    """
    import numpy as np
    import rasterio.shutil

    with rasters.open_raster(ref.path, caps, ref.name) as src:
        names = names_of(src, ref)
        indexes = [band_index(b, names, ref.name) for b in bands]
        ranges = percentiles(src, indexes, stretch, check)
        if all(r is None for r in ranges):
            raise OperationError(f"{ref.name!r} has no valid pixel in bands {', '.join(map(str, bands))}")
        name = str(Path(ref.name).with_suffix(".png" if fmt == "png" else ".tif"))
        target = output_path(out_dir, name)
        tif = target if fmt == "tif" else target.with_name(target.name + ".part.tif")
        profile = {
            **rasters.output_profile(src.width, src.height, 3, "uint8", src.crs, src.transform, None),
            "photometric": "RGB",
        }
        tags = {"STRETCH": json.dumps({"percentiles": list(stretch), "ranges": ranges})}
        with rasters.write_like(tif, profile, [names[i - 1] for i in indexes], tags=tags) as dst:
            for window in windows(src.width, src.height):
                check()
                data = src.read(indexes, window=window).astype(np.float32)
                valid = valid_mask(src, data, indexes, window)
                out = np.zeros(data.shape, dtype=np.uint8)
                for i, span in enumerate(ranges):
                    if span is None:
                        continue
                    low, high = span
                    scaled = (data[i] - np.float32(low)) * np.float32(255.0 / max(high - low, 1e-12))
                    # NaN (nodata of a float raster) made 0 before the cast, which has no value for it; 0 below
                    out[i] = np.nan_to_num(np.clip(np.rint(scaled), 0, 255), nan=0.0).astype(np.uint8)
                out[:, ~valid] = 0
                dst.write(out, window=window)
                if fmt == "tif":  # a PNG copied from a masked file would get a .msk file beside it
                    dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)
        if fmt == "png":
            try:
                with rasters.gdal_env():
                    rasterio.shutil.copy(tif, target, driver="PNG")  # streamed row by row by GDAL
            finally:
                tif.unlink(missing_ok=True)
            return FileRef(
                name,
                target,
                {k: v for k, v in ref.meta.items() if k not in _RASTER_KEYS}
                | {"width": src.width, "height": src.height, "stretch": ranges},
            )
        with rasters.open_raster(target, None, name) as written:
            return derived(ref, name, target, written, stretch=ranges)


_RASTER_KEYS = ("crs", "transform", "width", "height", "bands", "dtype", "nodata")


# normalize_image


def dataset_stats(refs: list[FileRef], caps: int | None, check: Check = _no_check) -> tuple[list[float], list[float]]:
    """Per band, over every input's valid pixels (nodata excluded): the mean and the standard deviation."""
    import numpy as np

    if not refs:
        raise OperationError("dataset statistics need at least one input")
    bands = 0  # the first input's band count
    count = mean = m2 = np.zeros(0)
    for number, ref in enumerate(refs):
        with rasters.open_raster(ref.path, caps, ref.name) as src:
            if number == 0:
                bands = src.count
                count, mean, m2 = np.zeros(bands), np.zeros(bands), np.zeros(bands)
            elif src.count != bands:
                raise OperationError(
                    f"{ref.name!r} has {src.count} band(s) but {refs[0].name!r} has {bands}: "
                    "dataset statistics need the same bands in every input"
                )
            for window in windows(src.width, src.height):
                check()
                data = src.read(window=window).astype(np.float64)
                for b in range(bands):
                    values = data[b][_band_valid(src, data[b], b, window)]
                    n = values.size
                    if n == 0:
                        continue
                    window_mean = values.mean()
                    window_m2 = ((values - window_mean) ** 2).sum()
                    total = count[b] + n
                    delta = window_mean - mean[b]
                    mean[b] += delta * n / total
                    m2[b] += window_m2 + delta * delta * count[b] * n / total
                    count[b] = total
    empty = [i + 1 for i in range(bands) if count[i] == 0]
    if empty:
        raise OperationError(f"band(s) {', '.join(map(str, empty))} have no valid pixel in any input")
    std = np.sqrt(m2 / count)
    flat = [i + 1 for i in range(bands) if std[i] == 0]
    if flat:
        raise OperationError(
            f"band(s) {', '.join(map(str, flat))} hold one value everywhere (standard deviation 0); "
            "give mean and std instead"
        )
    return [float(v) for v in mean], [float(v) for v in std]


def _band_valid(src: Any, band: Any, index: int, window: Any) -> Any:
    """Valid pixels of one band (0-based `index`): per band, as normalisation is per band."""
    import numpy as np

    nodata = src.nodata
    if nodata is None:
        return valid_mask(src, band[None], [index + 1], window)
    return ~np.isnan(band) if np.isnan(nodata) else band != nodata


def normalize(
    ref: FileRef,
    out_dir: Path,
    mean: Sequence[float],
    std: Sequence[float],
    source: str,
    caps: int | None,
    check: Check = _no_check,
) -> FileRef:
    """(value − mean) / std per band, as stored (no scale/offset), into a float32 GeoTIFF; nodata stays nodata."""
    import numpy as np

    with rasters.open_raster(ref.path, caps, ref.name) as src:
        if len(mean) != src.count:
            raise OperationError(
                f"{ref.name!r} has {src.count} band(s) but mean and std have {len(mean)} values: "
                'give one per band, or stats "dataset"'
            )
        target = output_path(out_dir, ref.name)
        profile = rasters.output_profile(
            src.width, src.height, src.count, "float32", src.crs, src.transform, FLOAT_NODATA
        )
        used = {"mean": list(mean), "std": list(std), "stats": source}
        means = np.asarray(mean, dtype=np.float32)[:, None, None]
        stds = np.asarray(std, dtype=np.float32)[:, None, None]
        with rasters.write_like(
            target, profile, names_of(src, ref), tags={NORMALIZATION_TAG: json.dumps(used)}, caps=caps
        ) as dst:
            for window in windows(src.width, src.height):
                check()
                data = src.read(window=window)
                out = (data.astype(np.float32) - means) / stds
                for b in range(src.count):
                    out[b][~_band_valid(src, data[b], b, window)] = FLOAT_NODATA
                dst.write(out, window=window)
            return derived(ref, ref.name, target, dst, normalization=used, shape=[src.count, src.height, src.width])
