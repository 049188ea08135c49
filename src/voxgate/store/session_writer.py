"""Conversation rows: what a session reports, mapped to the sessions, turns, handoffs, security-event and
voice-turn tables. Each method is one short transaction that blocks: call it from a thread.

This is storage only: what reaches it is already redacted (``compliance.recorder`` decides what
may be stored, and retries, orders and audits the writes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session as OrmSession

from voxgate.store.db import Database
from voxgate.store.models import HandoffRow, SecurityEventRow, SessionRow, TurnRow, VoiceTurnRow

HANDOFF_WAITING = "waiting"  # the status of a handoff row when it is queued
VOICE_TIMING_COLUMNS = (
    "speech_end_audio_ms",
    "endpoint_ms",
    "asr_final_ms",
    "asr_compute_ms",
    "intent_ms",
    "first_tts_ms",
    "voice_to_voice_ms",
)


class SessionWriter:
    """Writes conversation rows to one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # liveness (store/liveness.py): the worker that holds the sessions started here
        self.worker_id: str | None = None

    def _transaction(self, work: Callable[[OrmSession], Any]) -> None:
        with self.db.orm() as orm, orm.begin():
            work(orm)

    def session_started(
        self,
        *,
        session_id: str,
        agent: str,
        agent_version: str,
        bundle_digest: str | None,
        environment: str,
        channel: str,
        at: dt.datetime,
    ) -> None:
        """A session row, not yet verified, held by this worker."""
        row = SessionRow(
            id=session_id,
            agent=agent,
            agent_version=agent_version,
            bundle_digest=bundle_digest,
            environment=environment,
            channel=channel,
            started_at=at,
            verified=False,
            turn_count=0,
            worker_id=self.worker_id,
            last_activity_at=at,
        )
        self._transaction(lambda orm: orm.add(row))

    def turn(
        self,
        *,
        session_id: str,
        seq: int,
        at: dt.datetime,
        user_text: str | None,
        agent_text: str,
        intent: str | None,
        confidence: float | None,
        state: str,
        data: dict[str, Any],
    ) -> None:
        """A turn row; the session counts it and is active as of `at`."""
        row = TurnRow(
            session_id=session_id,
            seq=seq,
            user_text=user_text,
            agent_text=agent_text,
            intent=intent,
            confidence=confidence,
            state=state,
            data=data,
        )

        def work(orm: OrmSession) -> None:
            orm.add(row)
            orm.execute(
                update(SessionRow).where(SessionRow.id == session_id).values(turn_count=seq, last_activity_at=at)
            )

        self._transaction(work)

    def verified(self, *, session_id: str, customer_id: str | None) -> None:
        """The session's caller is verified as `customer_id`."""
        self._transaction(
            lambda orm: orm.execute(
                update(SessionRow).where(SessionRow.id == session_id).values(verified=True, customer_id=customer_id)
            )
        )

    def security_event(
        self, *, session_id: str, kind: str, agent: str, environment: str, detail: dict[str, Any]
    ) -> None:
        """A security event row."""
        row = SecurityEventRow(session_id=session_id, kind=kind, agent=agent, environment=environment, detail=detail)
        self._transaction(lambda orm: orm.add(row))

    def handoff(self, *, session_id: str, queue: str, reason: str, packet: dict[str, Any]) -> None:
        """A waiting handoff row with its packet; the session names the escalation reason."""
        row = HandoffRow(session_id=session_id, queue=queue, reason=reason, status=HANDOFF_WAITING, packet=packet)

        def work(orm: OrmSession) -> None:
            orm.add(row)
            orm.execute(update(SessionRow).where(SessionRow.id == session_id).values(escalation_reason=reason))

        self._transaction(work)

    def session_ended(self, *, session_id: str, outcome: str | None, reason: str, at: dt.datetime) -> None:
        """The session's outcome, end time and reason."""
        self._transaction(
            lambda orm: orm.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(outcome=outcome, ended_at=at, end_reason=reason)
            )
        )

    def voice_turn(
        self,
        *,
        session_id: str,
        seq: int,
        timings_ms: Mapping[str, float | None],
        speculative_hit: bool,
        interrupted: bool,
        dtmf: bool,
    ) -> None:
        """A voice turn's stage timings (the known columns of `timings_ms`; a missing one is None)."""
        row = VoiceTurnRow(
            session_id=session_id,
            seq=seq,
            speculative_hit=speculative_hit,
            interrupted=interrupted,
            dtmf=dtmf,
            **{name: timings_ms.get(name) for name in VOICE_TIMING_COLUMNS},
        )
        self._transaction(lambda orm: orm.add(row))
