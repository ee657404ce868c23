"""Random queries built from PostgreSQL's tokens: the import guard refuses them, or they run harmlessly.

Each query is assembled from function names of both kinds (allowed ones and the ones issue 17 showed
reaching files, sessions and settings), spelled every way the server accepts (any case, quoted,
U&"..." escapes, schema-qualified, a comment before the parenthesis, PostgreSQL's (x).name call
notation), string literals in every quoting (E'', $$, U&''), relations of the catalog and a canary
table, comments and a trailing `;`. It goes through `import_rows` exactly as import_from_database
runs it, as a role that may only read; the role may also read the server's files
(pg_read_server_files), so that a query slipping past the guard with pg_read_file would show.

After each one, whatever the outcome (refused, or a database error, or rows): the canary table is
unchanged, the secret file's text is in no output, no file was written, the victim session of the
same role is alive, the pooled connection's settings are as before, no advisory lock is held, and
no statement ran into the time limit (the generator has no slow query but a sleep).
"""

from __future__ import annotations

import base64
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine import OperationError
from orchestrator.sources.databases import ImportLimits, import_rows
from services_databases import PG_ADMIN_URL, SessionDatabases

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
TIME_LIMIT_S = 2.0

ALLOWED = [
    "lower",
    "upper",
    "length",
    "md5",
    "abs",
    "count",
    "coalesce",
    "to_char",
    "now",
    "generate_series",
    "jsonb_build_object",
    "st_area",
    "string_agg",
    "row_number",
]
HARMFUL = [
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_sleep",
    "pg_sleep_for",
    "set_config",
    "current_setting",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_advisory_lock",
    "lo_import",
    "lo_export",
    "lo_get",
    "dblink",
    "crosstab",
    "query_to_xml",
    "database_to_xml",
    "txid_current",
    "setval",
    "nextval",
    "pg_notify",
    "pg_reload_conf",
    "pg_stat_get_activity",
]
RELATIONS = [
    "pg_stat_activity",
    "pg_catalog.pg_stat_activity",
    "pg_authid",
    "pg_settings",
    "pg_largeobject",
    "information_schema.tables",
    "pg_tables",
    '"pg_stat_activity"',
    'U&"pg\\005fauthid"',
]


@dataclass
class Target:
    engine: sa.Engine
    admin: sa.Engine
    victim: sa.Connection
    victim_pid: int
    role: str
    canary: str
    folder: Path  # holds the secret file and a file whose name only a directory listing shows
    secret_path: Path
    secret: str
    listed: str
    written_path: Path
    marker: str  # what set_config would put in a setting

    def leaks(self, text: str) -> list[str]:
        found = [self.secret, base64.b64encode(self.secret.encode()).decode(), self.listed, self.marker]
        return [token for token in found if token in text]


