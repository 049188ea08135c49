"""The server over real HTTP and WebSocket, with sessions stored in SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from starlette.websockets import WebSocketDisconnect

from tests.helpers.conversation import spoken
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.store.models import WorkerRow


@pytest.fixture()
def client(db_url: str, harbor_bundle: Any, harbor_backend: Any, tmp_path: Any) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, data_dir=tmp_path)
    with TestClient(create_app(settings, [harbor_bundle])) as c:
        yield c


def _token(client: TestClient, name: str, role: str) -> dict[str, str]:
    """A user holding `role` in every environment, and the header of an API token of theirs."""
    identity = client.app.state.voxgate.identity  # type: ignore[attr-defined]
    user = identity.create_user(name, "a long enough password")
    identity.bind_role(user.id, "*", role, None)
    token, _ = identity.create_token(user.id, "test", ["*"], 1)
    return {"Authorization": f"Bearer {token}"}


def _dump_tables(db_url: str) -> str:
    """Every row of every voxgate table as text, to look for data that must not be stored."""
    engine = create_engine(db_url)
    out = []
    with engine.connect() as conn:
        for table in ("sessions", "turns", "handoffs", "security_events", "audit_events"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                out.append(json.dumps([str(v) for v in row]))
    engine.dispose()
    return "\n".join(out)


def test_health_and_agents(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["agents"] == ["harbor-support"]
    # agent directories served as they are: development mode, no bundle digest
    assert health["mode"] == "development" and health["environment"] == "dev"
    assert health["served"] == [{"agent": "harbor-support", "version": "1.0.0", "bundle_digest": None}]
    # the worker names itself as it is registered (and as its session rows name it)
    with client.app.state.voxgate.db.orm() as orm:  # type: ignore[attr-defined]
        assert orm.get(WorkerRow, health["worker"]) is not None
    agents = client.get("/api/agents").json()
    assert agents[0]["name"] == "harbor-support" and "order_status" in agents[0]["topics"]
    assert "voxgate" in client.get("/").text


def test_http_conversation_is_stored_without_the_pin(client: TestClient, db_url: str, credentials) -> None:
    cred = credentials[30]
    start = client.post("/api/agents/harbor-support/sessions")
    assert start.status_code == 201
    sid = start.json()["session_id"]
    for t in ("what's my balance", spoken(cred["account_number"])):
        assert client.post(f"/api/sessions/{sid}/turns", json={"text": t}).status_code == 200
    verified = client.post(f"/api/sessions/{sid}/dtmf", json={"digits": cred["pin"]}).json()
    assert verified["actions"][0]["name"] == "verify_customer"
    end = client.post(f"/api/sessions/{sid}/turns", json={"text": "talk to a person please"}).json()
    assert end["outcome"] == "escalated"
    assert client.get(f"/api/sessions/{sid}").status_code == 401  # records are not public
    auditor = _token(client, "audrey", "auditor")
    stored = client.get(f"/api/sessions/{sid}", headers=auditor).json()
    assert stored["outcome"] == "escalated" and stored["verified"] is True
    assert stored["escalation_reason"] == "caller_request"
    assert [t["seq"] for t in stored["turns"]] == [0, 1, 2, 3, 4]
    assert stored["turns"][3]["user"] == "<PIN>"
    assert client.get("/api/handoffs", headers=auditor).status_code == 403  # auditors do not work the queue
    desk = _token(client, "dora", "desk_agent")
    handoffs = client.get("/api/handoffs", params={"queue": "general"}, headers=desk).json()
    mine = [h for h in handoffs if h["session_id"] == sid]
    assert mine and mine[0]["packet"]["identity"]["customer_id"] == cred["customer_id"]
    dump = _dump_tables(db_url)
    # hex digests (audit hashes, ids) may hold any four digits by chance: they are not the PIN
    assert cred["pin"] not in re.sub(r"[0-9a-f]{16,}", "", dump.replace(cred["account_number"], ""))
    assert spoken(cred["pin"]) not in dump
    # the audit chain saw the connector calls and the escalation, by ids only
    events = client.get("/api/audit/events", params={"limit": 1000}, headers=auditor).json()
    mine = [e for e in events if e["resource"] == f"session:{sid}"]
    assert {"connector.call", "runtime.caller_verified", "runtime.escalation"} <= {e["action"] for e in mine}
    assert cred["account_number"] not in json.dumps(events) and cred["customer_id"] not in json.dumps(events)
    # the live session is gone once it ended
    assert client.post(f"/api/sessions/{sid}/turns", json={"text": "hello"}).status_code == 404


def test_bad_requests_get_clear_errors(client: TestClient) -> None:
    assert client.post("/api/agents/nobody/sessions").status_code == 404
    sid = client.post("/api/agents/harbor-support/sessions").json()["session_id"]
    assert client.post(f"/api/sessions/{sid}/turns", json={"text": ""}).status_code == 422
    assert client.post(f"/api/sessions/{sid}/turns", json={"text": "x" * 5000}).status_code == 422
    assert client.post(f"/api/sessions/{sid}/dtmf", json={"digits": "12a"}).status_code == 422
    ended = client.post(f"/api/sessions/{sid}/end").json()
    assert ended["outcome"] == "unengaged"  # nothing valid was ever said


def test_websocket_chat_and_protocol_errors(client: TestClient, db_url: str) -> None:
    with client.websocket_connect("/ws/chat/harbor-support") as ws:
        greeting = ws.receive_json()
        assert greeting["type"] == "turn" and "Harbor" in greeting["agent"]
        ws.send_text(json.dumps({"type": "text", "text": "what are your opening hours"}))
        turn = ws.receive_json()
        assert turn["intent"] == "store_hours" and turn["citations"]
        ws.send_text(json.dumps({"type": "end"}))
        ended = ws.receive_json()
        assert ended == {"type": "ended", "outcome": "resolved", "escalation": None}

    with client.websocket_connect("/ws/chat/harbor-support") as ws:
        ws.receive_json()
        ws.send_text("{not json")
        err = ws.receive_json()
        assert err["type"] == "error"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 1003

    with client.websocket_connect("/ws/chat/harbor-support") as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "shout", "text": "hi"}))
        assert "unknown message type" in ws.receive_json()["error"]

    # the server is still serving after the bad sockets
    with client.websocket_connect("/ws/chat/harbor-support") as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "text", "text": "is there an outage at two one one four six"}))
        assert ws.receive_json()["actions"][0]["name"] == "check_outage"
    # closing the socket ends the session (the server notices the disconnect asynchronously)
    for _ in range(100):
        if client.get("/health").json()["live_sessions"] == 0:
            break
        time.sleep(0.05)
    assert client.get("/health").json()["live_sessions"] == 0
    engine = create_engine(db_url)
    with engine.connect() as conn:
        outcomes = [r[0] for r in conn.execute(text("SELECT outcome FROM sessions ORDER BY started_at"))]
    engine.dispose()
    assert outcomes[0] == "resolved" and len(outcomes) == 4 and None not in outcomes


def test_a_development_build_is_stored_without_a_digest(client: TestClient, db_url: str) -> None:
    sid = client.post("/api/agents/harbor-support/sessions").json()["session_id"]
    client.post(f"/api/sessions/{sid}/end")
    engine = create_engine(db_url)
    with engine.connect() as conn:
        digest = conn.execute(text("SELECT bundle_digest FROM sessions WHERE id = :id"), {"id": sid}).scalar_one()
    engine.dispose()
    assert digest is None  # the console labels it an unreleased development build
    admin = _token(client, "ada", "admin")
    listed = client.get("/api/sessions", headers=admin).json()
    assert [(r["id"], r["bundle_digest"]) for r in listed] == [(sid, None)]
    assert client.get(f"/api/sessions/{sid}", headers=admin).json()["bundle_digest"] is None


def test_the_phone_page_runs_under_a_strict_content_security_policy(client: TestClient) -> None:
    policy = client.get("/phone").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'self'" in policy and "unsafe-inline" not in policy


def test_agent_directories_are_refused_outside_development(harbor_bundle: Any, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="not a development environment"):
        create_app(Settings(data_dir=tmp_path, environment="prod"), [harbor_bundle])
