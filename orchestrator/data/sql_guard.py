"""Checks on the SQL text of an import before it reaches the database: one statement, one that reads.

The read-only transaction is what really stops writes; these checks come first because some
databases end a read-only transaction on DDL (MariaDB commits before `DROP TABLE`), and because
a message saying "only one statement that reads" is clearer than a driver's syntax error.
"""

from __future__ import annotations

import re

from orchestrator.engine import OperationError

# First words of the statements an import may run: they read, they do not change anything.
READ_KEYWORDS = ("SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "DESCRIBE", "DESC")

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z_]+)")
_MYSQL_FILE_WRITE = re.compile(r"\bINTO\s+(OUTFILE|DUMPFILE)\b", re.IGNORECASE)


def check_read_query(sql: str, dialect: str, connection: str) -> str:
    """Raise OperationError unless `sql` is one statement that starts like a query; return its first word."""
    mysql = dialect in ("mysql", "mariadb")
    if mysql and re.search(r"/\*M?!", sql):
        raise OperationError(
            f"connection {connection!r} is read-only for imports: MySQL executable comments (/*! ... */) "
            "are not allowed in a query"
        )
    code = code_outside_literals(sql, dialect)
    statements = [part for part in code.split(";") if part.strip()]
    if not statements:
        raise OperationError(f"the query for connection {connection!r} is empty")
    if len(statements) > 1:
        raise OperationError(
            f"connection {connection!r} is read-only for imports: the query holds {len(statements)} statements; "
            "give exactly one (a trailing ';' is fine)"
        )
    match = _FIRST_WORD.match(statements[0])
    first = match.group(1).upper() if match else statements[0].strip()[:20]
    if first not in READ_KEYWORDS:
        raise OperationError(
            f"connection {connection!r} is read-only for imports: the query starts with {first}, but only a query "
            f"that reads may run (one starting with {', '.join(READ_KEYWORDS)})"
        )
    if mysql and _MYSQL_FILE_WRITE.search(code):
        raise OperationError(
            f"connection {connection!r} is read-only for imports: SELECT ... INTO OUTFILE/DUMPFILE writes a file"
        )
    return first


def code_outside_literals(sql: str, dialect: str) -> str:
    """`sql` with every string, quoted name and comment blanked, so `;` and keywords in them don't count.

    Follows the dialect's quoting: backslash escapes in MySQL strings and PostgreSQL E'' strings,
    PostgreSQL dollar quotes and nested block comments, MySQL `#` comments and backquotes.
    """
    mysql = dialect in ("mysql", "mariadb")
    postgres = dialect == "postgresql"
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c, nxt = sql[i], sql[i + 1 : i + 2]
        if c == "-" and nxt == "-" and (not mysql or i + 2 >= n or sql[i + 2].isspace()):
            end = _line_end(sql, i)
        elif c == "#" and mysql:
            end = _line_end(sql, i)
        elif c == "/" and nxt == "*":
            end = _block_comment_end(sql, i, nested=postgres)
        elif c == "'":
            escapes = mysql or (postgres and i > 0 and sql[i - 1] in "eE" and not _word_char(sql, i - 2))
            end = _quoted_end(sql, i, "'", backslash=escapes)
        elif c == '"':
            end = _quoted_end(sql, i, '"', backslash=mysql)
        elif c == "`" and (mysql or dialect == "sqlite"):
            end = _quoted_end(sql, i, "`", backslash=False)
        elif c == "[" and dialect == "sqlite":
            close = sql.find("]", i + 1)
            end = n if close < 0 else close + 1
        elif c == "$" and postgres and not _word_char(sql, i - 1) and (tag := _DOLLAR_TAG.match(sql, i)):
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
        else:
            out.append(c)
            i += 1
            continue
        out.append(" ")  # a literal still separates the words around it
        i = end
    return "".join(out)


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
