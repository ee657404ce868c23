"""import_from_database, export_to_database and table_to_images, called as a run calls them,
against the real PostgreSQL and MariaDB of this machine and an SQLite file."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.dialects import mysql

from orchestrator.assets import ops
from orchestrator.assets.resources import Databases, Workspace
from orchestrator.datasets import Table
from orchestrator.engine import OperationError, RunContext
from orchestrator.sources.databases import database_errors
from sample_data import SAMPLES_TABLE, sample_rows, seed_samples
from services_databases import SessionDatabases

BACKENDS = ["samples", "maria", "lite"]  # PostgreSQL, MariaDB, SQLite


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_env: dict[str, str]) -> Iterator[RunContext]:
    """A run's context on a server whose environment names the test connections."""
    for key, value in database_env.items():
        monkeypatch.setenv(key, value)
    databases = Databases()
    workspace = Workspace(data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "art"))
    yield RunContext(run_dir=tmp_path / "run-a", resources=SimpleNamespace(workspace=workspace, databases=databases))
    databases.dispose()


@pytest.fixture(params=BACKENDS)
def connection(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def scratch(test_databases: SessionDatabases, connection: str) -> Iterator[Callable[[], str]]:
    """Names for this test's own tables in `connection`; they are dropped afterwards."""
    made: list[str] = []

    def new() -> str:
        made.append(f"constellation_t_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield new
    for name in made:
        test_databases.drop(connection, name)


def node(ctx: RunContext, key: str) -> RunContext:
    """The context of another instruction of the same run (its own folder)."""
    return replace(ctx, node_key=key)


def other_run(ctx: RunContext, run_id: str) -> RunContext:
    return replace(ctx, run_dir=ctx.run_dir.parent / run_id)


def write_table(path: Path, rows: list[dict]) -> Table:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Table(path, list(rows[0]), len(rows))


# import_from_database: queries, tables, streaming, values


def test_query_values_are_bound_never_pasted(ctx, connection):
    query = f"SELECT id, name FROM {SAMPLES_TABLE} WHERE label = :label AND id IN :ids ORDER BY id"
    found = ops.import_from_database(ctx, connection, query=query, params={"label": "fire", "ids": [1, 2, 4]})
    assert found.columns == ["id", "name"]
    assert list(found.rows()) == [{"id": 1, "name": "fire-1"}, {"id": 2, "name": "fire-2"}]
    hostile = {"label": "x' OR '1'='1", "ids": [1, 2, 3, 4]}
    assert ops.import_from_database(node(ctx, "b"), connection, query=query, params=hostile).count == 0


def test_params_the_query_does_not_use_are_named(ctx, connection):
    with pytest.raises(OperationError, match=r"'lable' not used by the query \(its parameters: :label\)"):
        ops.import_from_database(
            ctx, connection, query=f"SELECT * FROM {SAMPLES_TABLE} WHERE label = :label", params={"lable": "fire"}
        )


def test_a_placeholder_without_a_value_is_named(ctx, connection):
    with pytest.raises(OperationError, match=r"the query has :label but params gives no value for it"):
        ops.import_from_database(ctx, connection, query=f"SELECT * FROM {SAMPLES_TABLE} WHERE label = :label")
    escaped = ops.import_from_database(node(ctx, "b"), connection, query="SELECT 'at 10\\:30' AS t")
    assert list(escaped.rows()) == [{"t": "at 10:30"}]


def test_explain_runs(ctx, connection):
    assert ops.import_from_database(ctx, connection, query=f"EXPLAIN SELECT * FROM {SAMPLES_TABLE}").count >= 1


def test_table_with_limit(ctx, connection):
    found = ops.import_from_database(ctx, connection, table=SAMPLES_TABLE, limit=2)
    assert found.columns == ["id", "name", "label", "taken_at", "score", "image", "note"]
    assert found.count == 2 and len(list(found.rows())) == 2
    everything = ops.import_from_database(node(ctx, "all"), connection, table=SAMPLES_TABLE)
    assert sorted(row["name"] for row in everything.rows()) == ["fire-1", "fire-2", "forest-1", "lake-1"]
    limited = ops.import_from_database(node(ctx, "q"), connection, query=f"SELECT id FROM {SAMPLES_TABLE}", limit=3)
    assert limited.count == 3


def test_a_missing_table_is_named(ctx, connection):
    with pytest.raises(OperationError, match=f"connection '{connection}' has no table 'no_such_table'"):
        ops.import_from_database(ctx, connection, table="no_such_table")


@pytest.mark.parametrize("given", [{}, {"query": "SELECT 1", "table": SAMPLES_TABLE}])
def test_exactly_one_of_query_or_table(ctx, given):
    with pytest.raises(OperationError, match="exactly one of query or table"):
        ops.import_from_database(ctx, "samples", **given)


def test_thousands_of_rows_stream_to_the_file_and_back(ctx, connection, test_databases, scratch):
    source, copy = scratch(), scratch()
    table = sa.Table(source, sa.MetaData(), sa.Column("n", sa.Integer), sa.Column("word", sa.String(32)))
    with test_databases.admin[connection].begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"n": n, "word": f"w{n}"} for n in range(5000)])
    found = ops.import_from_database(ctx, connection, query=f"SELECT n, word FROM {source} ORDER BY n")
    lines = found.path.read_text().splitlines()
    assert found.count == len(lines) == 5000
    assert [json.loads(line)["n"] for line in lines] == list(range(5000))
    exported = ops.export_to_database(ctx, found, connection, copy)
    assert exported.items[0]["rows"] == 5000 and test_databases.count(connection, copy) == 5000


