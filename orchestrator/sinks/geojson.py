"""A table with a geometry column written as a GeoJSON file (RFC 7946), for export_to_local and export_to_s3.

One Feature per row: the table's first geometry column is the geometry, reprojected from the
column's CRS (its SRID) to longitude/latitude on WGS 84, as RFC 7946 has GeoJSON (pyproj, through
shapely); every other column is a property. Rows are written one at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from orchestrator.datasets import Table
from orchestrator.engine import OperationError

WGS84_LON_LAT = "OGC:CRS84"


def write_geojson(table: Table, target: Path) -> Path:
    import shapely
    from pyproj import CRS, Transformer
    from shapely.geometry import mapping, shape

    from orchestrator.compare.geo import crs_of_srid

    column, facts = next(iter(table.geometry.items()))
    source = crs_of_srid(dict(facts), column, "the table")
    lon_lat = CRS.from_user_input(WGS84_LON_LAT)
    move = (
        None
        if source.equals(lon_lat, ignore_axis_order=True)
        else Transformer.from_crs(source, lon_lat, always_xy=True)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as sink:
        sink.write('{"type": "FeatureCollection", "features": [\n')
        for number, row in enumerate(table.rows()):
            geometry = row.pop(column, None)
            if geometry and move is not None:
                try:
                    moved = shapely.transform(
                        shape(geometry), lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1]))
                    )
                except (ValueError, TypeError, AttributeError, KeyError) as exc:
                    raise OperationError(f"row {number}: column {column!r} holds no GeoJSON geometry ({exc})") from None
                geometry = mapping(moved)
            feature = {"type": "Feature", "properties": row, "geometry": geometry or None}
            sink.write(("" if number == 0 else ",\n") + json.dumps(feature))
        sink.write("\n]}\n")
    return target
