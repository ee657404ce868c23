"""SQL databases reached by connection name, and read-only imports streamed to JSON Lines.

A pipeline names a connection (`samples`); its SQLAlchemy URL, credentials included, comes only
from the server's environment as CONSTELLATION_DB_<NAME>_URL. Neither the URL nor its password
ever appears in a message: every database error passes through `database_errors`.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import os
import re
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orchestrator import names
from orchestrator.engine import OperationError
from orchestrator.sources.sql_guard import ServerQuoting, check_read_query

if TYPE_CHECKING:
    from orchestrator.preflight import Finding, Preflight

NAME_PATTERN = names.DB_CONNECTION_PATTERN
# A table, optionally in a schema (`schema.table`); SQLAlchemy quotes it, the pattern keeps it one name.
TABLE_PATTERN = names.DB_TABLE_PATTERN
BATCH_ROWS = 1000  # rows per round trip when reading (at most), and per INSERT batch when writing
BATCH_BYTES = 8 * 1024**2  # a read's batch shrinks so that about this much is held at once
# A wide value is written a slice at a time: the row's line is never held whole, nor its value's JSON copy.
SLICE_CHARS = 1024**2
SLICE_BYTES = 3 * 256 * 1024  # a multiple of 3, so that the base64 of each slice joins into the whole's
RUN_ID_COLUMN = "run_id"

_ENV_NAME = re.compile(r"^CONSTELLATION_DB_([A-Z0-9_]+)_URL$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# What each database says when a read-only transaction refuses a write.
_READ_ONLY_CODES = {"25006", 1792, "SQLITE_READONLY"}
# ... and when a statement ran out of time (PostgreSQL, MariaDB, MySQL).
_TIMEOUT_CODES = {"57014", 1969, 3024}


def env_var(name: str) -> str:
    """The environment variable holding connection `name`'s URL."""
    return f"CONSTELLATION_DB_{name.upper()}_URL"


