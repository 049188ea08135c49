"""Caller PIN guessing across sessions: failed verifications count per pseudonymous account across
sessions, channels and agents; after N the account is locked for a cooling-off period in which
even the right PIN is refused without asking the back end, the caller is offered a person, the
security event names the account only by its keyed hash, and the default alert rule opens an
incident. The decision is table-tested, the store on SQLite and PostgreSQL, the worker over real
HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.helpers.databases import query
from tests.helpers.servers import serving
from voxgate.api.app import create_app
from voxgate.compliance.account_protection import StoreVerificationGuard, subject_of
from voxgate.compliance.privacy import Subject, load_salt, subject_hash
from voxgate.config import Settings
from voxgate.observe.alerts import run_once
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.lockout import LockoutPolicy, LockSpan, MemoryVerificationGuard, Verdict, active_lock, decide
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.store.db import Database

AGENT = "harbor-support"
N = 5  # the Harbor agent's authentication.lockout.max_failures
T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
POLICY = LockoutPolicy(max_failures=3, window=dt.timedelta(minutes=15), lock_for=dt.timedelta(minutes=10))


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


# ---- the decision, as a table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "last_lock", "now", "counted", "locks_until"),
    [
        ([], None, 0, 0, None),
        ([0], None, 0, 1, None),
        ([0, 1], None, 2, 2, None),
        ([0, 1, 2], None, 2, 3, 12),  # the third within the window locks for lock_for
        ([0, 5, 14], None, 14, 3, 24),  # the window's edges count
        ([0, 5, 16], None, 16, 2, None),  # the first has left the 15-minute window
        ([-30, -20, 0], None, 0, 1, None),  # old failures never count
        ([0, 1, 2, 3], None, 3, 4, 13),
        ([0, 1, 2, 13], (2, 12), 13, 1, None),  # after a lock expires the count starts again
        ([0, 1, 2, 13, 14, 15], (2, 12), 15, 3, 25),  # ... and N fresh failures lock again
        ([0, 1, 2, 5], (2, 12), 5, 0, None),  # during a lock nothing is counted or placed
        ([0, 1, 10], None, 11, 3, 21),  # a failure stamped before now still counts
    ],
)
def test_decide(
    failures: list[float], last_lock: tuple[float, float] | None, now: float, counted: int, locks_until: float | None
) -> None:
    lock = LockSpan(at(last_lock[0]), at(last_lock[1])) if last_lock else None
    decision = decide([at(m) for m in failures], lock, at(now), POLICY)
    assert decision.counted == counted
    expected = at(locks_until) if locks_until is not None else None
    assert (decision.lock.locked_until if decision.lock else None) == expected
    if decision.lock is not None:
        assert decision.lock.locked_at == at(now)


@pytest.mark.parametrize(
    ("spans", "now", "until"),
    [
        ([], 0, None),
        ([(0, 10)], 5, 10),
        ([(0, 10)], 10, None),  # locked_until is the first moment it is free again
        ([(0, 10)], -1, None),
        ([(0, 10), (2, 30)], 12, 30),
        ([(0, 10), (2, 30)], 5, 30),  # the longer lock wins
    ],
)
def test_active_lock(spans: list[tuple[float, float]], now: float, until: float | None) -> None:
    lock = active_lock([LockSpan(at(a), at(b)) for a, b in spans], at(now))
    assert (lock.locked_until if lock else None) == (at(until) if until is not None else None)


# ---- the store-backed guard, on SQLite and PostgreSQL ----------------------------------------------


class FakeClock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture()
def store(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    db.migrate()
    yield db
    db.dispose()


def test_store_guard_counts_across_sessions_agents_and_channels_then_locks(
    store: Database, db_url: str, tmp_path: Path
) -> None:
    salt = load_salt(tmp_path / "privacy-salt")
    clock = FakeClock(T0)
    guard = StoreVerificationGuard(store, salt=salt, clock=clock)
    account = "12345678"

    async def fail(agent: str, channel: str, env: str = "prod", who: str = account) -> Any:
        return await guard.failed(
            environment=env,
            agent=agent,
            channel=channel,
            session_id=f"s-{clock.now.minute}",
            kind="account_number",
            identifier=who,
            policy=POLICY,
        )

    async def scenario() -> None:
        first = await fail("billing-bot", "http")
        assert first.failures == 1 and not first.locked
        clock.now = at(1)
        assert (await fail("support-bot", "twilio")).failures == 2  # another agent and channel, same account
        # another environment and another account are counted apart
        assert (await fail("support-bot", "twilio", env="test")).failures == 1
        assert (await fail("support-bot", "http", who="87654321")).failures == 1
        assert not (await guard.check(environment="prod", kind="account_number", identifier=account)).locked
        clock.now = at(2)
        third = await fail("billing-bot", "websocket")
        assert third.newly_locked and third.locked_until == at(12) and third.failures == 3
        for minute in (3, 11.9):
            clock.now = at(minute)
            verdict = await guard.check(environment="prod", kind="account_number", identifier=account)
            assert verdict.locked and verdict.locked_until == at(12)
        during = await fail("billing-bot", "http")  # a failure during the lock is refused, not counted
        assert during.locked and not during.newly_locked and during.failures == 0
        assert not (await guard.check(environment="test", kind="account_number", identifier=account)).locked
        clock.now = at(12)  # the cooling-off is over
        assert not (await guard.check(environment="prod", kind="account_number", identifier=account)).locked
        after = await fail("billing-bot", "http")
        assert after.failures == 1 and not after.locked  # a fresh count, not an instant re-lock
        # a second guard (another worker on the same database) sees the same counts
        other = StoreVerificationGuard(store, salt=salt, clock=clock)
        clock.now = at(13)
        assert (
            await other.failed(
                environment="prod",
                agent="x",
                channel="voice",
                session_id=None,
                kind="account_number",
                identifier=account,
                policy=POLICY,
            )
        ).failures == 2

    asyncio.run(scenario())
    subject = subject_hash(Subject(account_number=account), salt)
    assert subject == subject_of(salt, "account_number", account)
    assert re.fullmatch(r"[0-9a-f]{64}", subject)
    rows = query(db_url, "SELECT subject, environment, agent, channel FROM verification_failures")
    assert rows and all(account not in " ".join(map(str, r)) for r in rows)
    assert {r[0] for r in rows if r[1] == "prod"} <= {subject, subject_of(salt, "account_number", "87654321")}
    (lock,) = query(db_url, "SELECT subject, environment, failures FROM verification_locks")
    assert tuple(lock) == (subject, "prod", 3)


def test_store_guard_prunes_what_can_no_longer_count(store: Database, db_url: str, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    guard = StoreVerificationGuard(store, salt_path=tmp_path / "keys" / "privacy-salt", clock=clock)

    async def scenario() -> None:
        for minute in (0, 1, 2, 40, 41):
            clock.now = at(minute)
            await guard.failed(
                environment="prod",
                agent="a",
                channel="http",
                session_id=None,
                kind="phone",
                identifier="+447700900123",
                policy=POLICY,
            )

    asyncio.run(scenario())
    # the lock of minute 2 ended at 12, more than a window before 41; failures older than the window are gone
    assert query(db_url, "SELECT count(*) FROM verification_locks")[0][0] == 0
    assert query(db_url, "SELECT count(*) FROM verification_failures")[0][0] == 2
    assert (tmp_path / "keys" / "privacy-salt").stat().st_mode & 0o777 == 0o600  # the installation's salt

    # numbers nobody tries again: a worker sweeps them (the first time it counts, then hourly)
    later = FakeClock(at(60 * 24 + 42))
    another = StoreVerificationGuard(store, salt_path=tmp_path / "keys" / "privacy-salt", clock=later)
    asyncio.run(
        another.failed(
            environment="prod",
            agent="a",
            channel="http",
            session_id=None,
            kind="account_number",
            identifier="55554444",
            policy=POLICY,
        )
    )
    assert query(db_url, "SELECT count(*) FROM verification_failures")[0][0] == 1


# ---- the conversation engine with an in-process guard --------------------------------------------


async def _guess(runtime: AgentRuntime, account: str, secret: str) -> Any:
    session = runtime.new_session(channel="test")
    await session.start()
    await session.handle("what's my balance")
    turn = await session.handle(account, dtmf=True)
    if turn.state == "verifying:secret":
        turn = await session.handle(secret, dtmf=True)
    return session, turn


def _bundle(harbor_bundle: Any, **changes: Any) -> Any:
    """The Harbor bundle with authentication.lockout / escalation.triggers fields changed."""
    bundle = harbor_bundle.model_copy(deep=True)
    for path, value in changes.items():
        section, name = path.split("__")
        target = bundle.agent.authentication.lockout if section == "lockout" else bundle.agent.escalation.triggers
        setattr(target, name, value)
    return bundle


async def test_without_the_person_trigger_the_locked_caller_is_told_and_the_session_goes_on(
    harbor_bundle: Any, harbor_backend: Any, credentials: list[dict[str, str]]
) -> None:
    recorder = MemoryRecorder()
    runtime = AgentRuntime(
        _bundle(harbor_bundle, lockout__max_failures=2, triggers__verification_locked=False),
        recorder=recorder,
        guard=MemoryVerificationGuard(),
    )
    account, pin = credentials[7]["account_number"], credentials[7]["pin"]
    try:
        await _guess(runtime, account, "0000" if pin != "0000" else "1111")
        session, turn = await _guess(runtime, account, "0000" if pin != "0000" else "1111")
        assert [e.type for e in turn.events if e.type.startswith("verification")] == [
            "verification_failed",
            "verification_locked",
        ]
        assert not session.ended and session.escalation is None and session.state == "anything_else"
        assert "too many unsuccessful attempts" in turn.text and "anything else" in turn.text
        session, turn = await _guess(runtime, account, pin)
        assert not session.verified and "verification_locked" in [e.type for e in turn.events]
        assert not [a for a in session.actions if a["name"] == "verify_customer"]
        kinds = [kind for _, kind, _ in recorder.security]
        assert kinds.count("verification_locked") == 1 and kinds.count("verification_refused") == 1
    finally:
        await runtime.aclose()


async def test_a_lockout_switched_off_counts_per_session_only(
    harbor_bundle: Any, harbor_backend: Any, credentials: list[dict[str, str]]
) -> None:
    guard = MemoryVerificationGuard()
    runtime = AgentRuntime(_bundle(harbor_bundle, lockout__enabled=False), guard=guard)
    account, pin = credentials[8]["account_number"], credentials[8]["pin"]
    try:
        for _ in range(N + 1):
            await _guess(runtime, account, "0000" if pin != "0000" else "1111")
        session, _ = await _guess(runtime, account, pin)
        assert session.verified
        assert not (await guard.check(environment="dev", kind="account_number", identifier=account)).failures
    finally:
        await runtime.aclose()


class BrokenGuard:
    """A guard whose store is down."""

    async def check(self, **_: Any) -> Verdict:
        raise ConnectionError("store unreachable")

    async def failed(self, **_: Any) -> Verdict:
        raise ConnectionError("store unreachable")


async def test_a_guard_that_cannot_answer_refuses_verification(
    harbor_bundle: Any, harbor_backend: Any, credentials: list[dict[str, str]]
) -> None:
    runtime = AgentRuntime(harbor_bundle, guard=BrokenGuard())
    customer = credentials[9]
    try:
        session, turn = await _guess(runtime, customer["account_number"], customer["pin"])
        assert not session.verified and session.outcome == "escalated"
        assert session.escalation is not None and session.escalation["reason"] == "action_failed"
        assert not [a for a in session.actions if a["name"] == "verify_customer"]  # the back end was not asked
    finally:
        await runtime.aclose()


# ---- a live worker, over HTTP and WebSocket ---------------------------------------------------------


@pytest.fixture(scope="module")
def worker(
    harbor_bundle: Any, harbor_backend: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any, str]]:
    """A worker serving Harbor with its own SQLite store (no per-address throttle: 50+ sessions
    come from one loopback address here); yields its URL, its AppState and its database URL."""
    tmp = tmp_path_factory.mktemp("lockout")
    db_url = f"sqlite:///{tmp / 'voxgate.db'}"
    app = create_app(Settings(database_url=db_url, data_dir=tmp, chat_sessions_per_minute=0), [harbor_bundle])
    with serving(app) as url:
        yield url, app.state.voxgate, db_url


def _verify_calls(db_url: str) -> int:
    """Calls the worker made to the back end's verify action (every connector call is audited)."""
    rows = query(db_url, "SELECT data FROM audit_events WHERE action = 'connector.call'")
    return sum(
        1
        for (data,) in rows
        if (json.loads(data) if isinstance(data, str) else data).get("action") == "verify_customer"
    )


