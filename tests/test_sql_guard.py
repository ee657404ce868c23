"""The checks an import's SQL passes before it reaches the database: one statement, one that reads,
with each dialect's quoting understood (a `;` inside a string or comment is not a second statement)."""

from __future__ import annotations

import pytest

from orchestrator.engine import OperationError
from orchestrator.sources.sql_guard import check_read_query

ALL = ["postgresql", "mysql", "mariadb", "sqlite"]


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "select 1;",
    "  (SELECT 1) UNION (SELECT 2)",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "SELECT 'a;b', \"c;d\" FROM t -- trailing; comment",
    "/* leading; comment */ SELECT 1",
    "SELECT 'it''s; fine'",
    "SELECT 1 /* multi\nline; */ ;  \n",
    "SELECT 1; -- done",
    "SELECT 1; /* done */",
])
def test_one_reading_statement_passes(dialect, sql):
    check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])  # sqlglot reads MySQL's VALUES only as ROW(...)
def test_values_passes(dialect):
    check_read_query("VALUES (1), (2)", dialect, "db")


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
    with pytest.raises(OperationError, match=r"SELECT \.\.\. INTO writes a file"):
        check_read_query("SELECT * FROM t INTO OUTFILE '/tmp/leak.csv'", "mysql", "db")
    check_read_query("SELECT 'INTO OUTFILE' AS words", "mysql", "db")


def test_sqlite_bracket_names():
    check_read_query("SELECT [odd;name] FROM t", "sqlite", "db")


# Issue 11: what a regex tokenizer let through, and what the parser must refuse.

READ_ONLY = "connection 'db' is read-only for imports"


@pytest.mark.parametrize("dialect", ["mysql", "mariadb"])
def test_the_mariadb_control_character_comment_bypass_is_refused(dialect):
    # MariaDB reads `--\x01` as a comment, so the quote after it is not a quote and INTO OUTFILE runs.
    with pytest.raises(OperationError, match=r"control character U\+0001 at offset 18"):
        check_read_query("SELECT 'x' AS x --\x01 '\nINTO OUTFILE '/some/file' -- '", dialect, "db")


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x0c", "\x1f", "\x7f", "\r"])
def test_control_characters_are_refused_even_inside_strings(dialect, char):
    with pytest.raises(OperationError, match="control character"):
        check_read_query(f"SELECT 'a{char}b' AS s", dialect, "db")


@pytest.mark.parametrize("dialect", ALL)
def test_tabs_and_newlines_are_fine(dialect):
    check_read_query("SELECT\t1 AS a,\r\n 'x\ty' AS b -- done\r\n", dialect, "db")


def test_mysql_dash_dash_without_a_space_is_arithmetic_not_a_comment():
    # The parser must see the call the server runs: 1--1 is 1 - (-1), and LOAD_FILE follows.
    with pytest.raises(OperationError, match=r"function LOAD_FILE is not allowed"):
        check_read_query("SELECT 1--1, LOAD_FILE('/etc/passwd')", "mysql", "db")


@pytest.mark.parametrize("sql,dialect", [
    ("SELECT LOAD_FILE('/etc/passwd')", "mysql"),
    ("SELECT load_file('/etc/passwd') AS f", "mariadb"),
    ("SELECT pg_read_file('/etc/passwd')", "postgresql"),
    ("SELECT pg_catalog.pg_read_binary_file('/etc/passwd')", "postgresql"),
    ("SELECT * FROM pg_ls_dir('/')", "postgresql"),
    ('SELECT "pg_read_file"(\'/etc/passwd\')', "postgresql"),
    ("SELECT lo_import('/etc/passwd')", "postgresql"),
    ("SELECT lo_export(1, '/tmp/x')", "postgresql"),
    ("SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)", "postgresql"),
    ("SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '')", "postgresql"),
    ("SELECT set_config('statement_timeout', '0', false)", "postgresql"),
    ("SELECT pg_advisory_lock(1)", "postgresql"),
    ("SELECT GET_LOCK('x', 10)", "mysql"),
    ("SELECT load_extension('/tmp/evil.so')", "sqlite"),
    ("SELECT a FROM t WHERE a IN (SELECT Pg_Read_File('/etc/passwd'))", "postgresql"),
])
def test_functions_that_reach_files_servers_or_sessions_are_refused(sql, dialect):
    with pytest.raises(OperationError, match=rf"{READ_ONLY}: function \S+ is not allowed in import_from_database"):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("sql,dialect", [
    ("SELECT * FROM t INTO DUMPFILE '/tmp/x'", "mysql"),
    ("SELECT * INTO OUTFILE '/tmp/x' FROM t", "mariadb"),
    ("SELECT a INTO @x FROM t", "mysql"),
    ("SELECT a INTO new_table FROM t", "postgresql"),
    ("SELECT a INTO TEMP new_table FROM t", "postgresql"),
])
def test_select_into_is_refused(sql, dialect):
    with pytest.raises(OperationError, match=rf"{READ_ONLY}: SELECT \.\.\. INTO writes"):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("sql", ["SELECT * FROM t FOR UPDATE", "SELECT * FROM t FOR SHARE",
                                 "SELECT * FROM t WHERE a IN (SELECT a FROM u FOR UPDATE)"])
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_locking_clauses_are_refused(sql, dialect):
    with pytest.raises(OperationError, match="locking clauses"):
        check_read_query(sql, dialect, "db")


