"""Checks on the SQL text of an import before it reaches the database: one statement, one that reads.

The statement is parsed with a real SQL parser (sqlglot) in the connection's dialect (PostgreSQL,
MySQL for MariaDB/MySQL, SQLite), and only what parses as exactly one read runs: SELECT,
WITH ... SELECT, UNION/INTERSECT/EXCEPT of those, VALUES, or a plain EXPLAIN of one of these.
The parsed tree is then walked: SELECT ... INTO (a file, a table or variables), locking clauses
(FOR UPDATE/SHARE, LOCK IN SHARE MODE) and any statement nested inside (a data-modifying CTE) are
refused. Functions are allowed, not denied: a call runs only if the name it is written with is on
the dialect's list of functions of analysis (ALLOWED_FUNCTIONS, and ST_* for PostGIS), so whatever
reaches files, other servers, other sessions, settings or sleeps is refused by name, including the
ones nobody thought to list. Relations of the system schemas that show other sessions, settings or
secrets (pg_stat_activity, pg_authid, PROCESSLIST, mysql.*, performance_schema.*) are refused too.

A parser only helps if it splits the text the way the database will. So, before parsing:

- Control characters are refused anywhere in the text, strings included, except tab and newline
  (and a carriage return before a newline). MariaDB ends a `--` comment differently from other
  parsers when a control character follows it; refusing them everywhere is simpler and safer than
  guessing where each server draws the line. A value that needs one goes in `params`.
- The text is also read by a small scanner that follows the server's own rules for comments,
  strings and quoted names (MySQL's `--` needs a space after it, PostgreSQL nests block comments,
  backslash escapes follow the server's `sql_mode` / `standard_conforming_strings`), and sqlglot's
  tokens must classify every character the same way: code as code, a literal as one literal,
  comment as comment. Any disagreement is refused, since it is exactly where a statement could hide.
- MySQL comments the server executes (`/*! ... */`, `/*M! ... */`) or reads (`/*+ ... */` hints,
  which can set variables) are refused.
- PostgreSQL's U&"..." and U&'...' (and UESCAPE) are refused: the server decodes U&"pg\\005fread\\005ffile"
  to pg_read_file, a name no check of the text as written would see.

The read-only transaction (see databases.py) is the second layer: it is what stops a write that
these checks did not recognise (an operator or a type's input function a database user defined, say).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from orchestrator.engine import OperationError

# What a guarded query may be at its top.
READS = "SELECT, WITH ... SELECT, UNION/INTERSECT/EXCEPT of those, VALUES, or EXPLAIN of one"
_FIRST_WORDS = ("SELECT", "WITH", "VALUES", "TABLE", "(")

# Functions a query may call: those of analysis, by the name it is written with (any case). Anything
# else is refused by name: the server's files, programs, other sessions, settings, sleeps, SQL run
# from a string, and whatever else a database offers that this list does not name. An allow-list,
# because each server has hundreds of functions and new ones arrive with every version.
_AGGREGATES = """
    count sum avg min max stddev stddev_pop stddev_samp variance var_pop var_samp bit_and bit_or bit_xor
    percentile_cont percentile_disc median mode corr covar_pop covar_samp regr_avgx regr_avgy regr_count
    regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy any_value
"""
_WINDOW = "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value"
_MATHS = """
    abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 log2 power pow mod pi degrees radians
    sin cos tan cot asin acos atan atan2 sinh cosh tanh asinh acosh atanh greatest least
