"""vectorize_mask: class masks (GeoTIFFs of class ids) as polygons, for GIS tools and spatial databases.

Each mask's connected areas of one class (4-connected pixels, rasterio.features.shapes, which is
GDAL's polygonize) become one row: `class` (the class's name), `source` (the tile or scene it came
from) and `geometry` (a GeoJSON polygon in the mask's CRS, pixel edges exactly). The table records
its geometry column's SRID and CRS (`Table.geometry`), so export_to_database writes a PostGIS column
of that SRID and export_to_local / export_to_s3 write a GeoJSON file. Masks in another CRS than the
first are reprojected to it (pyproj, through shapely). Nodata pixels never become polygons.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.datasets import FileRef, Table
from orchestrator.engine import OperationError

COLUMNS = ["class", "source", "geometry"]


def _names_of(dataset: Any, labels: Sequence[str] | None) -> list[str]:
    if labels:
        return list(labels)
    from orchestrator.compare.geo import _names_from_tag

    for tags in (dataset.tags(), dataset.tags(1)):
        for key, value in tags.items():
            if key.upper() in ("CLASSES", "CLASS_NAMES"):
                return _names_from_tag(value)
    return []


def _name(names: Sequence[str], class_id: int) -> str:
    """A class id's name: the labels' (ids 0, 1, 2...), else the id itself (a negative id is never a label's)."""
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)


def srid_facts(crs: Any) -> dict[str, Any]:
    """A CRS as the table's geometry facts: {"srid": EPSG code (0 without one), "crs": "EPSG:…" or WKT}."""
    from orchestrator.transforms.rasters import crs_text

    epsg = crs.to_epsg() if crs else None
    return {"srid": int(epsg or 0), "crs": crs_text(crs)}


def vectorize(
    masks: Sequence[tuple[FileRef, Sequence[str] | None]],
    classes: Sequence[str] | None,
    out: Path,
    caps: int | None,
    check: Callable[[], None] = lambda: None,
) -> Table:
    """Polygons of every mask's classes (those named in `classes`, else all), as a Table with a geometry column."""
    import shapely
    from pyproj import Transformer
    from rasterio.features import shapes
    from shapely.geometry import mapping, shape

    from orchestrator.transforms import rasters

    wanted = {c.casefold() for c in classes} if classes else None
    seen_names: set[str] = set()
    first_crs = None
    count = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as sink:
        for ref, labels in masks:
            check()
            with rasters.open_raster(ref.path, caps, ref.name) as dataset:
                if dataset.crs is None:
                    raise OperationError(f"{ref.name!r} has no CRS: its polygons could not be placed")
                if dataset.count != 1:
                    raise OperationError(f"{ref.name!r} has {dataset.count} bands; a class mask has one")
                names = _names_of(dataset, labels)
                ids = dataset.read(1)
                valid = dataset.read_masks(1) > 0
                if dataset.nodata is not None:
                    valid &= ids != dataset.nodata
                transform, crs = dataset.transform, dataset.crs
            if first_crs is None:
                first_crs = crs
            move = None if crs == first_crs else Transformer.from_crs(crs, first_crs, always_xy=True)
            present = np.unique(ids[valid])  # the class ids, sorted, of any integer type (or whole floats)
            if not present.size:
                continue
            if ids.dtype.kind == "f":  # a float mask: whole numbers only (NaN or inf not declared nodata is no id)
                fractional = present[~np.isfinite(present) | (present != np.round(present))]
                if fractional.size:
                    raise OperationError(
                        f"{ref.name!r} holds {fractional[0]:g}, which is not a class id; a class mask holds "
                        "whole numbers"
                    )
            keep = np.zeros(present.size, dtype=bool)
            for number, class_id in enumerate(int(v) for v in present):
                name = _name(names, class_id)
                seen_names.add(name)
                keep[number] = wanted is None or name.casefold() in wanted
            # Each pixel's position among the ids found (int32, which polygonize takes, whatever the ids' type);
            # invalid pixels may fall past the last, and are never chosen.
            codes = np.minimum(np.searchsorted(present, ids), present.size - 1).astype(np.int32)
            chosen = valid & keep[codes]
            if not chosen.any():
                continue
            for geometry, value in shapes(codes, mask=chosen, transform=transform, connectivity=4):
                class_id = int(present[int(value)])
                if move is not None:
                    moved = shapely.transform(
                        shape(geometry), lambda xy, move=move: np.column_stack(move.transform(xy[:, 0], xy[:, 1]))
                    )
                    geometry = mapping(moved)
                row = {
                    "class": _name(names, class_id),
                    "source": ref.name,
                    "geometry": geometry,
                }
                sink.write(json.dumps(row) + "\n")
                count += 1
    if wanted is not None:
        unknown = [c for c in classes or [] if c.casefold() not in {n.casefold() for n in seen_names}]
        if unknown and len(unknown) == len(classes or []):
            raise OperationError(
                f"classes {', '.join(map(repr, unknown))}: no mask holds them (classes found: "
                f"{', '.join(sorted(seen_names, key=str.casefold)) or 'none'})"
            )
    geometry = {"geometry": srid_facts(first_crs)} if first_crs is not None else {}
    return Table(out, COLUMNS, count, geometry)


def masks_of(data: Any) -> list[tuple[FileRef, Sequence[str] | None]]:
    """The masks to vectorize, each with the class names of its ids: a segmentation model's predictions, or files."""
    from orchestrator.datasets import Predictions, as_refs

    if isinstance(data, Predictions):
        if data.task != "image-segmentation":
            raise OperationError(
                f"vectorize_mask takes a segmentation model's predictions; {data.model!r} did {data.task}"
            )
        found: list[tuple[FileRef, Sequence[str] | None]] = [
            (FileRef(str(item["name"]), Path(item["mask"])), data.labels) for item in data.items if item.get("mask")
        ]
        if not found:
            raise OperationError(f"the predictions of {data.model!r} hold no masks")
        return found
    refs = as_refs(data)
    if not refs:
        raise OperationError("vectorize_mask: there are no masks to vectorize")
    return [(ref, None) for ref in refs]