def test_mysql_lock_in_share_mode_is_refused():
    with pytest.raises(OperationError, match="locking clauses"):
        check_read_query("SELECT * FROM t LOCK IN SHARE MODE", "mariadb", "db")


@pytest.mark.parametrize("sql", [
    "COPY t TO '/tmp/x'",
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "EXPLAIN ANALYZE DELETE FROM t",
    "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN (ANALYZE) SELECT 1",
    "EXPLAIN DELETE FROM t",
    "SHOW search_path",
    "DO $$ BEGIN DELETE FROM t; END $$",
])
def test_postgresql_statements_that_are_not_plain_reads_are_refused(sql):
    with pytest.raises(OperationError, match=READ_ONLY):
        check_read_query(sql, "postgresql", "db")


def test_a_data_modifying_cte_is_refused():
    with pytest.raises(OperationError, match="holds a DELETE statement"):
        check_read_query("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "postgresql", "db")
    with pytest.raises(OperationError, match="only a query that reads may run"):
        check_read_query("WITH x AS (SELECT 1) DELETE FROM t", "sqlite", "db")


@pytest.mark.parametrize("dialect", ALL)
def test_explain_of_a_read_is_allowed_and_named(dialect):
    assert check_read_query("EXPLAIN SELECT * FROM t", dialect, "db") == "EXPLAIN"
    assert check_read_query("SELECT 1", dialect, "db") == "SELECT"


def test_mysql_hints_and_executable_comments_are_refused():
    with pytest.raises(OperationError, match="executable comments and hints"):
        check_read_query("SELECT /*+ SET_VAR(max_execution_time=0) */ 1", "mysql", "db")


def test_what_the_parser_does_not_understand_is_refused():
    with pytest.raises(OperationError, match="could not be parsed as mysql SQL"):
        check_read_query("SELECT 1 FROM", "mysql", "db")
    with pytest.raises(OperationError, match="could not be parsed|could not be read"):
        check_read_query("SELECT " + "(" * 5000 + "1" + ")" * 5000, "postgresql", "db")


def test_the_servers_backslash_setting_is_followed():
    from orchestrator.sources.sql_guard import ServerQuoting

    hidden = "SELECT '\\' , LOAD_FILE('/etc/passwd') -- '"
    # With backslash escapes (MySQL's default) that is one string: harmless.
    check_read_query(hidden, "mysql", "db")
    # Under NO_BACKSLASH_ESCAPES the string ends at the second quote and LOAD_FILE runs: refused.
    with pytest.raises(OperationError, match=READ_ONLY):
        check_read_query(hidden, "mysql", "db", ServerQuoting(backslash_escapes=False))
    # ANSI_QUOTES: "..." is a name, in which a backslash escapes nothing.
    ansi = 'SELECT "a\\" , LOAD_FILE(\'/etc/passwd\') -- " AS x'
    with pytest.raises(OperationError, match=READ_ONLY):
        check_read_query(ansi, "mysql", "db", ServerQuoting(ansi_quotes=True))
    # PostgreSQL with standard_conforming_strings off reads backslashes in plain strings.
    pg = "SELECT 'a\\' , 1 AS b -- '"
    check_read_query(pg, "postgresql", "db")
    with pytest.raises(OperationError, match="would read the text near offset 7 .* differently"):
        check_read_query(pg, "postgresql", "db", ServerQuoting(backslash_escapes=True))