"""
_CONDITIONALS = "coalesce nullif"
_POSTGRESQL = f"""
    {_AGGREGATES} {_WINDOW} {_MATHS} {_CONDITIONALS}
    string_agg array_agg json_agg jsonb_agg json_object_agg jsonb_object_agg json_objectagg json_arrayagg
    bool_and bool_or every range_agg range_intersect_agg
    div gcd lcm factorial width_bucket scale min_scale trim_scale random
    sind cosd tand cotd asind acosd atand atan2d erf erfc
    num_nulls num_nonnulls
    ascii bit_length btrim char_length character_length chr concat concat_ws format initcap left length lower
    lpad ltrim md5 normalize octet_length overlay position quote_ident quote_literal quote_nullable
    regexp_count regexp_instr regexp_like regexp_match regexp_matches regexp_replace regexp_split_to_array
    regexp_split_to_table regexp_substr repeat replace reverse right rpad rtrim split_part starts_with
    string_to_array string_to_table strpos substr substring translate trim upper to_hex encode decode
    convert_from convert_to sha224 sha256 sha384 sha512 unistr
    to_char to_number to_date to_timestamp
    age clock_timestamp date_add date_subtract date_bin date_part date_trunc extract isfinite justify_days
    justify_hours justify_interval make_date make_interval make_time make_timestamp make_timestamptz now
    statement_timestamp timeofday transaction_timestamp timezone
    to_json to_jsonb array_to_json row_to_json json_build_array jsonb_build_array json_build_object
    jsonb_build_object json_object jsonb_object json_array json_array_elements jsonb_array_elements
    json_array_elements_text jsonb_array_elements_text json_array_length jsonb_array_length json_each jsonb_each
    json_each_text jsonb_each_text json_extract_path jsonb_extract_path json_extract_path_text
    jsonb_extract_path_text json_object_keys jsonb_object_keys json_to_record jsonb_to_record json_to_recordset
    jsonb_to_recordset json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty
    json_typeof jsonb_typeof jsonb_path_exists jsonb_path_match jsonb_path_query jsonb_path_query_array
    jsonb_path_query_first json_scalar json_serialize json_exists json_query json_value
    array_append array_cat array_dims array_fill array_length array_lower array_ndims array_position
    array_positions array_prepend array_remove array_replace array_to_string array_upper cardinality unnest
    generate_series generate_subscripts trim_array
    isempty lower_inc upper_inc lower_inf upper_inf range_merge int4range int8range numrange tsrange tstzrange
    daterange
    to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd ts_headline
    gen_random_uuid current_database current_schema pg_typeof pg_size_pretty version
    geometry geography box2d box3d postgis_version postgis_full_version postgis_lib_version
"""
_MYSQL = f"""
    {_AGGREGATES} {_WINDOW} {_MATHS} {_CONDITIONALS}
    std group_concat json_arrayagg json_objectagg
    conv crc32 rand truncate
    ascii bin bit_length char char_length character_length concat concat_ws elt export_set field find_in_set
    format from_base64 to_base64 hex unhex insert instr lcase left length locate lower lpad ltrim make_set mid
    oct octet_length ord position quote regexp_instr regexp_like regexp_replace regexp_substr repeat replace
    reverse right rpad rtrim soundex space strcmp substr substring substring_index trim ucase upper md5 sha
    sha1 sha2 natural_sort_key
    adddate addtime convert_tz curdate current_date current_time current_timestamp curtime date date_add
    date_format date_sub datediff day dayname dayofmonth dayofweek dayofyear extract from_days from_unixtime
    get_format hour last_day localtime localtimestamp makedate maketime microsecond minute month monthname now
    period_add period_diff quarter sec_to_time second str_to_date subdate subtime sysdate time time_format
    time_to_sec timediff timestamp timestampadd timestampdiff to_days to_seconds unix_timestamp utc_date
    utc_time utc_timestamp week weekday weekofyear year yearweek
    json_array json_array_append json_array_insert json_contains json_contains_path json_depth json_extract
    json_insert json_keys json_length json_merge json_merge_patch json_merge_preserve json_object json_overlaps
    json_pretty json_quote json_remove json_replace json_search json_set json_type json_unquote json_valid
    json_value json_query json_exists json_detailed json_compact json_loose json_normalize json_equals
    if ifnull isnull cast convert database schema version
    point linestring polygon multipoint multilinestring multipolygon geometrycollection
