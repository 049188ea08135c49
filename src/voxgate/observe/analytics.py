"""Outcome analytics: KPIs per environment, agent and time bucket, computed from stored sessions.

Definitions (also in docs/operations.md, "Outcomes and analytics"):

- **resolved**: the agent finished what the caller asked and the caller ended the conversation;
- **escalated**: handed to a person (any escalation trigger);
- **abandoned**: the caller took part, then left (or went silent) before anything was resolved;
- **unengaged**: the caller never said or keyed anything (only the greeting was played);
- **engagement** = (sessions − unengaged) / sessions; resolution, escalation and abandon rates
  are over *engaged* ended sessions; **completion** = (resolved + escalated) / engaged ended
  sessions (the conversation reached an end the agent chose);
- **handle time**: ended − started, mean and p95 over ended sessions;
- **no-match rate**: caller turns the agent could not place (a `no_match` event) / caller turns;
- **voice-to-voice**: p50/p95 of the per-turn latency stored by voice calls.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Select, select

from voxgate.errors import InvalidError
from voxgate.store.db import Database
from voxgate.store.models import SessionRow, TurnRow, VoiceTurnRow

OUTCOMES = ("resolved", "escalated", "abandoned", "unengaged")


def parse_duration(text: str) -> dt.timedelta:
    """'90m', '24h', '7d', '2w' → a timedelta (InvalidError, a ValueError, otherwise)."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text)
    if not m:
        raise InvalidError(f"'{text}' is not a duration such as 90m, 24h, 7d or 2w")
    n, unit = int(m.group(1)), m.group(2)
    return {
        "m": dt.timedelta(minutes=n),
        "h": dt.timedelta(hours=n),
        "d": dt.timedelta(days=n),
        "w": dt.timedelta(weeks=n),
    }[unit]


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """'24h', '7d', '90m' or an ISO-8601 time → an aware UTC datetime."""
    now = now or dt.datetime.now(dt.UTC)
    if re.fullmatch(r"\s*\d+\s*[mhdw]\s*", text):
        return now - parse_duration(text)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidError(f"'{text}' is not a duration (24h, 7d, 90m) or an ISO time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class Kpis(BaseModel):
    environment: str | None = None
    agent: str | None = None
    bucket_start: str | None = None
    sessions: int = 0
    ended: int = 0
    outcomes: dict[str, int] = Field(default_factory=dict)
    engagement_rate: float | None = None
    resolution_rate: float | None = None
    escalation_rate: float | None = None
    abandon_rate: float | None = None
    completion_rate: float | None = None
    handle_time_s: dict[str, float | None] = Field(default_factory=dict)
    voice_to_voice_ms: dict[str, float | None] = Field(default_factory=dict)
    caller_turns: int = 0
    no_match_rate: float | None = None
    top_intents: list[tuple[str, int]] = Field(default_factory=list)
    top_escalation_reasons: list[tuple[str, int]] = Field(default_factory=list)


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "mean": None, "n": 0}
    arr = np.array(values, dtype=float)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "mean": round(float(arr.mean()), 1),
        "n": int(arr.size),
    }


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def kpis(
    db: Database,
    *,
    environment: str | None = None,
    agent: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    bucket: dt.timedelta | None = None,
) -> list[Kpis]:
    """KPIs over sessions started in [since, until); one row per bucket when `bucket` is given."""
    stmt = select(SessionRow)
    if environment:
        stmt = stmt.where(SessionRow.environment == environment)
    if agent:
        stmt = stmt.where(SessionRow.agent == agent)
    if since:
        stmt = stmt.where(SessionRow.started_at >= since)
    if until:
        stmt = stmt.where(SessionRow.started_at < until)
    sessions, turns, voice = _rows(db, stmt)
    if bucket is None:
        return [_summarise(sessions, turns, voice, environment, agent, None)]
    origin = since or (min((_aware(s.started_at) for s in sessions), default=dt.datetime.now(dt.UTC)))
    groups: dict[int, list[SessionRow]] = {}
    for s in sessions:
        groups.setdefault(int((_aware(s.started_at) - origin) / bucket), []).append(s)
    out = []
    for index in sorted(groups):
        members = groups[index]
        member_ids = {s.id for s in members}
        out.append(
            _summarise(
                members,
                [t for t in turns if t.session_id in member_ids],
                [v for v in voice if v.session_id in member_ids],
                environment,
                agent,
                (origin + index * bucket).isoformat(),
            )
        )
    return out


