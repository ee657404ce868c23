"""Geography for comparisons: where each predicted tile lies, and truth or regions as polygons or label rasters.

A prediction of a georeferenced tile carries the tile's `crs`, `transform`, `width` and `height`
(model_inference keeps them); `Grid` is that pixel grid. Ground truth and regions come as:

- polygon layers (`Layer`): a GeoJSON file (RFC 7946 lon/lat, or the older `crs` member naming
  another CRS), a GeoPackage (read with pyogrio, GDAL's vector drivers, GPKG only), or a table
  whose geometry column holds GeoJSON geometries with its SRID recorded with the table
  (import_from_database on PostGIS, vectorize_mask). Each feature's class (or region name) is a
  property / column. Polygons are reprojected once per CRS (pyproj, through shapely), found per
  tile with an STRtree, and burnt onto the tile's grid by rasterio.features.rasterize (a pixel is
  inside when its centre is; where polygons overlap, the later feature wins);
- label rasters (`LabelRaster`): GeoTIFFs of class ids in any CRS and resolution, read for each
  tile's footprint and resampled onto its grid by nearest neighbour (rasterio.warp.reproject), or
  read as a window when the grids line up.

Pixels outside every feature, or nodata in a label raster, are -1: not labelled, never scored.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.datasets import FileRef, Table
from orchestrator.engine import OperationError

UNLABELLED = -1
POLYGONAL = {3, 6}  # shapely's type ids of a Polygon and a MultiPolygon
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg")
# A GeoJSON file is parsed whole: past this size a GeoPackage (read by the features needed) is the better format.
MAX_GEOJSON_BYTES = 1024**3
SQLITE_MAGIC = b"SQLite format 3\x00"
# GeoJSON of RFC 7946 is longitude, latitude on WGS 84; OGC:CRS84 is that CRS with its axes in that order.
GEOJSON_CRS = "OGC:CRS84"


# --- where predictions lie ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The pixel grid of one predicted tile."""

    name: str
    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        return array_bounds(self.height, self.width, self.transform)  # west, south, east, north

    @property
    def centre(self) -> tuple[float, float]:
        return self.transform @ (self.width / 2, self.height / 2)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def grid_of(item: dict[str, Any]) -> Grid | None:
    """The grid a prediction item lies on, or None when it lies nowhere (a plain image)."""
    crs, transform = item.get("crs"), item.get("transform")
    width, height = item.get("width"), item.get("height")
    if not crs or not isinstance(transform, list) or len(transform) < 6 or not width or not height:
        return None
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    return Grid(str(item["name"]), CRS.from_user_input(crs), Affine(*transform[:6]), int(width), int(height))


def grids_of(items: Sequence[dict[str, Any]]) -> list[Grid] | None:
    """Every item's grid, or None unless every item has one."""
    found = [grid_of(item) for item in items]
    if not found or any(g is None for g in found):
        return None
    return [g for g in found if g is not None]