"""
_SQLITE = f"""
    {_AGGREGATES} {_WINDOW} {_MATHS} {_CONDITIONALS}
    total group_concat string_agg json_group_array json_group_object jsonb_group_array jsonb_group_object
    char concat concat_ws format printf glob hex ifnull iif instr length like likely unlikely likelihood lower
    ltrim octet_length quote random randomblob replace rtrim soundex substr substring trim typeof unhex unicode
    upper zeroblob
    date time datetime julianday unixepoch strftime timediff
    json jsonb json_array jsonb_array json_array_length json_error_position json_extract jsonb_extract
    json_insert jsonb_insert json_object jsonb_object json_patch jsonb_patch json_remove jsonb_remove
    json_replace jsonb_replace json_set jsonb_set json_type json_valid json_quote json_each json_tree
"""
ALLOWED_FUNCTIONS = {
    "postgresql": frozenset(_POSTGRESQL.split()),
    "mysql": frozenset(_MYSQL.split()),
    "sqlite": frozenset(_SQLITE.split()),
}
ALLOWED_FUNCTIONS["mariadb"] = ALLOWED_FUNCTIONS["mysql"]
# Spatial functions: PostGIS's (and MySQL's own) all start with ST_ and compute on the values given.
_SPATIAL_PREFIX = {"postgresql": "st_", "mysql": "st_", "mariadb": "st_"}
# A function may be named with its schema where the server's built-ins (and PostGIS, usually in public) live.
_FUNCTION_SCHEMAS = {"postgresql": frozenset({"pg_catalog", "public"})}
_FUNCTIONS_HELP = (
    "only functions of analysis are allowed: aggregates, window functions, maths, text, date/time, JSON, "
    "casts and conditionals{spatial} (the list: README, section Databases)"
)

# Operators and SQL syntax that sqlglot represents as functions without a name the user wrote
# (CAST, x::type, EXTRACT, CASE, CURRENT_DATE, the JSON and array operators...). A node of another
# class with no written name is refused too, naming its class.
_SYNTAX = frozenset(
    {
        "Cast",
        "TryCast",
        "Extract",
        "Trim",
        "Substring",
        "StrPosition",
        "Overlay",
        "GroupConcat",
        "Case",
        "If",
        "CurrentDate",
        "CurrentTime",
        "CurrentTimestamp",
        "CurrentDatetime",
        "Localtime",
        "Localtimestamp",
        "CurrentUser",
        "SessionUser",
        "CurrentRole",
        "CurrentSchema",
        "CurrentCatalog",
        "Array",
        "Exists",
        "Any",
        "All",
        "Unnest",
        "Explode",
        "Chr",
        "Ceil",
        "Floor",
        "Initcap",
        "Normalize",
        "Convert",
        "JSONObject",
        "JSONArrayAgg",
        "JSONObjectAgg",
        "JSONValue",
        "JSONBExists",
        "Struct",
        "Interval",
        "Coalesce",
        "Variadic",
        # Made by sqlglot inside a named function it understood (date_format's argument, week's...).
        "TsOrDsToDate",
        "TsOrDsToTimestamp",
        "TsOrDsToTime",
        "TimeStrToTime",
        "StrToTime",
        "UnixToTime",
        "TimeStrToDate",
        "DateStrToDate",
        "Date",
        "Time",
        "Timestamp",
    }
)
_OPERATORS = (exp.Binary, exp.Unary, exp.Connector, exp.Predicate)

# Relations that show other sessions, server settings or secrets. PostgreSQL's catalog (pg_catalog,
# where an unqualified pg_* name resolves first) is allow-listed: only what describes the schema.
_PG_CATALOG_ALLOWED = frozenset(
    """
    pg_tables pg_views pg_matviews pg_indexes pg_sequences pg_class pg_namespace pg_attribute pg_attrdef pg_type
    pg_constraint pg_index pg_inherits pg_description pg_enum pg_extension pg_available_extensions pg_collation
    pg_am pg_range pg_timezone_names pg_timezone_abbrevs pg_database pg_depend pg_partitioned_table
