"""Retention purge over real stored conversations: exactly the expired rows go, per environment and class."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, text, update
from typer.testing import CliRunner

from tests.helpers.conversation import converse
from voxgate.compliance.audit import AuditLog
from voxgate.compliance.recorder import sql_recorder
from voxgate.compliance.retention import purge, retention_days, retention_loop
from voxgate.governance.environments import (
    DEFAULT_POLICY_DIR,
    GovernanceConfigError,
    load_environments_file,
    load_governance,
)
from voxgate.runtime.engine import AgentRuntime
from voxgate.store.db import Database
from voxgate.store.models import HandoffRow, SecurityEventRow, SessionRow, TurnRow, VoiceTurnRow

NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)
# packaged policy: dev 7 days, test 14, prod 90
AGES = {"dev": (8, 6), "test": (15, 13), "prod": (91, 89)}  # (expired, kept) in days


async def _store(db: Database, bundle: Any) -> dict[str, dict[str, str]]:
    """Per environment, an expired and a kept session (each escalates: turns, a packet; plus a security event)."""
    audit = AuditLog(db)
    out: dict[str, dict[str, str]] = {}
    for env, (old, young) in AGES.items():
        rt = AgentRuntime(bundle, environment=env, recorder=sql_recorder(db, audit=audit))
        ids = {}
        for label, age in (("expired", old), ("kept", young)):
            session = await converse(rt, "what are your opening hours", "you useless piece of shit")
            ids[label] = session.id
            when = NOW - dt.timedelta(days=age)
            with db.engine.begin() as conn:
                conn.execute(update(SessionRow).where(SessionRow.id == session.id).values(started_at=when))
                conn.execute(
                    SecurityEventRow.__table__.insert().values(
                        session_id=session.id,
                        kind="data_access_denied",
                        agent="harbor-support",
                        environment=env,
                        detail={"reason": "other_account_requested"},
                        created_at=when,
                    )
                )
                conn.execute(
                    VoiceTurnRow.__table__.insert().values(
                        session_id=session.id,
                        seq=1,
                        speculative_hit=False,
                        interrupted=False,
                        dtmf=False,
                        created_at=when,
                    )
                )
        await rt.aclose()
        out[env] = ids
    return out


def _counts(db: Database) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with db.engine.connect() as conn:
        for table in (TurnRow, HandoffRow, VoiceTurnRow, SecurityEventRow):
            for sid, n in conn.execute(select(table.session_id, func.count()).group_by(table.session_id)):
                out.setdefault(sid, {})[table.__tablename__] = n
        for (sid,) in conn.execute(select(SessionRow.id)):
            out.setdefault(sid, {})["sessions"] = 1
    return out


async def test_purge_removes_exactly_the_expired_sessions(
    db: Database, harbor_bundle: Any, harbor_backend: Any
) -> None:
    ids = await _store(db, harbor_bundle)
    before = _counts(db)
    for env in AGES:
        for label in ("expired", "kept"):
            assert set(before[ids[env][label]]) == {"turns", "handoffs", "voice_turns", "security_events", "sessions"}
    config = load_governance()
    dry = purge(db, config, NOW, dry_run=True)
    assert _counts(db) == before  # a dry run deletes nothing
    report = purge(db, config, NOW)
    assert report.counts == dry.counts and report.tables == dry.tables
    after = _counts(db)
    for env in AGES:
        assert ids[env]["expired"] not in after, env
        assert after[ids[env]["kept"]] == before[ids[env]["kept"]], env
        expired = before[ids[env]["expired"]]
        counted = {c: n for c, n in report.counts[env].items() if c != "recordings"}  # no recordings stored
        assert counted == {
            "transcripts": expired["turns"] + 1,
            "context_packets": 1,
            "sessions": 1,
            "security_events": expired["security_events"],
        }
    # one audit event for the run, with the counts; the chain still verifies
    audit = AuditLog(db)
    events = audit.query(action="retention.purge")
    assert len(events) == 1 and audit.verify().ok
    data = events[0]["data"] if isinstance(events[0]["data"], dict) else json.loads(events[0]["data"])
    assert data["tables"]["sessions"] == 3
    # nothing more has expired: a second run deletes nothing
    assert purge(db, config, NOW).total == 0


def _config_with(tmp_path: Path, dev_settings: dict[str, Any]) -> Any:
    doc = yaml.safe_load((DEFAULT_POLICY_DIR / "environments.yaml").read_text("utf-8"))
    doc["environments"]["dev"]["settings"].update(dev_settings)
    path = tmp_path / "environments.yaml"
    path.write_text(yaml.safe_dump(doc), "utf-8")
    return load_environments_file(path)


async def test_per_class_retention(db: Database, harbor_bundle: Any, harbor_backend: Any, tmp_path: Path) -> None:
    """dev keeps transcripts 1 day, packets 30, sessions 7: the 6-day-old session loses only its transcript."""
    ids = await _store(db, harbor_bundle)
    config = _config_with(tmp_path, {"retention": {"transcripts": 1, "context_packets": 30, "security_events": 2}})
    dev = config.get("dev")
    assert [retention_days(dev, c) for c in ("transcripts", "context_packets", "sessions")] == [1, 30, 7]
    before = _counts(db)
    purge(db, config, NOW)
    after = _counts(db)
    kept = ids["dev"]["kept"]
    assert after[kept] == {"handoffs": 1, "sessions": 1}  # transcript and security events past their time
    assert ids["dev"]["expired"] not in after  # its session expired: the packet goes with it
    for env in ("test", "prod"):
        assert after[ids[env]["kept"]] == before[ids[env]["kept"]]


def test_bad_retention_settings_name_the_place(tmp_path: Path) -> None:
    with pytest.raises(GovernanceConfigError, match="transcript"):
        _config_with(tmp_path, {"retention": {"transcript": 3}})
    with pytest.raises(GovernanceConfigError, match="greater than or equal to 1"):
        _config_with(tmp_path, {"retention": {"sessions": 0}})


async def test_unknown_environment_is_left_alone_and_reported(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            SessionRow.__table__.insert().values(
                id="s-old",
                agent="a",
                agent_version="1",
                environment="staging",
                channel="text",
                started_at=NOW - dt.timedelta(days=400),
                verified=False,
                turn_count=0,
            )
        )
    report = purge(db, load_governance(), NOW)
    assert report.unknown_environments == {"staging": 1}
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sessions")).scalar_one() == 1


async def test_retention_loop_runs_and_keeps_going(db: Database) -> None:
    import asyncio

    with db.engine.begin() as conn:
        conn.execute(
            SessionRow.__table__.insert().values(
                id="s-old",
                agent="a",
                agent_version="1",
                environment="dev",
                channel="text",
                started_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
                verified=False,
                turn_count=0,
            )
        )
    audit = AuditLog(db)
    task = asyncio.create_task(retention_loop(db, load_governance(), audit, every_s=0.05))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if len(audit.query(action="retention.purge")) >= 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(audit.query(action="retention.purge")) >= 2
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sessions")).scalar_one() == 0
    with pytest.raises(ValueError, match="positive"):
        await retention_loop(db, load_governance(), audit, every_s=0)


async def test_the_first_purge_waits_as_asked(db: Database) -> None:
    import asyncio

    audit = AuditLog(db)
    task = asyncio.create_task(retention_loop(db, load_governance(), audit, every_s=3600, first_after_s=0.5))
    await asyncio.sleep(0.2)
    assert audit.query(action="retention.purge") == []  # not yet: a worker that has just started is busy
    for _ in range(200):
        await asyncio.sleep(0.05)
        if audit.query(action="retention.purge"):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(audit.query(action="retention.purge")) == 1


def test_cli_retention_run(db: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voxgate.cli import app

    with db.engine.begin() as conn:
        conn.execute(
            SessionRow.__table__.insert().values(
                id="s-old",
                agent="a",
                agent_version="1",
                environment="prod",
                channel="text",
                started_at=NOW - dt.timedelta(days=100),
                verified=False,
                turn_count=0,
            )
        )
    monkeypatch.setenv("VOXGATE_DATABASE_URL", db_url)
    monkeypatch.setenv("VOXGATE_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    dry = runner.invoke(app, ["retention", "run", "--dry-run", "--now", NOW.isoformat(), "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["counts"]["prod"]["sessions"] == 1
    done = runner.invoke(app, ["retention", "run", "--now", NOW.isoformat()])
    assert done.exit_code == 0 and "prod: sessions 1" in done.output
    assert runner.invoke(app, ["retention", "run", "--now", "yesterday"]).exit_code == 2