def test_values_become_json(ctx, connection, test_databases, scratch, caplog):
    name = scratch()
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("taken", sa.DateTime),
        sa.Column("day", sa.Date),
        sa.Column("amount", sa.Numeric(12, 4)),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("absent", sa.Text),
        sa.Column("ratio", sa.Float),
        sa.Column("wide", sa.Double),
    )
    values = {
        "taken": dt.datetime(2024, 2, 29, 23, 59, 58),
        "day": dt.date(2024, 2, 29),
        "amount": decimal.Decimal("12345.6789"),
        "blob": b"\x00\x01\xfe\xffbytes",
        "absent": None,
        "ratio": 0.25,
        "wide": 0.1,
    }
    with test_databases.admin[connection].begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [values])
    expected = {
        "taken": "2024-02-29T23:59:58",
        "day": "2024-02-29",
        "amount": "12345.6789",
        "blob": base64.b64encode(b"\x00\x01\xfe\xffbytes").decode(),
        "absent": None,
        "ratio": 0.25,
        "wide": 0.1,
    }  # a DOUBLE reads as a number on every backend, not as decimal text
    with caplog.at_level(logging.INFO, logger="constellation"):
        [row] = ops.import_from_database(ctx, connection, table=name).rows()
    assert row == expected
    assert "blob hold bytes, kept as base64" in caplog.text
    if connection != "lite":  # SQLite has no date type: a query gives back the text stored
        [row] = ops.import_from_database(node(ctx, "q"), connection, query=f"SELECT * FROM {name}").rows()
        assert row == expected


# Read-only: no write reaches the database, whatever the query says

WRITES = [
    "DELETE FROM {t}",
    "DROP TABLE {t}",
    "INSERT INTO {t} (id, name, label, taken_at, score) VALUES (9, 'x', 'x', '2024-01-01 00:00:00', 1)",
    "UPDATE {t} SET label = 'gone'",
    "TRUNCATE TABLE {t}",
    "CREATE TABLE {t}_copy (id INTEGER)",
    "SELECT 1 AS one; DELETE FROM {t}",
    "SELECT ';' AS semi; DROP TABLE {t}; -- end",
    "/* a comment first */ delete from {t}",
]


@pytest.fixture
def guarded(test_databases: SessionDatabases, connection: str, scratch) -> str:
    """A copy of the samples table that a failed guard would damage."""
    name = scratch()
    seed_samples(test_databases.admin[connection], name)
    return name


def assert_untouched(test_databases: SessionDatabases, connection: str, name: str) -> None:
    with test_databases.admin[connection].connect() as conn:
        labels = conn.execute(sa.text(f"SELECT label FROM {name} ORDER BY id")).scalars().all()
    assert labels == [row["label"] for row in sample_rows()]


@pytest.mark.parametrize("statement", WRITES)
def test_writes_are_refused_and_the_table_is_unchanged(ctx, connection, test_databases, guarded, statement):
    with pytest.raises(OperationError, match=f"connection '{connection}' is read-only for imports"):
        ops.import_from_database(ctx, connection, query=statement.format(t=guarded))
    assert_untouched(test_databases, connection, guarded)


def test_writes_hidden_in_a_reading_query_meet_the_read_only_transaction(ctx, connection, test_databases, guarded):
    """A query that starts like a read but writes (a function, a CTE) is refused by the guard (a user function
    is not on the allow-list), and the database itself stops it too: the read-only transaction, run directly."""
    from orchestrator.sources.databases import _read_only

    admin = test_databases.admin[connection]
    if connection == "samples":
        with admin.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE FUNCTION {guarded}_wipe() RETURNS integer LANGUAGE plpgsql AS "
                f"$$ BEGIN DELETE FROM {guarded}; RETURN 1; END $$"
            )
        sneaky = [f"SELECT {guarded}_wipe()", f"SELECT * FROM (SELECT {guarded}_wipe()) AS w"]
    elif connection == "maria":
        with admin.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE FUNCTION {guarded}_wipe() RETURNS INT MODIFIES SQL DATA "
                f"BEGIN DELETE FROM {guarded}; RETURN 1; END"
            )
        sneaky = [f"SELECT {guarded}_wipe()"]
    else:
        sneaky = [
            f"WITH x AS (SELECT 1) DELETE FROM {guarded}",
            f"WITH x AS (SELECT 1) INSERT INTO {guarded} (id) SELECT 99",
        ]
    for query in sneaky:
        with pytest.raises(OperationError, match=f"connection '{connection}' is read-only for imports"):
            ops.import_from_database(ctx, connection, query=query)
        assert_untouched(test_databases, connection, guarded)
        engine = ctx.resources.databases.engine(connection)
        with pytest.raises(OperationError, match=f"connection '{connection}' is read-only for imports"):
            with database_errors(connection, engine.url), engine.connect() as conn, _read_only(conn, connection):
                conn.exec_driver_sql(query).all()
        assert_untouched(test_databases, connection, guarded)


def test_a_trailing_semicolon_and_semicolons_in_strings_are_fine(ctx, connection):
    found = ops.import_from_database(ctx, connection, query="SELECT 'a;b' AS s, 1 AS n -- one; two\n;")
    assert list(found.rows()) == [{"s": "a;b", "n": 1}]