class Connections:
    """Named connections, resolved from the environment when used; one engine per name, reused."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._environ = environ
        self._engines: dict[str, tuple[str, Engine]] = {}
        self._lock = threading.Lock()

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def names(self) -> list[str]:
        """The configured connection names (lower case), never their URLs."""
        found = (_ENV_NAME.match(key) for key, value in self.environ.items() if value)
        return sorted(m.group(1).lower() for m in found if m)

    def url(self, name: str) -> str:
        valid = re.match(NAME_PATTERN, name) is not None
        if not valid or not (url := self.environ.get(env_var(name))):
            configured = ", ".join(repr(n) for n in self.names()) or "none"
            variable = env_var(name) if valid else "CONSTELLATION_DB_<NAME>_URL"
            raise OperationError(
                f"no database connection named {name!r} on this server (configured: {configured}); "
                f"the server sets one as {variable}"
            )
        return url

    def engine(self, name: str) -> Engine:
        """The engine of connection `name` (created on first use, recreated if its URL changed)."""
        url = self.url(name)
        with self._lock:
            cached = self._engines.get(name.lower())
            if cached and cached[0] == url:
                return cached[1]
            try:
                engine = sa.create_engine(url, pool_pre_ping=True)
            except Exception as exc:  # a bad URL or a missing driver: the server's setting, told without the URL
                problem = f"{env_var(name)} is not usable: {_clean(str(exc), url)}"
                raise OperationError(f"database connection {name!r}: {problem}") from None
            if cached:
                cached[1].dispose()
            self._engines[name.lower()] = (url, engine)
            return engine

    def dispose(self) -> None:
        with self._lock:
            for _, engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


def preflight(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """import_from_database before launch: a connection this server has, and a query that the read-only guard
    lets run (parsed in the connection's dialect) with a value in params for each placeholder, or a table."""
    from orchestrator.preflight import Finding

    connection, query, table = params["connection"], params.get("query"), params.get("table")
    values = params.get("params")
    try:
        url = Connections().url(connection)
    except OperationError as refused:
        yield Finding("connection", str(refused))
        return
    if (query is None) == (table is None):
        yield Finding("", "give exactly one of query or table")
        return
    if values and query is None:
        yield Finding("params", "params bind values into a query; with table, give no params")
    if query is None:
        return
    try:
        dialect = sa.engine.make_url(url).get_backend_name()
    except Exception:  # an unusable URL is the server's setting: the run says so without the URL
        return
    refusal = _refused_however_quoted(query, dialect, connection)
    if refusal is not None:
        yield Finding("query", refusal)
        return
    try:
        _bound_query(query, values or {})
    except OperationError as refused:
        yield Finding("params" if values else "query", str(refused))


def preflight_export(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """export_to_database before launch: a connection this server has."""
    from orchestrator.preflight import Finding

    try:
        Connections().url(params["connection"])
    except OperationError as refused:
        yield Finding("connection", str(refused))


def _refused_however_quoted(query: str, dialect: str, connection: str) -> str | None:
    """Why the guard refuses `query` whatever the server's quoting turns out to be (the run reads that from the
    server: its backslash mode, MySQL's ANSI_QUOTES), or None when some server could run it. A field selection
    (x).name counts as a call only where the server has that function, which the run asks it."""
    readings = [ServerQuoting()]
    if dialect in ("mysql", "mariadb", "postgresql"):
        readings += [ServerQuoting(backslash_escapes=True), ServerQuoting(backslash_escapes=False)]
    if dialect in ("mysql", "mariadb"):
        readings += [ServerQuoting(backslash_escapes=b, ansi_quotes=True) for b in (True, False)]
    first = None
    for quoting in readings:
        try:
            check_read_query(query, dialect, connection, quoting, is_function=lambda name: False)
        except OperationError as refused:
            first = first or str(refused)
            continue
        return None
    return first


@contextmanager
def database_errors(connection: str, url: str | sa.URL) -> Iterator[None]:
    """Turn any database failure into an OperationError naming the connection, with the URL and password removed."""
    try:
        yield
    except OperationError:
        raise
    except Exception as exc:  # drivers raise many types; every one must be cleaned before a user sees it
        cause = getattr(exc, "orig", None) or exc
        codes = {getattr(cause, key, None) for key in ("sqlstate", "pgcode", "sqlite_errorname")}
        text = str(cause)
        if len(cause.args) == 2 and isinstance(cause.args[0], int):  # MySQL drivers: (errno, message)
            codes.add(cause.args[0])
            text = f"{cause.args[1]} (error {cause.args[0]})"
        message = _clean(_without_position(text) or type(cause).__name__, url)
        if codes & _READ_ONLY_CODES:
            raise OperationError(f"connection {connection!r} is read-only for imports: {message}") from None
        raise OperationError(f"database connection {connection!r}: {message}") from None


def _without_position(message: str) -> str:
    # PostgreSQL quotes the statement as sent, which for a streamed query is wrapped in a DECLARE: not the user's text.
    lines = [line for line in message.strip().splitlines() if not re.match(r"^(LINE \d+:|\s*\^\s*$)", line)]
    return re.sub(r"\s*\(Background on this error at: \S+\)", "", "\n".join(lines))


def _clean(message: str, url: str | sa.URL) -> str:
    secrets = {str(url)}
    try:
        parsed = sa.make_url(url)
        password = parsed.password or ""
        secrets |= {parsed.render_as_string(hide_password=False), password, quote(password, safe="")}
        secrets.add(quote_plus(password))
    except Exception:  # an unparsable URL: hide it whole; it may hold a password we cannot find
        pass
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message[:2000]


# Import


@dataclass(frozen=True)
class ImportLimits:
    """What one import may read: server settings (CONSTELLATION_DB_MAX_ROWS, _MAX_BYTES, ...)."""

    max_rows: int = 10_000_000
    max_bytes: int = 2 * 1024**3  # of JSON Lines written
    max_value_bytes: int = 64 * 1024**2  # one value (a text or a blob): its length as read
    # One row: its texts and blobs by their length as read (the unit of max_value_bytes, so that a row
    # of one value at that cap passes), its other values by the length of their JSON.
    max_row_bytes: int = 64 * 1024**2
    statement_timeout_s: float = 120.0  # per statement (PostgreSQL: per fetch of a streamed query)


@dataclass
class Imported:
    """What an import wrote: its columns, how many rows, and which columns held bytes (now base64)."""

    columns: list[str]
    count: int = 0
    binary_columns: set[str] = field(default_factory=set)
    widest_row: int = 0  # bytes of its texts and blobs as read
    srids: dict[str, set[int]] = field(default_factory=dict)  # PostGIS: each geometry column's SRIDs as read
    geometry: dict[str, dict[str, Any]] = field(default_factory=dict)  # {column: {"srid", "crs"}} (postgis.py)


class _TooWide(OperationError):
    """A value or a row over its cap."""


def import_rows(
    engine: Engine,
    connection: str,
    out: Path,
    *,
    query: str | None = None,
    params: Mapping[str, Any] | None = None,
    table: str | None = None,
    limit: int | None = None,
    check_cancelled: Callable[[], None] = lambda: None,
    limits: ImportLimits = ImportLimits(),
) -> Imported:
    """Run one read-only query (or read `table`) and write its rows to `out` as JSON Lines, streamed.

    The rows and bytes read are capped by `limits` as they stream, each statement has a time limit,
    and a cancel (seen by `check_cancelled`) interrupts a running statement.
    """
    if (query is None) == (table is None):
        raise OperationError("give exactly one of query or table")
    if params and query is None:
        raise OperationError("params bind values into a query; with table, give no params")
    with database_errors(connection, engine.url), engine.connect() as conn:
        watch = _Interrupter(engine, conn, check_cancelled, limits.statement_timeout_s)
        try:
            with _read_only(conn, connection, limits), watch:
                imported = _run_import(conn, connection, out, query, params, table, limit, limits, check_cancelled)
            if imported.widest_row > BATCH_BYTES:
                _drop_grown_buffers(conn)
            return imported
        except Exception as exc:
            if isinstance(exc, _TooWide):
                _drop_grown_buffers(conn)
            if watch.fired:  # the statement failed because the cancel interrupted it: say so
                conn.invalidate()  # a connection that was sent a cancel is not reused
                check_cancelled()
            if _is_timeout(exc, watch):
                raise OperationError(
                    f"the query on connection {connection!r} ran longer than the limit of "
                    f"{limits.statement_timeout_s:g} s per statement (the server's "
                    "CONSTELLATION_DB_STATEMENT_TIMEOUT_S)"
                ) from None
            if _is_too_big(exc):
                raise _value_too_big(connection, limits, None) from None
            raise


def _drop_grown_buffers(conn: Connection) -> None:
    """libpq keeps its input buffer as large as the widest row it received (measured: ~96 MB held by the
    pooled connection after a row of two 50 MB texts); such a connection is closed instead of pooled."""
    if conn.dialect.name == "postgresql":
        conn.invalidate()


def _run_import(
    conn: Connection,
    connection: str,
    out: Path,
    query: str | None,
    params: Mapping[str, Any] | None,
    table: str | None,
    limit: int | None,
    limits: ImportLimits,
    check_cancelled: Callable[[], None],
) -> Imported:
    from orchestrator.sources import postgis

    stream = True
    statement: sa.Executable
    spatial = conn.dialect.name == "postgresql"  # PostGIS geometries come through as GeoJSON (postgis.py)
    if query is not None:
        is_function = (lambda name: _pg_has_function(conn, name)) if conn.dialect.name == "postgresql" else None
        kind = check_read_query(query, conn.dialect.name, connection, server_quoting(conn), is_function)
        # PostgreSQL streams through a cursor (DECLARE ... FOR), which takes queries only, not EXPLAIN.
        stream = conn.dialect.name != "postgresql" or kind != "EXPLAIN"
        spatial = spatial and kind != "EXPLAIN"
        statement = _bound_query(postgis.without_semicolon(query) if spatial else query, params or {})
    else:
        assert table is not None  # import_rows let through exactly one of query and table
        # One row past the cap is enough to know the table holds more than the cap.
        cap = min(limit, limits.max_rows + 1) if limit is not None else limits.max_rows + 1
        statement = sa.select(_reflect(conn, connection, table)).limit(cap)
    hidden: dict[str, str] = {}
    if spatial:
        statement, hidden = postgis.as_geojson(conn, statement)
    result = conn.execute(statement, execution_options={"stream_results": stream})
    try:
        if not result.returns_rows:
            raise OperationError(f"the query on connection {connection!r} returns no rows; give a SELECT")
        imported = _write_rows(result, out, limit, check_cancelled, connection, limits, hidden)
    finally:
        result.close()
    if hidden:
        imported.geometry = postgis.geometry_facts(conn, imported.srids, list(hidden.values()))
    return imported


def server_quoting(conn: Connection) -> ServerQuoting:
    """How this server reads backslashes and double quotes now (its sql_mode / standard_conforming_strings)."""
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        modes = set(str(conn.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar() or "").upper().split(","))
        return ServerQuoting(backslash_escapes="NO_BACKSLASH_ESCAPES" not in modes, ansi_quotes="ANSI_QUOTES" in modes)
    if dialect == "postgresql":
        standard = str(conn.exec_driver_sql("SHOW standard_conforming_strings").scalar()).lower()
        return ServerQuoting(backslash_escapes=standard != "on")
    return ServerQuoting()


def _pg_has_function(conn: Connection, name: str) -> bool:
    """Whether PostgreSQL has a function called `name` (any case, any schema): see check_read_query."""
    query = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE lower(proname) = lower(%(name)s))"
    return bool(conn.exec_driver_sql(query, {"name": name}).scalar())


@contextmanager
def _read_only(conn: Connection, connection: str, limits: ImportLimits = ImportLimits()) -> Iterator[None]:
    """A transaction in which the database itself refuses writes, with a time limit per statement; rolled back."""
    dialect = conn.dialect.name
    if dialect not in ("postgresql", "mysql", "mariadb", "sqlite"):
        raise OperationError(
            f"connection {connection!r} is a {dialect} database; imports run only where a read-only "
            "transaction can be enforced (PostgreSQL, MySQL, MariaDB, SQLite)"
        )
    timeout_ms = max(1, int(limits.statement_timeout_s * 1000))
    raw = _driver_connection(conn)
    mysql_timeout = "max_statement_time" if getattr(conn.dialect, "is_mariadb", False) else "max_execution_time"
    transaction = conn.begin()
    sqlite_limit = None
    try:
        if dialect == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
        elif dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
            # SQLite builds a value whole before handing it over: refuse one over the cap as it is made.
            sqlite_limit = raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(1, min(limits.max_value_bytes, 2**31 - 1)))
        else:
            value = timeout_ms / 1000 if mysql_timeout == "max_statement_time" else timeout_ms
            conn.exec_driver_sql(f"SET SESSION {mysql_timeout} = {value}")
            conn.exec_driver_sql("START TRANSACTION READ ONLY")
        yield
    finally:
        transaction.rollback()
        # Connection settings, not a transaction's: undo them before the pool reuses the connection.
        if dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = OFF")
            if sqlite_limit is not None:
                raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, sqlite_limit)
            conn.rollback()
        elif dialect in ("mysql", "mariadb"):
            conn.exec_driver_sql(f"SET SESSION {mysql_timeout} = DEFAULT")
            conn.rollback()