def _events(db_url: str, kind: str) -> list[dict[str, Any]]:
    rows = query(db_url, "SELECT detail FROM security_events WHERE kind = :kind ORDER BY id", kind=kind)
    return [json.loads(d) if isinstance(d, str) else d for (d,) in rows]


class Chat:
    """One HTTP chat session."""

    def __init__(self, client: httpx.Client):
        self.client = client
        r = client.post(f"/api/agents/{AGENT}/sessions")
        assert r.status_code == 201, r.text
        self.id = r.json()["session_id"]

    def say(self, text: str) -> dict[str, Any]:
        r = self.client.post(f"/api/sessions/{self.id}/turns", json={"text": text})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def end(self) -> None:
        self.client.post(f"/api/sessions/{self.id}/end")


def _types(turn: dict[str, Any]) -> list[str]:
    return [e["type"] for e in turn["events"]]


def _escalation(turn: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in turn["events"] if e["type"] == "escalated"), None)


def test_fifty_wrong_pins_over_new_sessions_lock_the_account(
    worker: tuple[str, Any, str], credentials: list[dict[str, str]]
) -> None:
    url, state, db_url = worker
    victim = credentials[2]
    account, pin = victim["account_number"], victim["pin"]
    wrong = "0000" if pin != "0000" else "1111"
    verifies_before = _verify_calls(db_url)
    with httpx.Client(base_url=url, timeout=30) as client:
        # a session that named the account before the lock, and will give the right PIN during it
        early = Chat(client)
        early.say("what's my balance")
        assert early.say(account)["state"] == "verifying:secret"

        locked_at: int | None = None
        pin_asked = 0
        for i in range(50):
            chat = Chat(client)
            chat.say("what's my balance")
            turn = chat.say(account)
            if turn["state"] == "verifying:secret":
                pin_asked += 1
                turn = chat.say(wrong)
            if "verification_locked" in _types(turn):
                locked_at = i if locked_at is None else locked_at
                assert turn["ended"] and turn["outcome"] == "escalated"
                assert _escalation(turn)["reason"] == "verification_locked"  # type: ignore[index]
                assert _escalation(turn)["queue"] == "security"  # type: ignore[index]
                assert "too many unsuccessful attempts" in turn["agent"]
                assert "colleague" in turn["agent"]  # offered a person
            else:
                assert "don't match" in turn["agent"]
                chat.end()
        assert locked_at == N - 1  # the Nth wrong PIN locked the account, over N separate sessions
        assert pin_asked == N  # after it, nobody was even asked for the PIN
        assert _verify_calls(db_url) - verifies_before == N  # and the back end heard N guesses, not 50

        # the right PIN, in the session that named the account before the lock: refused unasked
        turn = early.say(pin)
        assert "verification_locked" in _types(turn) and "verification_succeeded" not in _types(turn)
        assert _escalation(turn)["reason"] == "verification_locked"  # type: ignore[index]
        assert not any(a["name"] == "get_balance" for a in turn["actions"])
        # and in a new session, over DTMF
        fresh = Chat(client)
        fresh.say("when is my payment due")
        r = client.post(f"/api/sessions/{fresh.id}/dtmf", json={"digits": account})
        assert "verification_locked" in _types(r.json()) and r.json()["outcome"] == "escalated"
        assert _verify_calls(db_url) - verifies_before == N

        # what was recorded names the account by its keyed hash only
        salt = load_salt(Path(state.settings.data_dir) / "keys" / "privacy-salt")
        subject = subject_hash(Subject(account_number=account), salt)
        failed = [e for e in _events(db_url, "verification_failed") if e.get("subject") == subject]
        assert len(failed) == N and failed[-1]["failures"] == N
        (locked,) = [e for e in _events(db_url, "verification_locked") if e["subject"] == subject]
        assert locked["failures"] == N and locked["lock_minutes"] == 15
        refused = [e for e in _events(db_url, "verification_refused") if e["subject"] == subject]
        assert len(refused) == 50 - N + 2
        for kind in ("verification_failed", "verification_locked", "verification_refused"):
            for event in _events(db_url, kind):
                assert set(event) <= {"attempt", "subject", "failures", "locked_until", "lock_minutes", "reason"}
                assert account not in json.dumps(event) and pin not in (event.get("attempt"), event.get("failures"))
        assert account not in json.dumps(query(db_url, "SELECT * FROM verification_locks"), default=str)

        # the default alert rule opens an incident (evaluated here rather than waiting for the loop)
        env = state.governance.environments[state.settings.environment]
        assert not env.settings.alerts  # dev has no rules of its own: this is the built-in one
        results = asyncio.run(run_once(state.db, env, state.audit))
        (opened,) = [r for r in results if r["rule"] == "verification-locked"]
        assert opened["created"] and opened["agent"] == AGENT
        (incident,) = query(
            db_url, "SELECT rule, severity, status, value FROM incidents WHERE rule = 'verification-locked'"
        )
        assert tuple(incident) == ("verification-locked", "critical", "open", 1.0)
        assert any(e["action"] == "incident.open" for e in state.audit.query(limit=1000))

        # the cooling-off passes (the worker's clock, injected): the right PIN works again
        real = state.clock
        state.clock = lambda: real() + dt.timedelta(minutes=15, seconds=1)
        try:
            later = Chat(client)
            later.say("what's my balance")
            later.say(account)
            turn = later.say(pin)
            assert "verification_succeeded" in _types(turn), turn["agent"]
        finally:
            state.clock = real


