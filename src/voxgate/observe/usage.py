"""Usage and capacity from stored records: calls, minutes, messages and connector calls per environment
and agent, and peak concurrency against the configured capacity."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select

from voxgate.runtime.records import VOICE_CHANNELS
from voxgate.store.db import Database
from voxgate.store.models import AuditEventRow, SessionRow, TurnRow


class Usage(BaseModel):
    environment: str
    agent: str
    calls: int = 0
    call_minutes: float = 0.0
    chats: int = 0
    messages: int = Field(default=0, description="caller turns in text conversations")
    connector_calls: int = 0
    peak_concurrent_calls: int = 0


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def usage(
    db: Database, *, since: dt.datetime, until: dt.datetime | None = None, environment: str | None = None
) -> list[Usage]:
    until = until or dt.datetime.now(dt.UTC)
    stmt = select(SessionRow).where(SessionRow.started_at >= since, SessionRow.started_at < until)
    if environment:
        stmt = stmt.where(SessionRow.environment == environment)
    rows: dict[tuple[str, str], Usage] = {}
    intervals: dict[tuple[str, str], list[tuple[dt.datetime, int]]] = defaultdict(list)
    with db.orm() as orm:
        sessions = list(orm.scalars(stmt))
        chat_ids = [s.id for s in sessions if s.channel not in VOICE_CHANNELS]
        messages: dict[str, int] = {}
        for i in range(0, len(chat_ids), 500):
            for sid, n in orm.execute(
                select(TurnRow.session_id, func.count())
                .where(TurnRow.session_id.in_(chat_ids[i : i + 500]), TurnRow.user_text.is_not(None))
                .group_by(TurnRow.session_id)
            ):
                messages[sid] = n
        audit = select(AuditEventRow.environment, AuditEventRow.data).where(
            AuditEventRow.action == "connector.call", AuditEventRow.at >= since.strftime("%Y-%m-%dT%H:%M:%S")
        )
        connector_rows = list(orm.execute(audit))
    for s in sessions:
        key = (s.environment, s.agent)
        u = rows.setdefault(key, Usage(environment=s.environment, agent=s.agent))
        if s.channel in VOICE_CHANNELS:
            u.calls += 1
            end = _aware(s.ended_at) if s.ended_at else until
            u.call_minutes += max(0.0, (end - _aware(s.started_at)).total_seconds()) / 60
            intervals[key] += [(_aware(s.started_at), 1), (end, -1)]
        else:
            u.chats += 1
            u.messages += messages.get(s.id, 0)
    import json

    for env, data in connector_rows:
        agent = json.loads(data).get("agent", "")
        if (env, agent) in rows:
            rows[(env, agent)].connector_calls += 1
    for key, points in intervals.items():
        level = peak = 0
        for _, delta in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at the same instant
            level += delta
            peak = max(peak, level)
        rows[key].peak_concurrent_calls = peak
    for u in rows.values():
        u.call_minutes = round(u.call_minutes, 2)
    return sorted(rows.values(), key=lambda u: (u.environment, u.agent))


def calls_today(db: Database, environment: str, now: dt.datetime | None = None) -> int:
    """Voice calls started in `environment` since midnight UTC (for the daily hard limit)."""
    now = now or dt.datetime.now(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with db.orm() as orm:
        return int(
            orm.scalar(
                select(func.count())
                .select_from(SessionRow)
                .where(
                    SessionRow.environment == environment,
                    SessionRow.started_at >= midnight,
                    SessionRow.channel.in_(sorted(VOICE_CHANNELS)),
                )
            )
            or 0
        )


def capacity_view(state: Any, rows: list[Usage]) -> dict[str, Any]:
    env = state.governance.environments[state.settings.environment]
    quotas = env.settings.quotas
    return {
        "environment": env.name,
        "worker_capacity": state.admission.capacity,
        "active_calls": state.admission.active,
        "refused_calls": state.admission.refused,
        "peak_concurrent_calls": max((u.peak_concurrent_calls for u in rows if u.environment == env.name), default=0),
        "quotas": quotas.model_dump(),
    }
