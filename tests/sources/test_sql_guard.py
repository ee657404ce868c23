"""The checks an import's SQL passes before it reaches the database: one statement, one that reads,
with each dialect's quoting understood (a `;` inside a string or comment is not a second statement)."""

from __future__ import annotations

import pytest

from orchestrator.engine import OperationError
from orchestrator.sources.sql_guard import check_read_query

ALL = ["postgresql", "mysql", "mariadb", "sqlite"]


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize(
    "sql",
    [
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
    ],
)
def test_one_reading_statement_passes(dialect, sql):
    check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])  # sqlglot reads MySQL's VALUES only as ROW(...)
def test_values_passes(dialect):
    check_read_query("VALUES (1), (2)", dialect, "db")


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "SELECT 1; DELETE FROM t",
        "SELECT ';'; DROP TABLE t",
        "SELECT 1 /* ; */; UPDATE t SET a = 1",
    ],
)
def test_a_second_statement_is_refused(dialect, sql):
    with pytest.raises(OperationError, match="connection 'db' is read-only for imports: the query holds 2 statements"):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t",
        "drop table t",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "TRUNCATE t",
        "CREATE TABLE u (a int)",
        "ALTER TABLE t ADD b int",
        "GRANT ALL ON t TO x",
        "CALL wipe()",
        "COPY t TO '/tmp/x'",
        "SET ROLE admin",
        "COMMIT",
        "-- SELECT\nDELETE FROM t",
        "/* SELECT */ DELETE FROM t",
    ],
)
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


@pytest.mark.parametrize(
    "sql,dialect",
    [
        ("SELECT LOAD_FILE('/etc/passwd')", "mysql"),
        ("SELECT load_file('/etc/passwd') AS f", "mariadb"),
        ("SELECT pg_read_file('/etc/passwd')", "postgresql"),
        ("SELECT pg_catalog.pg_read_binary_file('/etc/passwd')", "postgresql"),
        ("SELECT * FROM pg_ls_dir('/')", "postgresql"),
        ("SELECT \"pg_read_file\"('/etc/passwd')", "postgresql"),
        ("SELECT lo_import('/etc/passwd')", "postgresql"),
        ("SELECT lo_export(1, '/tmp/x')", "postgresql"),
        ("SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)", "postgresql"),
        ("SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '')", "postgresql"),
        ("SELECT set_config('statement_timeout', '0', false)", "postgresql"),
        ("SELECT pg_advisory_lock(1)", "postgresql"),
        ("SELECT GET_LOCK('x', 10)", "mysql"),
        ("SELECT load_extension('/tmp/evil.so')", "sqlite"),
        ("SELECT a FROM t WHERE a IN (SELECT Pg_Read_File('/etc/passwd'))", "postgresql"),
    ],
)
def test_functions_that_reach_files_servers_or_sessions_are_refused(sql, dialect):
    with pytest.raises(OperationError, match=rf"{READ_ONLY}: function \S+ is not allowed in import_from_database"):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize(
    "sql,dialect",
    [
        ("SELECT * FROM t INTO DUMPFILE '/tmp/x'", "mysql"),
        ("SELECT * INTO OUTFILE '/tmp/x' FROM t", "mariadb"),
        ("SELECT a INTO @x FROM t", "mysql"),
        ("SELECT a INTO new_table FROM t", "postgresql"),
        ("SELECT a INTO TEMP new_table FROM t", "postgresql"),
    ],
)
def test_select_into_is_refused(sql, dialect):
    with pytest.raises(OperationError, match=rf"{READ_ONLY}: SELECT \.\.\. INTO writes"):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t WHERE a IN (SELECT a FROM u FOR UPDATE)",
    ],
)
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_locking_clauses_are_refused(sql, dialect):
    with pytest.raises(OperationError, match="locking clauses"):
        check_read_query(sql, dialect, "db")