def extent(grids: Sequence[Grid]) -> tuple[Any, tuple[float, float, float, float]]:
    """The union of the tiles' bounds, in the first tile's CRS: (crs, (west, south, east, north))."""
    from rasterio.warp import transform_bounds

    crs = grids[0].crs
    boxes = [g.bounds if g.crs == crs else transform_bounds(g.crs, crs, *g.bounds) for g in grids]
    return crs, (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def crs_name(crs: Any) -> str:
    """'EPSG:32633', or the CRS's own name when it has no EPSG code."""
    from pyproj import CRS as ProjCRS

    projected = (
        crs if isinstance(crs, ProjCRS) else ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    )
    code = projected.to_authority()
    return f"{code[0]}:{code[1]}" if code else projected.name


def shown_bounds(bounds: Sequence[float], crs: Any) -> str:
    return "[" + ", ".join(f"{v:.6g}" if abs(v) < 1e5 else f"{v:.1f}" for v in bounds) + f"] ({crs_name(crs)})"


def overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --- polygon layers ----------------------------------------------------------------------------------------------


@dataclass
class Layer:
    """Polygons with one value each (a class or a region's name), in one CRS (pyproj)."""

    geometries: np.ndarray  # shapely geometries, in file order
    values: list[str]
    crs: Any  # pyproj CRS
    source: str
    _projected: dict[str, tuple[np.ndarray, Any]] = field(default_factory=dict, repr=False)

    def projected(self, crs: Any) -> tuple[np.ndarray, Any]:
        """The geometries in `crs` (a rasterio or pyproj CRS) and an STRtree over them, made once per CRS."""
        import shapely
        from pyproj import CRS as ProjCRS
        from pyproj import Transformer

        key = crs.to_string() if hasattr(crs, "to_string") else str(crs)  # cheap: asked once per tile
        if key not in self._projected:
            target = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
            geometries = self.geometries
            if not target.equals(self.crs, ignore_axis_order=True):
                move = Transformer.from_crs(self.crs, target, always_xy=True)
                geometries = shapely.transform(
                    geometries, lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1]))
                )
                if not np.all(np.isfinite(shapely.bounds(geometries))):
                    raise OperationError(
                        f"{self.source}: some polygons lie where {crs_name(target)} has no "
                        f"coordinates (from {crs_name(self.crs)})"
                    )
            self._projected[key] = (geometries, shapely.STRtree(geometries))
        return self._projected[key]

    def checked(self) -> Layer:
        """Polygons only (a point or a line labels no pixel); invalid rings repaired as GIS tools do (make_valid)."""
        import shapely

        if self.geometries.size:
            # a collection's members too: rasterize would burn a line or point of one across pixels
            kinds = set(shapely.get_type_id(shapely.get_parts(self.geometries)).tolist())
            if not kinds <= POLYGONAL:
                raise OperationError(f"{self.source} holds points or lines; polygons are needed to label pixels")
            broken = ~shapely.is_valid(self.geometries)
            if broken.any():
                self.geometries[broken] = [_polygonal(g) for g in shapely.make_valid(self.geometries[broken])]
        return self

    def bounds(self, crs: Any) -> tuple[float, float, float, float]:
        import shapely

        geometries, _ = self.projected(crs)
        return tuple(float(v) for v in shapely.total_bounds(geometries))  # type: ignore[return-value]

    def burn(self, grid: Grid, codes: np.ndarray) -> np.ndarray:
        """The code of the polygon covering each pixel's centre (the later feature where they overlap), else -1."""
        import shapely
        from rasterio.features import rasterize

        from orchestrator.transforms import rasters

        geometries, tree = self.projected(grid.crs)
        found = np.sort(tree.query(shapely.box(*grid.bounds)))  # file order: later features burn over earlier
        if found.size == 0:
            return np.full(grid.shape, UNLABELLED, dtype=np.int32)
        with rasters.gdal_env():  # GDAL's options are per thread: the alignment burns tiles in threads
            return rasterize(
                zip(geometries[found], codes[found].tolist(), strict=True),
                out_shape=grid.shape,
                transform=grid.transform,
                fill=UNLABELLED,
                dtype="int32",
            )

    def at(self, grid: Grid, codes: np.ndarray, x: float, y: float) -> int:
        """The code of the (last) polygon covering a point of the grid's CRS, else -1."""
        import shapely

        geometries, tree = self.projected(grid.crs)
        found = tree.query(shapely.Point(x, y), predicate="intersects")
        return int(codes[np.max(found)]) if found.size else UNLABELLED


def _polygonal(geometry: Any) -> Any:
    """A repaired geometry's polygons: what make_valid leaves of a ring collapsed to a line or a point covers no
    area, so labels no pixel (burnt, a line would label every pixel it crosses)."""
    import shapely

    if shapely.get_type_id(geometry) in POLYGONAL:
        return geometry
    parts = shapely.get_parts(geometry)
    return shapely.GeometryCollection([p for p in parts if shapely.get_type_id(p) in POLYGONAL])