def _rows(db: Database, stmt: Select[SessionRow]) -> tuple[list[SessionRow], list[TurnRow], list[VoiceTurnRow]]:
    """The sessions `stmt` selects, with their turns and voice turns."""
    with db.orm() as orm:
        sessions = list(orm.scalars(stmt))
        ids = [s.id for s in sessions]
        turns: list[TurnRow] = []
        voice: list[VoiceTurnRow] = []
        for i in range(0, len(ids), 500):  # IN lists of bounded size
            chunk = ids[i : i + 500]
            turns.extend(orm.scalars(select(TurnRow).where(TurnRow.session_id.in_(chunk))))
            voice.extend(orm.scalars(select(VoiceTurnRow).where(VoiceTurnRow.session_id.in_(chunk))))
    return sessions, turns, voice


def kpis_since(db: Database, *, environment: str, agent: str, sinces: Iterable[dt.datetime]) -> dict[dt.datetime, Kpis]:
    """KPIs of `agent` in `environment` over the sessions started since each of `sinces` (until now), from
    one read of the widest window: what `kpis(since=...)` gives for each, without reading the rows again."""
    wanted = sorted(set(sinces))
    if not wanted:
        return {}
    stmt = select(SessionRow).where(
        SessionRow.environment == environment, SessionRow.agent == agent, SessionRow.started_at >= wanted[0]
    )
    sessions, turns, voice = _rows(db, stmt)
    out = {}
    for since in wanted:
        members = [s for s in sessions if _aware(s.started_at) >= _aware(since)]
        ids = {s.id for s in members}
        out[since] = _summarise(
            members,
            [t for t in turns if t.session_id in ids],
            [v for v in voice if v.session_id in ids],
            environment,
            agent,
            None,
        )
    return out


def _summarise(
    sessions: list[SessionRow],
    turns: list[TurnRow],
    voice: list[VoiceTurnRow],
    environment: str | None,
    agent: str | None,
    bucket_start: str | None,
) -> Kpis:
    outcomes = Counter(s.outcome for s in sessions if s.outcome)
    ended = sum(outcomes.values())
    engaged_ended = ended - outcomes.get("unengaged", 0)
    caller_turns = [t for t in turns if t.user_text is not None]
    no_match = sum(
        1 for t in caller_turns if any(e.get("type") == "no_match" for e in (t.data or {}).get("events", []))
    )
    handle = [(_aware(s.ended_at) - _aware(s.started_at)).total_seconds() for s in sessions if s.ended_at]
    return Kpis(
        environment=environment,
        agent=agent,
        bucket_start=bucket_start,
        sessions=len(sessions),
        ended=ended,
        outcomes={o: outcomes.get(o, 0) for o in OUTCOMES},
        engagement_rate=_rate(len(sessions) - outcomes.get("unengaged", 0), len(sessions)),
        resolution_rate=_rate(outcomes.get("resolved", 0), engaged_ended),
        escalation_rate=_rate(outcomes.get("escalated", 0), engaged_ended),
        abandon_rate=_rate(outcomes.get("abandoned", 0), engaged_ended),
        completion_rate=_rate(outcomes.get("resolved", 0) + outcomes.get("escalated", 0), engaged_ended),
        handle_time_s={k: v for k, v in _pcts(handle).items() if k != "n"},
        voice_to_voice_ms=_pcts([v.voice_to_voice_ms for v in voice if v.voice_to_voice_ms is not None]),
        caller_turns=len(caller_turns),
        no_match_rate=_rate(no_match, len(caller_turns)),
        top_intents=Counter(t.intent for t in caller_turns if t.intent).most_common(5),
        top_escalation_reasons=Counter(s.escalation_reason for s in sessions if s.escalation_reason).most_common(5),
    )


