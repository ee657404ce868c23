"""Spectral indices (NDVI, NDWI, NBR...) computed with spyndex from its own catalog.

The index's formula comes from spyndex's catalog (Awesome Spectral Indices), never from the user:
a pipeline names an index (checked against the catalog), says which band of the raster is which
of the index's standard bands (N, R, G...), and may give numbers for its constants (L, g, C1...).
Each band is read as float32 with its scale/offset applied; a pixel that is nodata in any band
used, or whose value is not finite (0/0), is nodata in the output (FLOAT_NODATA).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError

SAR_BANDS = ("VV", "VH", "HH", "HV")  # polarisations: bands like any other for the mapping


def _spyndex_data() -> Path | None:
    """spyndex's data folder, found without importing spyndex; None when spyndex is not installed."""
    spec = importlib.util.find_spec("spyndex")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, Any]]:
    """spyndex's index catalog, read from its data file (importing spyndex costs ~150 ms; this, 2 ms)."""
    data = _spyndex_data()
    if data is None:
        return {}
    return json.loads((data / "spectral-indices-dict.json").read_text())["SpectralIndices"]


@lru_cache(maxsize=1)
def _terms() -> tuple[frozenset[str], frozenset[str]]:
    """spyndex's standard band names and constant names."""
    data = _spyndex_data()
    if data is None:
        raise OperationError("spyndex is not installed on this server; the spectral indices need it")
    bands = frozenset(json.loads((data / "bands.json").read_text())) | frozenset(SAR_BANDS)
    constants = frozenset(json.loads((data / "constants.json").read_text()))
    return bands, constants


def index_names() -> tuple[str, ...]:
    """The indices this server computes: spyndex's catalog minus the kernel indices (kNDVI...)."""
    bands, constants = _terms()
    return tuple(
        sorted(
            name
            for name, entry in _catalog().items()
            if all(term in bands or term in constants for term in entry["bands"])
        )
    )


def requirements(index: str) -> tuple[list[str], list[str]]:
    """The standard bands and the constants `index`'s formula uses."""
    entry = _catalog().get(index)
    if entry is None or index not in index_names():
        raise OperationError(f"{index!r} is not an index of spyndex's catalog that this server computes")
    bands, constants = _terms()
    return [t for t in entry["bands"] if t not in constants], [t for t in entry["bands"] if t in constants]


def constant_values(index: str, given: Mapping[str, float] | None) -> dict[str, float]:
    """The constants' values: the pipeline's, else spyndex's defaults; unknown or missing ones are errors."""
    import spyndex

    _, needed = requirements(index)
    given = dict(given or {})
    extra = sorted(set(given) - set(needed))
    if extra:
        raise OperationError(
            f"{index} has no constant(s) {', '.join(extra)}; its constants are {', '.join(needed) or 'none'}"
        )
    values = {}
    for name in needed:
        value = given.get(name, spyndex.constants[name].default)
        if value is None:
            raise OperationError(
                f"{index} needs constant {name} ({spyndex.constants[name].description}), "
                f'which has no default: give constants {{"{name}": ...}}'
            )
        values[name] = float(value)
    return values


def band_mapping(
    index: str, given: Mapping[str, int | str] | None, names: list[str | None], source: str
) -> dict[str, int]:
    """Which 1-based band of the raster is each standard band the index needs.

    Given: by index or band name. Not given: a raster band named like the standard band's
    common name (nir, red...) or the standard name itself (N, R...), in any case.
    """
    import spyndex

    from orchestrator.transforms.raster_ops import ambiguous, band_index, listed

    needed, _ = requirements(index)
    given = dict(given or {})
    extra = sorted(set(given) - set(needed))
    if extra:
        raise OperationError(f"{index} uses bands {', '.join(needed)}; {', '.join(extra)} is not one of them")
    mapping = {}
    for term in needed:
        if term in given:
            mapping[term] = band_index(given[term], names, source)
            continue
        common = getattr(spyndex.bands[term], "common_name", None) if term in spyndex.bands else None
        folded = [n.casefold() if n else None for n in names]
        for candidate in (common, term):
            found = [i for i, n in enumerate(folded, 1) if candidate and n == candidate.casefold()]
            if len(found) > 1:
                raise OperationError(f"{index}: " + ambiguous(str(candidate), found, names, source))
            if found:
                mapping[term] = found[0]
                break
        else:
            wanted = ", ".join(
                f"{t}" + (f" ({spyndex.bands[t].common_name})" if t in spyndex.bands else "") for t in needed
            )
            example = ", ".join(f'"{t}": {i}' for i, t in enumerate(needed, 1))
            raise OperationError(
                f"{index} needs bands {wanted}; say which band of {source!r} is {term}, e.g. "
                f"bands {{{example}}} (its bands: {listed(names)})"
            )
    return mapping


def spectral_index(
    ref: FileRef,
    out_dir: Path,
    index: str,
    bands: Mapping[str, int | str] | None,
    constants: Mapping[str, float] | None,
    caps: int | None,
    check=lambda: None,
) -> FileRef:
    """One float32 band: `index` computed by spyndex over the raster, window by window."""
    import numpy as np
    import spyndex

    from orchestrator.transforms import rasters
    from orchestrator.transforms.images import output_path
    from orchestrator.transforms.raster_ops import FLOAT_NODATA, derived, names_of, valid_mask, windows

    values = constant_values(index, constants)
    with rasters.open_raster(ref.path, caps, ref.name) as src:
        mapping = band_mapping(index, bands, names_of(src, ref), ref.name)
        order = sorted(set(mapping.values()))
        target = output_path(out_dir, ref.name)
        profile = rasters.output_profile(src.width, src.height, 1, "float32", src.crs, src.transform, FLOAT_NODATA)
        formula = _catalog()[index]["formula"]
        tags = {
            "SPECTRAL_INDEX": index,
            "FORMULA": formula,
            "BANDS": json.dumps(mapping),
            "CONSTANTS": json.dumps(values),
        }
        with rasters.write_like(target, profile, [index], tags=tags, caps=caps) as dst:
            for window in windows(src.width, src.height):
                check()
                raw = src.read(order, window=window)
                valid = valid_mask(src, raw, order, window)
                params: dict[str, Any] = dict(values)
                for term, number in mapping.items():
                    band = raw[order.index(number)].astype(np.float32)
                    scale, offset = src.scales[number - 1], src.offsets[number - 1]
                    if scale != 1:
                        band *= np.float32(scale)
                    if offset:
                        band += np.float32(offset)
                    params[term] = band
                with np.errstate(all="ignore"):
                    result = np.asarray(spyndex.computeIndex(index, params), dtype=np.float32)
                result = np.broadcast_to(result, valid.shape).copy()  # an index of constants only
                result[~(valid & np.isfinite(result))] = FLOAT_NODATA
                dst.write(result, 1, window=window)
            return derived(ref, ref.name, target, dst, bands=[index], spectral_index=index)
