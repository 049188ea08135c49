"""Records are authorised on their own environment, not on the environment of the worker that serves them.

All environments may share one database: a dev worker can see rows written by the test worker.
A user bound to dev only may read dev sessions, turns, handoffs (with their context packets),
recordings and callbacks through a dev worker, and cannot read test ones there: a single test
record is 404 (its existence is not confirmed), lists leave test records out, and the
subject-wide privacy operations, which span every environment, need the role in every one.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.store.desk_models import CallbackRequestRow
from voxgate.store.models import HandoffRow, SessionRow, TurnRow

PASSWORD = "a long enough password"


class World:
    def __init__(self, client: TestClient, tokens: dict[str, str], sessions: dict[str, str]):
        self.client = client
        self.tokens = tokens
        self.sessions = sessions  # environment -> session id

    def get(self, who: str, path: str, **params: object) -> Any:
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def post(self, who: str, path: str, body: dict[str, object]) -> Any:
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"})


@pytest.fixture()
def world(db_url: str, tmp_path: Path, harbor_bundle: object) -> Iterator[World]:
    settings = Settings(database_url=db_url, data_dir=tmp_path / "data", environment="dev")
    with TestClient(create_app(settings, [harbor_bundle])) as client:  # type: ignore[list-item]
        state = client.app.state.voxgate
        tokens: dict[str, str] = {}
        for name, env, role in [
            ("dev-auditor", "dev", "auditor"),
            ("dev-operator", "dev", "operator"),
            ("dev-compliance", "dev", "compliance_officer"),
            ("any-auditor", "*", "auditor"),
            ("any-operator", "*", "operator"),
            ("any-compliance", "*", "compliance_officer"),
        ]:
            user = state.identity.create_user(name, PASSWORD)
            state.identity.bind_role(user.id, env, role, None)
            tokens[name], _ = state.identity.create_token(user.id, "t", ["*"], 1)
        sessions: dict[str, str] = {}
        now = dt.datetime.now(dt.UTC)
        with state.db.orm() as orm, orm.begin():
            for env in ("dev", "test"):
                sid = f"{env}-session-1"
                sessions[env] = sid
                orm.add(
                    SessionRow(
                        id=sid,
                        agent="harbor-support",
                        agent_version="1",
                        environment=env,
                        channel="voice",
                        started_at=now,
                        customer_id="C-1001",
                        turn_count=1,
                        outcome="escalated",
                        escalation_reason="caller_request",
                    )
                )
                orm.flush()
                orm.add(
                    TurnRow(
                        session_id=sid,
                        seq=1,
                        user_text=f"{env} caller words",
                        agent_text="one moment",
                        intent="human",
                        state="start",
                    )
                )
                orm.add(
                    HandoffRow(
                        session_id=sid,
                        queue="general",
                        reason="caller_request",
                        status="waiting",
                        packet={"summary": f"{env} packet", "customer_id": "C-1001"},
                    )
                )
                orm.add(
                    CallbackRequestRow(
                        id=f"{env}-callback",
                        session_id=sid,
                        agent="harbor-support",
                        environment=env,
                        queue="general",
                        channel="voice",
                        kind="callback",
                        reason="no_agents",
                        callback_number="+15550100",
                        status="open",
                        created_at=now,
                    )
                )
        vault = state.recording_vault()
        for env, sid in sessions.items():
            vault.store(session_id=sid, environment=env, customer_id="C-1001", wav=b"RIFF" + b"\0" * 40, duration_ms=10)
        yield World(client, tokens, sessions)


def test_a_dev_only_user_cannot_read_test_records_through_a_dev_worker(world: World) -> None:
    dev, test = world.sessions["dev"], world.sessions["test"]

    # one session (with its turns): the dev one is readable, the test one does not exist for them
    r = world.get("dev-auditor", f"/api/sessions/{dev}")
    assert r.status_code == 200 and r.json()["turns"][0]["user"] == "dev caller words", r.text
    r = world.get("dev-auditor", f"/api/sessions/{test}")
    assert r.status_code == 404, r.text
    assert "test caller words" not in r.text
    assert world.get("any-auditor", f"/api/sessions/{test}").status_code == 200

    # the session search leaves test sessions out, even when asked for them by name
    ids = [s["id"] for s in world.get("dev-auditor", "/api/sessions").json()]
    assert ids == [dev]
    assert world.get("dev-auditor", "/api/sessions", environment="test").json() == []
    assert world.get("dev-auditor", "/api/sessions", q="caller words").json()[0]["id"] == dev
    assert {s["id"] for s in world.get("any-auditor", "/api/sessions").json()} == {dev, test}

    # handoffs and their context packets
    handoffs = world.get("dev-operator", "/api/handoffs").json()
    assert [h["session_id"] for h in handoffs] == [dev]
    assert "test packet" not in str(handoffs)
    every = world.get("any-operator", "/api/handoffs").json()
    assert {h["session_id"] for h in every} == {dev, test}

    # callbacks: only the dev worker's own environment's
    callbacks = world.get("dev-operator", "/api/callbacks").json()
    assert [c["session_id"] for c in callbacks] == [dev]
    r = world.post("dev-operator", "/api/callbacks/test-callback/complete", {})
    assert r.status_code == 404, r.text

    # recordings
    r = world.get("dev-compliance", f"/api/sessions/{dev}/recording")
    assert r.status_code == 200, r.text
    r = world.get("dev-compliance", f"/api/sessions/{test}/recording")
    assert r.status_code == 404, r.text
    assert world.get("any-compliance", f"/api/sessions/{test}/recording").status_code == 200

    # finding or erasing a person's records spans every environment: it needs the role in each
    r = world.post("dev-compliance", "/api/privacy/find", {"customer_id": "C-1001"})
    assert r.status_code == 403, r.text
    r = world.post("dev-compliance", "/api/privacy/erase", {"customer_id": "C-1001", "confirm": True})
    assert r.status_code == 403, r.text
    r = world.post("any-compliance", "/api/privacy/find", {"customer_id": "C-1001"})
    assert r.status_code == 200 and r.json()["records"], r.text

    # analytics and usage name an environment: a dev-only reader gets dev's, not test's
    assert world.get("dev-auditor", "/api/stats", env="dev").status_code == 200
    assert world.get("dev-auditor", "/api/stats", env="test").status_code == 403
    assert world.get("dev-operator", "/api/usage", env="test").status_code == 403


def test_a_nul_in_a_search_filter_is_a_422(db_url: str, tmp_path: Path, harbor_bundle: Any) -> None:
    with TestClient(create_app(Settings(database_url=db_url, data_dir=tmp_path), [harbor_bundle])) as client:
        identity = client.app.state.voxgate.identity  # type: ignore[attr-defined]
        user = identity.create_user("ada", "a long enough password")
        identity.bind_role(user.id, "*", "admin", None)
        token, _ = identity.create_token(user.id, "t", ["*"], 1)
        auth = {"Authorization": f"Bearer {token}"}
        for param in ("q", "agent", "intent"):
            r = client.get("/api/sessions", params={param: "order\x00status"}, headers=auth)
            assert r.status_code == 422, (param, r.text)
        assert client.get("/api/sessions", params={"q": "order status"}, headers=auth).status_code == 200