def _driver_connection(conn: Connection) -> Any:
    """The driver's own connection under `conn`: sqlite3's, psycopg's, PyMySQL's... (Any: each driver its type)."""
    raw = conn.connection.driver_connection
    if raw is None:  # SQLAlchemy's type allows it for a closed pooled connection; `conn.connection` reconnects
        raise OperationError("the database connection closed before the import could use it")
    return raw


class _Interrupter:
    """While a statement runs, watch for a cancel and interrupt the statement in the database.

    A thread polls `check_cancelled`; when it raises, the running statement is stopped the way
    each driver allows: PostgreSQL's cancel request, MySQL's KILL QUERY from a second
    connection, SQLite's interrupt(). SQLite has no statement timeout of its own, so a progress
    handler enforces the deadline there.
    """

    POLL_S = 0.1

    def __init__(self, engine: Engine, conn: Connection, check_cancelled: Callable[[], None], timeout_s: float):
        self._engine, self._conn, self._check, self._timeout_s = engine, conn, check_cancelled, timeout_s
        self._raw = _driver_connection(conn)
        self._dialect = conn.dialect.name
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.fired = False
        self.timed_out = False
        self._deadline = 0.0

    def __enter__(self) -> _Interrupter:
        if self._dialect == "sqlite":  # the deadline covers the whole import there, not one fetch
            self._deadline = time.monotonic() + self._timeout_s
            self._raw.set_progress_handler(self._sqlite_progress, 10_000)
        self._thread = threading.Thread(target=self._watch, name="db-cancel-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._dialect == "sqlite" and not self._conn.invalidated:
            self._raw.set_progress_handler(None, 0)

    def _sqlite_progress(self) -> int:
        if self._deadline and time.monotonic() > self._deadline:
            self.timed_out = True
            return 1
        return 1 if self.fired else 0

    def _watch(self) -> None:
        while not self._done.wait(self.POLL_S):
            try:
                self._check()
            except Exception:  # the run is being stopped
                with self._lock:
                    if self._done.is_set():
                        return
                    self.fired = True
                    self._interrupt()
                return

    def _interrupt(self) -> None:
        try:
            if self._dialect == "postgresql":
                cancel = getattr(self._raw, "cancel_safe", None) or self._raw.cancel
                cancel()
            elif self._dialect == "sqlite":
                self._raw.interrupt()
            else:
                thread_id = int(self._raw.thread_id())
                with self._engine.connect() as other:
                    other.exec_driver_sql(f"KILL QUERY {thread_id}")
        except Exception:  # the statement may have just ended; the import sees the cancel at its next check
            pass


def _is_timeout(exc: BaseException, watch: _Interrupter) -> bool:
    if watch.timed_out:
        return True
    cause = getattr(exc, "orig", None) or exc
    codes = {getattr(cause, key, None) for key in ("sqlstate", "pgcode")}
    if len(getattr(cause, "args", ())) == 2 and isinstance(cause.args[0], int):
        codes.add(cause.args[0])
    if "57014" in codes:  # PostgreSQL's query_canceled: a timeout unless we sent the cancel
        return "statement timeout" in str(cause)
    return bool(codes & _TIMEOUT_CODES)


def _is_too_big(exc: BaseException) -> bool:
    cause = getattr(exc, "orig", None) or exc
    return getattr(cause, "sqlite_errorname", None) == "SQLITE_TOOBIG"


def _value_too_big(connection: str, limits: ImportLimits, where: str | None) -> OperationError:
    return _TooWide(
        f"the import from connection {connection!r} read a value{where or ''} larger than the limit of "
        f"{limits.max_value_bytes} bytes for one value (the server's CONSTELLATION_DB_MAX_VALUE_BYTES); "
        "select a smaller part of it"
    )


def _row_too_big(connection: str, limits: ImportLimits, number: int, size: int, exact: bool) -> OperationError:
    return _TooWide(
        f"the import from connection {connection!r} read row {number} of {'' if exact else 'more than '}{size} "
        f"bytes, over the limit of {limits.max_row_bytes} bytes for one row (the server's "
        "CONSTELLATION_DB_MAX_ROW_BYTES); select fewer or smaller columns"
    )


def _bound_query(query: str, params: Mapping[str, Any]) -> sa.TextClause:
    statement = sa.text(query)
    binds: list[sa.BindParameter[Any]] = []
    for name, value in params.items():
        if not _PARAM_NAME.match(name):
            raise OperationError(f"params: {name!r} is not a parameter name (letters, digits and _; write :{name})")
        if isinstance(value, dict):
            raise OperationError(f"params: {name!r} is an object; give a string, number, boolean, null or a list")
        binds.append(sa.bindparam(name, value, expanding=isinstance(value, list)))
    placeholders = list(statement.compile().params)
    unused = [p for p in params if p not in placeholders]
    if unused:
        used = ", ".join(f":{p}" for p in placeholders) or "none"
        raise OperationError(f"params: {', '.join(map(repr, unused))} not used by the query (its parameters: {used})")
    missing = [p for p in placeholders if p not in params]
    if missing:
        raise OperationError(
            f"the query has {', '.join(':' + p for p in missing)} but params gives no value for it "
            f"(write \\:{missing[0]} for a colon that is not a parameter)"
        )
    return statement.bindparams(*binds)


def _reflect(conn: Connection, connection: str, table: str) -> sa.Table:
    schema, _, name = table.rpartition(".")
    try:
        with warnings.catch_warnings():  # PostGIS's geometry types, which postgis.py reads as GeoJSON
            warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
            reflected = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
    except sa.exc.NoSuchTableError:
        raise OperationError(f"connection {connection!r} has no table {table!r}") from None
    for column in reflected.columns:
        # A floating-point column reads as a float, as a query gives it. SQLAlchemy reflects MySQL's
        # and MariaDB's DOUBLE with asdecimal=True, which made a table import write 0.25 as the
        # text "0.2500000000" (exact decimals, NUMERIC/DECIMAL, stay exact text).
        if isinstance(column.type, sa.Float) and column.type.asdecimal:
            column.type.asdecimal = False
    return reflected


def _write_rows(
    result: sa.CursorResult,
    out: Path,
    limit: int | None,
    check_cancelled: Callable[[], None],
    connection: str = "",
    limits: ImportLimits = ImportLimits(),
    hidden: Mapping[str, str] | None = None,
) -> Imported:
    """`hidden`: result columns not written, each holding the SRID of a geometry column ({label: column})."""
    columns = list(result.keys())
    srid_at = [(i, hidden[c]) for i, c in enumerate(columns) if hidden and c in hidden]
    shown_at = [i for i, c in enumerate(columns) if not hidden or c not in hidden]
    columns = [columns[i] for i in shown_at]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        names = ", ".join(map(repr, repeated))
        raise OperationError(f"the query returns column(s) {names} more than once; name them apart with AS")
    imported = Imported(columns)
    keys = [(json.dumps(column, ensure_ascii=False) + ": ").encode() for column in columns]
    batch_rows = 1  # grows while rows are small, shrinks when they are large: memory stays near BATCH_BYTES
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as sink:
        line = _LineWriter(sink, connection, limits)
        while True:
            check_cancelled()
            batch = result.fetchmany(batch_rows)
            if not batch:
                return imported
            batch_bytes = line.written
            for row in batch:
                values: Sequence[Any] = row  # the row's values, without the hidden SRID columns
                if limit is not None and imported.count >= limit:
                    return imported
                if imported.count >= limits.max_rows:
                    raise OperationError(
                        f"the import from connection {connection!r} holds more than {limits.max_rows} rows, the "
                        "limit of the server's CONSTELLATION_DB_MAX_ROWS; give a limit or narrow the query"
                    )
                number = imported.count + 1
                if srid_at:
                    for i, column in srid_at:
                        if row[i] is not None:
                            imported.srids.setdefault(column, set()).add(int(row[i]))
                    values = tuple(row[i] for i in shown_at)
                size = 0  # of its texts and blobs, checked before any of the row is written
                for column, value in zip(columns, values, strict=True):
                    if isinstance(value, bytes | bytearray | memoryview | str):
                        length = len(value) if not isinstance(value, memoryview) else value.nbytes
                        if length > limits.max_value_bytes:
                            where = f" (row {number}, column {column!r}: {length} bytes)"
                            raise _value_too_big(connection, limits, where)
                        if not isinstance(value, str):
                            imported.binary_columns.add(column)
                        size += length
                imported.widest_row = max(imported.widest_row, size)
                if size > limits.max_row_bytes:
                    raise _row_too_big(connection, limits, number, size, exact=True)
                line.write(keys, values, number, size)
                imported.count += 1
            batch_bytes = line.written - batch_bytes
            if batch_bytes * 4 <= BATCH_BYTES:
                batch_rows = min(BATCH_ROWS, batch_rows * 4)
            elif batch_bytes > BATCH_BYTES:
                batch_rows = max(1, batch_rows // 4)


class _LineWriter:
    """Writes rows as JSON Lines, as json.dumps would write each row's dict, without holding a wide row twice.

    A text or blob longer than a slice is escaped (or base64-encoded) and written a slice at a time,
    so that a row of two 50 MB values costs the row itself and a slice, not also its line and the
    line's bytes. Bytes written are counted against the import's cap as they go; other values'
    JSON against the row's.
    """

    def __init__(self, sink: Any, connection: str, limits: ImportLimits):
        self._sink, self._connection, self._limits = sink, connection, limits
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.written = 0  # bytes of the whole import so far

    def write(self, keys: list[bytes], row: Any, number: int, size: int) -> None:
        self._put(b"{")
        for index, (key, value) in enumerate(zip(keys, row, strict=True)):
            self._put(b", " + key if index else key)
            if isinstance(value, str) and len(value) > SLICE_CHARS:
                self._put(b'"')
                for start in range(0, len(value), SLICE_CHARS):
                    escaped = json.dumps(value[start : start + SLICE_CHARS], ensure_ascii=False)
                    self._put(escaped[1:-1].encode())
                self._put(b'"')
            elif isinstance(value, bytes | bytearray | memoryview) and len(value) > SLICE_BYTES:
                view = memoryview(value).cast("B")
                self._put(b'"')
                for start in range(0, len(view), SLICE_BYTES):
                    self._put(base64.b64encode(view[start : start + SLICE_BYTES]))
                self._put(b'"')
            else:
                text = json.dumps(json_value(value), ensure_ascii=False, allow_nan=False)
                if not isinstance(value, str | bytes | bytearray | memoryview):
                    size += len(text)  # a JSON document, an array...: counted as the JSON it becomes
                    if size > self._limits.max_row_bytes:
                        raise _row_too_big(
                            self._connection, self._limits, number, self._limits.max_row_bytes, exact=False
                        )
                for start in range(0, len(text), SLICE_CHARS):
                    self._put(text[start : start + SLICE_CHARS].encode())
        self._put(b"}\n")
        self._flush()

    def _put(self, piece: bytes) -> None:
        self.written += len(piece)
        if self.written > self._limits.max_bytes:
            raise OperationError(
                f"the import from connection {self._connection!r} is larger than {self._limits.max_bytes} bytes, "
                "the limit of the server's CONSTELLATION_DB_MAX_BYTES; give a limit or narrow the query"
            )
        self._pending.append(piece)
        self._pending_bytes += len(piece)
        if self._pending_bytes >= SLICE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._sink.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0


def json_value(value: Any) -> Any:
    """A database value as JSON: ISO text for dates and times, exact text for decimals, base64 for bytes."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # JSON has no NaN or infinity; PostgreSQL spells them this way in text too.
        return value if math.isfinite(value) else {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    if isinstance(value, decimal.Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)