def layer_of(data: Table | Sequence[FileRef], column: str, what: str) -> Layer:
    """A polygon layer from a table with a geometry column, or from one GeoJSON / GeoPackage file."""
    if isinstance(data, Table):
        return from_table(data, column, what)
    vectors = [ref for ref in data if is_vector(ref)]
    if len(vectors) != 1:
        names = ", ".join(repr(r.name) for r in list(data)[:5]) or "none"
        raise OperationError(
            f"{what} must be one GeoJSON (.geojson) or GeoPackage (.gpkg) file; got {len(vectors)} "
            f"among {len(data)} file(s) ({names})"
        )
    ref = vectors[0]
    with ref.path.open("rb") as head:
        if head.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:  # a GeoPackage is an SQLite database
            return from_geopackage(ref, column, what)
    return from_geojson(ref, column, what)


def is_vector(ref: FileRef) -> bool:
    return ref.name.lower().endswith(VECTOR_SUFFIXES)


def _geojson_crs(document: dict[str, Any], where: str) -> Any:
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError

    named = document.get("crs")
    if named is None:
        return ProjCRS.from_user_input(GEOJSON_CRS)
    name = named.get("properties", {}).get("name") if isinstance(named, dict) else None
    if not isinstance(name, str):
        raise OperationError(
            f'{where}: its \'crs\' member names no CRS (expected {{"type": "name", '
            '"properties": {"name": "urn:ogc:def:crs:EPSG::32633"}})'
        )
    try:
        crs = ProjCRS.from_user_input(name)
    except CRSError:
        raise OperationError(f"{where}: its CRS {name[:80]!r} is not one pyproj knows") from None
    # The old GeoJSON's EPSG:4326 was written longitude first, as every other GeoJSON.
    return ProjCRS.from_user_input(GEOJSON_CRS) if crs.equals("EPSG:4326", ignore_axis_order=True) else crs


def from_geojson(ref: FileRef, column: str, what: str) -> Layer:
    from shapely.geometry import shape

    where = f"{what} {ref.name!r}"
    size = ref.path.stat().st_size
    if size > MAX_GEOJSON_BYTES:
        raise OperationError(
            f"{where} is {size:,} bytes, over the {MAX_GEOJSON_BYTES:,} a GeoJSON file may have here; give a GeoPackage"
        )
    try:
        document = json.loads(ref.path.read_bytes())
    except ValueError as exc:
        raise OperationError(f"{where} is not JSON: {exc}") from None
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "Feature":
        features = [document]
    elif kind == "FeatureCollection" and isinstance(document.get("features"), list):
        features = document["features"]
    else:
        raise OperationError(f"{where} is not a GeoJSON Feature or FeatureCollection (its type: {kind!r})")
    kept: list[tuple[int, Any]] = []
    values: list[Any] = []
    names: set[str] = set()
    for number, feature in enumerate(features):
        properties = feature.get("properties") if isinstance(feature, dict) else None
        properties = properties if isinstance(properties, dict) else {}
        names.update(properties)
        value, geometry = properties.get(column), feature.get("geometry") if isinstance(feature, dict) else None
        if value is None or value == "" or not geometry:
            continue  # no class, or no place: labels nothing
        kept.append((number, geometry))
        values.append(_value(value))
    _check_column(values, column, sorted(names), where, "property")
    geometries = _polygons([geometry for _, geometry in kept])
    if geometries is None:  # not all simple polygons: one by one (and a bad one named)
        read = []
        for number, geometry in kept:
            try:
                read.append(shape(geometry))
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                raise OperationError(f"{where}: feature {number} has a geometry shapely cannot read: {exc}") from None
        geometries = np.array(read, dtype=object)
    return Layer(geometries, values, _geojson_crs(document, where), where).checked()


