"""The checks an import's SQL passes before it reaches the database: one statement, one that reads,
with each dialect's quoting understood (a `;` inside a string or comment is not a second statement)."""

from __future__ import annotations

import pytest

from orchestrator.data.sql_guard import check_read_query
from orchestrator.engine import OperationError

ALL = ["postgresql", "mysql", "mariadb", "sqlite"]


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "select 1;",
    "  (SELECT 1) UNION (SELECT 2)",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "VALUES (1), (2)",
    "SELECT 'a;b', \"c;d\" FROM t -- trailing; comment",
    "/* leading; comment */ SELECT 1",
    "SELECT 'it''s; fine'",
    "SELECT 1 /* multi\nline; */ ;  \n",
])
def test_one_reading_statement_passes(dialect, sql):
    check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("sql", [
    "SELECT 1; SELECT 2",
    "SELECT 1; DELETE FROM t",
    "SELECT ';'; DROP TABLE t",
    "SELECT 1 /* ; */; UPDATE t SET a = 1",
])
def test_a_second_statement_is_refused(dialect, sql):
    with pytest.raises(OperationError, match="connection 'db' is read-only for imports: the query holds 2 statements"):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("sql", [
    "DELETE FROM t", "drop table t", "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "TRUNCATE t",
    "CREATE TABLE u (a int)", "ALTER TABLE t ADD b int", "GRANT ALL ON t TO x", "CALL wipe()", "COPY t TO '/tmp/x'",
    "SET ROLE admin", "COMMIT", "-- SELECT\nDELETE FROM t", "/* SELECT */ DELETE FROM t",
])
def test_a_statement_that_does_not_read_is_refused(dialect, sql):
    with pytest.raises(OperationError, match="only a query that reads may run"):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("sql", ["", "   ;  ", "-- nothing"])
def test_an_empty_query_is_refused(dialect, sql):
    with pytest.raises(OperationError, match="the query for connection 'db' is empty"):
        check_read_query(sql, dialect, "db")


def test_postgresql_quoting():
    check_read_query("SELECT $$ a ; b $$, $tag$ ; $$ ; $tag$", "postgresql", "db")
    check_read_query("SELECT E'it\\'s ; quoted'", "postgresql", "db")
    check_read_query("SELECT 1 /* outer /* inner ; */ still comment ; */", "postgresql", "db")
    # Without E, a backslash is an ordinary character: the string ends at the second quote.
    with pytest.raises(OperationError, match="2 statements"):
        check_read_query("SELECT '\\'; DELETE FROM t; --'", "postgresql", "db")


def test_mysql_quoting():
    check_read_query("SELECT 'it\\'s ; quoted', `we;ird` FROM t # comment ; here", "mysql", "db")
    check_read_query('SELECT "double \\" ; quoted"', "mariadb", "db")
    # In MySQL `--` starts a comment only before a space: 1--1 is arithmetic.
    with pytest.raises(OperationError, match="2 statements"):
        check_read_query("SELECT 1--1; DELETE FROM t", "mysql", "db")


def test_mysql_tricks_are_refused():
    with pytest.raises(OperationError, match="executable comments"):
        check_read_query("SELECT 1 /*! ; DELETE FROM t */", "mysql", "db")
    with pytest.raises(OperationError, match="executable comments"):
        check_read_query("SELECT 1 /*M!100000 ; DELETE FROM t */", "mariadb", "db")
    with pytest.raises(OperationError, match="INTO OUTFILE/DUMPFILE writes a file"):
        check_read_query("SELECT * FROM t INTO OUTFILE '/tmp/leak.csv'", "mysql", "db")
    check_read_query("SELECT 'INTO OUTFILE' AS words", "mysql", "db")


def test_sqlite_bracket_names():
    check_read_query("SELECT [odd;name] FROM t", "sqlite", "db")
