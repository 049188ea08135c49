"""live-agent desk: handoff lifecycle columns, desk agents' skills, callback requests

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_HANDOFF_COLUMNS = (
    sa.Column("accepted_by", sa.String(length=32), nullable=True),
    sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("disposition", sa.String(length=40), nullable=True),
    sa.Column("disposition_note", sa.Text(), nullable=True),
    sa.Column("failure_reason", sa.String(length=40), nullable=True),
    sa.Column("events", sa.JSON(), nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        for column in _HANDOFF_COLUMNS:
            batch_op.add_column(sa.Column(column.name, column.type, nullable=True))
        batch_op.create_index(batch_op.f("ix_handoffs_failure_reason"), ["failure_reason"], unique=False)

    op.create_table(
        "desk_agents",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )

    op.create_table(
        "callback_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=True),
        sa.Column("agent", sa.String(length=100), nullable=False),
        sa.Column("environment", sa.String(length=40), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("callback_number", sa.String(length=40), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("redactions", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_by", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["handoff_id"], ["handoffs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("callback_requests", schema=None) as batch_op:
        for column in ("session_id", "handoff_id", "environment", "queue", "status", "created_at"):
            batch_op.create_index(batch_op.f(f"ix_callback_requests_{column}"), [column], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("callback_requests", schema=None) as batch_op:
        for column in ("session_id", "handoff_id", "environment", "queue", "status", "created_at"):
            batch_op.drop_index(batch_op.f(f"ix_callback_requests_{column}"))
    op.drop_table("callback_requests")
    op.drop_table("desk_agents")
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_handoffs_failure_reason"))
        for column in reversed(_HANDOFF_COLUMNS):
            batch_op.drop_column(column.name)