def _polygons(geometries: Sequence[Any]) -> np.ndarray | None:
    """GeoJSON Polygons of 2-D positions in closed rings of four or more, made at once by shapely's
    `from_ragged_array` (what `shape` makes of each, 5-10x faster); None unless every geometry is one."""
    import shapely

    if not geometries or not all(
        isinstance(g, dict)
        and g.get("type") == "Polygon"
        and isinstance(g.get("coordinates"), list)
        and g["coordinates"]
        for g in geometries
    ):
        return None
    try:
        rings = [ring for g in geometries for ring in g["coordinates"]]
        lengths = [len(ring) for ring in rings]
        positions = np.array([position for ring in rings for position in ring], dtype=float)
    except (TypeError, ValueError):
        return None
    if positions.ndim != 2 or positions.shape[1] != 2 or min(lengths) < 4:
        return None
    ring_offsets = np.concatenate([[0], np.cumsum(lengths)])
    if not np.array_equal(positions[ring_offsets[:-1]], positions[ring_offsets[1:] - 1]):
        return None  # a ring left open: shape() closes it
    polygon_offsets = np.concatenate([[0], np.cumsum([len(g["coordinates"]) for g in geometries])])
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, positions, (ring_offsets, polygon_offsets))


def from_geopackage(ref: FileRef, column: str, what: str) -> Layer:
    import pyogrio
    import shapely
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError

    where = f"{what} {ref.name!r}"
    try:
        layers = pyogrio.list_layers(ref.path)
        spatial = [str(name) for name, kind in layers if kind]
        if len(spatial) != 1:
            raise OperationError(
                f"{where} holds {len(spatial)} layers with geometries ({', '.join(spatial)}); give a GeoPackage of one"
            )
        fields = [str(f) for f in pyogrio.read_info(ref.path, layer=spatial[0])["fields"]]
        if column not in fields:
            raise OperationError(f"{where} has no column {column!r} (its columns: {', '.join(fields) or 'none'})")
        meta, _, wkb, columns = pyogrio.raw.read(ref.path, layer=spatial[0], columns=[column])
    except OperationError:
        raise
    except Exception as exc:  # pyogrio's errors (DataSourceError, DataLayerError...) and GDAL's
        raise OperationError(f"{where} is not a GeoPackage pyogrio reads: {str(exc).splitlines()[0]}") from None
    if not meta.get("crs"):
        raise OperationError(f"{where} has no CRS")
    try:
        crs = ProjCRS.from_user_input(meta["crs"])
    except CRSError:
        raise OperationError(f"{where}: its CRS {str(meta['crs'])[:80]!r} is not one pyproj knows") from None
    keep = [
        i
        for i, (value, blob) in enumerate(zip(columns[0], wkb, strict=True))
        if blob is not None and value is not None and value == value and value != ""
    ]
    geometries = shapely.from_wkb(np.array([wkb[i] for i in keep], dtype=object)) if keep else np.array([])
    values = [_value(columns[0][i]) for i in keep]
    _check_column(values, column, fields, where, "column")
    return Layer(np.asarray(geometries, dtype=object), values, crs, where).checked()


def from_table(table: Table, column: str, what: str) -> Layer:
    from shapely.geometry import shape

    where = f"{what} table"
    geometry_columns = dict(getattr(table, "geometry", None) or {})
    if not geometry_columns:
        raise OperationError(
            f"the {where} has no geometry column (its columns: {', '.join(table.columns[:30])}); "
            "import a PostGIS table, or give a GeoJSON or GeoPackage file"
        )
    if column not in table.columns:
        raise OperationError(f"the {where} has no column {column!r} (its columns: {', '.join(table.columns[:30])})")
    geometry_column = next(iter(geometry_columns))
    crs = crs_of_srid(geometry_columns[geometry_column], geometry_column, where)
    geometries, values = [], []
    for number, row in enumerate(table.rows()):
        value, geometry = row.get(column), row.get(geometry_column)
        if value is None or value == "" or not geometry:
            continue
        try:
            geometries.append(shape(geometry))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise OperationError(f"the {where}: row {number} has a geometry shapely cannot read: {exc}") from None
        values.append(_value(value))
    _check_column(values, column, table.columns, f"the {where}", "column")
    return Layer(np.array(geometries, dtype=object), values, crs, f"the {where} ({geometry_column!r})").checked()


