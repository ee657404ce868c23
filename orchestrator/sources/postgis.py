"""PostGIS geometries through import_from_database: each row's geometry as GeoJSON, the column's SRID recorded.

An import on PostgreSQL asks which of its result's columns are PostGIS `geometry` or `geography`
(by type OID, from the statement's description with LIMIT 0, only when the database has PostGIS).
When some are, the statement becomes a subquery of a SELECT that SQLAlchemy builds around it:
`ST_AsGeoJSON(col)::json AS col, ST_SRID(col) AS <hidden>` for those columns, the others as they
are. The user's text is never pasted into SQL of ours: it stays the bound `text()` clause the
guard checked (a trailing semicolon removed, as a subquery cannot hold one). The hidden SRID
columns are not written; their values become the table's `geometry` facts:
`{column: {"srid": 32633, "crs": "EPSG:32633"}}` (the CRS from spatial_ref_sys: its authority and
code, else its WKT). A column whose rows mix SRIDs is refused: give them one with ST_Transform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from orchestrator.engine import OperationError

SRID_LABEL = "constellation_srid_{}"  # the hidden column holding the SRID of geometry column number {}
SUBQUERY = "constellation_rows"


def geometry_types(conn: Connection) -> set[int]:
    """The OIDs of PostGIS's geometry and geography types in this database (none without PostGIS)."""
    query = (
        "SELECT oid FROM pg_catalog.pg_type WHERE typname IN ('geometry', 'geography') AND typtype = 'b' "
        "AND typnamespace IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname NOT LIKE 'pg_%')"
    )
    return {int(oid) for oid in conn.execute(sa.text(query)).scalars()}


def _rows_of(statement: Any, names: list[str] | None = None) -> Any:
    if isinstance(statement, sa.TextClause):
        return statement.columns(*(sa.column(n) for n in names or [])).subquery(SUBQUERY)
    return statement.subquery(SUBQUERY)


def as_geojson(conn: Connection, statement: Any) -> tuple[Any, dict[str, str]]:
    """`statement` with its geometry columns as GeoJSON (and hidden SRID columns); {hidden label: column}."""
    oids = geometry_types(conn)
    if not oids:
        return statement, {}
    probe: sa.CursorResult[Any] = conn.execute(
        sa.select(sa.literal_column("*")).select_from(_rows_of(statement)).limit(0)
    )
    try:
        described = [(column[0], column[1]) for column in probe.cursor.description or []]
    finally:
        probe.close()
    if not any(type_code in oids for _, type_code in described):
        return statement, {}
    names = [name for name, _ in described]
    rows = _rows_of(statement, names)
    selected: list[Any] = []
    hidden: dict[str, str] = {}
    for number, (name, type_code) in enumerate(described):
        column = rows.c[name]
        if type_code in oids:
            # 9 decimals (PostGIS's default), options 0: no "crs" member (the SRID is the table's), no bbox
            selected.append(sa.cast(sa.func.ST_AsGeoJSON(column, 9, 0), postgresql.JSON).label(name))
            label = SRID_LABEL.format(number)
            selected.append(sa.func.ST_SRID(column).label(label))
            hidden[label] = name
        else:
            selected.append(column)
    return sa.select(*selected).select_from(rows), hidden


def without_semicolon(query: str) -> str:
    """The query without the semicolons that may end it (the guard allows one; a subquery cannot hold it)."""
    text = query.rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def geometry_facts(conn: Connection, srids: Mapping[str, set[int]], columns: list[str]) -> dict[str, dict[str, Any]]:
    """Each geometry column's SRID and CRS (SRID 0 when no row has a geometry); a column mixing SRIDs is refused."""
    facts: dict[str, dict[str, Any]] = {}
    for column in columns:
        found = sorted(srids.get(column, ()))
        if len(found) > 1:
            raise OperationError(
                f"column {column!r} holds geometries of SRIDs {', '.join(map(str, found[:5]))}; "
                "give them one SRID in the query (ST_Transform)"
            )
        srid = found[0] if found else 0
        facts[column] = {"srid": srid, "crs": _crs_of(conn, srid) if srid else None}
    return facts


def _crs_of(conn: Connection, srid: int) -> str | None:
    row = conn.execute(
        sa.text("SELECT auth_name, auth_srid, srtext FROM spatial_ref_sys WHERE srid = :srid"), {"srid": srid}
    ).first()
    if row is None:
        return None
    auth_name, auth_srid, srtext = row
    if auth_name and auth_srid:
        return f"{auth_name}:{auth_srid}"
    return srtext or None
