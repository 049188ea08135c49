"""The recorder port: one ordered writer per session, retries that never store a row twice, failures reported."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import func, select

from voxgate.clock import utcnow
from voxgate.compliance.audit import AuditEvent
from voxgate.compliance.recorder import PACKET_KEEP, TURN_KEEP, RedactingRecorder, sql_recorder
from voxgate.retry import RetryPolicy
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.runtime.records import HandedOff, SessionFacts, SessionStarted, TurnTaken
from voxgate.runtime.writer import OrderedWriter
from voxgate.store.db import Database
from voxgate.store.models import HandoffRow, SessionRow, TurnRow
from voxgate.store.session_writer import SessionWriter

NO_WAIT = RetryPolicy(attempts=3, wait_s=0.0)


class Flaky:
    """A write that fails its first `failures` tries."""

    def __init__(self, failures: int, log: list[str], name: str) -> None:
        self.failures, self.log, self.name, self.tries = failures, log, name, 0

    async def __call__(self) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise OSError(f"{self.name} failed")
        self.log.append(self.name)


async def test_writes_apply_in_the_order_submitted_even_when_an_early_one_is_slow() -> None:
    writer = OrderedWriter("s1", policy=NO_WAIT)
    done: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        done.append("slow")

    async def quick() -> None:
        done.append("quick")

    writer.submit(slow, "first")
    writer.submit(quick, "second")
    writer.submit(Flaky(1, done, "retried"), "third")
    writer.submit(quick, "fourth")
    await writer.drain()
    assert done == ["slow", "quick", "retried", "quick"]
    assert writer.failures == [] and writer.pending == 0


async def test_a_write_that_keeps_failing_is_reported_and_the_next_still_happens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reported: list[str] = []
    writer = OrderedWriter("s2", policy=NO_WAIT, on_failure=lambda f: reported.append(f.what))
    done: list[str] = []
    broken = Flaky(99, done, "broken")
    with caplog.at_level(logging.WARNING, logger="voxgate.runtime.writer"):
        failed = writer.submit(broken, "TurnTaken")
        writer.submit(Flaky(0, done, "after"), "SessionEnded")
        await writer.drain()
    assert broken.tries == 3 and done == ["after"]
    assert reported == ["TurnTaken"] and [f.what for f in writer.failures] == ["TurnTaken"]
    assert isinstance(writer.failures[0].error, OSError)
    with pytest.raises(OSError, match="broken failed"):
        await failed  # whoever waits for it hears the failure too
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "TurnTaken" in errors[0].getMessage() and "s2" in errors[0].getMessage()


async def test_a_cancelled_waiter_does_not_cancel_the_write() -> None:
    writer = OrderedWriter("s3", policy=NO_WAIT)
    done: list[str] = []
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()
        done.append("written")

    waiter = asyncio.ensure_future(asyncio.shield(writer.submit(blocked, "x")))
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    await writer.drain()
    assert done == ["written"]


def _facts(bundle: Any, session_id: str) -> SessionFacts:
    return SessionFacts(
        session_id=session_id,
        agent=bundle.agent,
        topics=tuple(bundle.topics.values()),
        bundle_digest="sha256:test",
        environment="dev",
        channel="text",
        customer_id="C-1",
        account_numbers=("11815908",),
    )


class FlakyAudit:
    """An audit chain that refuses its first append."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.refused = 0

    def append(self, *events: AuditEvent) -> list[int]:
        if not self.refused:
            self.refused += 1
            raise OSError("audit chain busy")
        self.events.extend(events)
        return list(range(len(events)))


async def test_a_retried_handoff_is_stored_once_and_audited_once(db_url: str, harbor_bundle: Any) -> None:
    db = Database(db_url)
    db.migrate()
    audit = FlakyAudit()
    recorder = RedactingRecorder(SessionWriter(db), audit)
    facts = _facts(harbor_bundle, "retried-handoff")
    writer = OrderedWriter(facts.session_id, policy=NO_WAIT)
    writer.submit(lambda: recorder.session_started(SessionStarted(facts, at=utcnow())), "SessionStarted")
    packet = {"session_id": facts.session_id, "summary": "account 11815908, call me on 415-867-2210"}
    handoff = HandedOff(facts, queue="billing", reason="caller_request", packet=packet)
    writer.submit(lambda: recorder.handoff(handoff), "HandedOff")
    await writer.drain()
    assert writer.failures == [] and audit.refused == 1
    with db.engine.connect() as conn:
        rows = conn.execute(select(HandoffRow.packet).where(HandoffRow.session_id == facts.session_id)).all()
        reason = conn.scalar(select(SessionRow.escalation_reason).where(SessionRow.id == facts.session_id))
    assert len(rows) == 1 and reason == "caller_request"
    stored = rows[0][0]
    assert stored["session_id"] == facts.session_id  # on the keep-list: the platform's own value
    assert "11815908" not in stored["summary"] and "415-867-2210" not in stored["summary"]
    assert stored["redactions"]["ACCOUNT_NUMBER"] == 1 and stored["redactions"]["PHONE_NUMBER"] == 1
    assert [e.action for e in audit.events] == ["runtime.escalation"]
    assert audit.events[0].data == {
        "agent": harbor_bundle.agent.name,
        "bundle": "sha256:test",
        "queue": "billing",
        "reason": "caller_request",
    }
    db.dispose()


