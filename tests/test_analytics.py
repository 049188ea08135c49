"""Outcome analytics over real stored conversations: each outcome counted by its definition, the KPIs, the API and CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.helpers.conversation import spoken
from voxgate.api.app import create_app
from voxgate.cli import app as cli
from voxgate.config import Settings
from voxgate.observe.analytics import kpis, kpis_since, parse_duration, parse_since
from voxgate.store.db import Database
from voxgate.store.models import SessionRow, TurnRow, VoiceTurnRow


@pytest.fixture()
def client(db_url: str, harbor_bundle: Any, harbor_backend: Any, tmp_path: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=db_url, data_dir=tmp_path), [harbor_bundle])) as c:
        yield c


def _talk(client: TestClient, *lines: str, end: bool = True) -> str:
    sid = client.post("/api/agents/harbor-support/sessions").json()["session_id"]
    for line in lines:
        client.post(f"/api/sessions/{sid}/turns", json={"text": line})
    if end:
        client.post(f"/api/sessions/{sid}/end")
    return sid  # type: ignore[no-any-return]


def test_outcomes_and_kpis(client: TestClient, db_url: str, credentials: list[dict[str, str]], tmp_path: Any) -> None:
    cred = credentials[5]
    _talk(client, "what are your opening hours", "no thanks that's all")  # resolved
    _talk(client, "I want to talk to a person")  # escalated
    _talk(client, "where is my order", spoken(cred["account_number"]))  # abandoned mid-verification
    _talk(client)  # unengaged
    _talk(client, "can you recommend a pizza place", "no thanks that's all")  # a refused (no-match) turn, then bye
    db = Database(db_url)
    (row,) = kpis(db, environment="dev", agent="harbor-support")
    db.dispose()
    assert row.sessions == 5 and row.ended == 5
    assert row.outcomes["escalated"] == 1 and row.outcomes["unengaged"] == 1
    assert row.outcomes["resolved"] + row.outcomes["abandoned"] == 3 and row.outcomes["resolved"] >= 1
    assert row.engagement_rate == 0.8
    assert row.escalation_rate == round(1 / 4, 4)
    assert row.completion_rate == round((row.outcomes["resolved"] + 1) / 4, 4)
    assert row.caller_turns == 7 and row.no_match_rate is not None and row.no_match_rate > 0
    assert dict(row.top_escalation_reasons) == {"caller_request": 1}
    assert ("order_status", 1) in row.top_intents
    assert row.handle_time_s["p50"] is not None and row.handle_time_s["p50"] >= 0

    # the API, for those who may read analytics
    identity = client.app.state.voxgate.identity  # type: ignore[attr-defined]
    user = identity.create_user("olga", "a long enough password")
    identity.bind_role(user.id, "*", "operator", None)
    token, _ = identity.create_token(user.id, "t", ["*"], 1)
    assert client.get("/api/stats").status_code == 401
    api = client.get(
        "/api/stats", params={"env": "dev", "since": "1h", "bucket": "1h"}, headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert sum(r["sessions"] for r in api["rows"]) == 5
    assert (
        client.get(
            "/api/stats", params={"since": "yesterday-ish"}, headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 422
    )

    # transcript search, for those who may read sessions
    auditor = identity.create_user("audrey", "a long enough password")
    identity.bind_role(auditor.id, "*", "auditor", None)
    audit_token, _ = identity.create_token(auditor.id, "t", ["*"], 1)

    def search(**q: str) -> Any:
        return client.get("/api/sessions", params=q, headers={"Authorization": f"Bearer {audit_token}"}).json()

    assert len(search(since="1h")) == 5
    assert [s["escalation_reason"] for s in search(outcome="escalated")] == ["caller_request"]
    assert len(search(intent="order_status")) == 1 and search(intent="order_status")[0]["outcome"] == "abandoned"
    assert search(agent="someone-else") == []
    assert client.get("/api/sessions", headers={"Authorization": f"Bearer {token}"}).status_code == 403  # operator

    # and the CLI
    result = CliRunner().invoke(
        cli,
        ["stats", "--env", "dev", "--since", "24h", "--json"],
        env={"VOXGATE_DATABASE_URL": db_url, "VOXGATE_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["outcomes"]["unengaged"] == 1
    # nothing before the window
    db = Database(db_url)
    (empty,) = kpis(db, environment="dev", until=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    db.dispose()
    assert empty.sessions == 0 and empty.resolution_rate is None


def test_time_parsing() -> None:
    now = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    assert parse_since("24h", now) == now - dt.timedelta(hours=24)
    assert parse_since("2026-11-01T00:00:00", now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert parse_duration("90m") == dt.timedelta(minutes=90)
    with pytest.raises(ValueError, match="duration"):
        parse_since("soon", now)


def test_several_windows_read_at_once_are_what_each_read_alone_gives(db: Database) -> None:
    """The alert rounds read the KPIs of all their windows in one go: the same figures as one read per window,
    sessions on both sides of each boundary, another agent's and another environment's left out."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = [  # (minutes ago, agent, environment, outcome, voice-to-voice ms of its turns)
        (3, "harbor-support", "prod", "resolved", [420.0, 610.0]),
        (14, "harbor-support", "prod", "escalated", [1900.0]),
        (16, "harbor-support", "prod", "abandoned", [800.0]),
        (50, "harbor-support", "prod", "resolved", []),
        (70, "harbor-support", "prod", "escalated", [2500.0]),
        (5, "other-agent", "prod", "escalated", [3000.0]),
        (5, "harbor-support", "dev", "escalated", [3000.0]),
    ]
    with db.engine.begin() as conn:
        for n, (ago, agent, env, outcome, v2v) in enumerate(rows):
            sid = f"s{n}"
            started = now - dt.timedelta(minutes=ago)
            conn.execute(
                SessionRow.__table__.insert().values(
                    id=sid, agent=agent, agent_version="1.0.0", environment=env, channel="twilio",
                    started_at=started, ended_at=started + dt.timedelta(seconds=40 + n), outcome=outcome,
                    turn_count=len(v2v) + 1,
                )
            )  # fmt: skip
            for seq in range(len(v2v) + 1):
                conn.execute(
                    TurnRow.__table__.insert().values(
                        session_id=sid, seq=seq, user_text="hello", agent_text="hi", state="start",
                        intent="order_status" if seq else None, data={},
                    )
                )  # fmt: skip
            for seq, ms in enumerate(v2v):
                conn.execute(VoiceTurnRow.__table__.insert().values(session_id=sid, seq=seq, voice_to_voice_ms=ms))
    windows = [now - dt.timedelta(minutes=15), now - dt.timedelta(hours=1), now - dt.timedelta(hours=2)]
    together = kpis_since(db, environment="prod", agent="harbor-support", sinces=windows)
    assert sorted(together) == sorted(windows)
    for since in windows:
        (alone,) = kpis(db, environment="prod", agent="harbor-support", since=since)
        assert together[since] == alone
    assert [together[w].sessions for w in windows] == [2, 4, 5]
    assert together[windows[0]].voice_to_voice_ms["p95"] is not None
    assert kpis_since(db, environment="prod", agent="harbor-support", sinces=[]) == {}