def test_mysql_lock_in_share_mode_is_refused():
    with pytest.raises(OperationError, match="locking clauses"):
        check_read_query("SELECT * FROM t LOCK IN SHARE MODE", "mariadb", "db")


@pytest.mark.parametrize(
    "sql",
    [
        "COPY t TO '/tmp/x'",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN (ANALYZE) SELECT 1",
        "EXPLAIN DELETE FROM t",
        "SHOW search_path",
        "DO $$ BEGIN DELETE FROM t; END $$",
    ],
)
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


# Issue 17: an allow-list of functions on sqlglot's tree, U& escapes, system relations

NOT_ALLOWED = r"function {} is not allowed in import_from_database queries; only functions of analysis"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT U&\"pg\\005fread\\005ffile\"('/etc/hostname')",
        'SELECT u&"pg\\005fterminate\\005fbackend"(1)',
        "SELECT U&\"set\\005fconfig\"('statement_timeout', '0', true)",
        "SELECT U&'\\0041' AS a",
        'SELECT * FROM U&"pg\\005fauthid"',
    ],
)
def test_unicode_escapes_are_refused(sql):
    with pytest.raises(OperationError, match=rf"{READ_ONLY}: U&'\.\.\.' and U&\"\.\.\.\" Unicode escapes \(offset "):
        check_read_query(sql, "postgresql", "db")


def test_uescape_is_refused():
    with pytest.raises(OperationError, match=r"UESCAPE \(offset 11\) is not allowed"):
        check_read_query("SELECT 'a' UESCAPE '!' AS a", "postgresql", "db")
    check_read_query("SELECT 'U&\"x\" and uescape are only words here' AS a", "postgresql", "db")


@pytest.mark.parametrize(
    "sql,name",
    [
        # What the old deny list let through on PostgreSQL.
        ("SELECT * FROM crosstab('SELECT 1') AS t(a int)", "crosstab"),
        ("SELECT xpath_table('id', 'x', 't', '/a', 'true')", "xpath_table"),
        ("SELECT database_to_xml(true, true, '')", "database_to_xml"),
        ("SELECT setval('s', 1)", "setval"),
        ("SELECT txid_current()", "txid_current"),
        ("SELECT pg_sleep_for('1 second')", "pg_sleep_for"),
        ("SELECT pg_sleep(1)", "pg_sleep"),
        ("SELECT PG_SLEEP(1)", "PG_SLEEP"),
        ('SELECT "pg_sleep"(1)', "pg_sleep"),
        ("SELECT pg_catalog.pg_sleep(1)", r"pg_catalog\.pg_sleep"),
        ("SELECT pg_sleep /* a comment */ (1)", "pg_sleep"),
        ("SELECT current_setting('data_directory')", "current_setting"),
        ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
        ("SELECT nextval('s')", "nextval"),
        ("SELECT a FROM t ORDER BY pg_sleep(1)", "pg_sleep"),
        ("SELECT * FROM generate_series(1, 2), LATERAL pg_ls_dir('/') AS d", "pg_ls_dir"),
        # Allowed names are allowed only from where the server's own functions live.
        ("SELECT myschema.lower('A')", r"myschema\.lower"),
        ("SELECT * FROM myschema.generate_series(1, 2)", r"myschema\.generate_series"),
    ],
)
def test_postgresql_functions_outside_the_allow_list_are_refused_by_name(sql, name):
    with pytest.raises(OperationError, match=rf"{READ_ONLY}: " + NOT_ALLOWED.format(name)):
        check_read_query(sql, "postgresql", "db")


@pytest.mark.parametrize(
    "sql,name",
    [
        ("SELECT SLEEP(1)", "SLEEP"),
        ("SELECT sleep (1)", "sleep"),
        ("SELECT `SLEEP`(1)", "SLEEP"),
        ("SELECT 1 FROM t WHERE SLEEP(1) = 0", "SLEEP"),
        ("SELECT BENCHMARK(1000000, MD5('a'))", "BENCHMARK"),
        ("SELECT test.lower('A')", r"test\.lower"),
    ],
)
@pytest.mark.parametrize("dialect", ["mysql", "mariadb"])
def test_mysql_sleep_and_benchmark_are_refused(sql, name, dialect):
    with pytest.raises(OperationError, match=rf"{READ_ONLY}: " + NOT_ALLOWED.format(name)):
        check_read_query(sql, dialect, "db")