""".split()
)
_PG_INFORMATION_SCHEMA_DENIED = frozenset(
    {"user_mappings", "user_mapping_options", "foreign_server_options", "foreign_servers"}
)
# MySQL/MariaDB: information_schema also lists other sessions (PROCESSLIST, INNODB_TRX), statuses and
# privileges; only its descriptions of tables stay. Whole schemas hold accounts, statements and settings.
_MYSQL_INFORMATION_SCHEMA_ALLOWED = frozenset(
    """
    tables columns schemata views statistics key_column_usage table_constraints referential_constraints
    check_constraints partitions character_sets collations collation_character_set_applicability engines
    keywords sql_functions spatial_ref_sys geometry_columns st_spatial_reference_systems st_geometry_columns
    st_units_of_measure
""".split()
)
_MYSQL_DENIED_SCHEMAS = frozenset({"mysql", "performance_schema", "sys"})
_SQLITE_DENIED_RELATIONS = frozenset({"sqlite_dbpage", "sqlite_stmt"})

# Statements that may never appear anywhere inside a read (e.g. a PostgreSQL data-modifying CTE).
_NOT_READS = tuple(
    node
    for name in (
        "Insert",
        "Update",
        "Delete",
        "Merge",
        "Create",
        "Drop",
        "Alter",
        "Command",
        "Copy",
        "Set",
        "Transaction",
        "Commit",
        "Rollback",
        "TruncateTable",
        "LoadData",
        "Use",
        "Pragma",
        "Grant",
        "Revoke",
        "Describe",
        "Analyze",
        "Refresh",
        "Cache",
        "Uncache",
        "Kill",
        "Comment",
        "Execute",
        "Call",
    )
    if isinstance(node := getattr(exp, name, None), type)
)
_READ_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)

_LITERAL_TOKENS = {
    TokenType.STRING,
    TokenType.NATIONAL_STRING,
    TokenType.HEX_STRING,
    TokenType.BIT_STRING,
    TokenType.BYTE_STRING,
    TokenType.RAW_STRING,
    TokenType.HEREDOC_STRING,
    TokenType.UNICODE_STRING,
}
_LITERAL_PREFIX = re.compile(r"^(?:[A-Za-z]{1,2}|[Uu]&)$")  # E'..', N'..', X'..', B'..', U&'..'
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_SQLGLOT_DIALECT = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
_WRITTEN = "constellation_written_name"


@dataclass(frozen=True)
class ServerQuoting:
    """How the server reads quotes, when it departs from its default (see `server_quoting` in databases.py)."""

    backslash_escapes: bool | None = None  # in plain '...' strings; None: the dialect's default
    ansi_quotes: bool = False  # MySQL's ANSI_QUOTES: "x" is a name, not a string


def check_read_query(
    sql: str,
    dialect: str,
    connection: str,
    quoting: ServerQuoting = ServerQuoting(),
    is_function: Callable[[str], bool] | None = None,
) -> str:
    """Raise OperationError unless `sql` is one statement that reads; return "EXPLAIN" or "SELECT".

    `dialect` is SQLAlchemy's name for the database (postgresql, mysql, mariadb, sqlite).
    `is_function(name)` says whether the server has a function of that name (any case): PostgreSQL
    reads `(x).name` as the call name(x) when `x` has no field `name`, so such a selection is refused
    when `name` is a function that is not allowed. Without it, every such name counts as a function.
    """
    refuse = _refuser(connection)
    if dialect not in _SQLGLOT_DIALECT:
        raise refuse(f"queries on a {dialect} database cannot be checked")
    if control := _CONTROL.search(sql):
        raise refuse(
            f"the query holds the control character U+{ord(control.group()[0]):04X} at offset {control.start()}; "
            "only tab and newline may appear in it (pass such a value in params)"
        )
    spans = _server_spans(sql, dialect, quoting, refuse)
    code = [(start, end) for kind, start, end in spans if kind == "code"]
    for start, end in code:
        if uescape := re.compile(r"(?<![A-Za-z0-9_$])uescape(?![A-Za-z0-9_$])", re.IGNORECASE).search(sql, start, end):
            raise refuse(f"UESCAPE (offset {uescape.start()}) is not allowed: names and strings are taken as written")
    words = _code_words(sql, code)
    if not words:
        raise OperationError(f"the query for connection {connection!r} is empty")
    first = words[0].upper()
    kind = "SELECT"
    body_start = 0
    if first == "EXPLAIN":
        following = words[1].upper() if len(words) > 1 else ""
        if following not in _FIRST_WORDS:
            raise refuse(
                f"EXPLAIN may only be followed by the query itself (found {following or 'nothing'}): "
                "EXPLAIN ANALYZE runs the statement, and EXPLAIN's options are not allowed"
            )
        kind, body_start = "EXPLAIN", _word_end(sql, code)
    elif first not in _FIRST_WORDS:
        raise refuse(f"the query starts with {words[0][:20]}, but only a query that reads may run ({READS})")

    # sqlglot reads EXPLAIN as an opaque command: give it the body only, blanked in front so offsets hold.
    tokens = _tokens(" " * body_start + sql[body_start:], dialect, refuse)
    _same_reading(sql, spans, tokens, body_start, refuse)
    body = [t for t in tokens if t.start >= body_start]
    statements = _split_statements(body)
    if not statements:
        raise OperationError(f"the query for connection {connection!r} is empty")
    if len(statements) > 1:
        raise refuse(f"the query holds {len(statements)} statements; give exactly one (a trailing ';' is fine)")
    _refuse_into(statements[0], refuse)
    tree = _parse(sql[body_start:], dialect, refuse)
    if not isinstance(tree, _READ_ROOTS):
        raise refuse(f"the query is a {tree.key.upper()} statement, but only a query that reads may run ({READS})")
    _walk(tree, dialect, refuse, is_function or (lambda name: True))
    return kind


def _refuser(connection: str):
    def refuse(reason: str) -> OperationError:
        return OperationError(f"connection {connection!r} is read-only for imports: {reason}")

    return refuse


# The server's own reading: which characters are code, literals (strings, quoted names) or comments.


def _server_spans(sql: str, dialect: str, quoting: ServerQuoting, refuse) -> list[tuple[str, int, int]]:
    """Split `sql` into ("code" | "literal" | "space", start, end) spans the way the server reads it."""
    mysql = dialect in ("mysql", "mariadb")
    postgres = dialect == "postgresql"
    backslash = quoting.backslash_escapes if quoting.backslash_escapes is not None else mysql
    spans: list[tuple[str, int, int]] = []
    i, n = 0, len(sql)
    while i < n:
        c, nxt = sql[i], sql[i + 1 : i + 2]
        kind = "literal"
        if c in " \t\r\n":
            kind, end = "space", i + 1
        elif c == "-" and nxt == "-" and (not mysql or i + 2 >= n or sql[i + 2] in " \t\r\n"):
            kind, end = "space", _line_end(sql, i)
        elif c == "#" and mysql:
            kind, end = "space", _line_end(sql, i)
        elif c == "/" and nxt == "*":
            if mysql and re.match(r"/\*(!|M!|\+)", sql[i:]):
                raise refuse(
                    "MySQL executable comments and hints (/*! ... */, /*M! ... */, /*+ ... */) are not allowed"
                )
            kind, end = "space", _block_comment_end(sql, i, nested=postgres)
        elif c in "uU" and nxt == "&" and sql[i + 2 : i + 3] in ("'", '"'):
            # PostgreSQL decodes U&"pg\005fread\005ffile" to pg_read_file after any check of the text
            # could look at it: names and strings are taken only as written.
            raise refuse(
                f"U&'...' and U&\"...\" Unicode escapes (offset {i}) are not allowed; write the characters "
                "themselves, or pass the value in params"
            )
        elif c == "'":
            escapes = backslash or (postgres and i > 0 and sql[i - 1] in "eE" and not _word_char(sql, i - 2))
            end = _quoted_end(sql, i, "'", backslash=escapes)
        elif c == '"':
            end = _quoted_end(sql, i, '"', backslash=mysql and backslash and not quoting.ansi_quotes)
        elif c == "`" and (mysql or dialect == "sqlite"):
            end = _quoted_end(sql, i, "`", backslash=False)
        elif c == "[" and dialect == "sqlite":
            close = sql.find("]", i + 1)
            end = n if close < 0 else close + 1
        elif c == "$" and postgres and not _word_char(sql, i - 1) and (tag := _DOLLAR_TAG.match(sql, i)):
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
        else:
            kind, end = "code", i + 1
        if spans and spans[-1][0] == kind and kind != "literal" and spans[-1][2] == i:
            spans[-1] = (kind, spans[-1][1], end)
        else:
            spans.append((kind, i, end))
        i = end
    return spans


def _code_words(sql: str, code: list[tuple[int, int]]) -> list[str]:
    text = " ".join(sql[start:end] for start, end in code)
    return re.findall(r"\(|[A-Za-z_]+|[^\sA-Za-z_(;]+", text)[:2]


def _word_end(sql: str, code: list[tuple[int, int]]) -> int:
    """Where the first word of the code ends (the body of an EXPLAIN starts there)."""
    for start, end in code:
        if match := re.compile(r"[A-Za-z_]+").search(sql, start, end):
            return match.end()
    return len(sql)


def _word_char(sql: str, i: int) -> bool:
    return i >= 0 and (sql[i].isalnum() or sql[i] in "_$")


def _line_end(sql: str, i: int) -> int:
    end = sql.find("\n", i)
    return len(sql) if end < 0 else end


def _block_comment_end(sql: str, i: int, nested: bool) -> int:
    depth, j = 1, i + 2
    while j < len(sql) and depth:
        if sql.startswith("*/", j):
            depth, j = depth - 1, j + 2
        elif nested and sql.startswith("/*", j):
            depth, j = depth + 1, j + 2
        else:
            j += 1
    return j


def _quoted_end(sql: str, i: int, quote: str, backslash: bool) -> int:
    """Index just past the literal opened at `i` (a doubled quote stays inside it)."""
    j = i + 1
    while j < len(sql):
        if backslash and sql[j] == "\\":
            j += 2
        elif sql[j] == quote:
            if sql[j + 1 : j + 2] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(sql)


# sqlglot's reading, compared with the server's.


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs warnings for what it cannot fully parse; we report it ourselves."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _tokens(sql: str, dialect: str, refuse) -> list[Token]:
    try:
        with _quiet_sqlglot():
            return Dialect.get_or_raise(_SQLGLOT_DIALECT[dialect]).tokenize(sql)
    except Exception as exc:  # sqlglot's TokenError, or anything else its tokenizer trips on
        raise refuse(f"the query could not be read as {dialect} SQL: {_first_line(exc)}") from None


def _is_literal(token: Token, sql: str) -> bool:
    if token.token_type in _LITERAL_TOKENS:
        return True
    return token.token_type == TokenType.IDENTIFIER and sql[token.start : token.start + 1] in '"`['


def _same_reading(sql: str, spans: list[tuple[str, int, int]], tokens: list[Token], body: int, refuse) -> None:
    """Refuse unless sqlglot's tokens and the server's reading agree on every character of the body."""
    theirs = ["space"] * len(sql)
    for token in tokens:
        kind = "literal" if _is_literal(token, sql) else "code"
        for i in range(token.start, token.end + 1):
            theirs[i] = kind
    literal_ends = {t.end + 1 for t in tokens if _is_literal(t, sql)}
    for index, (kind, start, end) in enumerate(spans):
        if end <= body:
            continue
        start = max(start, body)
        if kind == "literal":
            if end not in literal_ends or any(theirs[i] != "literal" for i in range(start, end)):
                raise refuse(_ambiguous(sql, start))
            continue
        if kind == "space" and all(theirs[i] in ("space", "code") for i in range(start, end)):
            # Plain blanks inside one of sqlglot's multi-word tokens (ORDER BY, UNION ALL) are fine;
            # comments are not: sqlglot must see them as comments too.
            if sql[start:end].strip(" \t\r\n") == "" or all(theirs[i] == "space" for i in range(start, end)):
                continue
        differ = next((i for i in range(start, end) if theirs[i] != kind), None)
        if differ is None:
            continue
        # A literal's prefix (E'..', N'..', X'..', U&'..') is code to the scanner, part of the literal to
        # sqlglot: allowed when it is the very end of a code span followed by the literal.
        prefix = (
            kind == "code"
            and index + 1 < len(spans)
            and spans[index + 1][0] == "literal"
            and _LITERAL_PREFIX.match(sql[differ:end])
            and all(theirs[j] == "literal" for j in range(differ, end))
        )
        if not prefix:
            raise refuse(_ambiguous(sql, differ))


def _ambiguous(sql: str, offset: int) -> str:
    return (
        f"the database and the query checker would read the text near offset {offset} ({sql[offset : offset + 20]!r}) "
        "differently (a comment, quote or escape); write it plainly"
    )


def _split_statements(tokens: list[Token]) -> list[list[Token]]:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def _refuse_into(tokens: list[Token], refuse) -> None:
    for token in tokens:
        if token.token_type == TokenType.INTO:
            raise refuse("SELECT ... INTO writes a file, a table or variables; only a query that reads may run")


def _reader(dialect: str) -> Dialect:
    """sqlglot's dialect, told to keep the name each known function was written with (`meta["written"]`)."""
    reader = type(Dialect.get_or_raise(_SQLGLOT_DIALECT[dialect]))()
    reader.ORIGINAL_NAME_META_KEY = _WRITTEN  # this instance only: sqlglot's shared dialects stay as they are
    return reader


