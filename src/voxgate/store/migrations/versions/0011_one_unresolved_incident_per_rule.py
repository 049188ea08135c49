"""one unresolved incident per environment, agent and rule (several workers evaluating alerts)

Two evaluators seeing one breach at once must not open two incidents: a partial unique index lets
at most one incident per environment, agent and rule be unresolved. Should a database already hold
several (opened by workers evaluating at once before this index), the oldest stays and the others
are resolved, each with a timeline entry naming the incident it duplicated.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-12 12:00:00.000000
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UNRESOLVED = "status <> 'resolved'"

incidents = sa.table(
    "incidents",
    sa.column("id", sa.String),
    sa.column("environment", sa.String),
    sa.column("agent", sa.String),
    sa.column("rule", sa.String),
    sa.column("status", sa.String),
    sa.column("opened_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("resolved_at", sa.DateTime(timezone=True)),
    sa.column("timeline", sa.JSON),
)


def _resolve_duplicates() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(incidents.c.id, incidents.c.environment, incidents.c.agent, incidents.c.rule, incidents.c.timeline)
        .where(incidents.c.status != "resolved")
        .order_by(incidents.c.opened_at, incidents.c.id)
    ).all()
    kept: dict[tuple[str, str, str], str] = {}
    now = dt.datetime.now(dt.UTC)
    for row in rows:
        key = (row.environment, row.agent, row.rule)
        if key not in kept:
            kept[key] = row.id
            continue
        note = f"duplicate of incident {kept[key]} (opened for the same breach by another worker)"
        entry = {"at": now.isoformat(), "kind": "resolved", "actor": "system", "note": note}
        conn.execute(
            sa.update(incidents)
            .where(incidents.c.id == row.id)
            .values(status="resolved", resolved_at=now, updated_at=now, timeline=[*(row.timeline or []), entry])
        )


def upgrade() -> None:
    _resolve_duplicates()
    op.create_index(
        "ux_incidents_unresolved",
        "incidents",
        ["environment", "agent", "rule"],
        unique=True,
        postgresql_where=sa.text(UNRESOLVED),
        sqlite_where=sa.text(UNRESOLVED),
    )


def downgrade() -> None:
    op.drop_index("ux_incidents_unresolved", table_name="incidents")
