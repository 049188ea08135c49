"""The worker's recorder: what a session reports is redacted, audited and then stored as rows.

Privacy by default: a turn's words and data and an escalation's packet are redacted before the
store sees them (``redaction.py``), except the values the platform itself wrote (ids, names of
intents and states, times), which the keep-lists below name. Identity checks, refusals,
escalations and connector calls join the audit chain with ids and hashes only. Redaction and
writes run off the event loop. The session's ordered writer (runtime/writer.py) orders and retries
these calls; every step here is done at most once per record, so a retried call never stores a
row twice.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from voxgate.compliance.audit import AuditEvent, Outcome
from voxgate.compliance.redaction import Redactor, known_caller, redactor_for_agent
from voxgate.runtime.records import (
    VOICE_CHANNELS,
    ActionCalled,
    CallerVerified,
    HandedOff,
    SecurityEvent,
    SessionEnded,
    SessionFacts,
    SessionRecord,
    SessionStarted,
    TurnTaken,
    VoiceTurnTimed,
)
from voxgate.store.db import Database
from voxgate.store.session_writer import SessionWriter

# one line when a conversation starts and one when it ends (ids, channel, outcome: never words)
sessions_log = logging.getLogger("voxgate.sessions")

# Keys whose values are the platform's own (ids, names of intents/states, times): stored as they are.
TURN_KEEP = frozenset({"type", "at", "intent", "state", "outcome", "confidence", "timings_ms", "citations", "ended"})
PACKET_KEEP = frozenset(
    {
        "session_id",
        "agent",
        "agent_version",
        "bundle_digest",
        "environment",
        "channel",
        "queue",
        "created_at",
        "reason",
        "customer_id",
        "verified",
        "method",
        "intent",
        "confidence",
        "turn",
        "role",
        "status",
    }
)


class AuditSink(Protocol):
    """Where audit events go (compliance.audit.AuditLog); blocking."""

    def append(self, *events: AuditEvent) -> Any:
        """Append events to the chain."""


class RedactingRecorder:
    """Recorder for a worker: redacts, applies the privacy keep-lists, audits, and hands rows to the store."""

    def __init__(self, writer: SessionWriter, audit: AuditSink | None = None, *, redact: bool = True) -> None:
        self.writer = writer
        self.audit = audit  # connector calls, identity checks, refusals and escalations join the chain
        self.redact = redact  # transcripts and packets are redacted before they are stored
        # sessions started and not ended in this process (liveness: a repair pass never closes those)
        self.open: set[str] = set()
        # the steps of a record already done, so that a retried record does not repeat them
        self._done: weakref.WeakKeyDictionary[SessionRecord, set[str]] = weakref.WeakKeyDictionary()

    @property
    def worker_id(self) -> str | None:
        """The worker whose sessions these are (every session row names it)."""
        return self.writer.worker_id

    @worker_id.setter
    def worker_id(self, value: str | None) -> None:
        self.writer.worker_id = value

    # ---- the recorder port ---------------------------------------------------------------------

    async def session_started(self, record: SessionStarted) -> None:
        """A session row."""
        facts = record.facts
        self.open.add(facts.session_id)
        sessions_log.info(
            "%s %s started: %s %s in %s",
            _kind(facts.channel),
            facts.session_id,
            facts.agent_name,
            facts.agent_version,
            facts.environment,
        )
        await asyncio.to_thread(
            self.writer.session_started,
            session_id=facts.session_id,
            agent=facts.agent_name,
            agent_version=facts.agent_version,
            bundle_digest=facts.bundle_digest,
            environment=facts.environment,
            channel=facts.channel,
            at=record.at,
        )

    async def turn(self, record: TurnTaken) -> None:
        """A turn row: both texts and the data redacted, with the counts per type in data["redactions"]."""
        await asyncio.to_thread(self._store_turn, record)

    async def identity(self, record: CallerVerified) -> None:
        """The session verified; audited."""
        facts = record.facts
        await self._once(
            record, lambda: self.writer.verified(session_id=facts.session_id, customer_id=facts.customer_id)
        )
        await self._audit(record, facts, "runtime.caller_verified", "ok", {})

    async def security_event(self, record: SecurityEvent) -> None:
        """A security event row; audited as denied."""
        facts = record.facts
        await self._once(
            record,
            lambda: self.writer.security_event(
                session_id=facts.session_id,
                kind=record.kind,
                agent=facts.agent_name,
                environment=facts.environment,
                detail=dict(record.detail),
            ),
        )
        await self._audit(record, facts, f"runtime.{record.kind}", "denied", {})

    async def action_call(self, record: ActionCalled) -> None:
        """Audited only (ids and the HTTP status; never arguments or answers)."""
        outcome: Outcome = "ok" if record.status == "ok" else ("denied" if record.status == "denied" else "failed")
        data = {"action": record.action, "http_status": record.http_status or 0, "customer_scoped": record.verified}
        await self._audit(record, record.facts, "connector.call", outcome, data)

    async def handoff(self, record: HandedOff) -> None:
        """A waiting handoff row with the packet redacted; audited."""
        await self._once(record, lambda: self._store_handoff(record))
        data = {"queue": record.queue, "reason": record.reason}
        await self._audit(record, record.facts, "runtime.escalation", "ok", data)

    async def session_ended(self, record: SessionEnded) -> None:
        """The session's outcome."""
        facts = record.facts
        self.open.discard(facts.session_id)
        sessions_log.info(
            "%s %s ended: %s after %d turn(s) (%s)",
            _kind(facts.channel),
            facts.session_id,
            record.outcome,
            record.turns,
            record.reason,
        )
        await asyncio.to_thread(
            self.writer.session_ended,
            session_id=facts.session_id,
            outcome=record.outcome,
            reason=record.reason,
            at=record.at,
        )

    async def voice_turn(self, record: VoiceTurnTimed) -> None:
        """A voice turn's timings (numbers only: nothing to redact)."""
        await asyncio.to_thread(
            self.writer.voice_turn,
            session_id=record.facts.session_id,
            seq=record.seq,
            timings_ms=record.timings_ms,
            speculative_hit=record.speculative_hit,
            interrupted=record.interrupted,
            dtmf=record.dtmf,
        )

    # ---- redaction -----------------------------------------------------------------------------

    def _redactor(self, facts: SessionFacts) -> Redactor | None:
        return redactor_for_agent(facts.agent, facts.topics) if self.redact else None

    def _store_turn(self, record: TurnTaken) -> None:
        user, agent, data = record.user_text, record.agent_text, dict(record.data)
        redactor = self._redactor(record.facts)
        if redactor is not None:
            user, agent, data = redact_turn(redactor, user, agent, data, known_of(record.facts))
        self.writer.turn(
            session_id=record.facts.session_id,
            seq=record.seq,
            at=record.at,
            user_text=user,
            agent_text=agent,
            intent=record.intent,
            confidence=record.confidence,
            state=record.state,
            data=data,
        )

    def _store_handoff(self, record: HandedOff) -> None:
        packet = dict(record.packet)
        redactor = self._redactor(record.facts)
        if redactor is not None:
            packet = redact_packet(redactor, packet, known_of(record.facts))
        self.writer.handoff(session_id=record.facts.session_id, queue=record.queue, reason=record.reason, packet=packet)

    # ---- steps done once -----------------------------------------------------------------------

    async def _once(self, record: SessionRecord, store: Callable[[], None]) -> None:
        """Store the record's row in a thread, unless an earlier try of this record already did."""
        done = self._done.setdefault(record, set())
        if "stored" not in done:
            await asyncio.to_thread(store)
            done.add("stored")

    async def _audit(
        self, record: SessionRecord, facts: SessionFacts, action: str, outcome: Outcome, data: Mapping[str, Any]
    ) -> None:
        """The record's audit event (ids and hashes only: no names, numbers or transcript)."""
        if self.audit is None:
            return
        event = AuditEvent(
            actor="caller",
            action=action,
            resource=f"session:{facts.session_id}",
            environment=facts.environment,
            outcome=outcome,
            data={"agent": facts.agent_name, "bundle": facts.bundle_digest or "", **data},
        )
        await asyncio.to_thread(self.audit.append, event)
        self._done.pop(record, None)