async def test_turns_are_stored_redacted_except_the_keep_list(db_url: str, harbor_bundle: Any) -> None:
    db = Database(db_url)
    db.migrate()
    recorder = sql_recorder(db)
    facts = _facts(harbor_bundle, "redacted-turn")
    await recorder.session_started(SessionStarted(facts, at=utcnow()))
    turn = TurnTaken(
        facts,
        seq=1,
        at=utcnow(),
        user_text="my account is one one eight one five nine oh eight",
        agent_text="Thanks, account 11815908 is verified.",
        intent="check_balance",
        confidence=0.9,
        state="idle",
        data={"state": "idle", "events": [{"type": "slot_filled", "value": "11815908"}]},
    )
    await recorder.turn(turn)
    with db.engine.connect() as conn:
        row = conn.execute(select(TurnRow).where(TurnRow.session_id == facts.session_id)).one()
        turns = conn.scalar(select(SessionRow.turn_count).where(SessionRow.id == facts.session_id))
    assert row.user_text == "my account is <ACCOUNT_NUMBER>"
    assert row.agent_text == "Thanks, account <ACCOUNT_NUMBER> is verified."
    assert row.data["state"] == "idle" and row.data["events"][0] == {"type": "slot_filled", "value": "<ACCOUNT_NUMBER>"}
    assert row.data["redactions"] == {"ACCOUNT_NUMBER": 3} and turns == 1
    assert {"type", "state", "intent"} <= TURN_KEEP and {"session_id", "queue"} <= PACKET_KEEP
    db.dispose()


async def test_a_deferred_session_writes_behind_the_conversation_in_order(harbor_bundle: Any) -> None:
    class SlowStart(MemoryRecorder):
        async def session_started(self, record: SessionStarted) -> None:
            await asyncio.sleep(0.05)  # the database is slow: the conversation goes on meanwhile
            await super().session_started(record)

    recorder = SlowStart()
    rt = AgentRuntime(harbor_bundle, recorder=recorder)
    session = rt.new_session(defer_records=True)
    await session.start()
    assert recorder.records == []  # nothing written yet, and the greeting did not wait for it
    await session.handle("what are your opening hours")
    await session.close()
    kinds = [type(r).__name__ for r in recorder.records]
    assert kinds == ["SessionStarted", "TurnTaken", "TurnTaken", "SessionEnded"]
    assert [t.seq for t in recorder.turns] == [0, 1] and session.unrecorded == []
    await rt.aclose()


async def test_an_inline_session_hears_a_write_that_keeps_failing(harbor_bundle: Any) -> None:
    class Broken(MemoryRecorder):
        async def turn(self, record: TurnTaken) -> None:
            raise OSError("database gone")

    rt = AgentRuntime(harbor_bundle, recorder=Broken())
    session = rt.new_session()
    with pytest.raises(OSError, match="database gone"):
        await session.start()
    assert [f.what for f in session.unrecorded] == ["TurnTaken"]
    await rt.aclose()


async def test_sessions_started_and_not_ended_are_held_by_this_worker(db_url: str, harbor_bundle: Any) -> None:
    db = Database(db_url)
    db.migrate()
    recorder = sql_recorder(db)
    recorder.worker_id = "worker-1"
    rt = AgentRuntime(harbor_bundle, recorder=recorder)
    session = rt.new_session()
    await session.start()
    assert recorder.open == {session.id}
    await session.close()
    assert recorder.open == set()
    with db.engine.connect() as conn:
        worker, outcome = conn.execute(
            select(SessionRow.worker_id, SessionRow.outcome).where(SessionRow.id == session.id)
        ).one()
        count = conn.scalar(select(func.count()).select_from(TurnRow).where(TurnRow.session_id == session.id))
    assert worker == "worker-1" and outcome == "unengaged" and count == 1
    await rt.aclose()
    db.dispose()