def _parse(sql: str, dialect: str, refuse) -> exp.Expr:
    try:
        with _quiet_sqlglot():
            parsed = _reader(dialect).parse(sql)
        # A comment after the last ';' comes back as an empty "statement" holding it.
        trees = [tree for tree in parsed if tree is not None and not isinstance(tree, exp.Semicolon)]
    except Exception as exc:  # ParseError, TokenError, RecursionError on absurd nesting...
        raise refuse(
            f"the query could not be parsed as {dialect} SQL ({_first_line(exc)}); only a query that the checker "
            f"understands may run ({READS})"
        ) from None
    if len(trees) != 1:
        raise refuse(f"the query holds {len(trees)} statements; give exactly one")
    return trees[0]


def _walk(tree: exp.Expr, dialect: str, refuse, is_function: Callable[[str], bool]) -> None:
    mysql = dialect in ("mysql", "mariadb")
    for node in tree.walk():
        if isinstance(node, exp.Into):
            raise refuse("SELECT ... INTO writes a file, a table or variables; only a query that reads may run")
        if isinstance(node, exp.Lock):
            raise refuse("locking clauses (FOR UPDATE, FOR SHARE, LOCK IN SHARE MODE) are not allowed in an import")
        if isinstance(node, _NOT_READS):
            raise refuse(f"the query holds a {node.key.upper()} statement; only a query that reads may run ({READS})")
        if isinstance(node, exp.Func):
            _check_function(node, dialect, refuse)
        elif isinstance(node, exp.Table):
            _check_relation(node, dialect, refuse)
        elif dialect == "postgresql" and isinstance(node, exp.Dot) and isinstance(node.expression, exp.Identifier):
            # ('/etc/hostname'::text).pg_read_file runs pg_read_file('/etc/hostname'): a field selection is a
            # call unless the value has that field. (ST_Dump(g)).geom stays fine: geom is no function.
            field = node.expression.name
            if not function_allowed(field, dialect) and is_function(field):
                raise refuse(
                    f"the field selection .{field} calls the function {field} (PostgreSQL reads (x).{field} as "
                    f"{field}(x)); function {field} is not allowed in import_from_database queries; "
                    + _FUNCTIONS_HELP.format(spatial=", PostGIS ST_*")
                )
        elif mysql and isinstance(node, exp.SessionParameter | exp.Parameter | exp.PropertyEQ):
            # @@datadir reads the server's settings; @x := 1 stays set on a pooled connection for the next run.
            raise refuse(
                f"server and user variables ({node.sql('mysql')[:40]}) are not allowed in import_from_database "
                "queries; pass values in params"
            )


