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
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orchestrator.data.sql_guard import check_read_query
from orchestrator.engine import OperationError

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
# A table, optionally in a schema (`schema.table`); SQLAlchemy quotes it, the pattern keeps it one name.
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$"
BATCH_ROWS = 1000  # rows per round trip when reading, and per INSERT batch when writing
RUN_ID_COLUMN = "run_id"

_ENV_NAME = re.compile(r"^CONSTELLATION_DB_([A-Z0-9_]+)_URL$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# What each database says when a read-only transaction refuses a write.
_READ_ONLY_CODES = {"25006", 1792, "SQLITE_READONLY"}


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


@dataclass
class Imported:
    """What an import wrote: its columns, how many rows, and which columns held bytes (now base64)."""

    columns: list[str]
    count: int = 0
    binary_columns: set[str] = field(default_factory=set)


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
) -> Imported:
    """Run one read-only query (or read `table`) and write its rows to `out` as JSON Lines, streamed."""
    if (query is None) == (table is None):
        raise OperationError("give exactly one of query or table")
    if params and query is None:
        raise OperationError("params bind values into a query; with table, give no params")
    with database_errors(connection, engine.url), engine.connect() as conn, _read_only(conn, connection):
        stream = True
        if query is not None:
            first = check_read_query(query, conn.dialect.name, connection)
            statement = _bound_query(query, params or {})
            # PostgreSQL streams through a cursor (DECLARE ... FOR), which takes queries only, not SHOW or EXPLAIN.
            stream = conn.dialect.name != "postgresql" or first in ("SELECT", "WITH", "VALUES", "TABLE")
        else:
            statement = sa.select(_reflect(conn, connection, table)).limit(limit)
        result = conn.execute(statement, execution_options={"stream_results": stream})
        try:
            if not result.returns_rows:
                raise OperationError(f"the query on connection {connection!r} returns no rows; give a SELECT")
            return _write_rows(result, out, limit, check_cancelled)
        finally:
            result.close()


@contextmanager
def _read_only(conn: Connection, connection: str) -> Iterator[None]:
    """A transaction in which the database itself refuses writes; always rolled back."""
    dialect = conn.dialect.name
    if dialect not in ("postgresql", "mysql", "mariadb", "sqlite"):
        raise OperationError(
            f"connection {connection!r} is a {dialect} database; imports run only where a read-only "
            "transaction can be enforced (PostgreSQL, MySQL, MariaDB, SQLite)"
        )
    transaction = conn.begin()
    try:
        if dialect == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        elif dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
        else:
            conn.exec_driver_sql("START TRANSACTION READ ONLY")
        yield
    finally:
        transaction.rollback()
        if dialect == "sqlite":  # a connection setting, not a transaction's: undo it before the pool reuses it
            conn.exec_driver_sql("PRAGMA query_only = OFF")
            conn.rollback()


def _bound_query(query: str, params: Mapping[str, Any]) -> sa.TextClause:
    statement = sa.text(query)
    binds = []
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
        return sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
    except sa.exc.NoSuchTableError:
        raise OperationError(f"connection {connection!r} has no table {table!r}") from None


def _write_rows(result: sa.CursorResult, out: Path, limit: int | None, check_cancelled: Callable[[], None]) -> Imported:
    columns = list(result.keys())
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        names = ", ".join(map(repr, repeated))
        raise OperationError(f"the query returns column(s) {names} more than once; name them apart with AS")
    imported = Imported(columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as sink:
        for batch in result.partitions(BATCH_ROWS):
            check_cancelled()
            for row in batch:
                if limit is not None and imported.count >= limit:
                    return imported
                values = {}
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes | bytearray | memoryview):
                        imported.binary_columns.add(column)
                    values[column] = json_value(value)
                sink.write(json.dumps(values, ensure_ascii=False, allow_nan=False) + "\n")
                imported.count += 1
    return imported


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
