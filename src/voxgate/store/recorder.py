"""Persist what sessions report into the database, off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from voxgate.clock import utcnow
from voxgate.store.db import Database
from voxgate.store.models import HandoffRow, SecurityEventRow, SessionRow, TurnRow, VoiceTurnRow

if TYPE_CHECKING:
    from voxgate.compliance.redaction import Redactor
    from voxgate.runtime.connectors import ActionResult
    from voxgate.runtime.events import TurnResult
    from voxgate.runtime.session import Session

log = logging.getLogger("voxgate.store")
# one line when a conversation starts and one when it ends (ids, channel, outcome: never words)
sessions_log = logging.getLogger("voxgate.sessions")

# Keys whose values are the platform's own (ids, names of intents/states, times): stored as they are.
_TURN_KEEP = frozenset({"type", "at", "intent", "state", "outcome", "confidence", "timings_ms", "citations", "ended"})
_PACKET_KEEP = frozenset(
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


class SqlRecorder:
    """SessionRecorder backed by SQLAlchemy. Writes are retried once, then the error is raised.

    Each method captures what it records when called and returns the write to await, so a
    session may queue writes behind the conversation instead of waiting for the database.
    """

    def __init__(self, db: Database, audit: Any = None, *, redact: bool = True):
        self.db = db
        self.audit = audit  # an AuditLog: connector calls, data access and escalations join the chain
        # Transcripts and packets are redacted before they are stored (privacy by default).
        self.redact = redact
        # liveness (store/liveness.py): the worker that holds the sessions started here, and the
        # sessions started and not ended in this process (a repair pass never closes those)
        self.worker_id: str | None = None
        self.open: set[str] = set()

    def _redactor(self, session: Session) -> Redactor | None:
        if not self.redact:
            return None
        from voxgate.compliance.redaction import redactor_for_agent  # loads Presidio: only when recording

        return redactor_for_agent(session.agent, session.bundle.topics.values())

    def _audited(
        self, write: Awaitable[None], session: Session, action: str, outcome: str, data: dict[str, Any]
    ) -> Awaitable[None]:
        """The write, then its audit event (ids and hashes only: no names, numbers or transcript)."""
        if self.audit is None:
            return write
        from voxgate.compliance.audit import AuditEvent

        event = AuditEvent(
            actor="caller",
            action=action,
            resource=f"session:{session.id}",
            environment=session.runtime.environment,
            outcome=outcome,
            data={"agent": session.agent.name, "bundle": session.runtime.digest or "", **data},
        )

        async def both() -> None:
            await write
            await asyncio.to_thread(self.audit.append, event)

        return both()

    async def _write(self, fn: Callable[[Any], None]) -> None:
        def work() -> None:
            for attempt in (1, 2):
                try:
                    with self.db.orm() as orm, orm.begin():
                        fn(orm)
                    return
                except Exception:
                    if attempt == 2:
                        raise
                    log.warning("database write failed, retrying once", exc_info=True)

        await asyncio.to_thread(work)

    def session_started(self, session: Session) -> Awaitable[None]:
        started = utcnow()
        self.open.add(session.id)
        row = SessionRow(
            id=session.id,
            agent=session.agent.name,
            agent_version=session.agent.version,
            bundle_digest=session.runtime.digest,
            environment=session.runtime.environment,
            channel=session.channel,
            started_at=started,
            verified=False,
            turn_count=0,
            worker_id=self.worker_id,
            last_activity_at=started,
        )
        sessions_log.info(
            "%s %s started: %s %s in %s",
            _kind(session.channel),
            session.id,
            session.agent.name,
            session.agent.version,
            session.runtime.environment,
        )
        return self._write(lambda orm: orm.add(row))

    def turn(self, session: Session, result: TurnResult) -> Awaitable[None]:
        user_text = _last_user_text(session) if result.user is not None else None
        agent_text = result.text
        data = result.as_dict()
        data.pop("user", None)
        data.pop("agent", None)
        data.pop("packet", None)
        seq, at = session.turn_no, utcnow()
        redactor = self._redactor(session)
        known = _known(session) if redactor is not None else {}

        def fn(orm: Any) -> None:
            stored_user, stored_agent, stored_data = user_text, agent_text, data
            if redactor is not None:
                stored_user, stored_agent, stored_data = _redact_turn(redactor, user_text, agent_text, data, known)
            orm.add(
                TurnRow(
                    session_id=session.id,
                    seq=seq,
                    user_text=stored_user,
                    agent_text=stored_agent,
                    intent=result.intent,
                    confidence=result.confidence,
                    state=result.state,
                    data=stored_data,
                )
            )
            orm.execute(
                update(SessionRow).where(SessionRow.id == session.id).values(turn_count=seq, last_activity_at=at)
            )

        return self._write(fn)

    def identity(self, session: Session) -> Awaitable[None]:
        sid, customer = session.id, session.customer_id
        write = self._write(
            lambda orm: orm.execute(
                update(SessionRow).where(SessionRow.id == sid).values(verified=True, customer_id=customer)
            )
        )
        return self._audited(write, session, "runtime.caller_verified", "ok", {})

    def security_event(self, session: Session, kind: str, detail: dict[str, Any]) -> Awaitable[None]:
        row = SecurityEventRow(
            session_id=session.id,
            kind=kind,
            agent=session.agent.name,
            environment=session.runtime.environment,
            detail=detail,
        )
        return self._audited(self._write(lambda orm: orm.add(row)), session, f"runtime.{kind}", "denied", {})

    async def _nothing(self) -> None:
        return None

    def action_call(self, session: Session, result: ActionResult) -> Awaitable[None]:
        outcome = "ok" if result.status == "ok" else ("denied" if result.status == "denied" else "failed")
        return self._audited(
            self._nothing(),
            session,
            "connector.call",
            outcome,
            {
                "action": result.action,
                "http_status": result.http_status or 0,
                "customer_scoped": session.customer_id is not None,
            },
        )

    def handoff(self, session: Session, queue: str, reason: str, packet: dict[str, Any]) -> Awaitable[None]:
        sid = session.id
        redactor = self._redactor(session)
        known = _known(session) if redactor is not None else {}

        def fn(orm: Any) -> None:
            stored = packet
            if redactor is not None:
                counts: Counter[str] = Counter()
                stored = redactor.redact_json(packet, known, keep=_PACKET_KEEP, counts=counts)
                stored["redactions"] = dict(sorted(counts.items()))
            orm.add(HandoffRow(session_id=sid, queue=queue, reason=reason, status="waiting", packet=stored))
            orm.execute(update(SessionRow).where(SessionRow.id == sid).values(escalation_reason=reason))

        return self._audited(self._write(fn), session, "runtime.escalation", "ok", {"queue": queue, "reason": reason})

    def session_ended(self, session: Session, reason: str) -> Awaitable[None]:
        sid, outcome, ended = session.id, session.outcome, utcnow()
        self.open.discard(sid)
        sessions_log.info(
            "%s %s ended: %s after %d turn(s) (%s)", _kind(session.channel), sid, outcome, session.turn_no, reason
        )
        return self._write(
            lambda orm: orm.execute(
                update(SessionRow)
                .where(SessionRow.id == sid)
                .values(outcome=outcome, ended_at=ended, end_reason=reason)
            )
        )

    def voice_turn(self, session: Session, timing: dict[str, Any]) -> Awaitable[None]:
        fields = {
            k: timing.get(k)
            for k in (
                "speech_end_audio_ms",
                "endpoint_ms",
                "asr_final_ms",
                "asr_compute_ms",
                "intent_ms",
                "first_tts_ms",
                "voice_to_voice_ms",
            )
        }
        row = VoiceTurnRow(
            session_id=session.id,
            seq=session.turn_no,
            speculative_hit=bool(timing.get("speculative_hit")),
            interrupted=bool(timing.get("interrupted")),
            dtmf=bool(timing.get("dtmf")),
            **fields,
        )
        return self._write(lambda orm: orm.add(row))


def _known(session: Session) -> dict[str, list[str]]:
    from voxgate.compliance.redaction import known_values

    return known_values(session)


def _redact_turn(
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
    stored = redactor.redact_json(data, known, keep=_TURN_KEEP, counts=counts)
    stored["redactions"] = dict(sorted(counts.items()))
    return user_text, agent.text, stored


def _last_user_text(session: Session) -> str | None:
    for line in reversed(session.transcript):
        if line.role == "user":
            return line.text
    return None


def _kind(channel: str) -> str:
    return "call" if channel in ("twilio", "voice", "native") else "chat"
