"""Test databases for this family of sources, and the stack settings that reach them.

PostgreSQL and MariaDB already run on this machine; each test session works in its own
PostgreSQL schema and its own MariaDB database (unique names), plus an SQLite file, so that
sessions running side by side never see each other's tables. Every one holds the seeded table
`constellation_samples`. The connections the stack and the op tests get:

- `samples`: PostgreSQL (database `test`, search_path set to the session's schema)
- `maria`: MariaDB (the session's database)
- `lite`: an SQLite file
- `reader`: PostgreSQL again, as a role with a password (to check it never shows anywhere)
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
import sqlalchemy as sa

import comparison_samples
from sample_data import seed_samples

# Where the machine's servers answer, as an administrator (trust auth / empty password).
PG_ADMIN_URL = os.environ.get("CONSTELLATION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN_URL = os.environ.get("CONSTELLATION_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


@dataclass
class SessionDatabases:
    """The session's databases: `env` for the stack, `admin[name]` engines that may write (for tests)."""

    env: dict[str, str]
    admin: dict[str, sa.Engine] = field(default_factory=dict)
    reader_password: str = ""

    def count(self, connection: str, table: str) -> int:
        with self.admin[connection].connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()

    def drop(self, connection: str, table: str) -> None:
        with self.admin[connection].begin() as conn:
            sa.Table(table, sa.MetaData()).drop(conn, checkfirst=True)


@pytest.fixture(scope="session")
def test_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionDatabases]:
    tag = uuid.uuid4().hex[:12]
    schema, maria_db, role = f"constellation_test_{tag}", f"constellation_test_{tag}", f"constellation_reader_{tag}"
    password = "pw-" + secrets.token_urlsafe(18)
    in_schema = f"?options={quote(f'-csearch_path={schema}')}"
    pg_admin, maria_root = sa.create_engine(PG_ADMIN_URL), sa.create_engine(MARIADB_ADMIN_URL)
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(f"CREATE ROLE \"{role}\" WITH LOGIN PASSWORD '{password}'")
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    with maria_root.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{maria_db}` CHARACTER SET utf8mb4")
    pg_url = sa.make_url(PG_ADMIN_URL)
    urls = {
        "samples": PG_ADMIN_URL + in_schema,
        "maria": sa.make_url(MARIADB_ADMIN_URL).set(database=maria_db).render_as_string(hide_password=False),
        "lite": f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'lite.db'}",
        "reader": pg_url.set(username=role, password=password).render_as_string(hide_password=False) + in_schema,
    }
    databases = SessionDatabases(
        {f"CONSTELLATION_DB_{name.upper()}_URL": url for name, url in urls.items()}, reader_password=password
    )
    try:
        for name in ("samples", "maria", "lite"):
            databases.admin[name] = sa.create_engine(urls[name])
            seed_samples(databases.admin[name])
        comparison_samples.write_tables(databases.admin["samples"])  # the comparisons of sample_dags.txt
        with databases.admin["samples"].begin() as conn:
            conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        yield databases
    finally:
        for engine in databases.admin.values():
            engine.dispose()
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        with maria_root.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{maria_db}`")
        pg_admin.dispose()
        maria_root.dispose()


@pytest.fixture(scope="session")
def database_env(test_databases: SessionDatabases) -> dict[str, str]:
    """Settings for the stack: one CONSTELLATION_DB_<NAME>_URL per test connection."""
    return test_databases.env
