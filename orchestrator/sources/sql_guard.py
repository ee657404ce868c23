"""Checks on the SQL text of an import before it reaches the database: one statement, one that reads.

The statement is parsed with a real SQL parser (sqlglot) in the connection's dialect (PostgreSQL,
MySQL for MariaDB/MySQL, SQLite), and only what parses as exactly one read runs: SELECT,
WITH ... SELECT, UNION/INTERSECT/EXCEPT of those, VALUES, or a plain EXPLAIN of one of these.
The parsed tree is then walked: SELECT ... INTO (a file, a table or variables), locking clauses
(FOR UPDATE/SHARE, LOCK IN SHARE MODE), any statement nested inside (a data-modifying CTE) and the
functions that reach the server's files, other servers or other sessions (LOAD_FILE, pg_read_file,
lo_import, dblink, ...) are refused.

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

The read-only transaction (see databases.py) is the second layer: it is what stops a write that
these checks did not recognise (a user function that writes, for instance).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from orchestrator.engine import OperationError

# What a guarded query may be at its top.
READS = "SELECT, WITH ... SELECT, UNION/INTERSECT/EXCEPT of those, VALUES, or EXPLAIN of one"
_FIRST_WORDS = ("SELECT", "WITH", "VALUES", "TABLE", "(")

# Functions that reach beyond the query's own rows: files and programs on the database host,
# other servers, other sessions, server settings, or SQL run from a string (which this check
# would never see). Compared case-insensitively, with or without a schema in front.
DENIED_FUNCTIONS = frozenset({
    # MySQL / MariaDB
    "load_file", "get_lock", "release_lock", "release_all_locks", "master_pos_wait", "source_pos_wait",
    "master_gtid_wait", "sys_exec", "sys_eval", "sys_get", "sys_set",
    # PostgreSQL
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write", "pg_file_rename",
    "pg_file_unlink", "pg_file_sync", "pg_logdir_ls", "pg_current_logfile", "lo_import", "lo_export",
    "loread", "lowrite", "dblink", "set_config", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "pg_switch_wal", "pg_promote", "pg_create_restore_point", "pg_notify",
    "pg_log_backend_memory_contexts", "pg_import_system_collations", "query_to_xml", "query_to_xmlschema",
    "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema", "ts_stat", "ts_rewrite",
    "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
    # SQLite (extension loading and the shell's file functions, where a build has them)
    "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer",
})
DENIED_PREFIXES = (
    "dblink_", "lo_", "pg_ls_", "pg_read_", "pg_file_", "pg_advisory", "pg_try_advisory", "pg_logical_",
    "pg_replication_", "pg_create_", "pg_drop_", "pg_copy_", "pg_wal_", "query_to_", "cursor_to_", "sys_",
)

# Statements that may never appear anywhere inside a read (e.g. a PostgreSQL data-modifying CTE).
_NOT_READS = tuple(
    node
    for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Command", "Copy", "Set", "Transaction",
        "Commit", "Rollback", "TruncateTable", "LoadData", "Use", "Pragma", "Grant", "Revoke", "Describe",
        "Analyze", "Refresh", "Cache", "Uncache", "Kill", "Comment", "Execute", "Call",
    )
    if isinstance(node := getattr(exp, name, None), type)
)
_READ_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)

_LITERAL_TOKENS = {
    TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.HEX_STRING, TokenType.BIT_STRING,
    TokenType.BYTE_STRING, TokenType.RAW_STRING, TokenType.HEREDOC_STRING, TokenType.UNICODE_STRING,
}
_LITERAL_PREFIX = re.compile(r"^(?:[A-Za-z]{1,2}|[Uu]&)$")  # E'..', N'..', X'..', B'..', U&'..'
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_SQLGLOT_DIALECT = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}


@dataclass(frozen=True)
class ServerQuoting:
    """How the server reads quotes, when it departs from its default (see `server_quoting` in databases.py)."""

    backslash_escapes: bool | None = None  # in plain '...' strings; None: the dialect's default
    ansi_quotes: bool = False  # MySQL's ANSI_QUOTES: "x" is a name, not a string


def check_read_query(sql: str, dialect: str, connection: str, quoting: ServerQuoting = ServerQuoting()) -> str:
    """Raise OperationError unless `sql` is one statement that reads; return "EXPLAIN" or "SELECT".

    `dialect` is SQLAlchemy's name for the database (postgresql, mysql, mariadb, sqlite).
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
    _refuse_denied_calls(statements[0], refuse)
    tree = _parse(sql[body_start:], dialect, refuse)
    if not isinstance(tree, _READ_ROOTS):
        raise refuse(f"the query is a {tree.key.upper()} statement, but only a query that reads may run ({READS})")
    _walk(tree, refuse)
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
    return token.token_type == TokenType.IDENTIFIER and sql[token.start : token.start + 1] in "\"`["


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
            kind == "code" and index + 1 < len(spans) and spans[index + 1][0] == "literal"
            and _LITERAL_PREFIX.match(sql[differ:end]) and all(theirs[j] == "literal" for j in range(differ, end))
        )
        if not prefix:
            raise refuse(_ambiguous(sql, differ))


def _ambiguous(sql: str, offset: int) -> str:
    return (
        f"the database and the query checker would read the text near offset {offset} ({sql[offset:offset + 20]!r}) "
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


def _refuse_denied_calls(tokens: list[Token], refuse) -> None:
    """Refuse a call of a denied function: a name (quoted or not) followed by `(`, and SELECT ... INTO."""
    for token, following in zip(tokens, tokens[1:], strict=False):
        if following.token_type == TokenType.L_PAREN and token.token_type in (TokenType.VAR, TokenType.IDENTIFIER):
            _check_function(token.text, refuse)
    for token in tokens:
        if token.token_type == TokenType.INTO:
            raise refuse("SELECT ... INTO writes a file, a table or variables; only a query that reads may run")


def _check_function(name: str, refuse) -> None:
    lowered = name.lower()
    if lowered in DENIED_FUNCTIONS or lowered.startswith(DENIED_PREFIXES):
        raise refuse(
            f"the query calls {name}(), which reaches files, other servers or other sessions; it is not allowed "
            "in an import"
        )


def _parse(sql: str, dialect: str, refuse) -> exp.Expression:
    try:
        with _quiet_sqlglot():
            parsed = sqlglot.parse(sql, read=_SQLGLOT_DIALECT[dialect])
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


def _walk(tree: exp.Expression, refuse) -> None:
    for node in tree.walk():
        if isinstance(node, exp.Into):
            raise refuse("SELECT ... INTO writes a file, a table or variables; only a query that reads may run")
        if isinstance(node, exp.Lock):
            raise refuse("locking clauses (FOR UPDATE, FOR SHARE, LOCK IN SHARE MODE) are not allowed in an import")
        if isinstance(node, _NOT_READS):
            raise refuse(f"the query holds a {node.key.upper()} statement; only a query that reads may run ({READS})")
        if isinstance(node, exp.Anonymous):
            _check_function(node.name, refuse)
        elif isinstance(node, exp.Func):
            _check_function(node.sql_name(), refuse)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return re.sub(r"\x1b\[[0-9;]*m", "", text[0])[:300] if text else type(exc).__name__