def test_the_connection_is_usable_after_a_refused_import(ctx, connection):
    with pytest.raises(OperationError):
        ops.import_from_database(ctx, connection, query=f"SELECT * FROM {SAMPLES_TABLE} WHERE nonsense_column = 1")
    assert ops.import_from_database(node(ctx, "b"), connection, table=SAMPLES_TABLE).count == 4


# Connections by name; no URL or password in any message


def test_an_unknown_connection_lists_the_configured_names_only(ctx, test_databases):
    with pytest.raises(OperationError) as refused:
        ops.import_from_database(ctx, "warehouse", table=SAMPLES_TABLE)
    message = str(refused.value)
    assert "no database connection named 'warehouse'" in message
    assert "'lite', 'maria', 'reader', 'samples'" in message and "CONSTELLATION_DB_WAREHOUSE_URL" in message
    assert "://" not in message and test_databases.reader_password not in message


def test_a_database_error_names_the_connection_without_the_password(ctx, test_databases):
    with pytest.raises(OperationError) as failed:
        ops.import_from_database(ctx, "reader", query="SELECT * FROM no_such_table_here")
    message = str(failed.value)
    assert message.startswith("database connection 'reader': ")
    assert 'relation "no_such_table_here" does not exist' in message
    assert test_databases.reader_password not in message and "://" not in message and "DECLARE" not in message


def test_a_failed_connection_hides_the_password(ctx, monkeypatch):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = "S/p3r@:" + uuid.uuid4().hex
    quoted = quote(password, safe="")
    monkeypatch.setenv("CONSTELLATION_DB_DOWN_URL", f"postgresql://someone:{quoted}@127.0.0.1:{port}/db")
    monkeypatch.setenv("CONSTELLATION_DB_GARBLED_URL", f"postgresql//someone:{quoted}@127.0.0.1/db")
    for name in ("down", "garbled"):
        with pytest.raises(OperationError, match=f"database connection '{name}'") as failed:
            ops.import_from_database(node(ctx, name), name, query="SELECT 1")
        message = str(failed.value)
        assert password not in message and quoted not in message and "someone:" not in message


# table_to_images


@pytest.mark.parametrize("name_column", ["name", None])
def test_image_bytes_become_files_that_resize_reads(ctx, connection, name_column):
    found = ops.import_from_database(ctx, connection, query=f"SELECT name, image FROM {SAMPLES_TABLE} ORDER BY id")
    images = ops.table_to_images(node(ctx, "images"), found, "image", name_column)
    expected = (
        ["fire-1.png", "fire-2.jpg", "forest-1.png", "lake-1.jpg"]
        if name_column
        else ["1.png", "2.jpg", "3.png", "4.jpg"]
    )
    assert list(images.files) == expected
    resized = ops.resize_image(node(ctx, "resized"), images, 16, 12)
    for ref in resized:
        with Image.open(ref.path) as picture:
            assert picture.size == (16, 12)


def test_rows_without_an_image_are_skipped(ctx, caplog):
    query = f"SELECT name, CASE WHEN id <= 2 THEN image END AS image FROM {SAMPLES_TABLE} ORDER BY id"
    found = ops.import_from_database(ctx, "samples", query=query)
    with caplog.at_level(logging.INFO, logger="constellation"):
        images = ops.table_to_images(node(ctx, "images"), found, "image", "name")
    assert list(images.files) == ["fire-1.png", "fire-2.jpg"]
    assert "2 row(s) have no image in 'image'" in caplog.text


def test_uris_and_paths_are_refused_not_fetched(ctx, tmp_path):
    table = write_table(tmp_path / "t.jsonl", [{"picture": "https://example.com/cat.jpg"}])
    with pytest.raises(OperationError, match="row 1, column 'picture' holds text .* does not fetch URIs or paths"):
        ops.table_to_images(ctx, table, "picture")
    with pytest.raises(OperationError, match=r"the table has no column 'image' \(its columns: picture\)"):
        ops.table_to_images(ctx, table, "image")


def test_names_must_be_plain_and_distinct(ctx, tmp_path):
    png = base64.b64encode(sample_rows()[0]["image"]).decode()
    sneaky = write_table(tmp_path / "a.jsonl", [{"image": png, "name": "../../etc/cron.d/x"}])
    with pytest.raises(OperationError, match="not a plain file name"):
        ops.table_to_images(ctx, sneaky, "image", "name")
    twins = write_table(tmp_path / "b.jsonl", [{"image": png, "name": "same"}, {"image": png, "name": "same"}])
    with pytest.raises(OperationError, match="row 2, column 'image': two rows are named 'same.png'"):
        ops.table_to_images(node(ctx, "b"), twins, "image", "name")


# export_to_database


def test_two_runs_keep_their_rows_apart_by_run_id(ctx, connection, test_databases, scratch):
    target = scratch()
    query = f"SELECT id, name, score, note FROM {SAMPLES_TABLE} ORDER BY id"
    for run_id in ("run-a", "run-b"):
        run = other_run(ctx, run_id)
        imported = ops.import_from_database(run, connection, query=query)
        exported = ops.export_to_database(run, imported, connection, target)
        assert exported.to_result() == {
            "type": "Exported",
            "destination": f"database:{connection}/{target}",
            "count": 1,
            "rows": 4,
            "files": 0,
            "written": "4 rows",
            "items": [{"table": target, "rows": 4, "run_id": run_id}],
        }
        assert exported.summary() == f"4 rows written to database:{connection}/{target}"
    with test_databases.admin[connection].connect() as conn:
        rows = conn.execute(sa.text(f"SELECT run_id, id, name, score, note FROM {target} ORDER BY run_id, id")).all()
    # Decimals travel as exact text; SQLite has no decimal type and stores the score as a float.
    expected = [(row["id"], row["name"], str(row["score"]), row["note"]) for row in sample_rows()]
    assert [(i, name, str(score), note) for _, i, name, score, note in rows] == expected * 2
    assert [r[0] for r in rows] == ["run-a"] * 4 + ["run-b"] * 4