def function_allowed(name: str, dialect: str) -> bool:
    """Whether an import's query may call `name` on a `dialect` database (SQLAlchemy's dialect name)."""
    lowered = name.lower()
    prefix = _SPATIAL_PREFIX.get(dialect)
    return lowered in ALLOWED_FUNCTIONS[dialect] or bool(prefix and lowered.startswith(prefix))


def _check_function(node: exp.Func, dialect: str, refuse) -> None:
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        name = node.name
    elif written := node.meta.get(_WRITTEN):
        name = str(written)
    elif type(node).__name__ in _SYNTAX or isinstance(node, _OPERATORS):
        return  # written as an operator or as SQL syntax, not called by a name
    else:
        name = node.sql_name().lower()
    qualifier = _qualifier(node)
    allowed = function_allowed(name, dialect)
    if qualifier is not None and qualifier not in _FUNCTION_SCHEMAS.get(dialect, ()):
        allowed = False
    if not allowed:
        spatial = ", PostGIS ST_*" if dialect == "postgresql" else ", ST_*" if dialect in _SPATIAL_PREFIX else ""
        shown = f"{qualifier}.{name}" if qualifier is not None else name
        raise refuse(
            f"function {shown} is not allowed in import_from_database queries; "
            + _FUNCTIONS_HELP.format(spatial=spatial)
        )