def test_the_refusal_points_to_the_list():
    with pytest.raises(OperationError) as refused:
        check_read_query("SELECT pg_sleep(1)", "postgresql", "db")
    assert "PostGIS ST_*" in str(refused.value) and "README, section Databases" in str(refused.value)


def test_a_field_selection_that_calls_a_function_is_refused():
    """PostgreSQL runs ('/etc/hostname'::text).pg_read_file as pg_read_file('/etc/hostname')."""
    for sql in [
        "SELECT ('/etc/hostname'::text).pg_read_file",
        "SELECT (x).pg_sleep FROM t",
        "SELECT (SELECT 1.0).pg_sleep",
        'SELECT ((x))."pg_sleep" FROM t',
    ]:
        with pytest.raises(OperationError, match=r"the field selection \.pg_\w+ calls the function"):
            check_read_query(sql, "postgresql", "db")
    # A name the server has no function for is a field; an allowed function is fine either way.
    check_read_query("SELECT (ST_Dump(g)).geom FROM t", "postgresql", "db", is_function=lambda name: name != "geom")
    check_read_query("SELECT (x).upper FROM t", "postgresql", "db")


@pytest.mark.parametrize(
    "dialect,sql",
    [
        ("postgresql", "SELECT * FROM pg_stat_activity"),
        ("postgresql", "SELECT query FROM pg_catalog.pg_stat_activity"),
        ("postgresql", "SELECT * FROM pg_stat_statements"),
        ("postgresql", "SELECT * FROM pg_locks"),
        ("postgresql", "SELECT rolpassword FROM pg_authid"),
        ("postgresql", "SELECT * FROM PG_SHADOW"),
        ("postgresql", "SELECT * FROM pg_user_mappings"),
        ("postgresql", "SELECT * FROM pg_settings"),
        ("postgresql", "SELECT * FROM pg_catalog.pg_largeobject"),
        ("postgresql", "SELECT * FROM pg_toast.pg_toast_1260"),
        ("postgresql", 'SELECT * FROM "pg_catalog"."pg_authid"'),
        ("postgresql", "TABLE pg_authid"),
        ("postgresql", "SELECT * FROM information_schema.user_mapping_options"),
        ("postgresql", "SELECT a FROM t WHERE a IN (SELECT pid FROM pg_stat_activity)"),
        ("mysql", "SELECT * FROM information_schema.processlist"),
        ("mariadb", "SELECT * FROM INFORMATION_SCHEMA.PROCESSLIST"),
        ("mariadb", "SELECT trx_query FROM information_schema.innodb_trx"),
        ("mariadb", "SELECT * FROM information_schema.global_variables"),
        ("mariadb", "SELECT * FROM performance_schema.events_statements_current"),
        ("mariadb", "SELECT * FROM mysql.user"),
        ("mysql", "SELECT * FROM sys.processlist"),
        ("sqlite", "SELECT * FROM sqlite_dbpage"),
    ],
)
def test_relations_that_show_other_sessions_or_secrets_are_refused(dialect, sql):
    with pytest.raises(
        OperationError,
        match=rf"{READ_ONLY}: relation \S+ is not allowed in import_from_database "
        "queries: system relations that show other sessions",
    ):
        check_read_query(sql, dialect, "db")


@pytest.mark.parametrize(
    "sql", ["SELECT @@datadir", "SELECT @@global.secure_file_priv", "SELECT @x := 1", "SELECT a FROM t WHERE b = @x"]
)
def test_mysql_variables_are_refused(sql):
    with pytest.raises(OperationError, match="server and user variables .* are not allowed"):
        check_read_query(sql, "mariadb", "db")