# ---- series over time (the console's charts) --------------------------------------------------------

MAX_SERIES_POINTS = 500


class SeriesPoint(BaseModel):
    """One time bucket: [start, start + bucket)."""

    start: str
    sessions: int = 0
    ended: int = 0
    outcomes: dict[str, int] = Field(default_factory=dict)
    escalation_rate: float | None = None
    resolution_rate: float | None = None
    completion_rate: float | None = None
    voice_p50_ms: float | None = None
    voice_p95_ms: float | None = None
    handle_time_p50_s: float | None = None


class Series(BaseModel):
    environment: str | None = None
    agent: str | None = None
    since: str
    until: str
    bucket_s: int
    points: list[SeriesPoint]
    totals: Kpis


def auto_bucket(span: dt.timedelta) -> dt.timedelta:
    """A bucket width that gives a readable chart over `span`: 5 minutes up to 2 h, hours up to 2 days, else days."""
    if span <= dt.timedelta(hours=2):
        return dt.timedelta(minutes=5)
    if span <= dt.timedelta(days=2):
        return dt.timedelta(hours=1)
    return dt.timedelta(days=1)


def series(
    db: Database,
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    bucket: dt.timedelta | None = None,
    environment: str | None = None,
    agent: str | None = None,
) -> Series:
    """KPIs per contiguous time bucket over [since, until), empty buckets included (zero sessions).

    Buckets are aligned to whole multiples of their width since the Unix epoch (hours start on the
    hour, days at midnight UTC), so `since` is rounded down to the start of its bucket.
    """
    until = _aware(until or dt.datetime.now(dt.UTC))
    since = _aware(since)
    if since >= until:
        raise InvalidError("since must be before until")
    bucket = bucket or auto_bucket(until - since)
    width = int(bucket.total_seconds())
    if width < 60:
        raise InvalidError("a bucket is at least one minute")
    origin = dt.datetime.fromtimestamp(int(since.timestamp()) // width * width, dt.UTC)
    count = -(-int((until - origin).total_seconds()) // width)  # ceiling
    if count > MAX_SERIES_POINTS:
        raise InvalidError(f"{count} buckets of {bucket} is too many (at most {MAX_SERIES_POINTS}): use a wider bucket")
    rows = {
        r.bucket_start: r
        for r in kpis(db, environment=environment, agent=agent, since=origin, until=until, bucket=bucket)
    }
    (totals,) = kpis(db, environment=environment, agent=agent, since=origin, until=until)
    points = []
    for i in range(count):
        start = (origin + i * bucket).isoformat()
        row = rows.get(start)
        if row is None:
            points.append(SeriesPoint(start=start, outcomes={o: 0 for o in OUTCOMES}))
            continue
        points.append(
            SeriesPoint(
                start=start,
                sessions=row.sessions,
                ended=row.ended,
                outcomes=row.outcomes,
                escalation_rate=row.escalation_rate,
                resolution_rate=row.resolution_rate,
                completion_rate=row.completion_rate,
                voice_p50_ms=row.voice_to_voice_ms.get("p50"),
                voice_p95_ms=row.voice_to_voice_ms.get("p95"),
                handle_time_p50_s=row.handle_time_s.get("p50"),
            )
        )
    return Series(
        environment=environment,
        agent=agent,
        since=origin.isoformat(),
        until=until.isoformat(),
        bucket_s=width,
        points=points,
        totals=totals,
    )
