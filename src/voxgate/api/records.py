"""Read access to stored sessions, transcripts and the handoff queue.

A route's action is authorised for the worker's environment, and every record it returns for its
own: environments may share one database, so a worker reading sessions or handoffs sees rows that
other environments' workers wrote. A single record of an environment the caller may not read is
404, as if it did not exist; lists leave such records out.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import or_, select

from voxgate.api.auth import Target, authorize_record, env_from_query, guard, readable_environments
from voxgate.api.state import AppState, get_state
from voxgate.errors import NotFoundError
from voxgate.observe.alerts import incident_dict, list_incidents, transition
from voxgate.observe.analytics import kpis, parse_duration, parse_since
from voxgate.observe.usage import capacity_view, usage
from voxgate.store.models import HandoffRow, SessionRow, TurnRow

router = APIRouter(tags=["records"])


def worker_env(request: Any) -> Target:
    """Records on this worker belong to the environment it serves."""
    return Target(environment=request.app.state.voxgate.settings.environment)


@router.get("/api/sessions/{session_id}")
def get_session(
    session_id: str,
    state: AppState = Depends(get_state),
    principal: Any = Depends(guard("session.read", "GET", "/api/sessions/{session_id}", worker_env)),
) -> dict[str, Any]:
    with state.db.orm() as orm:
        row = orm.get(SessionRow, session_id)
        if row is None:
            raise NotFoundError("no such session")
        authorize_record(state, principal, "session.read", row.environment, "no such session")
        turns = orm.scalars(select(TurnRow).where(TurnRow.session_id == session_id).order_by(TurnRow.seq)).all()
        return {
            "id": row.id,
            "agent": row.agent,
            "environment": row.environment,
            "channel": row.channel,
            "agent_version": row.agent_version,
            # null: an unreleased development build (an agent directory served as it is)
            "bundle_digest": row.bundle_digest,
            "started_at": row.started_at.isoformat(),
            "ended_at": row.ended_at.isoformat() if row.ended_at else None,
            "outcome": row.outcome,
            "verified": row.verified,
            "escalation_reason": row.escalation_reason,
            "turns": [
                {
                    "seq": t.seq,
                    "user": t.user_text,
                    "agent": t.agent_text,
                    "intent": t.intent,
                    "confidence": t.confidence,
                    "state": t.state,
                }
                for t in turns
            ],
        }


@router.get("/api/handoffs")
def list_handoffs(
    queue: str | None = None,
    status: str | None = "waiting",
    limit: int = Query(50, ge=1, le=500),
    state: AppState = Depends(get_state),
    principal: Any = Depends(guard("handoff.read", "GET", "/api/handoffs", worker_env)),
) -> list[dict[str, Any]]:
    allowed = readable_environments(state, principal, "handoff.read", _session_environments(state))
    stmt = (
        select(HandoffRow)
        .join(SessionRow, SessionRow.id == HandoffRow.session_id)
        .where(SessionRow.environment.in_(allowed))
        .order_by(HandoffRow.id.desc())
        .limit(limit)
    )
    if queue:
        stmt = stmt.where(HandoffRow.queue == queue)
    if status:
        stmt = stmt.where(HandoffRow.status == status)
    with state.db.orm() as orm:
        return [
            {
                "id": h.id,
                "session_id": h.session_id,
                "queue": h.queue,
                "reason": h.reason,
                "status": h.status,
                "created_at": h.created_at.isoformat(),
                "packet": h.packet,
                # the live-agent desk's part (handoff/desk.py)
                "accepted_by": h.accepted_by,
                "accepted_at": h.accepted_at.isoformat() if h.accepted_at else None,
                "ended_at": h.ended_at.isoformat() if h.ended_at else None,
                "disposition": h.disposition,
                "failure_reason": h.failure_reason,
                "events": h.events or [],
            }
            for h in orm.scalars(stmt).all()
        ]


@router.get("/api/voice/stats")
def voice_stats(
    state: AppState = Depends(get_state), _: Any = Depends(guard("voice.stats", "GET", "/api/voice/stats", worker_env))
) -> dict[str, Any]:
    """Rolling per-stage timings of voice turns on this worker, plus capacity and process figures."""
    snap = state.voice_stats.snapshot()
    snap["admission"] = {
        "capacity": state.admission.capacity,
        "active": state.admission.active,
        "admitted": state.admission.admitted,
        "refused": state.admission.refused,
    }
    if state.engines is not None:
        pool = state.engines.pool
        snap["speech_pool"] = {
            "workers": pool.workers,
            "queued": pool.queued(),
            "completed": pool.completed,
            "mean_wait_ms": round(pool.wait_ms_total / pool.completed, 2) if pool.completed else None,
            **state.engines.batching(),
        }
    return snap


@router.get("/metrics", include_in_schema=False)
def metrics(
    state: AppState = Depends(get_state), _: Any = Depends(guard("voice.stats", "GET", "/metrics", worker_env))
) -> Response:
    """Prometheus exposition (scrape with a bearer token of a user who may read voice stats)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.delete("/api/voice/stats", status_code=204)
def reset_voice_stats(
    state: AppState = Depends(get_state),
    _: Any = Depends(guard("voice.stats", "DELETE", "/api/voice/stats", worker_env)),
) -> None:
    state.voice_stats.reset()