ANALYST_QUERIES = {
    "postgresql": [
        "SELECT label, count(*) AS n, avg(score), stddev(score), variance(score), min(taken_at), max(taken_at), "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY score) AS median, string_agg(name, ', ' ORDER BY name), "
        "array_agg(DISTINCT id), count(*) FILTER (WHERE score > 0.5), bool_and(score > 0) FROM t GROUP BY label "
        "HAVING count(*) > 1 ORDER BY n DESC",
        "SELECT id, row_number() OVER (PARTITION BY label ORDER BY taken_at) AS rn, lag(score) OVER w, "
        "sum(score) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW), ntile(4) OVER w FROM t "
        "WINDOW w AS (ORDER BY id)",
        "SELECT date_trunc('month', taken_at) AS m, extract(year FROM taken_at), date_part('dow', taken_at), "
        "to_char(taken_at, 'YYYY-MM'), now() - interval '1 day', age(taken_at), current_date, "
        "coalesce(note, ''), nullif(a, b), greatest(a, b), least(a, b), CASE WHEN a > 1 THEN 'x' ELSE 'y' END, "
        "round(score::numeric, 2), abs(-1), sqrt(2), ln(3), power(2, 3), lower(name), upper(name), "
        "substring(name FROM 1 FOR 3), trim(name), length(name), replace(name, 'a', 'b'), split_part(name, '-', 1), "
        "regexp_replace(name, 'x', 'y'), concat(a, b), a || b, left(name, 2), md5(name) FROM t",
        "SELECT data->>'k' AS k, data->'a'->0, data #>> '{a,b}', data @> '{}', data ? 'k', jsonb_array_length(data), "
        "json_build_object('a', 1), jsonb_agg(x), to_json(t), jsonb_path_query_first(data, '$.a') FROM t, "
        "LATERAL jsonb_each(t.data) AS e",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT n FROM r",
        "SELECT n FROM generate_series(1, 10) AS g(n) WHERE n = ANY(ARRAY[1, 2]) AND EXISTS (SELECT 1) "
        "AND n IN (SELECT 1) AND n BETWEEN 1 AND 2 AND NOT n IS NULL",
        "SELECT CAST(id AS text), id::bigint, cast(score AS double precision), to_number('12', '99'), "
        "to_date('2024-01-01', 'YYYY-MM-DD'), unnest(ARRAY[1, 2]), array_to_string(ARRAY['a'], ',') FROM t",
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()",
        "SELECT tablename FROM pg_tables UNION SELECT relname FROM pg_catalog.pg_class",
        # PostGIS: every ST_ function, the && operator, casts to geometry and geography.
        "SELECT ST_Area(geom::geography) AS area, ST_AsGeoJSON(ST_Transform(geom, 4326)) AS shape FROM parcels p "
        "WHERE p.geom && ST_MakeEnvelope(0, 0, 1, 1, 4326) AND ST_DWithin(p.geom::geography, "
        "ST_SetSRID(ST_MakePoint(1, 2), 4326)::geography, 100) ORDER BY p.geom <-> ST_MakePoint(1, 2) LIMIT 5",
        "SELECT CAST(g AS geometry(Point, 4326)), geography(g), 'POINT(1 2)'::geometry, public.ST_Area(g), "
        "ST_X(g), ST_Y(g), ST_Buffer(g, 1), ST_Union(g), ST_Intersects(g, g), ST_Centroid(g), "
        "box2d(g), ST_Extent(g) FROM t GROUP BY g",
        "SELECT f_table_name, srid FROM geometry_columns",
    ],
    "mysql": [
        "SELECT label, COUNT(*) AS n, AVG(score), STDDEV(score), GROUP_CONCAT(name ORDER BY name SEPARATOR ', '), "
        "DATE_FORMAT(taken_at, '%Y-%m'), DATE_ADD(taken_at, INTERVAL 1 DAY), IFNULL(note, ''), "
        "IF(score > 1, 'hi', 'lo'), JSON_EXTRACT(j, '$.a'), j->>'$.b', CAST(score AS CHAR), "
        "CONVERT(name USING utf8mb4), TIMESTAMPDIFF(DAY, a, b), ROUND(score, 2), "
        "ST_Distance_Sphere(POINT(1, 2), POINT(3, 4)), NOW(), CURDATE(), YEAR(taken_at), "
        "SUBSTRING_INDEX(name, '-', 1), CONCAT_WS('-', a, b) FROM t GROUP BY label",
        "SELECT id, ROW_NUMBER() OVER (PARTITION BY label ORDER BY id), LAG(score) OVER (ORDER BY id) FROM t",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
    ],
    "sqlite": [
        "SELECT label, count(*), total(score), avg(score), group_concat(name, ','), strftime('%Y', taken_at), "
        "date('now'), datetime(taken_at, '+1 day'), julianday(a) - julianday(b), json_extract(j, '$.a'), "
        "j ->> '$.b', iif(a, 1, 2), printf('%d', 1), substr(name, 1, 2), ifnull(note, ''), coalesce(a, b) "
        "FROM t, json_each(t.j) GROUP BY label",
        "SELECT id, row_number() OVER (ORDER BY id), sum(score) OVER (PARTITION BY label) FROM t",
        "SELECT name FROM sqlite_master WHERE type = 'table'",
    ],
}


