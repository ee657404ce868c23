"""Exports into SQL databases: rows of a table inserted in one transaction, each tagged with its run.

A missing table is created with column types inferred from the values (boolean, integer,
float, else text); the `run_id` column tells runs apart, so no run replaces another's rows.
A table's geometry columns (GeoJSON per row, the SRID recorded with the table: vectorize_mask,
a PostGIS import) become PostGIS `geometry(Geometry, <srid>)` columns on PostgreSQL with PostGIS
(ST_GeomFromGeoJSON with the SRID set), so ST_Intersects, ST_Area... work on them; elsewhere they
are written as GeoJSON text.

An export writes only into the connection's own schema (PostgreSQL: one on its search_path;
MySQL/MariaDB: its database; SQLite: main), even when the account could reach others (a root
connection could create `mysql.probe`). The server setting CONSTELLATION_DB_EXPORT_ANY_SCHEMA=1
lifts that; the database's own privileges are then the only limit.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from orchestrator.engine import OperationError
from orchestrator.sources.databases import BATCH_ROWS, RUN_ID_COLUMN, database_errors


def export_rows(
    engine: Engine,
    connection: str,
    table: str,
    columns: list[str],
    rows: Callable[[], Iterable[Mapping[str, Any]]],
    run_id: str,
    if_exists: str = "append",
    check_cancelled: Callable[[], None] = lambda: None,
    allow_any_schema: bool = False,
    geometry: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """Insert every row, tagged with `run_id`, into `table` (created if missing) in one transaction; return the count.

    `rows()` is called once to infer column types for a new table, and once more to insert.
    """
    if RUN_ID_COLUMN in columns:
        raise OperationError(
            f"the data has a column {RUN_ID_COLUMN!r}, which the export adds itself to tell runs apart; rename it"
        )
    schema, _, name = table.rpartition(".")
    with database_errors(connection, engine.url), engine.begin() as conn:
        if schema and not allow_any_schema:
            _check_own_schema(conn, connection, table, schema)
        inspector = sa.inspect(conn)
        spatial = _spatial_columns(conn, columns, geometry)
        if inspector.has_table(name, schema=schema or None):
            if if_exists == "fail":
                raise OperationError(
                    f"table {table!r} already exists in connection {connection!r} (if_exists is 'fail')"
                )
            with warnings.catch_warnings():  # PostGIS's geometry type, which SQLAlchemy does not know
                warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
                present = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema or None)}
            missing = [c for c in [*columns, RUN_ID_COLUMN] if c not in present]
            if missing:
                raise OperationError(
                    f"table {table!r} in connection {connection!r} has no column(s) {', '.join(map(repr, missing))}; "
                    "export to a new table, or add them"
                )
            text_columns = {c for c in columns if isinstance(present[c], sa.String)}
        else:
            kinds = infer_column_types(columns, rows())
            columns_made = _new_columns(kinds)
            for i, column in enumerate(columns_made):
                if column.name in spatial:
                    columns_made[i] = sa.Column(column.name, spatial[column.name])
            sa.Table(name, sa.MetaData(), *columns_made, schema=schema or None).create(conn)
            text_columns = {c for c, kind in kinds.items() if kind == "text" and c not in spatial}
        target = sa.table(
            name, *(sa.column(c, spatial.get(c)) for c in [*columns, RUN_ID_COLUMN]), schema=schema or None
        )
        count = 0
        for batch in _batches(rows(), BATCH_ROWS):
            check_cancelled()
            values = [
                {**{c: _db_value(row.get(c), c in text_columns) for c in columns}, RUN_ID_COLUMN: run_id}
                for row in batch
            ]
            conn.execute(target.insert(), values)
            count += len(batch)
        return count


class Geometry(sa.types.UserDefinedType):
    """PostGIS's geometry of one SRID; values bound as GeoJSON text, made geometries by the database."""

    cache_ok = True

    def __init__(self, srid: int):
        self.srid = int(srid)

    def get_col_spec(self, **_: Any) -> str:
        return f"geometry(Geometry, {self.srid})"

    def bind_expression(self, bindvalue: Any) -> Any:
        return sa.func.ST_SetSRID(sa.func.ST_GeomFromGeoJSON(bindvalue), self.srid)


def _spatial_columns(
    conn: sa.Connection, columns: list[str], geometry: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Geometry]:
    """The geometry columns to write as PostGIS geometries: on PostgreSQL where PostGIS is installed."""
    if not geometry or conn.dialect.name != "postgresql":
        return {}
    installed = conn.exec_driver_sql("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'postgis'").first()
    if installed is None:
        return {}
    return {c: Geometry(int(geometry[c].get("srid") or 0)) for c in columns if c in geometry}


def own_schemas(conn: sa.Connection) -> list[str]:
    """The schemas a connection writes to by default: where its unqualified names go."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return list(conn.exec_driver_sql("SELECT unnest(current_schemas(false))").scalars())
    if dialect in ("mysql", "mariadb"):
        return [name for name in [conn.exec_driver_sql("SELECT DATABASE()").scalar()] if name]
    if dialect == "sqlite":
        return ["main"]
    return [name for name in [conn.dialect.default_schema_name] if name]


def _check_own_schema(conn: sa.Connection, connection: str, table: str, schema: str) -> None:
    own = own_schemas(conn)
    # MySQL folds database names to lower case on most systems; PostgreSQL keeps what SQLAlchemy quoted.
    fold = conn.dialect.name in ("mysql", "mariadb", "sqlite")
    if any(schema == name or (fold and schema.lower() == name.lower()) for name in own):
        return
    mine = ", ".join(map(repr, own)) or "none"
    raise OperationError(
        f"table {table!r} is in schema {schema!r}; connection {connection!r} exports only into its own schema "
        f"({mine}): give the table without a schema (or the server sets CONSTELLATION_DB_EXPORT_ANY_SCHEMA=1)"
    )


def infer_column_types(columns: list[str], rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Each column's kind for a new table: boolean, integer or float when every value is one, else text."""
    seen: dict[str, set[str]] = {c: set() for c in columns}
    for row in rows:
        for column in columns:
            value = row.get(column)
            if value is None:
                continue
            if isinstance(value, bool):
                seen[column].add("boolean")
            elif isinstance(value, int) and -(2**63) <= value < 2**63:
                seen[column].add("integer")
            elif isinstance(value, float):
                seen[column].add("float")
            else:
                seen[column].add("text")
    kinds = {}
    for column, found in seen.items():
        if found in ({"boolean"}, {"integer"}, {"float"}):
            kinds[column] = found.pop()
        elif found == {"integer", "float"}:
            kinds[column] = "float"
        else:
            kinds[column] = "text"
    return kinds


_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")  # MySQL's TEXT stops at 64 KiB
_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "boolean": sa.Boolean(),
    "integer": sa.BigInteger(),
    "float": sa.Double(),
    "text": _LONG_TEXT,
}


def _new_columns(kinds: Mapping[str, str]) -> list[sa.Column]:
    run_id = sa.Column(RUN_ID_COLUMN, sa.String(64), nullable=False)
    return [*(sa.Column(c, _TYPES[k]) for c, k in kinds.items()), run_id]


def _db_value(value: Any, text: bool) -> Any:
    """A JSON value for the database: into a text column as text (JSON text unless a string), else as it is."""
    if value is None or (isinstance(value, str) and text):
        return value
    if text or isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _batches(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    batch: list[Mapping[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
