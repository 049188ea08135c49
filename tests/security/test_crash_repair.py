"""After a crash, what the worker left open is repaired.

A worker registers, heartbeats and marks itself stopped; a repair pass (at start-up, then with
every heartbeat) closes the sessions of workers that are gone (`worker_lost`) and this worker's
sessions nobody holds past the idle timeout (`idle_timeout`), fails their open handoffs with a
typed reason (`worker_lost`, `session_closed`: an HTTP chat's escalation, which no person can
join) and audits each pass in the chain. Sessions of another live worker on the same database are
never touched.

The fast tests decide on a real database with an injected clock; the slow ones kill -9 a real
`voxgate serve` holding live HTTP and WebSocket chats and a handoff waiting in the desk's queue,
start it again on the same database, and check that everything is closed and accounted for and the
audit chain still verifies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.helpers import loopback
from tests.helpers.databases import query
from tests.helpers.paths import HARBOR_AGENT
from tests.helpers.servers import child_env, free_port
from voxgate.compliance.audit import AuditLog, audit_public_keys
from voxgate.handoff.desk import FailureReason
from voxgate.runtime.registry import LocalSessions
from voxgate.store.db import Database
from voxgate.store.liveness import (
    IDLE_TIMEOUT,
    SESSION_CLOSED,
    WORKER_LOST,
    Facts,
    OpenHandoff,
    OpenSession,
    Repairer,
    SqlWorkerRegistry,
    handoff_verdict,
    session_verdict,
)
from voxgate.store.models import HandoffRow, SessionRow, WorkerRow

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
LIVENESS_S = 60.0
IDLE_S = 900.0


class Clock:
    """Time that moves only when a test moves it."""

    def __init__(self, start: dt.datetime = T0):
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


# ---- the decision, as a function of what a pass knows --------------------------------------------------


def _facts(
    live: set[str],
    *,
    me: str = "me",
    sessions: set[str] = frozenset(),  # type: ignore[assignment]
    handoffs: set[int] = frozenset(),
    now: dt.datetime = T0,
    portable: frozenset[str] = frozenset(),
) -> Facts:  # type: ignore[assignment]
    return Facts(
        me=me,
        live_workers=frozenset(live | {me}),
        now=now,
        idle_timeout=dt.timedelta(seconds=IDLE_S),
        liveness_timeout=dt.timedelta(seconds=LIVENESS_S),
        local_sessions=frozenset(sessions),
        local_handoffs=frozenset(handoffs),
        portable_channels=portable,
    )


def _open(worker: str | None, *, idle_s: float = 0.0, sid: str = "s1", channel: str = "twilio") -> OpenSession:
    seen = T0 - dt.timedelta(seconds=idle_s)
    return OpenSession(
        id=sid, worker_id=worker, channel=channel, started_at=seen, last_activity_at=seen, turn_count=2, escalated=False
    )


def test_a_session_is_closed_only_when_its_worker_is_gone_or_nothing_holds_it_past_the_idle_timeout() -> None:
    facts = _facts({"sibling"}, sessions={"held"})
    assert session_verdict(_open("sibling", idle_s=10 * IDLE_S), facts) is None  # a live sibling's: never
    assert session_verdict(_open("crashed"), facts) == WORKER_LOST  # not live (stopped, stale or unknown)
    assert session_verdict(_open("me", idle_s=IDLE_S - 1), facts) is None
    assert session_verdict(_open("me", idle_s=IDLE_S), facts) == IDLE_TIMEOUT
    assert session_verdict(_open("me", idle_s=10 * IDLE_S, sid="held"), facts) is None  # a conversation holds it


def test_a_gone_workers_conversation_that_another_worker_can_continue_is_closed_only_when_idle() -> None:
    portable = _facts({"sibling"}, portable=frozenset({"http"}))
    assert session_verdict(_open("crashed", channel="http"), portable) is None  # its next turn goes elsewhere
    assert session_verdict(_open("crashed", channel="http", idle_s=IDLE_S - 1), portable) is None
    assert session_verdict(_open("crashed", channel="http", idle_s=IDLE_S), portable) == IDLE_TIMEOUT
    assert session_verdict(_open("crashed", channel="twilio"), portable) == WORKER_LOST  # a call cannot move
    assert session_verdict(_open("crashed", channel="http"), _facts({"sibling"})) == WORKER_LOST  # no shared store
    cautious = dataclasses.replace(portable, cluster_wide=False)  # without the reaper's lease: not its to close
    assert session_verdict(_open("crashed", channel="http", idle_s=IDLE_S), cautious) is None


def test_rows_from_before_workers_registered_close_only_when_no_other_worker_is_live() -> None:
    old = _open(None, idle_s=2 * LIVENESS_S)
    assert session_verdict(old, _facts(set())) == WORKER_LOST
    assert session_verdict(old, _facts({"sibling"})) is None  # it may be the sibling's (an older version)
    assert session_verdict(_open(None, idle_s=2 * 86400), _facts({"sibling"})) == WORKER_LOST  # a day: nobody's
    assert session_verdict(_open(None, idle_s=1), _facts(set())) is None  # something is talking in it right now


def test_an_open_handoff_fails_with_a_typed_reason() -> None:
    def handoff(worker: str | None, *, hid: int = 1, age_s: float = 0.0, session_open: bool = False) -> OpenHandoff:
        return OpenHandoff(
            id=hid,
            session_id="s1",
            worker_id=worker,
            status="waiting",
            created_at=T0 - dt.timedelta(seconds=age_s),
            session_open=session_open,
        )

    facts = _facts({"sibling"}, handoffs={7})
    assert handoff_verdict(handoff("crashed"), facts) == WORKER_LOST
    assert handoff_verdict(handoff("sibling", age_s=10 * IDLE_S), facts) is None
    # this worker's: an HTTP chat's escalation nobody can join fails once the idle timeout has passed
    assert handoff_verdict(handoff("me", age_s=IDLE_S - 1), facts) is None
    assert handoff_verdict(handoff("me", age_s=IDLE_S), facts) == SESSION_CLOSED
    assert handoff_verdict(handoff("me", hid=7, age_s=10 * IDLE_S), facts) is None  # the live desk holds it
    assert handoff_verdict(handoff("me", session_open=True), facts, closing={"s1"}) == SESSION_CLOSED
    assert {WORKER_LOST, SESSION_CLOSED} <= {r.value for r in FailureReason}  # the desk's typed reasons


# ---- the pass, on a real database ------------------------------------------------------------------------


def _session(
    db: Database,
    sid: str,
    worker: str | None,
    at: dt.datetime,
    *,
    turns: int = 1,
    channel: str = "websocket",
    ended: bool = False,
    escalated: bool = False,
    env: str = "dev",
) -> None:
    with db.orm() as orm, orm.begin():
        orm.add(
            SessionRow(
                id=sid,
                agent="harbor-support",
                agent_version="1",
                environment=env,
                channel=channel,
                started_at=at,
                last_activity_at=at,
                turn_count=turns,
                worker_id=worker,
                ended_at=at if ended else None,
                outcome="escalated" if ended else None,
                escalation_reason="caller_request" if escalated or ended else None,
            )
        )


def _handoff(db: Database, sid: str, at: dt.datetime, status: str = "waiting") -> int:
    with db.orm() as orm, orm.begin():
        row = HandoffRow(
            session_id=sid,
            queue="general",
            reason="caller_request",
            status=status,
            packet={},
            created_at=at,
            events=[{"event": "waiting"}],
        )
        orm.add(row)
        orm.flush()
        return row.id


def _row(db: Database, model: Any, key: Any) -> Any:
    with db.orm() as orm:
        return orm.get(model, key)


def _repairer(db: Database, registry: SqlWorkerRegistry, worker: str, clock: Clock) -> Repairer:
    return Repairer(db, "dev", worker, registry, liveness_timeout_s=LIVENESS_S, idle_timeout_s=IDLE_S, clock=clock)


def test_a_starting_worker_repairs_a_crashed_one_and_never_a_live_sibling(db: Database) -> None:
    clock = Clock()
    registry = SqlWorkerRegistry(db, clock)
    crashed = registry.register("dev", "host-a", 100)
    sibling = registry.register("dev", "host-b", 200)
    _session(db, "crashed-chat", crashed, T0, turns=3)
    _session(db, "crashed-silent", crashed, T0, turns=0)
    _session(db, "crashed-escalating", crashed, T0, escalated=True)  # escalated; its end never written
    _session(db, "crashed-escalated", crashed, T0, ended=True)
    waiting = _handoff(db, "crashed-escalated", T0)
    offered = _handoff(db, "crashed-escalating", T0, status="offered")
    _session(db, "sibling-chat", sibling, T0)
    _session(db, "sibling-escalated", sibling, T0, ended=True)
    sibling_waiting = _handoff(db, "sibling-escalated", T0)
    _session(db, "other-env", crashed, T0, env="prod")

    clock.advance(30)  # the crashed worker's last heartbeat is recent: it may only be slow
    starting = registry.register("dev", "host-a", 101)
    repairer = _repairer(db, registry, starting, clock)
    assert repairer.run().empty
    assert registry.heartbeat(sibling)
    clock.advance(LIVENESS_S)  # the crashed worker has been silent past the liveness timeout; the sibling beat
    report = repairer.run()
    assert sorted(report.sessions[WORKER_LOST]) == ["crashed-chat", "crashed-escalating", "crashed-silent"]
    assert sorted(report.handoffs[WORKER_LOST]) == sorted([waiting, offered])
    assert report.lost_workers == [crashed] and set(report.sessions) == {WORKER_LOST}

    outcomes = {
        sid: (_row(db, SessionRow, sid).outcome, _row(db, SessionRow, sid).end_reason)
        for sid in ("crashed-chat", "crashed-silent", "crashed-escalating")
    }
    assert outcomes == {
        "crashed-chat": ("abandoned", WORKER_LOST),
        "crashed-silent": ("unengaged", WORKER_LOST),
        "crashed-escalating": ("escalated", WORKER_LOST),
    }
    assert all(_row(db, SessionRow, sid).ended_at is not None for sid in outcomes)
    for hid in (waiting, offered):
        row = _row(db, HandoffRow, hid)
        assert (row.status, row.failure_reason) == ("failed", WORKER_LOST) and row.ended_at is not None
        assert [e["event"] for e in row.events][-2:] == ["failure", "failed"]
    # the live sibling's conversation and queued caller, and another environment's rows, are untouched
    assert _row(db, SessionRow, "sibling-chat").ended_at is None
    assert _row(db, HandoffRow, sibling_waiting).status == "waiting"
    assert _row(db, SessionRow, "other-env").ended_at is None
    assert repairer.run().empty  # nothing is repaired twice


def test_a_cleanly_stopped_worker_counts_as_gone_at_once(db: Database) -> None:
    clock = Clock()
    registry = SqlWorkerRegistry(db, clock)
    stopped = registry.register("dev", "host-a", 100)
    _session(db, "left-open", stopped, T0)
    registry.stop(stopped)
    assert not registry.heartbeat(stopped)  # a stopped worker cannot beat itself alive again
    starting = registry.register("dev", "host-a", 101)
    assert _row(db, WorkerRow, stopped).stopped_at is not None
    assert _repairer(db, registry, starting, clock).run().sessions == {WORKER_LOST: ["left-open"]}


def test_a_worker_expires_its_own_idle_sessions_and_http_escalations_but_not_what_it_holds(db: Database) -> None:
    clock = Clock()
    registry = SqlWorkerRegistry(db, clock)
    me = registry.register("dev", "host-a", 100)
    repairer = _repairer(db, registry, me, clock)
    _session(db, "held", me, T0, channel="voice")  # a voice call in progress (no turn for a while)
    _session(db, "orphan", me, T0, channel="http")  # nothing in this process holds it any more
    _session(db, "recent", me, T0 + dt.timedelta(seconds=IDLE_S - 10), channel="http")
    _session(db, "http-escalated", me, T0, channel="http", ended=True)
    http_handoff = _handoff(db, "http-escalated", T0)
    _session(db, "chat-escalated", me, T0, ended=True)
    desk_handoff = _handoff(db, "chat-escalated", T0)  # a chat caller holding in this worker's desk
    _session(db, "orphan-escalating", me, T0, escalated=True)
    orphan_handoff = _handoff(db, "orphan-escalating", T0)

    clock.advance(IDLE_S - 1)
    assert repairer.run(["held"], [desk_handoff]).empty
    clock.advance(1)
    report = repairer.run(["held"], [desk_handoff])
    assert sorted(report.sessions[IDLE_TIMEOUT]) == ["orphan", "orphan-escalating"]
    assert sorted(report.handoffs[SESSION_CLOSED]) == sorted([http_handoff, orphan_handoff])
    assert (_row(db, SessionRow, "orphan").outcome, _row(db, SessionRow, "orphan").end_reason) == (
        "abandoned",
        IDLE_TIMEOUT,
    )
    assert _row(db, HandoffRow, http_handoff).failure_reason == SESSION_CLOSED
    assert _row(db, SessionRow, "held").ended_at is None and _row(db, SessionRow, "recent").ended_at is None
    assert _row(db, HandoffRow, desk_handoff).status == "waiting"
    assert report.lost_workers == []


def test_two_workers_repairing_at_once_close_each_row_once(db: Database) -> None:
    clock = Clock()
    registry = SqlWorkerRegistry(db, clock)
    crashed = registry.register("dev", "host-a", 100)
    for n in range(40):
        _session(db, f"s{n:02}", crashed, T0)
    _session(db, "escalated", crashed, T0, ended=True)
    hid = _handoff(db, "escalated", T0)
    clock.advance(2 * LIVENESS_S)
    a = _repairer(db, registry, registry.register("dev", "host-b", 1), clock)
    b = _repairer(db, registry, registry.register("dev", "host-c", 2), clock)

    async def both() -> list[Any]:
        return await asyncio.gather(asyncio.to_thread(a.run), asyncio.to_thread(b.run))

    reports = asyncio.run(both())
    closed = [sid for r in reports for sid in r.sessions.get(WORKER_LOST, [])]
    failed = [h for r in reports for h in r.handoffs.get(WORKER_LOST, [])]
    assert sorted(closed) == [f"s{n:02}" for n in range(40)]  # each once, by one or the other
    assert failed == [hid]


def test_rows_from_before_the_registry_close_when_the_worker_starts_alone(db: Database) -> None:
    clock = Clock()
    registry = SqlWorkerRegistry(db, clock)
    _session(db, "legacy-chat", None, T0)
    _session(db, "legacy-escalated", None, T0, channel="http", ended=True)
    legacy_handoff = _handoff(db, "legacy-escalated", T0)
    clock.advance(2 * LIVENESS_S)
    sibling = registry.register("dev", "host-b", 2)
    me = registry.register("dev", "host-a", 1)
    repairer = _repairer(db, registry, me, clock)
    assert repairer.run().empty  # another worker is live: the rows may be its own
    registry.stop(sibling)
    report = repairer.run()  # (a later pass reads them again though they started before its window)
    assert report.sessions == {WORKER_LOST: ["legacy-chat"]} and report.handoffs == {WORKER_LOST: [legacy_handoff]}


def test_a_worker_repairs_at_start_up_beats_and_says_when_it_stops(db: Database) -> None:
    from voxgate.store.liveness import LocalHolds, RepairReport, WorkerLiveness

    clock = Clock()
    registry = SqlWorkerRegistry(db, clock)
    crashed = registry.register("dev", "host-a", 100)
    _session(db, "left-open", crashed, T0)
    clock.advance(2 * LIVENESS_S)
    heard: list[RepairReport] = []

    async def heard_of(report: RepairReport) -> None:
        heard.append(report)

    async def lifetime() -> str:
        worker = WorkerLiveness(
            registry,
            db,
            "dev",
            heartbeat_s=3600,
            liveness_timeout_s=LIVENESS_S,
            idle_timeout_s=IDLE_S,
            holds=LocalHolds(sessions=lambda: {"mine"}),
            on_repair=heard_of,
            clock=clock,
        )
        me = await worker.start()  # the start-up pass runs before start() returns
        assert [r.sessions for r in heard] == [{WORKER_LOST: ["left-open"]}]
        _session(db, "mine", me, clock.now)
        clock.advance(IDLE_S + 1)  # long after the last turn, but a conversation in this process holds it
        assert (await worker.repair()).empty and len(heard) == 1
        await worker.beat()
        assert _aware_time(_row(db, WorkerRow, me).heartbeat_at) == clock.now
        await worker.stop()
        return me

    me = asyncio.run(lifetime())
    assert _row(db, WorkerRow, me).stopped_at is not None
    assert me not in registry.live("dev", LIVENESS_S)


def _aware_time(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def test_the_audit_data_of_a_large_pass_is_spread_over_events_that_fit() -> None:
    from voxgate.compliance.audit import AuditEvent
    from voxgate.store.liveness import RepairReport

    report = RepairReport(
        at=T0,
        sessions={WORKER_LOST: [f"{n:032x}" for n in range(250)]},
        handoffs={WORKER_LOST: list(range(30))},
        lost_workers=["a" * 32],
    )
    parts = report.audit_data()
    assert len(parts) == 3 and all(
        p["counts"] == {"sessions": {WORKER_LOST: 250}, "handoffs": {WORKER_LOST: 30}} for p in parts
    )
    for data in parts:
        AuditEvent(actor="system", action="worker.repair", resource="worker:x", data=data)  # fits (8 KiB)
    ids = [i for p in parts for i in p.get("sessions", {}).get(WORKER_LOST, [])]  # type: ignore[attr-defined]
    assert ids == report.sessions[WORKER_LOST]


def test_a_chat_socket_taking_turns_is_not_idle_in_the_registry() -> None:
    class Fake:
        def __init__(self, sid: str):
            self.id, self.turn_no, self.closed = sid, 0, None

        async def close(self, reason: str) -> str:
            self.closed = reason
            return "abandoned"

    now = [0.0]
    registry = LocalSessions(idle_s=100, clock=lambda: now[0])
    talking, silent = Fake("talking"), Fake("silent")
    registry.add(talking)  # type: ignore[arg-type]
    registry.add(silent)  # type: ignore[arg-type]
    for _ in range(4):  # the socket never fetches its session from the registry; it takes turns
        now[0] += 60
        talking.turn_no += 1
        asyncio.run(registry.reap())
    assert silent.closed == "idle_timeout" and talking.closed is None
    assert registry.ids() == {"talking"}


# ---- a real worker, killed -9 and started again ----------------------------------------------------------


class Worker:
    """`voxgate serve` (development mode, the Harbor agent) in a process of its own, on `db_url`."""

    def __init__(self, db_url: str, data_dir: Path, log: Path, **settings: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = child_env()
        env.update(
            VOXGATE_DATABASE_URL=db_url,
            VOXGATE_DATA_DIR=str(data_dir),
            PYTHONUNBUFFERED="1",
            VOXGATE_WORKER_HEARTBEAT_S="0.2",
            VOXGATE_WORKER_LIVENESS_TIMEOUT_S="1",
            **settings,
        )
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "voxgate.cli",
                    "serve",
                    "--agent-dir",
                    str(HARBOR_AGENT),
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, f"the worker exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{self.output()}"
            try:
                if loopback.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")[-6000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _desk_token(db_url: str) -> str:
    from voxgate.governance.identity import Identity

    db = Database(db_url)
    db.migrate()
    identity = Identity(db)
    user = identity.create_user("dora", "a long enough password", display_name="Dora")
    identity.bind_role(user.id, "*", "desk_agent", None)
    token, _ = identity.create_token(user.id, "desk", ["*"], 1)
    db.dispose()
    return token


async def _recv(ws: Any, kind: str, **match: Any) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if msg.get("type") == kind and all(msg.get(k) == v for k, v in match.items()):
                return msg  # type: ignore[no-any-return]


def _wait_for(db_url: str, sql: str, what: str, worker: Worker, timeout_s: float = 60, **params: object) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = query(db_url, sql, **params)
        if rows:
            return rows
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s\n{worker.output()}"
        time.sleep(0.2)


async def _live_conversations(worker: Worker, token: str, db_url: str) -> dict[str, Any]:
    """An HTTP chat mid-conversation, a WebSocket chat mid-conversation, and a WebSocket chat escalated
    with its caller waiting in the desk's queue (offered to a desk agent, who declined); the sockets
    stay open (the process is killed under them)."""
    ws_base = worker.url.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as http:
        started = (await http.post("/api/agents/harbor-support/sessions")).json()
        turn = await http.post(f"/api/sessions/{started['session_id']}/turns", json={"text": "what's my balance"})
        assert turn.status_code == 200 and not turn.json()["ended"]
    chat = await connect(f"{ws_base}/ws/chat/harbor-support", proxy=None, open_timeout=10)
    live_ws = (await _recv(chat, "turn"))["session_id"]
    await chat.send(json.dumps({"type": "text", "text": "is there an outage in my area"}))
    assert not (await _recv(chat, "turn"))["ended"]
    desk = await connect(
        f"{ws_base}/ws/desk", proxy=None, open_timeout=10, additional_headers={"Authorization": f"Bearer {token}"}
    )
    await _recv(desk, "hello")
    await desk.send(json.dumps({"type": "status", "status": "available"}))
    await _recv(desk, "status", status="available")
    caller = await connect(f"{ws_base}/ws/chat/harbor-support", proxy=None, open_timeout=10)
    escalated = (await _recv(caller, "turn"))["session_id"]
    await caller.send(json.dumps({"type": "text", "text": "I want to talk to a real person"}))
    assert (await _recv(caller, "turn"))["outcome"] == "escalated"
    await _recv(caller, "handoff", status="waiting")
    offer = (await _recv(desk, "offer"))["handoff"]
    await desk.send(json.dumps({"type": "decline", "handoff_id": offer["id"]}))
    _wait_for(
        db_url,
        "SELECT id FROM handoffs WHERE id = :i AND status = 'waiting' "
        "AND CAST(events AS TEXT) LIKE '%offer_withdrawn%'",
        "the declined offer recorded",
        worker,
        i=offer["id"],
    )
    return {
        "http": started["session_id"],
        "ws": live_ws,
        "escalated": escalated,
        "handoff": offer["id"],
        "sockets": [chat, desk, caller],
    }


@pytest.mark.slow
def test_a_worker_killed_mid_conversation_is_repaired_when_it_starts_again(
    db_url: str, tmp_path: Path, harbor_backend: Any
) -> None:
    token = _desk_token(db_url)
    first = Worker(db_url, tmp_path, tmp_path / "worker.log")
    try:
        live = asyncio.run(_live_conversations(first, token, db_url))
        first_id = query(db_url, "SELECT worker_id FROM sessions WHERE id = :s", s=live["http"])[0].worker_id
        assert first_id is not None
        first.kill()
    finally:
        first.stop()
    # the crash left the conversations open and the caller queued, as nothing closes them
    open_rows = query(db_url, "SELECT id FROM sessions WHERE ended_at IS NULL")
    assert {r.id for r in open_rows} == {live["http"], live["ws"]}
    assert query(db_url, "SELECT status FROM handoffs WHERE id = :i", i=live["handoff"])[0].status == "waiting"

    second = Worker(db_url, tmp_path, tmp_path / "worker.log")
    try:
        _wait_for(
            db_url,
            "SELECT id FROM handoffs WHERE id = :i AND status = 'failed'",
            "the handoff repaired",
            second,
            i=live["handoff"],
        )
        _wait_for(db_url, "SELECT 1 FROM audit_events WHERE action = 'worker.repair'", "the repair audited", second)
    finally:
        second.stop()

    sessions = {r.id: r for r in query(db_url, "SELECT id, ended_at, outcome, end_reason FROM sessions")}
    for sid in (live["http"], live["ws"]):
        row = sessions[sid]
        assert (row.outcome, row.end_reason) == ("abandoned", "worker_lost") and row.ended_at is not None, row
    assert sessions[live["escalated"]].outcome == "escalated"  # it had ended (escalated) before the crash
    assert all(r.ended_at is not None for r in sessions.values())  # every conversation is closed
    handoff = query(
        db_url, "SELECT status, failure_reason, ended_at, events FROM handoffs WHERE id = :i", i=live["handoff"]
    )[0]
    assert (handoff.status, handoff.failure_reason) == ("failed", "worker_lost") and handoff.ended_at is not None
    events = handoff.events if isinstance(handoff.events, list) else json.loads(handoff.events)
    assert [e["event"] for e in events][-2:] == ["failure", "failed"]
    still_open = "SELECT count(*) AS n FROM handoffs WHERE status IN ('waiting', 'offered', 'accepted')"
    assert query(db_url, still_open)[0].n == 0

    # accounted for in the audit chain: one repair event naming what it closed and the worker that was lost
    repairs = query(db_url, "SELECT data FROM audit_events WHERE action = 'worker.repair'")
    assert len(repairs) == 1, repairs
    data = json.loads(repairs[0].data)
    assert sorted(data["sessions"]["worker_lost"]) == sorted([live["http"], live["ws"]])
    assert data["handoffs"] == {"worker_lost": [live["handoff"]]} and data["lost_workers"] == [first_id]
    assert data["counts"] == {"sessions": {"worker_lost": 2}, "handoffs": {"worker_lost": 1}}
    workers = {r.id: r for r in query(db_url, "SELECT id, stopped_at FROM workers")}
    assert len(workers) == 2 and workers[first_id].stopped_at is None  # killed: it never said it stopped
    assert all(r.stopped_at is not None for wid, r in workers.items() if wid != first_id)  # stopped cleanly
    db = Database(db_url)
    try:
        report = AuditLog(db).verify(audit_public_keys(db))
    finally:
        db.dispose()
    assert report.ok, report


@pytest.mark.slow
@pytest.mark.sqlite_only  # the expiry sweep itself runs on both databases above
def test_an_http_chat_left_alone_expires_and_its_queued_escalation_fails(
    db_url: str, tmp_path: Path, harbor_backend: Any
) -> None:
    worker = Worker(db_url, tmp_path, tmp_path / "worker.log", VOXGATE_SESSION_IDLE_TIMEOUT_S="2")
    try:
        with httpx.Client(base_url=worker.url, timeout=30) as http:
            idle = http.post("/api/agents/harbor-support/sessions").json()["session_id"]
            escalated = http.post("/api/agents/harbor-support/sessions").json()["session_id"]
            turn = http.post(f"/api/sessions/{escalated}/turns", json={"text": "I want to talk to a real person"})
            assert turn.json()["outcome"] == "escalated"
            handoff = _wait_for(
                db_url, "SELECT id FROM handoffs WHERE session_id = :s", "the escalation queued", worker, s=escalated
            )[0].id
            _wait_for(
                db_url,
                "SELECT 1 FROM handoffs WHERE id = :i AND status = 'failed'",
                "the escalation failed",
                worker,
                i=handoff,
            )
            _wait_for(
                db_url,
                "SELECT 1 FROM sessions WHERE id = :s AND ended_at IS NOT NULL",
                "the chat expired",
                worker,
                s=idle,
            )
            assert http.post(f"/api/sessions/{idle}/turns", json={"text": "hello?"}).status_code == 404
    finally:
        worker.stop()
    row = query(db_url, "SELECT outcome, end_reason FROM sessions WHERE id = :s", s=idle)[0]
    assert (row.outcome, row.end_reason) == ("unengaged", "idle_timeout")
    failed = query(db_url, "SELECT status, failure_reason FROM handoffs WHERE id = :i", i=handoff)[0]
    assert (failed.status, failed.failure_reason) == ("failed", "session_closed")
    repairs = [
        json.loads(r.data) for r in query(db_url, "SELECT data FROM audit_events WHERE action = :a", a="worker.repair")
    ]
    assert [r["handoffs"] for r in repairs] == [{"session_closed": [handoff]}]