@pytest.mark.parametrize("dialect,sql", [(d, q) for d, queries in ANALYST_QUERIES.items() for q in queries])
def test_analyst_queries_pass(dialect, sql):
    check_read_query(sql, dialect, "db")
    if dialect == "mysql":
        check_read_query(sql, "mariadb", "db")


# Written with the syntax these need (the loop below tries plain argument lists).
SPECIAL_FORMS = {
    "cast": "cast(a AS char)",
    "convert": "convert(a USING utf8mb4)",
    "date_add": "date_add(a, INTERVAL 1 DAY)",
    "date_sub": "date_sub(a, INTERVAL 1 DAY)",
}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_every_allowed_function_passes(dialect):
    """sqlglot turns some calls into other functions (MySQL's DATE_FORMAT(t) reads its argument as a
    TS_OR_DS_TO_TIMESTAMP): each allowed name must still pass, with one argument list or another."""
    from orchestrator.sources.sql_guard import ALLOWED_FUNCTIONS

    refused = {}
    for name in sorted(ALLOWED_FUNCTIONS[dialect] - {"div"}):  # div is an operator in MySQL and absent in SQLite
        forms = (
            [SPECIAL_FORMS[name]]
            if name in SPECIAL_FORMS and dialect == "mysql"
            else [f"{name}({args})" for args in ("a", "a, b", "a, b, c", "", "'x', 'y'", "1, 2, 3, 4")]
        )
        errors = []
        for form in forms:
            try:
                check_read_query(f"SELECT {form} AS v FROM t", dialect, "db")
                break
            except OperationError as exc:
                errors.append(str(exc))
        else:
            refused[name] = errors[0]
    assert not refused, refused


def test_the_readme_lists_the_allowed_functions():
    """Refusals point to the README's list: it must be the guard's own."""
    import re
    from pathlib import Path

    from orchestrator.sources.sql_guard import ALLOWED_FUNCTIONS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("<summary>Functions an import may call</summary>")
    block = readme[start : readme.index("</details>", start)]
    parts = re.split(r"\n(?:MySQL and MariaDB|SQLite)\b[^\n]*:\n", block.split(":\n", 1)[1])
    listed = [set(re.findall(r"[a-z_0-9]+", part)) for part in parts]
    assert listed == [set(ALLOWED_FUNCTIONS[d]) for d in ("postgresql", "mysql", "sqlite")]