async def _ws_turn(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout=30)))


def test_wrong_pins_over_chat_sockets_lock_the_account_for_every_channel(
    worker: tuple[str, Any, str], credentials: list[dict[str, str]]
) -> None:
    url, state, db_url = worker
    victim = credentials[5]
    account, pin = victim["account_number"], victim["pin"]
    wrong = "9999" if pin != "9999" else "8888"
    socket_url = url.replace("http://", "ws://") + f"/ws/chat/{AGENT}"

    async def guess(secret: str) -> dict[str, Any]:
        async with websockets.connect(socket_url, open_timeout=10) as ws:
            json.loads(await asyncio.wait_for(ws.recv(), timeout=30))  # the greeting
            await _ws_turn(ws, {"type": "text", "text": "what's my balance"})
            turn = await _ws_turn(ws, {"type": "dtmf", "digits": account})
            if turn["state"] == "verifying:secret":
                turn = await _ws_turn(ws, {"type": "dtmf", "digits": secret})
            return turn

    async def scenario() -> list[dict[str, Any]]:
        return [await guess(wrong) for _ in range(N + 3)]

    turns = asyncio.run(scenario())
    locked = ["verification_locked" in _types(t) for t in turns]
    assert locked == [False] * (N - 1) + [True] * 4
    assert all(_escalation(t)["reason"] == "verification_locked" for t in turns[N - 1 :])  # type: ignore[index]
    # the right PIN, over the socket and then over HTTP: the lock holds for every channel
    assert "verification_locked" in _types(asyncio.run(guess(pin)))
    with httpx.Client(base_url=url, timeout=30) as client:
        chat = Chat(client)
        chat.say("what's my balance")
        assert "verification_locked" in _types(chat.say(account))
    salt = load_salt(Path(state.settings.data_dir) / "keys" / "privacy-salt")
    subject = subject_hash(Subject(account_number=account), salt)
    rows = query(db_url, "SELECT channel FROM verification_failures WHERE subject = :s", s=subject)
    assert {c for (c,) in rows} == {"websocket"} and len(rows) == N