def test_column_types_of_a_new_table(ctx, connection, test_databases, scratch, tmp_path):
    target = scratch()
    rows = [
        {"k": 1, "ratio": 0.5, "flag": True, "tags": ["a", "b"], "meta": {"x": 1}, "mixed": 1, "empty": None},
        {"k": 2, "ratio": 2, "flag": False, "tags": [], "meta": None, "mixed": "two", "empty": None},
    ]
    ops.export_to_database(ctx, write_table(tmp_path / "t.jsonl", rows), connection, target)
    with test_databases.admin[connection].connect() as conn:
        query = f"SELECT k, ratio, flag, tags, meta, mixed, empty FROM {target} ORDER BY k"
        stored = conn.execute(sa.text(query)).all()
    assert [tuple(r) for r in stored] == [
        (1, 0.5, True, '["a", "b"]', '{"x": 1}', "1", None),
        (2, 2.0, False, "[]", None, "two", None),
    ]


@pytest.mark.parametrize("connection", ["samples", "maria"])  # SQLite stores text in an integer column
def test_an_export_is_all_or_nothing(ctx, connection, test_databases, scratch, tmp_path):
    target = scratch()
    ops.export_to_database(ctx, write_table(tmp_path / "a.jsonl", [{"k": 1}]), connection, target)
    rows = [{"k": n} for n in range(1500)] + [{"k": "not a number"}]  # fails in the second batch of 1000
    with pytest.raises(OperationError, match=f"database connection '{connection}'"):
        ops.export_to_database(other_run(ctx, "run-b"), write_table(tmp_path / "b.jsonl", rows), connection, target)
    assert test_databases.count(connection, target) == 1


def test_if_exists_fail_leaves_the_table_alone(ctx, connection, test_databases, scratch, tmp_path):
    target = scratch()
    table = write_table(tmp_path / "t.jsonl", [{"k": 1}])
    ops.export_to_database(ctx, table, connection, target, if_exists="fail")
    with pytest.raises(OperationError, match=f"table '{target}' already exists in connection '{connection}'"):
        ops.export_to_database(other_run(ctx, "run-b"), table, connection, target, if_exists="fail")
    assert test_databases.count(connection, target) == 1


def test_appending_needs_the_columns(ctx, connection, scratch, tmp_path):
    target = scratch()
    ops.export_to_database(ctx, write_table(tmp_path / "a.jsonl", [{"k": 1}]), connection, target)
    missing = f"table '{target}' in connection '{connection}' has no column\\(s\\) 'extra'"
    with pytest.raises(OperationError, match=missing):
        ops.export_to_database(ctx, write_table(tmp_path / "b.jsonl", [{"k": 1, "extra": 2}]), connection, target)
    with pytest.raises(OperationError, match="the data has a column 'run_id'"):
        ops.export_to_database(ctx, write_table(tmp_path / "c.jsonl", [{"run_id": 1}]), connection, target)


# Issue 11: the guard on the real servers, caps on what an import reads, time limits and cancels


def test_the_mariadb_comment_bypass_writes_no_file(ctx, test_databases):
    """MariaDB reads `--\\x01` as a comment; the old guard did not, missed INTO OUTFILE, and the file was written."""
    target = f"/tmp/constellation_outfile_{uuid.uuid4().hex}"
    query = f"SELECT 'x' AS x --\x01 '\nINTO OUTFILE '{target}' -- '"
    refused = r"connection 'maria' is read-only for imports: .*control character U\+0001"
    with pytest.raises(OperationError, match=refused):
        ops.import_from_database(ctx, "maria", query=query)
    assert not Path(target).exists()
    # The same statement without the control character is refused by the parser, and writes nothing either.
    with pytest.raises(OperationError, match=r"SELECT \.\.\. INTO writes a file"):
        ops.import_from_database(node(ctx, "b"), "maria", query=f"SELECT 'x' AS x INTO OUTFILE '{target}'")
    assert not Path(target).exists()


@pytest.mark.parametrize(
    "connection,query",
    [
        ("maria", "SELECT LOAD_FILE('/etc/passwd') AS f"),
        ("samples", "SELECT pg_read_file('/etc/passwd') AS f"),
        ("samples", "SELECT * FROM pg_ls_dir('/') AS f"),
        ("samples", "SELECT lo_import('/etc/passwd') AS f"),
    ],
)
def test_file_functions_are_refused_before_they_run(ctx, connection, query):
    with pytest.raises(
        OperationError,
        match=f"connection '{connection}' is read-only for imports: function .* is not "
        "allowed in import_from_database queries",
    ):
        ops.import_from_database(ctx, connection, query=query)


@pytest.mark.parametrize("connection", ["samples", "maria"])
def test_locking_reads_are_refused(ctx, connection):
    with pytest.raises(OperationError, match="locking clauses"):
        ops.import_from_database(ctx, connection, query=f"SELECT * FROM {SAMPLES_TABLE} FOR UPDATE")


