"""The reflected schema retention and erasure work on: read once per schema, read again when it changes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from voxgate.compliance.retention import purge
from voxgate.governance.environments import load_governance
from voxgate.store import db as db_module
from voxgate.store import schema
from voxgate.store.db import Database, alembic_config, head_revisions
from voxgate.store.models import SessionRow


def _old_session(db: Database, environment: str = "dev") -> str:
    sid = uuid.uuid4().hex
    with db.engine.begin() as conn:
        conn.execute(
            SessionRow.__table__.insert().values(
                id=sid,
                agent="harbor-support",
                agent_version="1.0.0",
                environment=environment,
                channel="chat",
                started_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            )
        )
    return sid


def test_one_schema_is_reflected_once_and_a_changed_one_again(db: Database) -> None:
    with db.engine.connect() as conn:
        first = schema.reflect(conn)
        assert "sessions" in first.tables and "alembic_version" in first.tables
        assert schema.reflect(conn) is first  # same tables, columns and revision: kept
        before = schema.fingerprint(conn)
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE sessions ADD COLUMN note_for_test VARCHAR(20)"))
    with db.engine.connect() as conn:
        assert schema.fingerprint(conn) != before
        changed = schema.reflect(conn)
    assert changed is not first and "note_for_test" in changed.tables["sessions"].c
    assert "note_for_test" not in first.tables["sessions"].c  # what was handed out earlier is left as it was


def test_a_table_added_outside_the_migrations_is_purged_with_its_sessions(db: Database) -> None:
    """Retention reads the schema the database has now: a table created after an earlier purge (by an
    operator, by a newer release) is found at the next one, and its rows go with their sessions."""
    config = load_governance()
    purge(db, config)  # an earlier purge: the schema as migrated is reflected and kept
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE call_notes (id INTEGER PRIMARY KEY, session_id VARCHAR(64), body TEXT)"))
    expired = _old_session(db)
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO call_notes (id, session_id, body) VALUES (1, :s, 'called back')"), {"s": expired}
        )
    report = purge(db, config)
    assert report.tables.get("call_notes") == 1, report.tables
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM call_notes")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM sessions WHERE id = :s"), {"s": expired}).scalar_one() == 0


def test_a_database_at_head_is_not_migrated_again_and_one_behind_is(db: Database, monkeypatch: Any) -> None:
    """A worker's start-up checks the revision and loads alembic's environment only when there is a migration
    to run: at head nothing runs; a database one revision behind (an older release's) is brought to head."""
    runs: list[str] = []
    real_upgrade = db_module.command.upgrade

    def counted(cfg: Any, revision: str) -> None:
        runs.append(revision)
        real_upgrade(cfg, revision)

    monkeypatch.setattr(db_module.command, "upgrade", counted)

    def current() -> set[str]:
        with db.engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())

    assert current() == set(head_revisions()) and len(head_revisions()) == 1
    db.migrate()
    assert runs == []  # at head: not run
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        db_module.command.downgrade(cfg, "-1")
    assert current() and current() != set(head_revisions())
    db.migrate()
    assert runs == ["head"] and current() == set(head_revisions())