def sql_recorder(db: Database, audit: AuditSink | None = None, *, redact: bool = True) -> RedactingRecorder:
    """The recorder a worker (or `voxgate chat --store`) uses: redacted rows in `db`, audited in `audit`."""
    return RedactingRecorder(SessionWriter(db), audit, redact=redact)


def known_of(facts: SessionFacts) -> dict[str, list[str]]:
    """What the caller of a record is known to have said or be."""
    return known_caller(accounts=facts.account_numbers, name=facts.customer_name, phone=facts.phone)


def redact_turn(
    redactor: Redactor, user_text: str | None, agent_text: str, data: dict[str, Any], known: dict[str, list[str]]
) -> tuple[str | None, str, dict[str, Any]]:
    """The turn as stored: both texts and the data redacted, with the counts per type in data["redactions"]."""
    counts: Counter[str] = Counter()
    if user_text is not None:
        user = redactor.redact(user_text, known)
        counts.update(user.counts)
        user_text = user.text
    agent = redactor.redact(agent_text, known)
    counts.update(agent.counts)
    stored: dict[str, Any] = redactor.redact_json(data, known, keep=TURN_KEEP, counts=counts)
    stored["redactions"] = dict(sorted(counts.items()))
    return user_text, agent.text, stored


def redact_packet(redactor: Redactor, packet: dict[str, Any], known: dict[str, list[str]]) -> dict[str, Any]:
    """The packet as stored: redacted except the platform's own values, with the counts per type."""
    counts: Counter[str] = Counter()
    stored: dict[str, Any] = redactor.redact_json(packet, known, keep=PACKET_KEEP, counts=counts)
    stored["redactions"] = dict(sorted(counts.items()))
    return stored


def _kind(channel: str) -> str:
    return "call" if channel in VOICE_CHANNELS else "chat"
