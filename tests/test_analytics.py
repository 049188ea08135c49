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
from voxgate.observe.analytics import kpis, parse_duration, parse_since
from voxgate.store.db import Database


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