@pytest.fixture(scope="module")
def target(test_databases: SessionDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    admin = test_databases.admin["samples"]
    tag = uuid.uuid4().hex[:12]
    role, canary = f"constellation_prop_{tag}", f"constellation_canary_{tag}"
    with admin.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    # The database server reads these: a folder under /tmp, not pytest's (which it may not reach).
    folder = Path(f"/tmp/constellation_prop_{tag}")
    folder.mkdir()
    os.chmod(folder, 0o755)
    secret, listed = "secret-" + secrets.token_hex(16), "listed-" + secrets.token_hex(8)
    secret_path = folder / "secret"
    secret_path.write_text(secret)
    os.chmod(secret_path, 0o644)
    (folder / listed).write_text("")
    written_path = folder / "written"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        # Read-only, but allowed to read the server's files: a pg_read_file past the guard would show.
        conn.exec_driver_sql(f'GRANT pg_read_server_files TO "{role}"')
        for function in ("pg_read_file(text)", "pg_read_binary_file(text)", "pg_ls_dir(text)", "pg_stat_file(text)"):
            conn.exec_driver_sql(f'GRANT EXECUTE ON FUNCTION {function} TO "{role}"')
        conn.exec_driver_sql(f"CREATE TABLE {canary} (id int PRIMARY KEY, word text)")
        conn.exec_driver_sql(f"INSERT INTO {canary} VALUES (1, 'one'), (2, 'two')")
        conn.exec_driver_sql(f'GRANT SELECT ON {canary} TO "{role}"')
    url = sa.make_url(PG_ADMIN_URL).set(username=role).render_as_string(hide_password=False)
    url += f"?options={quote(f'-csearch_path={schema}')}"
    # One pooled connection: the next import (and the settings check) gets the one the last query ran on.
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    victim_engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    victim = victim_engine.connect()
    try:
        pid = victim.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        yield Target(
            engine,
            admin,
            victim,
            pid,
            role,
            canary,
            folder,
            secret_path,
            secret,
            listed,
            written_path,
            marker=f"pwned_{tag}",
        )
    finally:
        victim.close()
        engine.dispose()
        victim_engine.dispose()
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {canary}")
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')  # also revokes what was granted to it
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')


# ---- how a name, a literal and a call can be written ---------------------------------------------------


def unicode_escaped(text: str, draw) -> str:
    """U&"..." with some characters written as \\XXXX, as PostgreSQL decodes them."""
    escaped = "".join(f"\\{ord(c):04x}" if draw(st.booleans()) else c for c in text)
    return f'U&"{escaped}"'


@st.composite
def spelled(draw, name: str) -> str:
    style = draw(st.sampled_from(["plain", "upper", "mixed", "quoted", "unicode", "qualified", "quoted-qualified"]))
    if style == "upper":
        return name.upper()
    if style == "mixed":
        return "".join(c.upper() if i % 2 else c for i, c in enumerate(name))
    if style == "quoted":
        return f'"{name}"'
    if style == "unicode":
        return unicode_escaped(name, draw)
    if style == "qualified":
        return f"{draw(st.sampled_from(['pg_catalog', 'public', 'PG_CATALOG']))}.{name}"
    if style == "quoted-qualified":
        return f'"pg_catalog"."{name}"'
    return name


@st.composite
def literal(draw, text: str) -> str:
    style = draw(st.sampled_from(["plain", "e", "dollar", "tagged", "unicode", "cast"]))
    if style == "e":
        return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if style == "dollar":
        return f"$${text}$$"
    if style == "tagged":
        return f"$q${text}$q$"
    if style == "unicode":
        return "U&'" + "".join(f"\\{ord(c):04x}" if c == "/" else c for c in text) + "'"
    if style == "cast":
        return f"'{text}'::text"
    return "'" + text.replace("'", "''") + "'"


@st.composite
def argument(draw, target: Target) -> str:
    return draw(
        st.one_of(
            literal(str(target.secret_path)),
            literal(str(target.written_path)),
            literal("statement_timeout"),
            literal("0"),
            literal("SELECT 1"),
            st.just(str(target.victim_pid)),
            st.sampled_from(["1", "5", "true", "NULL", "id", "word"]),
        )
    )


def harmful_calls(target: Target) -> list[tuple[str, list[str]]]:
    """Calls whose harm the checks after each query would see, had they run."""
    return [
        ("pg_read_file", [str(target.secret_path)]),
        ("pg_read_binary_file", [str(target.secret_path)]),
        ("pg_ls_dir", [str(target.folder)]),
        ("pg_sleep", ["5"]),
        ("pg_sleep_for", ["5 seconds"]),
        ("set_config", ["application_name", target.marker, "false"]),
        ("pg_terminate_backend", [str(target.victim_pid)]),
        ("pg_cancel_backend", [str(target.victim_pid)]),
        ("pg_advisory_lock", ["42"]),
        ("lo_export", ["1", str(target.written_path)]),
        ("query_to_xml", [f"SELECT pg_read_file('{target.secret_path}')", "true", "false", ""]),
    ]


@st.composite
def harmful_call(draw, target: Target) -> tuple[str, list[str]]:
    name, texts = draw(st.sampled_from(harmful_calls(target)))
    args = [text if text.isdigit() or text in ("true", "false") else draw(literal(text)) for text in texts]
    return name, args


@st.composite
def call(draw, target: Target) -> str:
    if draw(st.booleans()):
        name, args = draw(harmful_call(target))
    else:
        name = draw(st.sampled_from(ALLOWED + HARMFUL))
        args = draw(st.lists(argument(target), min_size=0, max_size=3))
    gap = draw(st.sampled_from(["", " ", "/**/", " /* c */ ", "\n", " -- c\n"]))
    if len(args) == 1 and draw(st.booleans()):  # (x).name: PostgreSQL's other way to call name(x)
        field = draw(st.sampled_from([name, f'"{name}"']))
        return f"({args[0]}).{field}"
    return f"{draw(spelled(name))}{gap}({', '.join(args)})"


@st.composite
def query(draw, target: Target) -> str:
    relation = draw(st.sampled_from(RELATIONS + [target.canary] * 3))
    expression = draw(call(target))
    shape = draw(
        st.sampled_from(
            [
                "SELECT {e} AS v",
                "SELECT {e} AS v FROM {r} LIMIT 3",
                "SELECT * FROM {e} AS t LIMIT 3",
                "SELECT v FROM (SELECT {e} AS v) AS s",
                "WITH c AS (SELECT {e} AS v) SELECT * FROM c",
                "SELECT count(*) AS n FROM {r}",
                "SELECT id, {e} AS v FROM {r} ORDER BY 1",
                "EXPLAIN SELECT {e}",
                "SELECT 1 AS one WHERE {e} IS NOT NULL",
                "TABLE {r}",
            ]
        )
    )
    text = shape.format(e=expression, r=relation)
    before = draw(st.sampled_from(["", "/* lead */ ", "-- lead\n", "  "]))
    after = draw(st.sampled_from(["", ";", " ; -- end", "\n"]))
    return before + text + after


# ---- the property ----------------------------------------------------------------------------------------


def canary_rows(target: Target) -> list[tuple]:
    with target.admin.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(f"SELECT id, word FROM {target.canary} ORDER BY id")]


