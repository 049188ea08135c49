"""The live-agent desk over real sockets, chat channel: a desk agent takes over an escalated chat in
text; a queue timeout sends the caller to the message fallback (stored redacted); routing by skill;
bad input on a desk socket closes it and sends the caller to the callback fallback, whose number
privacy erase covers; a desk agent whose socket drops mid-chat gets the chat back by reconnecting
within the queue's grace, and without them the fallback runs after it. Failure reasons are audited
and counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.browser import LiveServer
from tests.helpers.databases import db_kinds, fresh_postgres, query
from tests.helpers.metrics import metric_value
from tests.helpers.peer import Peer, escalated_chat
from voxgate.api.app import create_app
from voxgate.config import Settings


def _variant(bundle: Any, name: str, **queue: Any) -> Any:
    copy = bundle.model_copy(deep=True)
    copy.agent.name = name
    general = copy.agent.escalation.queues["general"]
    for key, value in queue.items():
        setattr(general, key, value)
    return copy


@pytest.fixture(scope="module", params=db_kinds())
def server(
    request: pytest.FixtureRequest, harbor_bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One worker serving three variants of the Harbor agent, on each database the run has."""
    tmp = tmp_path_factory.mktemp("desk-chat")
    url = f"sqlite:///{tmp / 'voxgate.db'}"
    if request.param == "postgresql":
        url = fresh_postgres()
    settings = Settings(database_url=url, data_dir=tmp)
    bundles = [
        _variant(harbor_bundle, "harbor-support", timeout_s=60, offer_timeout_s=60),
        _variant(harbor_bundle, "harbor-timeout", timeout_s=2, offer_timeout_s=60, fallback="message"),
        _variant(harbor_bundle, "harbor-tier2", timeout_s=60, offer_timeout_s=60, skills=["tier2"]),
        _variant(harbor_bundle, "harbor-brief-grace", timeout_s=60, offer_timeout_s=60, reconnect_grace_s=1),
    ]
    with LiveServer(create_app(settings, bundles)) as live:
        live.db_url = settings.db_url  # type: ignore[attr-defined]
        yield live


def _state(server: LiveServer) -> Any:
    return server.app.state.voxgate


def _user(server: LiveServer, name: str, role: str) -> tuple[str, str]:
    identity = _state(server).identity
    user = identity.create_user(name, "a long enough password", display_name=name.title())
    identity.bind_role(user.id, "*", role, None)
    token, _ = identity.create_token(user.id, "desk", ["*"], 1)
    return user.id, token


def _rows(server: LiveServer, sql: str, **params: Any) -> list[Any]:
    return query(server.db_url, sql, **params)  # type: ignore[attr-defined]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _ws_url(server: LiveServer, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def _desk(server: LiveServer, token: str) -> Peer:
    ws = await connect(
        _ws_url(server, "/ws/desk"),
        additional_headers={"Authorization": f"Bearer {token}"},
        proxy=None,
        open_timeout=10,
    )
    desk = Peer(ws)
    await desk.expect("hello")
    return desk


async def _escalated_chat(server: LiveServer, agent: str) -> Peer:
    return await escalated_chat(_ws_url(server, f"/ws/chat/{agent}"))


def _metric(server: LiveServer, prefix: str) -> float:
    return metric_value(_state(server), prefix)


def _audit(server: LiveServer, action: str) -> list[dict[str, Any]]:
    rows = _rows(server, "SELECT data, outcome, actor FROM audit_events WHERE action = :a ORDER BY seq", a=action)
    return [{"data": json.loads(r.data), "outcome": r.outcome, "actor": r.actor} for r in rows]