def test_the_guard_follows_the_servers_quoting_mode(test_databases):
    from orchestrator.sources.databases import server_quoting

    with test_databases.admin["maria"].connect() as conn:
        assert server_quoting(conn).backslash_escapes is True
        conn.exec_driver_sql("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES,ANSI_QUOTES'")
        quoting = server_quoting(conn)
        assert quoting.backslash_escapes is False and quoting.ansi_quotes is True
        conn.invalidate()  # not back into the pool with that mode
    with test_databases.admin["samples"].connect() as conn:
        assert server_quoting(conn).backslash_escapes is False


def sqlite_engine(path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{path}")


def test_a_huge_value_is_refused_as_it_is_made_without_the_memory(tmp_path):
    """`SELECT zeroblob(400000000)` took ~400 MB before any cap; now SQLite refuses to build it."""
    script = f"""
from pathlib import Path
import sqlalchemy as sa
from orchestrator.sources import databases
from orchestrator.engine import OperationError
engine = sa.create_engine("sqlite:///{tmp_path / "z.db"}")
try:
    databases.import_rows(engine, "lite", Path("{tmp_path / "out.jsonl"}"), query="SELECT zeroblob(400000000) AS z")
except OperationError as exc:
    print("refused:", exc)
# VmHWM: this process's own peak (ru_maxrss would carry the forking pytest's over exec).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("maxrss_mb", peak_kb // 1024)
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "refused: the import from connection 'lite' read a value larger than the limit of 67108864 bytes" in (
        done.stdout
    ), done.stdout + done.stderr
    assert "CONSTELLATION_DB_MAX_VALUE_BYTES" in done.stdout
    peak = int(done.stdout.split("maxrss_mb")[1])
    assert peak < 250, f"peak memory {peak} MB: the value was built"
    # Connection still usable, with SQLite's own limit restored afterwards.
    engine = sqlite_engine(tmp_path / "z.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT length(zeroblob(100000000))").scalar() == 100_000_000


@pytest.mark.parametrize("connection", BACKENDS)
def test_rows_bytes_and_values_are_capped_while_streaming(ctx, connection, test_databases, scratch, tmp_path):
    from orchestrator.sources.databases import ImportLimits, import_rows

    name = scratch()
    table = sa.Table(name, sa.MetaData(), sa.Column("n", sa.Integer), sa.Column("word", sa.Text))
    with test_databases.admin[connection].begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"n": n, "word": "w" * 100} for n in range(50)])
    engine = ctx.resources.databases.engine(connection)
    query = f"SELECT n, word FROM {name} ORDER BY n"
    rows_cap = r"holds more than 10 rows, the limit of the server's CONSTELLATION_DB_MAX_ROWS"
    with pytest.raises(OperationError, match=rows_cap):
        import_rows(engine, connection, tmp_path / "a.jsonl", query=query, limits=ImportLimits(max_rows=10))
    with pytest.raises(OperationError, match=r"holds more than 10 rows"):
        import_rows(engine, connection, tmp_path / "a.jsonl", table=name, limits=ImportLimits(max_rows=10))
    # With a limit under the cap, the cap does not get in the way.
    assert (
        import_rows(
            engine, connection, tmp_path / "b.jsonl", query=query, limit=10, limits=ImportLimits(max_rows=10)
        ).count
        == 10
    )
    bytes_cap = r"larger than 1000 bytes, the limit of the server's CONSTELLATION_DB_MAX_BYTES"
    with pytest.raises(OperationError, match=bytes_cap):
        import_rows(engine, connection, tmp_path / "c.jsonl", query=query, limits=ImportLimits(max_bytes=1000))
    # SQLite refuses to build the value at all (so no row to name); the others are checked as they stream.
    where = "" if connection == "lite" else r" \(row 1, column 'word': 100 bytes\)"
    with pytest.raises(OperationError, match=rf"read a value{where} larger than the limit of 50 bytes for one value"):
        import_rows(engine, connection, tmp_path / "d.jsonl", query=query, limits=ImportLimits(max_value_bytes=50))
    # The connection is still usable afterwards.
    assert import_rows(engine, connection, tmp_path / "e.jsonl", query=query).count == 50


def test_the_servers_caps_reach_the_op(ctx):
    ctx.resources.workspace = ctx.resources.workspace.model_copy(update={"db_max_rows": 2})
    with pytest.raises(OperationError, match="holds more than 2 rows"):
        ops.import_from_database(ctx, "samples", table=SAMPLES_TABLE)


# Sleep functions are refused by the guard: count a trillion rows instead (MariaDB stops a recursion at
# 1000 rounds, hence four copies of 1000 rows).
COUNT_FOREVER = (
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000) "
    "SELECT count(*) AS s FROM r a, r b, r c, r d"
)
SLOW = dict.fromkeys(BACKENDS, COUNT_FOREVER)


@pytest.mark.parametrize("connection", BACKENDS)
def test_a_statement_over_the_time_limit_is_stopped(ctx, connection, tmp_path):
    from orchestrator.sources.databases import ImportLimits, import_rows

    engine = ctx.resources.databases.engine(connection)
    started = time.monotonic()
    with pytest.raises(
        OperationError,
        match=r"ran longer than the limit of 0.5 s per statement \(the server's "
        "CONSTELLATION_DB_STATEMENT_TIMEOUT_S\\)",
    ):
        import_rows(
            engine,
            connection,
            tmp_path / "a.jsonl",
            query=SLOW[connection],
            limits=ImportLimits(statement_timeout_s=0.5),
        )
    assert time.monotonic() - started < 10
    assert import_rows(engine, connection, tmp_path / "b.jsonl", query="SELECT 1 AS one").count == 1


@pytest.mark.parametrize("connection", BACKENDS)
def test_a_cancel_interrupts_a_running_statement(ctx, connection, tmp_path):
    """A cancel waited 16-25 s for the query to end; now the database is told to stop it."""
    from orchestrator.sources.databases import import_rows

    engine = ctx.resources.databases.engine(connection)
    timer = threading.Timer(0.5, ctx.cancelled.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(OperationError, match="stopped: the run is being cancelled"):
        import_rows(
            engine, connection, tmp_path / "a.jsonl", query=SLOW[connection], check_cancelled=ctx.check_cancelled
        )
    elapsed = time.monotonic() - started
    timer.join()
    assert elapsed < 3, f"the cancel took {elapsed:.1f} s"
    ctx.cancelled.clear()
    assert import_rows(engine, connection, tmp_path / "b.jsonl", query="SELECT 1 AS one").count == 1


# export_to_database stays in the connection's own schema (issue 11, item 11)


@pytest.mark.parametrize(
    "connection,elsewhere",
    [
        ("maria", "mysql"),  # a root connection could create mysql.probe_*
        ("samples", "public"),  # the session's search_path holds only its own schema
        ("lite", "temp"),
    ],
)
def test_an_export_into_another_schema_is_refused(ctx, connection, elsewhere, test_databases, tmp_path):
    probe = f"probe_{uuid.uuid4().hex[:12]}"
    table = write_table(tmp_path / "t.jsonl", [{"k": 1}])
    with pytest.raises(
        OperationError,
        match=rf"table '{elsewhere}.{probe}' is in schema '{elsewhere}'; connection "
        rf"'{connection}' exports only into its own schema \('.*'\): give the "
        r"table without a schema \(or the server sets CONSTELLATION_DB_EXPORT",
    ):
        ops.export_to_database(ctx, table, connection, f"{elsewhere}.{probe}")
    with test_databases.admin[connection].connect() as conn:
        assert not sa.inspect(conn).has_table(probe, schema=elsewhere)


def test_the_own_schema_named_explicitly_is_fine_and_the_server_can_allow_others(ctx, test_databases, tmp_path):
    from orchestrator.sinks.database import own_schemas

    with test_databases.admin["maria"].connect() as conn:
        [own] = own_schemas(conn)
    probe = f"probe_{uuid.uuid4().hex[:12]}"
    table = write_table(tmp_path / "t.jsonl", [{"k": 1}])
    try:
        assert ops.export_to_database(ctx, table, "maria", f"{own}.{probe}").items[0]["rows"] == 1
    finally:
        test_databases.drop("maria", probe)
    ctx.resources.workspace = ctx.resources.workspace.model_copy(update={"db_export_any_schema": True})
    other = f"constellation_other_{uuid.uuid4().hex[:12]}"
    with test_databases.admin["maria"].begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{other}`")
    try:
        assert ops.export_to_database(ctx, table, "maria", f"{other}.{probe}").items[0]["rows"] == 1
    finally:
        with test_databases.admin["maria"].begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{other}`")


# Issue 17: the guard allows instead of denies; a row's memory is bounded

NOT_ALLOWED = "is not allowed in import_from_database queries"


def test_unicode_escaped_names_are_refused_on_the_real_postgresql(ctx, test_databases):
    """PostgreSQL decodes U&"pg\\005fread\\005ffile" to pg_read_file; the old guard checked the text as written."""
    admin = test_databases.admin["samples"]
    with admin.connect() as conn:  # the server does decode such a name (harmlessly here)
        assert conn.exec_driver_sql("SELECT U&\"\\006cower\"('A')").scalar() == "a"
    victim = admin.connect()
    try:
        pid = victim.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        attacks = [
            "SELECT U&\"pg\\005fread\\005ffile\"('/etc/hostname') AS f",
            f'SELECT U&"pg\\005fterminate\\005fbackend"({pid}) AS killed',
            "SELECT U&\"set\\005fconfig\"('statement_timeout', '0', true) AS t",
            "SELECT U&'\\0041' UESCAPE '\\' AS s",
        ]
        for index, query in enumerate(attacks):
            with pytest.raises(OperationError, match="connection 'samples' is read-only for imports: U&"):
                ops.import_from_database(node(ctx, f"a{index}"), "samples", query=query)
        assert victim.exec_driver_sql("SELECT 1").scalar() == 1  # not terminated
    finally:
        victim.close()


def test_a_field_selection_that_calls_a_function_is_refused_on_the_real_postgresql(ctx):
    """PostgreSQL runs ('/etc/hostname'::text).pg_read_file as pg_read_file('/etc/hostname')."""
    for index, query in enumerate(
        [
            "SELECT ('/etc/hostname'::text).pg_read_file AS f",
            "SELECT (x).pg_sleep AS s FROM (SELECT 5.0::float8 AS x) AS v",
        ]
    ):
        with pytest.raises(OperationError, match=r"the field selection \.pg_\w+ calls the function"):
            ops.import_from_database(node(ctx, f"f{index}"), "samples", query=query)
    # A field that is no function is looked up on the server and passes.
    rows = ops.import_from_database(
        node(ctx, "ok"), "samples", query=f"SELECT (s).id AS id FROM {SAMPLES_TABLE} AS s ORDER BY 1"
    ).rows()
    assert [row["id"] for row in rows] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "connection,query",
    [
        ("samples", "SELECT * FROM crosstab('SELECT 1, 2, 3') AS t(a int, b int)"),
        ("samples", "SELECT xpath_table('id', 'x', 'constellation_samples', '/a', 'true')"),
        ("samples", "SELECT database_to_xml(true, true, '') AS x"),
        ("samples", "SELECT setval('no_such_sequence', 1) AS s"),
        ("samples", "SELECT txid_current() AS t"),
        ("samples", "SELECT pg_sleep_for('5 seconds') AS s"),
        ("samples", "SELECT pg_sleep(5) AS s"),
        ("samples", "SELECT pg_catalog.pg_sleep(5) AS s"),
        ("samples", "SELECT set_config('statement_timeout', '0', true) AS s"),
        ("maria", "SELECT SLEEP(5) AS s"),
        ("maria", "SELECT BENCHMARK(500000000, MD5('a')) AS b"),
    ],
)
def test_functions_outside_the_allow_list_are_refused_before_they_run(ctx, connection, query):
    started = time.monotonic()
    with pytest.raises(
        OperationError, match=f"connection '{connection}' is read-only for imports: function \\S+ {NOT_ALLOWED}"
    ):
        ops.import_from_database(ctx, connection, query=query)
    assert time.monotonic() - started < 3  # refused, not slept or stopped by the time limit


@pytest.mark.parametrize(
    "connection,query",
    [
        ("samples", "SELECT pid, query FROM pg_stat_activity"),
        ("samples", "SELECT * FROM pg_catalog.pg_locks"),
        ("samples", "SELECT rolname, rolpassword FROM pg_authid"),
        ("maria", "SELECT id, info FROM information_schema.processlist"),
        ("maria", "SELECT * FROM INFORMATION_SCHEMA.PROCESSLIST"),
        ("maria", "SELECT user, host FROM mysql.user"),
        ("maria", "SELECT * FROM performance_schema.threads"),
    ],
)
def test_views_of_other_sessions_and_secrets_are_refused(ctx, connection, query):
    with pytest.raises(OperationError, match=rf"relation \S+ {NOT_ALLOWED}: system relations that show other "):
        ops.import_from_database(ctx, connection, query=query)


ANALYSIS = {
    "samples": (
        "SELECT id, label, row_number() OVER (PARTITION BY label ORDER BY id) AS rn, "
        "to_char(taken_at, 'YYYY-MM-DD') AS day, json_build_object('n', id)->>'n' AS j, "
        "round(sum(score) OVER (PARTITION BY label), 3) AS total, upper(substring(name FROM 1 FOR 2)) AS initials, "
        "CAST(coalesce(note, 'none') AS varchar(10)) AS note FROM {t} ORDER BY id"
    ),
    "maria": (
        "SELECT id, label, ROW_NUMBER() OVER (PARTITION BY label ORDER BY id) AS rn, "
        "DATE_FORMAT(taken_at, '%Y-%m-%d') AS day, JSON_UNQUOTE(JSON_EXTRACT(JSON_OBJECT('n', id), '$.n')) AS j, "
        "ROUND(SUM(score) OVER (PARTITION BY label), 3) AS total, UPPER(SUBSTRING(name, 1, 2)) AS initials, "
        "CAST(IFNULL(note, 'none') AS CHAR(10)) AS note FROM {t} ORDER BY id"
    ),
    "lite": (
        "SELECT id, label, row_number() OVER (PARTITION BY label ORDER BY id) AS rn, "
        "strftime('%Y-%m-%d', taken_at) AS day, CAST(json_extract(json_object('n', id), '$.n') AS TEXT) AS j, "
        "round(sum(score) OVER (PARTITION BY label), 3) AS total, upper(substr(name, 1, 2)) AS initials, "
        "CAST(ifnull(note, 'none') AS TEXT) AS note FROM {t} ORDER BY id"
    ),
}


def test_analyst_queries_still_run(ctx, connection):
    rows = list(ops.import_from_database(ctx, connection, query=ANALYSIS[connection].format(t=SAMPLES_TABLE)).rows())
    assert [
        (r["id"], r["label"], r["rn"], r["day"], str(r["j"]), float(r["total"]), r["initials"], r["note"]) for r in rows
    ] == [
        (1, "fire", 1, "2024-05-01", "1", 3.25, "FI", "none"),
        (2, "fire", 2, "2024-05-02", "2", 3.25, "FI", "note 2"),
        (3, "forest", 1, "2024-05-03", "3", 3.125, "FO", "none"),
        (4, "lake", 1, "2024-05-04", "4", 4.125, "LA", "note 4"),
    ]


POSTGIS = Path("/usr/share/postgresql/15/extension/postgis.control")


@pytest.fixture(scope="module")
def postgis_engine() -> Iterator[sa.Engine]:
    """A database of its own with PostGIS (one extension per database: sessions would share it otherwise)."""
    if not POSTGIS.exists():
        pytest.skip(
            f"PostGIS is not installed on this machine ({POSTGIS} is absent); the guard-level tests in "
            "tests/sources/test_sql_guard.py still check its queries"
        )
    from services_databases import PG_ADMIN_URL

    name = f"constellation_gis_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(sa.make_url(PG_ADMIN_URL).set(database=name))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION postgis")
            conn.exec_driver_sql("CREATE TABLE parcels (id int, geom geometry(Polygon, 4326))")
            conn.exec_driver_sql(
                "INSERT INTO parcels VALUES (1, ST_MakeEnvelope(0, 0, 0.01, 0.01, 4326)), "
                "(2, ST_MakeEnvelope(5, 5, 5.01, 5.01, 4326))"
            )
        yield engine
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


def test_postgis_queries_pass_and_run(postgis_engine, tmp_path):
    from orchestrator.sources.databases import import_rows

    query = (
        "SELECT p.id, ST_AsText(ST_Centroid(p.geom)) AS centre, round(ST_Area(p.geom::geography)::numeric, -4) AS m2, "
        "ST_AsText((ST_Dump(ST_Boundary(p.geom))).geom) AS edge, ST_SRID(ST_Transform(p.geom, 3857)) AS srid "
        "FROM parcels p WHERE p.geom && ST_MakeEnvelope(-1, -1, 1, 1, 4326) AND ST_DWithin(p.geom::geography, "
        "ST_SetSRID(ST_MakePoint(0.005, 0.005), 4326)::geography, 1000) AND 'POINT(0.005 0.005)'::geometry IS NOT NULL "
        "ORDER BY p.geom <-> ST_SetSRID(ST_MakePoint(0, 0), 4326)"
    )
    out = tmp_path / "gis.jsonl"
    assert import_rows(postgis_engine, "gis", out, query=query).count == 1
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row == {
        "id": 1,
        "centre": "POINT(0.005 0.005)",
        "m2": "1230000",
        "edge": "LINESTRING(0 0,0 0.01,0.01 0.01,0.01 0,0 0)",
        "srid": 3857,
    }


@pytest.mark.parametrize("connection", BACKENDS)
def test_a_row_over_the_row_cap_is_refused_by_number(ctx, connection, test_databases, scratch, tmp_path):
    from orchestrator.sources.databases import ImportLimits, import_rows

    name = scratch()
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("n", sa.Integer),
        sa.Column("a", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")),
        sa.Column("b", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
    )
    # Every character JSON escapes or keeps as is, over more than one written slice (1 MiB).
    text = ('quote " back \\ line \n tab \t é 漢 😀 \x01 ' * 90_000)[:3_000_000]
    blob = bytes(range(256)) * 11_000  # 2.8 MB
    with test_databases.admin[connection].begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"n": 1, "a": "small", "b": b"x"}, {"n": 2, "a": text, "b": blob}])
    engine = ctx.resources.databases.engine(connection)
    query = f"SELECT n, a, b FROM {name} ORDER BY n"
    with pytest.raises(
        OperationError,
        match=rf"the import from connection '{connection}' read row 2 of 5816000 bytes, "
        r"over the limit of 5000000 bytes for one row \(the server's "
        r"CONSTELLATION_DB_MAX_ROW_BYTES\)",
    ):
        import_rows(engine, connection, tmp_path / "a.jsonl", query=query, limits=ImportLimits(max_row_bytes=5_000_000))
    # Under the cap, the wide values are written in slices and read back whole, as json.dumps writes them.
    out = tmp_path / "b.jsonl"
    assert import_rows(engine, connection, out, query=query).count == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    expected = {"n": 2, "a": text, "b": base64.b64encode(blob).decode()}
    assert json.loads(lines[1]) == expected
    assert lines[1] == json.dumps(expected, ensure_ascii=False)


def test_a_wide_row_costs_about_its_size_once_more(test_databases, tmp_path):
    """A row of two 50 MB texts peaked at +477 MB (the driver's copies, the str, the line, its bytes); now the
    line is written in slices (+292 MB measured: libpq's buffer and result, and the str). Over the row cap
    (64 MiB by default) it is refused by number; the pooled connection does not keep libpq's grown buffer."""
    import subprocess
    import sys

    name = f"constellation_wide_{uuid.uuid4().hex[:12]}"
    with test_databases.admin["samples"].begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} AS SELECT repeat('x', 50000000) AS a, repeat('y', 50000000) AS b")
    url = test_databases.env["CONSTELLATION_DB_SAMPLES_URL"]
    script = f"""
from pathlib import Path
import sqlalchemy as sa
from orchestrator.sources import databases
from orchestrator.engine import OperationError
def mb(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) // 1024
engine = sa.create_engine({url!r})
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT 1")
base = mb("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here
out = Path({str(tmp_path / "w.jsonl")!r})
try:
    databases.import_rows(engine, "samples", out, query="SELECT a, b FROM {name}")
except OperationError as exc:
    print("refused:", exc)
limits = databases.ImportLimits(max_row_bytes=200_000_000)
print("count", databases.import_rows(engine, "samples", out, query="SELECT a, b FROM {name}", limits=limits).count)
print("size", out.stat().st_size)
print("peak_mb", mb("VmHWM:") - base)
print("kept_mb", mb("VmRSS:") - base)
"""
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    finally:
        test_databases.drop("samples", name)
    report = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert report["refused:"] == (
        "the import from connection 'samples' read row 1 of 100000000 bytes, over the limit of 67108864 bytes for "
        "one row (the server's CONSTELLATION_DB_MAX_ROW_BYTES); select fewer or smaller columns"
    ), done.stdout
    assert report["count"] == "1" and report["size"] == "100000019"
    assert int(report["peak_mb"]) < 360, done.stdout  # was 477
    assert int(report["kept_mb"]) < 30, done.stdout  # was ~96 MB held by the pooled connection


def test_the_servers_row_cap_and_time_limit_reach_the_op(ctx):
    assert ctx.resources.workspace.database_limits().statement_timeout_s == 120
    ctx.resources.workspace = ctx.resources.workspace.model_copy(update={"db_max_row_bytes": 10})
    with pytest.raises(OperationError, match="read row 1 of 12 bytes, over the limit of 10 bytes for one row"):
        ops.import_from_database(ctx, "samples", query="SELECT 'twelve bytes' AS t")