def crs_of_srid(facts: dict[str, Any], column: str, where: str) -> Any:
    """The pyproj CRS of a geometry column's recorded SRID, or an error naming the SRID."""
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError

    srid = facts.get("srid")
    if not srid:
        raise OperationError(
            f"{where}: geometry column {column!r} has no SRID (0); give its geometries one "
            "(ST_SetSRID) so they can be placed"
        )
    text = facts.get("crs") or f"EPSG:{srid}"
    try:
        return ProjCRS.from_user_input(text)
    except CRSError:
        raise OperationError(
            f"{where}: geometry column {column!r} has SRID {srid} ({text}), which is not a CRS "
            "pyproj knows; transform the geometries to a known one (ST_Transform)"
        ) from None


def _check_column(values: list[str], column: str, names: Sequence[str], where: str, kind: str) -> None:
    if not values:
        if column not in names:
            plural = "properties" if kind == "property" else f"{kind}s"
            raise OperationError(
                f"{where} has no {kind} {column!r} (its {plural}: {', '.join(map(str, list(names)[:30])) or 'none'})"
            )
        raise OperationError(f"{where}: no feature has both a geometry and a value in {column!r}")


def _value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- label rasters -----------------------------------------------------------------------------------------------


class LabelRaster:
    """One or more GeoTIFFs of class ids, kept open while tiles are read from them; names by id."""

    def __init__(self, refs: Sequence[FileRef], classes: Sequence[str] | None, caps: int | None):
        from orchestrator.transforms import rasters

        self._stack = ExitStack()
        self.sources: list[Any] = []
        self.refs = list(refs)
        # rasterio's datasets are not to be shared between threads: a thread other than the opener's reads through
        # its own handles on the same files (opened at its first read, closed with these).
        self._local, self._opening = threading.local(), threading.Lock()
        try:
            for ref in refs:
                dataset = self._stack.enter_context(rasters.open_raster(ref.path, caps, ref.name))
                if dataset.crs is None:
                    raise OperationError(f"the label raster {ref.name!r} has no CRS: it cannot be placed")
                if dataset.count != 1:
                    raise OperationError(
                        f"the label raster {ref.name!r} has {dataset.count} bands; a label raster "
                        "has one band of class ids"
                    )
                if dataset.dtypes[0].startswith(("float", "complex")):
                    raise OperationError(
                        f"the label raster {ref.name!r} holds {dataset.dtypes[0]} values; class ids are integers"
                    )
                self.sources.append(dataset)
            self._local.sources = self.sources  # the opener's own handles
            self.names = list(classes) if classes else self._names_in_files()
        except BaseException:
            self._stack.close()
            raise
        self.source = ("label raster " if len(refs) == 1 else "label rasters ") + ", ".join(repr(r.name) for r in refs)

    def __enter__(self) -> LabelRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _names_in_files(self) -> list[str]:
        """Class names from a CLASSES tag (comma-separated or a JSON list), else each id's number."""
        for dataset in self.sources:
            for tags in (dataset.tags(), dataset.tags(1)):
                for key, value in tags.items():
                    if key.upper() in ("CLASSES", "CLASS_NAMES"):
                        return _names_from_tag(value)
        return []

    def name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def bounds(self, crs: Any) -> tuple[float, float, float, float]:
        from rasterio.warp import transform_bounds

        boxes = [transform_bounds(d.crs, crs, *d.bounds) if d.crs != crs else tuple(d.bounds) for d in self.sources]
        return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))

    def read(self, grid: Grid) -> np.ndarray:
        """Class ids on the grid (nearest neighbour), -1 where no raster has a valid pixel. Any thread may call it."""
        out = np.full(grid.shape, UNLABELLED, dtype=np.int32)
        for dataset in self._handles():
            ids = self._one(dataset, grid)
            empty = out == UNLABELLED
            out[empty] = ids[empty]
        return out

    def _handles(self) -> list[Any]:
        """This thread's datasets: the opener's own, or handles this thread opened on the same files."""
        handles: list[Any] | None = getattr(self._local, "sources", None)
        if handles is None:
            import rasterio

            from orchestrator.transforms import rasters

            handles = []
            # The files were checked when the opener opened them; GDAL's options (rasters.gdal_env) are per thread
            # and are left in this one, so only the datasets are closed with the opener's.
            with rasters.gdal_env(), self._opening:
                for dataset in self.sources:
                    handle = rasterio.open(dataset.name, driver="GTiff")
                    self._stack.callback(handle.close)
                    handles.append(handle)
            self._local.sources = handles
        return handles

    def _one(self, dataset: Any, grid: Grid) -> np.ndarray:
        from rasterio.warp import Resampling, reproject

        from orchestrator.transforms import rasters

        window = _aligned_window(dataset, grid)
        if window is not None:  # the same pixel grid: a window read, no resampling
            with rasters.gdal_env():  # GDAL's options are per thread: a reader thread's read enters them too
                data = dataset.read(1, window=window, boundless=True, masked=True)
            ids = data.filled(0).astype(np.int32)
            ids[np.ma.getmaskarray(data)] = UNLABELLED
            return ids
        ids = np.full(grid.shape, UNLABELLED, dtype=np.int32)
        with rasters.gdal_env():
            reproject(
                source=dataset.read(1, window=_footprint(dataset, grid), boundless=True, masked=True)
                .astype(np.int32)
                .filled(_fill(dataset)),
                destination=ids,
                src_transform=dataset.window_transform(_footprint(dataset, grid)),
                src_crs=dataset.crs,
                src_nodata=_fill(dataset),
                dst_transform=grid.transform,
                dst_crs=grid.crs,
                dst_nodata=UNLABELLED,
                resampling=Resampling.nearest,
            )
        return ids