def _qualifier(node: exp.Expr) -> str | None:
    """The schema a call names (`pg_catalog` in pg_catalog.lower(x)), lower-cased; None when it names none."""
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        parts = [part.name for part in parent.this.find_all(exp.Identifier)] or [parent.this.name]
        return ".".join(parts).lower()
    if isinstance(parent, exp.Table) and parent.this is node and (parent.db or parent.catalog):
        return ".".join(part for part in (parent.catalog, parent.db) if part).lower()  # FROM schema.f(...)
    return None


def _check_relation(table: exp.Table, dialect: str, refuse) -> None:
    name, schema = table.name.lower(), table.db.lower()
    if not name:
        return  # a function in FROM, checked as a function
    shown = f"{schema}.{name}" if schema else name
    if dialect == "postgresql":
        denied = (
            (schema in ("", "pg_catalog") and name.startswith("pg_") and name not in _PG_CATALOG_ALLOWED)
            or (schema == "pg_catalog" and name not in _PG_CATALOG_ALLOWED)
            or (schema.startswith("pg_") and schema != "pg_catalog")
            or (schema == "information_schema" and name in _PG_INFORMATION_SCHEMA_DENIED)
        )
    elif dialect in ("mysql", "mariadb"):
        denied = schema in _MYSQL_DENIED_SCHEMAS or (
            schema == "information_schema" and name not in _MYSQL_INFORMATION_SCHEMA_ALLOWED
        )
    else:
        denied = name in _SQLITE_DENIED_RELATIONS
    if denied:
        raise refuse(
            f"relation {shown} is not allowed in import_from_database queries: system relations that show other "
            "sessions, server settings or secrets are refused (the catalog's descriptions of tables and columns "
            "are allowed)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return re.sub(r"\x1b\[[0-9;]*m", "", text[0])[:300] if text else type(exc).__name__