async def test_a_desk_agent_takes_over_an_escalated_chat_in_text(server: LiveServer) -> None:
    user_id, token = _user(server, "dana", "desk_agent")
    desk = await _desk(server, token)
    await desk.send(type="status", status="available")
    await desk.expect("status", status="available")

    chat = await _escalated_chat(server, "harbor-support")
    await chat.expect("handoff", status="waiting")
    offer = (await desk.expect("offer"))["handoff"]
    packet = offer["packet"]
    # the context packet reaches the person before they accept
    assert offer["channel"] == "chat" and offer["queue"] == "general"
    assert packet["reason"] == "caller_request" and packet["verified"] is False
    assert any("real person" in line["text"] for line in packet["transcript"] if line["role"] == "user")
    assert "asked for a person" in packet["summary"]

    await desk.send(type="accept", handoff_id=offer["id"])
    await desk.expect("connected", handoff_id=offer["id"])
    joined = await chat.expect("handoff", status="connected")
    assert joined["name"] == "Dana"

    await desk.send(type="message", text="Hi, this is Dana. How can I help?")
    said = await chat.expect("agent_message")
    assert said["from"] == "person" and said["text"] == "Hi, this is Dana. How can I help?"
    await chat.send(type="text", text="my router keeps dropping the connection")
    heard = await desk.expect("caller_message")
    assert heard["text"] == "my router keeps dropping the connection"

    await desk.send(type="hangup")
    await desk.expect("call_ended", by="agent")
    await chat.expect("handoff", status="ended")
    ended = await chat.expect("ended")
    assert ended["outcome"] == "escalated"  # the session's outcome stays what analytics count
    await desk.send(
        type="wrap_up",
        handoff_id=offer["id"],
        disposition="resolved",
        note="Router replaced; customer reachable on 415 555 0198",
    )
    done = await desk.expect("wrapped_up")
    assert done["status"] == "available"
    await desk.ws.close()
    await chat.ws.close()

    row = _rows(server, "SELECT * FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.status == "wrapped_up" and row.accepted_by == user_id and row.disposition == "resolved"
    assert row.failure_reason is None and row.accepted_at is not None and row.ended_at is not None
    assert "415 555 0198" not in row.disposition_note and "<PHONE_NUMBER>" in row.disposition_note
    steps = [e["event"] for e in _json(row.events)]
    assert steps == ["waiting", "offered", "accepted", "call_ended", "wrapped_up"], steps
    assert any(
        e["data"]["session"] == packet["session_id"] and e["actor"] == f"user:{user_id}"
        for e in _audit(server, "handoff.accepted")
    )
    assert any(e["data"]["disposition"] == "resolved" for e in _audit(server, "handoff.wrapped_up"))
    assert _metric(server, 'voxgate_handoff_outcomes_total{outcome="wrapped_up",queue="general"}') >= 1


async def test_queue_timeout_sends_the_chat_caller_to_the_message_fallback(server: LiveServer) -> None:
    _, token = _user(server, "erin", "desk_agent")
    failures_before = _metric(server, 'voxgate_handoff_failures_total{reason="queue_timeout"}')
    desk = await _desk(server, token)
    await desk.send(type="status", status="available")
    await desk.expect("status", status="available")

    chat = await _escalated_chat(server, "harbor-timeout")
    offer = (await desk.expect("offer"))["handoff"]
    # nobody accepts: after the queue's timeout the offer is withdrawn and the fallback runs
    withdrawn = await desk.expect("offer_withdrawn", handoff_id=offer["id"])
    assert withdrawn["reason"] == "queue_timeout"
    fallback = await chat.expect("handoff", status="fallback")
    assert fallback["kind"] == "message"
    prompt = await chat.expect("agent_message")
    assert "message" in prompt["text"].lower()
    await chat.send(
        type="text",
        text="Please call me back on 415 555 0198 or write to jo.smith@example.com "
        "about my bill, reference 41555501988",
    )
    thanks = await chat.expect("agent_message")
    assert "thank you" in thanks["text"].lower()
    await chat.expect("ended")
    await desk.ws.close()

    row = _rows(server, "SELECT * FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.status == "fallback_message" and row.failure_reason == "queue_timeout" and row.accepted_by is None
    stored = _rows(server, "SELECT * FROM callback_requests WHERE handoff_id = :i", i=offer["id"])
    assert len(stored) == 1 and stored[0].kind == "message" and stored[0].reason == "queue_timeout"
    message = stored[0].message
    assert "415 555 0198" not in message and "jo.smith@example.com" not in message
    assert "<PHONE_NUMBER>" in message and "<EMAIL_ADDRESS>" in message and "my bill" in message
    assert "41555501988" not in message and "<NUMBER>" in message  # digits no recogniser could type
    assert stored[0].callback_number is None
    failed = [e for e in _audit(server, "handoff.failed") if e["data"]["session"] == offer["packet"]["session_id"]]
    assert [e["data"]["reason"] for e in failed] == ["queue_timeout"] and failed[0]["outcome"] == "failed"
    assert _metric(server, 'voxgate_handoff_failures_total{reason="queue_timeout"}') == failures_before + 1

    # the desk works through what the fallback took
    import httpx

    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, headers=auth) as http:
        listed = (await http.get("/api/callbacks", params={"queue": "general"})).json()
        mine = [c for c in listed if c["id"] == stored[0].id]
        assert mine and mine[0]["kind"] == "message" and mine[0]["status"] == "open"
        done = await http.post(f"/api/callbacks/{stored[0].id}/complete")
        assert done.status_code == 200 and done.json()["status"] == "done"
        assert all(c["id"] != stored[0].id for c in (await http.get("/api/callbacks")).json())
        desk_view = (await http.get("/api/desk")).json()
        assert {q["name"] for q in desk_view["queues"]} >= {"general", "billing", "security"}
    assert _audit(server, "handoff.callback_completed")


async def test_callers_are_routed_by_queue_skill(server: LiveServer) -> None:
    _, plain_token = _user(server, "frank", "desk_agent")
    skilled_id, skilled_token = _user(server, "gita", "desk_agent")
    _, operator_token = _user(server, "olga", "operator")
    import httpx

    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        denied = await http.put(
            f"/api/desk/agents/{skilled_id}",
            json={"skills": ["tier2"]},
            headers={"Authorization": f"Bearer {skilled_token}"},
        )
        assert denied.status_code == 403  # desk agents do not give themselves skills
        r = await http.put(
            f"/api/desk/agents/{skilled_id}",
            json={"skills": ["tier2"]},
            headers={"Authorization": f"Bearer {operator_token}"},
        )
        assert r.status_code == 200 and r.json()["skills"] == ["tier2"]
    plain = await _desk(server, plain_token)
    await plain.send(type="status", status="available")  # available first: longest idle
    await plain.expect("status", status="available")
    skilled = await _desk(server, skilled_token)
    await skilled.send(type="status", status="available")
    await skilled.expect("status", status="available")

    chat = await _escalated_chat(server, "harbor-tier2")  # its queue needs the tier2 skill
    offer = (await skilled.expect("offer"))["handoff"]
    await skilled.send(type="accept", handoff_id=offer["id"])
    await skilled.expect("connected")
    await plain.send(type="status", status="away")
    await plain.expect("status", status="away")
    assert not [m for m in plain.seen if m["type"] == "offer"]  # the longer-idle agent without the skill
    await skilled.send(type="wrap_up", handoff_id=offer["id"], disposition="transferred")
    await skilled.expect("wrapped_up")
    await chat.expect("ended")
    for peer in (plain, skilled, chat):
        await peer.ws.close()


async def _leaves_a_callback_number(chat: Peer, said: str, e164: str) -> None:
    """After losing its desk agent, the chat caller is offered a callback, gives `said` and
    hears it read back as `e164`; then the conversation ends."""
    await chat.expect("handoff", status="fallback", kind="callback")
    prompt = await chat.expect("agent_message")
    assert "lost the connection" in prompt["text"] and "phone number" in prompt["text"]
    await chat.send(type="text", text=said)
    confirm = await chat.expect("agent_message")
    assert e164 in confirm["text"]
    await chat.expect("ended")
    await chat.ws.close()


async def test_bad_input_on_a_desk_socket_closes_it_and_the_caller_falls_back(
    server: LiveServer, tmp_path: Path
) -> None:
    _, token = _user(server, "hana", "desk_agent")
    desk = await _desk(server, token)
    await desk.send(type="status", status="available")
    await desk.expect("status", status="available")
    chat = await _escalated_chat(server, "harbor-support")
    offer = (await desk.expect("offer"))["handoff"]
    await desk.send(type="accept", handoff_id=offer["id"])
    await desk.expect("connected")
    await chat.expect("handoff", status="connected")

    await desk.ws.send(json.dumps({"type": "teleport"}))
    error = await desk.expect("error")
    assert "invalid message" in error["error"]
    with pytest.raises(ConnectionClosed):
        await desk.expect("never")
    assert desk.ws.close_code == 1003 and "invalid message" in (desk.ws.close_reason or "")

    # the caller is not dropped: the callback fallback takes a number
    await _leaves_a_callback_number(chat, "sure, it's 415-555-0123", "+14155550123")

    row = _rows(server, "SELECT * FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.failure_reason == "agent_disconnected" and row.status == "fallback_callback"
    stored = _rows(server, "SELECT * FROM callback_requests WHERE handoff_id = :i", i=offer["id"])
    assert [(r.kind, r.callback_number, r.channel) for r in stored] == [("callback", "+14155550123", "chat")]

    # the number is the caller's personal data: privacy find and erase cover it
    from voxgate.compliance import privacy

    db = _state(server).db
    found = privacy.find(db, phone="(415) 555-0123")
    assert {r.table for r in found} >= {"callback_requests", "sessions", "handoffs"}
    receipt = privacy.erase(db, audit=_state(server).audit, salt=b"0123456789abcdef0123", phone="415 555 0123")
    assert receipt.deleted.get("callback_requests") == 1
    assert privacy.find(db, phone="4155550123") == []
    assert _rows(server, "SELECT id FROM callback_requests WHERE handoff_id = :i", i=offer["id"]) == []


async def test_the_desk_socket_needs_a_desk_role_and_its_own_origin(server: LiveServer) -> None:
    import httpx

    _, maker = _user(server, "mike", "maker")
    _user(server, "nora", "desk_agent")
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        r = await http.post("/api/auth/login", json={"username": "nora", "password": "a long enough password"})
        assert r.status_code == 200
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    host = f"127.0.0.1:{server.port}"
    refused = (
        {},
        {"Authorization": f"Bearer {maker}"},
        {"Cookie": cookie, "Origin": "http://127.0.0.1:9"},
    )  # same site, another origin
    for headers in refused:
        ws = await connect(_ws_url(server, "/ws/desk"), additional_headers=headers, proxy=None, open_timeout=10)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008, headers
    ws = await connect(
        _ws_url(server, "/ws/desk"),
        additional_headers={"Cookie": cookie, "Origin": f"http://{host}"},
        proxy=None,
        open_timeout=10,
    )
    hello = await Peer(ws).expect("hello")
    assert hello["user"]["username"] == "nora" and hello["status"] == "away"
    await ws.close()


async def _connected_chat(server: LiveServer, token: str, agent: str) -> tuple[Peer, Peer, dict[str, Any]]:
    """A desk agent (available) and a chat caller on `agent`, connected: (desk, chat, offered handoff)."""
    desk = await _desk(server, token)
    await desk.send(type="status", status="available")
    await desk.expect("status", status="available")
    chat = await _escalated_chat(server, agent)
    offer = (await desk.expect("offer"))["handoff"]
    await desk.send(type="accept", handoff_id=offer["id"])
    await desk.expect("connected", handoff_id=offer["id"])
    await chat.expect("handoff", status="connected")
    return desk, chat, offer


async def test_a_desk_agent_who_drops_mid_chat_reconnects_and_resumes_it(server: LiveServer) -> None:
    user_id, token = _user(server, "iris", "desk_agent")
    lost_before = _metric(server, 'voxgate_handoff_failures_total{reason="agent_disconnected"}')
    desk, chat, offer = await _connected_chat(server, token, "harbor-support")  # the default grace (20 s)
    await desk.send(type="message", text="Let me look at your account.")
    await chat.expect("agent_message", text="Let me look at your account.")
    await chat.send(type="text", text="thanks, it is the fibre line")
    await desk.expect("caller_message", text="thanks, it is the fibre line")

    await desk.ws.close()  # a page reload: the socket goes away mid-chat
    held = await chat.expect("handoff")
    assert held["status"] == "reconnecting"  # not the fallback
    please_hold = await chat.expect("agent_message")
    assert please_hold["from"] == "agent" and "reconnecting" in please_hold["text"].lower()
    await chat.send(type="text", text="hello? are you still there?")  # waits for the person

    desk = await _desk(server, token)  # the same desk agent, a new socket
    resumed = await desk.expect("resumed")
    # the page gets the conversation back: the packet, its state and what was said so far
    assert resumed["handoff"]["id"] == offer["id"] and resumed["handoff"]["channel"] == "chat"
    assert resumed["handoff"]["packet"]["session_id"] == offer["packet"]["session_id"]
    assert resumed["state"] == "connecting" and resumed["status"] == "busy"
    assert resumed["lines"] == [
        {"from": "person", "text": "Let me look at your account."},
        {"from": "caller", "text": "thanks, it is the fibre line"},
    ]
    await desk.expect("connected", handoff_id=offer["id"])
    await desk.expect("caller_message", text="hello? are you still there?")
    await chat.expect("handoff", status="connected")
    assert not [m for m in chat.seen if m.get("type") == "handoff" and m.get("status") == "fallback"]

    # messages flow both ways again
    await desk.send(type="message", text="Sorry, my page reloaded. I am back.")
    back = await chat.expect("agent_message")
    assert back["from"] == "person" and back["text"] == "Sorry, my page reloaded. I am back."
    await chat.send(type="text", text="great, the line drops every evening")
    await desk.expect("caller_message", text="great, the line drops every evening")

    await desk.send(type="wrap_up", handoff_id=offer["id"], disposition="follow_up")
    done = await desk.expect("wrapped_up")
    assert done["status"] == "available"  # what they had chosen before the drop
    await chat.expect("ended")
    await desk.ws.close()
    await chat.ws.close()

    row = _rows(server, "SELECT * FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.status == "wrapped_up" and row.failure_reason is None and row.disposition == "follow_up"
    steps = [e["event"] for e in _json(row.events)]
    assert steps == ["waiting", "offered", "accepted", "agent_lost", "resumed", "call_ended", "wrapped_up"], steps
    assert any(
        e["data"]["session"] == offer["packet"]["session_id"]
        and e["actor"] == f"user:{user_id}"
        and e["data"]["state"] == "conversation"
        for e in _audit(server, "handoff.resumed")
    )
    assert not [e for e in _audit(server, "handoff.failed") if e["data"]["session"] == offer["packet"]["session_id"]]
    assert _metric(server, 'voxgate_handoff_failures_total{reason="agent_disconnected"}') == lost_before
    assert not _rows(server, "SELECT id FROM callback_requests WHERE handoff_id = :i", i=offer["id"])


async def test_without_the_desk_agent_back_the_caller_falls_back_after_the_grace(server: LiveServer) -> None:
    _, token = _user(server, "jake", "desk_agent")
    lost_before = _metric(server, 'voxgate_handoff_failures_total{reason="agent_disconnected"}')
    desk, chat, offer = await _connected_chat(server, token, "harbor-brief-grace")  # 1 s grace
    await desk.ws.close()
    held = await chat.expect("handoff")
    assert held["status"] == "reconnecting"
    # nobody comes back: the callback fallback, as for any lost desk agent
    await _leaves_a_callback_number(chat, "415 555 0147 please", "+14155550147")

    # coming back after the grace gives the desk agent nothing to resume
    desk = await _desk(server, token)
    await desk.send(type="status", status="away")
    await desk.expect("status", status="away")
    assert not [m for m in desk.seen if m["type"] == "resumed"]
    await desk.ws.close()

    row = _rows(server, "SELECT * FROM handoffs WHERE id = :i", i=offer["id"])[0]
    assert row.status == "fallback_callback" and row.failure_reason == "agent_disconnected"
    steps = [e["event"] for e in _json(row.events)]
    assert steps[:4] == ["waiting", "offered", "accepted", "agent_lost"] and "resumed" not in steps, steps
    assert steps.index("agent_lost") < steps.index("failure") < steps.index("fallback"), steps
    stored = _rows(
        server, "SELECT kind, callback_number, reason FROM callback_requests WHERE handoff_id = :i", i=offer["id"]
    )
    assert [tuple(r) for r in stored] == [("callback", "+14155550147", "agent_disconnected")]
    failed = [e for e in _audit(server, "handoff.failed") if e["data"]["session"] == offer["packet"]["session_id"]]
    assert [e["data"]["reason"] for e in failed] == ["agent_disconnected"]
    assert _metric(server, 'voxgate_handoff_failures_total{reason="agent_disconnected"}') == lost_before + 1
