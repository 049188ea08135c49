"""Desk agents' profiles (the skills they are routed by) and the callback requests the fallback took,
as stored (used by the desk API)."""

from __future__ import annotations

from typing import Any

from voxgate.clock import utcnow
from voxgate.store.db import Database
from voxgate.store.desk_models import CallbackRequestRow, DeskAgentRow


def load_skills(db: Database, user_id: str) -> list[str]:
    """The skills a desk agent is routed by (none stored: none)."""
    with db.orm() as orm:
        row = orm.get(DeskAgentRow, user_id)
        return list(row.skills) if row is not None else []


def save_skills(db: Database, user_id: str, skills: list[str], by: str) -> None:
    """Store the skills a desk agent is routed by, and who set them."""
    with db.orm() as orm, orm.begin():
        row = orm.get(DeskAgentRow, user_id)
        if row is None:
            orm.add(DeskAgentRow(user_id=user_id, skills=skills, updated_by=by, updated_at=utcnow()))
        else:
            row.skills, row.updated_by, row.updated_at = skills, by, utcnow()


def callback_view(row: CallbackRequestRow) -> dict[str, Any]:
    """A callback request (or message) as the API shows it."""
    return {
        "id": row.id,
        "session_id": row.session_id,
        "handoff_id": row.handoff_id,
        "agent": row.agent,
        "environment": row.environment,
        "queue": row.queue,
        "channel": row.channel,
        "kind": row.kind,
        "reason": row.reason,
        "callback_number": row.callback_number,
        "message": row.message,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "completed_at": row.completed_at.isoformat() if row.completed_at else None,
        "completed_by": row.completed_by,
    }
