"""The databases a run has: SQLite always, the throwaway PostgreSQL when `VOXGATE_TEST_POSTGRES_URL`
is set — one database in it per pytest-xdist worker, so that workers never drop each other's schema.

A test that takes `db_url` runs on each. One marked `sqlite_only` runs on SQLite alone: the mark is for
tests to which the database is incidental (what a route refuses, what a throttle counts, what a gate
suite finds), never for those about what is stored — the store and its migrations, the audit chain,
privacy, retention, concurrency under row locks, crash repair, the whole release — which run on both."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("VOXGATE_TEST_POSTGRES_URL")
#: the xdist worker's name ("gw0", "gw1", ...), unset when pytest runs without -n
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_SAFE_NAME = re.compile(r"[a-z0-9_]+")
_created: set[str] = set()
_templates: dict[str, str] = {}  # kind -> this process's migrated template (a file, or a database name)


def db_kinds() -> list[str]:
    """The database kinds every database test runs on: SQLite, and PostgreSQL when the run has one."""
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


def _worker_database(base_url: str) -> str:
    """The URL of this worker's own database in the test cluster (created on first use); the base URL
    itself when pytest runs in one process."""
    url = make_url(base_url)
    if not WORKER:
        return base_url
    name = f"{url.database}_{WORKER}".lower()
    assert _SAFE_NAME.fullmatch(name), f"unexpected database name {name!r}"
    if name not in _created:
        admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))  # a checked identifier: no bind parameter here
        admin.dispose()
        _created.add(name)
    return url.set(database=name).render_as_string(hide_password=False)


def worker_postgres() -> str:
    """This worker's database in the test PostgreSQL (psycopg URL), as the last test left it."""
    assert PG_URL, "no test PostgreSQL in this run (VOXGATE_TEST_POSTGRES_URL)"
    return _worker_database(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))


def fresh_postgres() -> str:
    """This worker's test PostgreSQL URL (psycopg driver), its public schema dropped and recreated empty."""
    url = worker_postgres()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def query(db_url: str, sql: str, **params: object) -> list[Any]:
    """Rows of one SQL query on a database a test server writes to (its own short-lived engine)."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = list(conn.execute(text(sql), params))
    engine.dispose()
    return rows


def at_head(db_url: str) -> None:
    """Make the fresh, empty database `db_url` one migrated to the head revision, by copying this process's
    template (migrated once per kind) rather than running every migration again for each test."""
    from voxgate.store.db import Database

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if "sqlite" not in _templates:
            template = Path(tempfile.mkdtemp(prefix="voxgate-head-")) / "head.db"
            database = Database(f"sqlite:///{template}")
            database.migrate()
            database.dispose()
            _templates["sqlite"] = str(template)
        assert url.database and not Path(url.database).exists(), f"{db_url} is not a fresh database"
        shutil.copyfile(_templates["sqlite"], url.database)
        return
    name = url.database or ""
    template = f"{name}_head"
    assert _SAFE_NAME.fullmatch(name) and _SAFE_NAME.fullmatch(template), f"unexpected database name {name!r}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        if "postgresql" not in _templates:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{template}"'))  # checked identifiers: no bind parameters
            database = Database(url.set(database=template).render_as_string(hide_password=False))
            database.migrate()
            database.dispose()
            _templates["postgresql"] = template
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        admin.dispose()
