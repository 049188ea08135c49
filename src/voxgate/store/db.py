"""Open the configured database (SQLite embedded, PostgreSQL in production) and migrate it."""

from __future__ import annotations

import functools
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from voxgate.store.files import create_private

# Alembic runs migrations through module-global proxies (alembic.context, alembic.op): two
# threads migrating at once (several workers in one process) would tear them down under each other.
_MIGRATE_LOCK = threading.Lock()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1].split("?", 1)[0]
        if path and path != ":memory:":
            # made 0600 before SQLite opens it: SQLite gives its -wal and -shm files the database's mode
            create_private(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def alembic_config(url: str) -> Config:
    script_dir = resources.files("voxgate.store").joinpath("migrations")
    cfg = Config()
    cfg.set_main_option("script_location", str(script_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def head_revisions() -> frozenset[str]:
    """The newest revision(s) of the packaged migrations, read once per process."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


class Database:
    """An engine plus a session factory; `migrate()` brings the schema to the newest revision."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        with _MIGRATE_LOCK, self.engine.begin() as conn:
            if set(MigrationContext.configure(conn).get_current_heads()) == head_revisions():
                return  # at head already, as at most starts: alembic's environment is not loaded at all
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def orm(self) -> OrmSession:
        return self.sessions()

    def dispose(self) -> None:
        self.engine.dispose()
