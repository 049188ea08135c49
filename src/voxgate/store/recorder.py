"""Persist what sessions report into the database, off the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import update

from voxgate.store.db import Database
from voxgate.store.models import HandoffRow, SecurityEventRow, SessionRow, TurnRow, VoiceTurnRow

if TYPE_CHECKING:
    from voxgate.runtime.events import TurnResult
    from voxgate.runtime.session import Session

log = logging.getLogger("voxgate.store")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class SqlRecorder:
    """SessionRecorder backed by SQLAlchemy. Writes are retried once, then the error is raised."""

    def __init__(self, db: Database):
        self.db = db

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

    async def session_started(self, session: "Session") -> None:
        row = SessionRow(
            id=session.id,
            agent=session.agent.name,
            agent_version=session.agent.version,
            bundle_digest=session.runtime.digest,
            environment=session.runtime.environment,
            channel=session.channel,
            started_at=_now(),
            verified=False,
            turn_count=0,
        )
        await self._write(lambda orm: orm.add(row))

    async def turn(self, session: "Session", result: "TurnResult") -> None:
        user_text = _last_user_text(session) if result.user is not None else None
        data = result.as_dict()
        data.pop("user", None)
        data.pop("agent", None)
        data.pop("packet", None)
        seq = session.turn_no

        def fn(orm: Any) -> None:
            orm.add(TurnRow(
                session_id=session.id, seq=seq, user_text=user_text, agent_text=result.text,
                intent=result.intent, confidence=result.confidence, state=result.state, data=data,
            ))
            orm.execute(update(SessionRow).where(SessionRow.id == session.id).values(turn_count=seq))

        await self._write(fn)

    async def identity(self, session: "Session") -> None:
        await self._write(lambda orm: orm.execute(
            update(SessionRow).where(SessionRow.id == session.id).values(verified=True, customer_id=session.customer_id)
        ))

    async def security_event(self, session: "Session", kind: str, detail: dict[str, Any]) -> None:
        row = SecurityEventRow(session_id=session.id, kind=kind, agent=session.agent.name,
                               environment=session.runtime.environment, detail=detail)
        await self._write(lambda orm: orm.add(row))

    async def handoff(self, session: "Session", queue: str, reason: str, packet: dict[str, Any]) -> None:
        row = HandoffRow(session_id=session.id, queue=queue, reason=reason, status="waiting", packet=packet)

        def fn(orm: Any) -> None:
            orm.add(row)
            orm.execute(update(SessionRow).where(SessionRow.id == session.id).values(escalation_reason=reason))

        await self._write(fn)

    async def session_ended(self, session: "Session", reason: str) -> None:
        await self._write(lambda orm: orm.execute(
            update(SessionRow).where(SessionRow.id == session.id).values(
                outcome=session.outcome, ended_at=_now(), end_reason=reason)
        ))

    async def voice_turn(self, session: "Session", timing: dict[str, Any]) -> None:
        fields = {k: timing.get(k) for k in (
            "speech_end_audio_ms", "endpoint_ms", "asr_final_ms", "asr_compute_ms", "intent_ms",
            "first_tts_ms", "voice_to_voice_ms")}
        row = VoiceTurnRow(
            session_id=session.id, seq=session.turn_no, speculative_hit=bool(timing.get("speculative_hit")),
            interrupted=bool(timing.get("interrupted")), dtmf=bool(timing.get("dtmf")), **fields,
        )
        await self._write(lambda orm: orm.add(row))


def _last_user_text(session: "Session") -> str | None:
    for line in reversed(session.transcript):
        if line.role == "user":
            return line.text
    return None