@router.get("/api/stats")
def stats(
    env: str | None = None,
    agent: str | None = None,
    since: str = "24h",
    bucket: str | None = None,
    state: AppState = Depends(get_state),
    _: Any = Depends(guard("analytics.read", "GET", "/api/stats", env_from_query)),
) -> dict[str, Any]:
    """Outcome KPIs for sessions started since `since` (24h, 7d, or an ISO time), optionally per `bucket` (1h, 1d)."""

    start = parse_since(since)
    width = parse_duration(bucket) if bucket else None
    rows = kpis(state.db, environment=env, agent=agent, since=start, bucket=width)
    return {"environment": env, "agent": agent, "since": start.isoformat(), "rows": [r.model_dump() for r in rows]}


@router.get("/api/incidents")
def incidents(
    status: str | None = None,
    state: AppState = Depends(get_state),
    _: Any = Depends(guard("incident.read", "GET", "/api/incidents", worker_env)),
) -> list[dict[str, Any]]:
    """Incidents of this worker's environment, newest first."""

    return list_incidents(state.db, environment=state.settings.environment, status=status)


class IncidentStep(BaseModel):
    note: str = Field(default="", max_length=4000)


@router.post("/api/incidents/{incident_id}/{status}")
def incident_step(
    incident_id: str,
    status: str,
    body: IncidentStep,
    state: AppState = Depends(get_state),
    principal: Any = Depends(guard("incident.manage", "POST", "/api/incidents/{incident_id}/{status}", worker_env)),
) -> dict[str, Any]:
    """Move an incident to acknowledged, mitigated or resolved, with a note on its timeline."""

    # an unknown incident or status is 404, a step its status does not allow 409
    row = transition(state.db, incident_id, status, principal.audit_actor, body.note, state.audit)
    return incident_dict(row)


@router.get("/api/usage")
def usage_view(
    env: str | None = None,
    since: str = "24h",
    state: AppState = Depends(get_state),
    _: Any = Depends(guard("analytics.read", "GET", "/api/usage", env_from_query)),
) -> dict[str, Any]:
    """Calls, minutes, messages and connector calls per environment and agent, and this worker's capacity."""

    start = parse_since(since)
    rows = usage(state.db, since=start, environment=env)
    return {"since": start.isoformat(), "usage": [r.model_dump() for r in rows], "capacity": capacity_view(state, rows)}


#: text filters never hold a NUL character (PostgreSQL cannot compare with one: a 422, not a 500)
NO_NUL = r"^[^\x00]*$"


@router.get("/api/sessions")
def search_sessions(
    since: str = Query("24h", pattern=NO_NUL),
    environment: str | None = Query(None, pattern=NO_NUL),
    agent: str | None = Query(None, pattern=NO_NUL),
    outcome: str | None = Query(None, pattern=NO_NUL),
    intent: str | None = Query(None, pattern=NO_NUL),
    escalation_reason: str | None = Query(None, pattern=NO_NUL),
    limit: int = Query(50, ge=1, le=500),
    q: str | None = Query(
        None, max_length=200, pattern=NO_NUL, description="words in the (redacted) transcript, caller or agent"
    ),
    state: AppState = Depends(get_state),
    principal: Any = Depends(guard("session.read", "GET", "/api/sessions", worker_env)),
) -> list[dict[str, Any]]:
    """Stored (redacted) conversations by time, environment, agent, outcome, intent, escalation reason and
    words in the transcript (`q`, case-insensitive)."""

    start = parse_since(since)
    allowed = readable_environments(state, principal, "session.read", _session_environments(state))
    stmt = (
        select(SessionRow)
        .where(SessionRow.started_at >= start, SessionRow.environment.in_(allowed))
        .order_by(SessionRow.started_at.desc())
        .limit(limit)
    )
    for column, value in (
        (SessionRow.environment, environment),
        (SessionRow.agent, agent),
        (SessionRow.outcome, outcome),
        (SessionRow.escalation_reason, escalation_reason),
    ):
        if value:
            stmt = stmt.where(column == value)
    if intent:
        stmt = stmt.where(SessionRow.id.in_(select(TurnRow.session_id).where(TurnRow.intent == intent)))
    if q and q.strip():
        pattern = "%" + q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            SessionRow.id.in_(
                select(TurnRow.session_id).where(
                    or_(TurnRow.user_text.ilike(pattern, escape="\\"), TurnRow.agent_text.ilike(pattern, escape="\\"))
                )
            )
        )
    with state.db.orm() as orm:
        return [
            {
                "id": s.id,
                "agent": s.agent,
                "environment": s.environment,
                "channel": s.channel,
                "agent_version": s.agent_version,
                "bundle_digest": s.bundle_digest,
                "started_at": s.started_at.isoformat(),
                "ended_at": s.ended_at.isoformat() if s.ended_at else None,
                "outcome": s.outcome,
                "escalation_reason": s.escalation_reason,
                "turns": s.turn_count,
                "verified": s.verified,
            }
            for s in orm.scalars(stmt)
        ]


def _session_environments(state: AppState) -> list[str]:
    """Every environment some stored session belongs to (configured or not any more)."""
    with state.db.orm() as orm:
        return list(orm.scalars(select(SessionRow.environment).distinct()))
