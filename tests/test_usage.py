"""Usage and capacity: calls, minutes, messages, connector calls and peak concurrency from stored records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.conversation import spoken
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.observe.usage import calls_today, usage
from voxgate.store.db import Database
from voxgate.store.models import SessionRow

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture()
def client(db_url: str, harbor_bundle: Any, harbor_backend: Any, tmp_path: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=db_url, data_dir=tmp_path), [harbor_bundle])) as c:
        yield c


def _call(db: Database, sid: str, start_min: float, minutes: float) -> None:
    """A voice call as the voice channel stores it (sessions row), `start_min` minutes ago."""
    start = NOW - dt.timedelta(minutes=start_min)
    with db.orm() as orm, orm.begin():
        orm.add(
            SessionRow(
                id=sid,
                agent="harbor-support",
                agent_version="1",
                environment="dev",
                channel="twilio",
                started_at=start,
                ended_at=start + dt.timedelta(minutes=minutes),
                outcome="resolved",
            )
        )


def test_usage_counts_and_peak_concurrency(client: TestClient, db_url: str, credentials: list[dict[str, str]]) -> None:
    cred = credentials[9]
    sid = client.post("/api/agents/harbor-support/sessions").json()["session_id"]
    for line in ("what's my balance", spoken(cred["account_number"]), spoken(cred["pin"]), "no thanks that's all"):
        client.post(f"/api/sessions/{sid}/turns", json={"text": line})
    db = Database(db_url)
    # three calls: two overlap (peak 2), the third starts after both ended
    _call(db, "call-a", start_min=30, minutes=10)
    _call(db, "call-b", start_min=25, minutes=10)
    _call(db, "call-c", start_min=10, minutes=5)
    (row,) = usage(db, since=NOW - dt.timedelta(hours=1), environment="dev")
    assert (row.calls, row.chats, row.messages) == (3, 1, 4)
    assert row.call_minutes == pytest.approx(25.0, abs=0.01)
    assert row.peak_concurrent_calls == 2
    assert row.connector_calls == 2  # verify_customer and get_balance, counted from the audit chain
    assert calls_today(db, "dev", NOW) == sum(
        1
        for m in (30, 25, 10)
        if NOW - dt.timedelta(minutes=m) >= NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    )
    db.dispose()
    identity = client.app.state.voxgate.identity  # type: ignore[attr-defined]
    user = identity.create_user("olga", "a long enough password")
    identity.bind_role(user.id, "*", "operator", None)
    token, _ = identity.create_token(user.id, "t", ["*"], 1)
    view = client.get("/api/usage", params={"since": "1h"}, headers={"Authorization": f"Bearer {token}"}).json()
    assert view["capacity"]["peak_concurrent_calls"] == 2
    assert view["capacity"]["worker_capacity"] == 20  # min(worker capacity 20, dev quota 50)
    assert client.get("/api/usage").status_code == 401