def _fill(dataset: Any) -> int:
    # In the int32 copy of a label raster, nodata (or pixels past its edge) become a value no class id takes.
    return -2


def _aligned_window(dataset: Any, grid: Grid) -> Any:
    """The window of `dataset` that is exactly the grid (same CRS, resolution and pixel lattice), else None."""
    from rasterio.windows import Window

    t, g = dataset.transform, grid.transform
    if dataset.crs != grid.crs or t.b or t.d or g.b or g.d:
        return None
    if abs(t.a - g.a) > 1e-9 * abs(g.a) or abs(t.e - g.e) > 1e-9 * abs(g.e):
        return None
    col, row = (g.c - t.c) / t.a, (g.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(round(col), round(row), grid.width, grid.height)


def _footprint(dataset: Any, grid: Grid) -> Any:
    """The window of `dataset` covering the grid's bounds (in its CRS), a pixel wider on every side."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    west, south, east, north = transform_bounds(grid.crs, dataset.crs, *grid.bounds, densify_pts=21)
    window = from_bounds(west, south, east, north, transform=dataset.transform)
    col, row = int(np.floor(window.col_off)) - 1, int(np.floor(window.row_off)) - 1
    width = int(np.ceil(window.col_off + window.width)) + 1 - col
    height = int(np.ceil(window.row_off + window.height)) + 1 - row
    return Window(col, row, max(width, 1), max(height, 1))


def _names_from_tag(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("["):
        try:
            listed = json.loads(text)
            if isinstance(listed, list):
                return [str(v) for v in listed]
        except ValueError:
            pass
    return [part.strip() for part in text.split(",")]


def label_rasters(refs: Sequence[FileRef]) -> list[FileRef]:
    """The georeferenced GeoTIFFs among some files."""
    from orchestrator.transforms import rasters

    found = []
    for ref in refs:
        if rasters.has_tiff_magic(ref.path):
            facts = dict(ref.meta) if ref.meta.get("crs") else (rasters.facts_of(ref.path) or {})
            if facts.get("crs"):
                found.append(ref)
    return found