def session_state(target: Target) -> tuple:
    with target.engine.connect() as conn:
        return tuple(
            conn.exec_driver_sql(f"SHOW {name}").scalar()
            for name in ("statement_timeout", "search_path", "default_transaction_read_only")
        )


def alive(session: sa.Connection) -> bool:
    try:
        return session.exec_driver_sql("SELECT 1").scalar() == 1
    except sa.exc.DBAPIError:
        return False


def advisory_locks(target: Target) -> int:
    with target.admin.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND a.usename = %(role)s",
            {"role": target.role},
        ).scalar()


def test_random_queries_are_refused_or_harmless(target: Target, tmp_path: Path):
    canary, state = canary_rows(target), session_state(target)
    outcomes: Counter[str] = Counter()
    limits = ImportLimits(statement_timeout_s=TIME_LIMIT_S)

    @FUZZ
    @given(sql=query(target))
    def run(sql: str) -> None:
        out = tmp_path / "out.jsonl"
        out.unlink(missing_ok=True)
        started = time.monotonic()
        try:
            import_rows(target.engine, "prop", out, query=sql, limits=limits)
            outcomes["ran"] += 1
        except OperationError as exc:  # anything else escaping the guard is a failure of its own
            assert "ran longer than the limit" not in str(exc), f"{sql!r} slept past the guard"
            outcomes["refused" if "read-only for imports" in str(exc) else "database error"] += 1
        elapsed = time.monotonic() - started
        assert elapsed < TIME_LIMIT_S + 2, f"{sql!r} took {elapsed:.1f} s"
        assert not out.exists() or not target.leaks(out.read_text()), f"{sql!r} read a file or changed a setting"
        assert not target.written_path.exists(), f"{sql!r} wrote a file"
        assert canary_rows(target) == canary, f"{sql!r} changed the canary table"
        assert alive(target.victim), f"{sql!r} ended another session"
        assert session_state(target) == state, f"{sql!r} changed the session's settings"
        assert advisory_locks(target) == 0, f"{sql!r} left an advisory lock"

    run()
    # The generator reaches both sides: queries the guard lets run, and ones it refuses.
    assert outcomes["ran"] >= 5 and outcomes["refused"] >= 30, outcomes
