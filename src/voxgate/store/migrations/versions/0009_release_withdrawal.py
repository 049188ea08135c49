"""a release may withdraw an agent: releases.digest is null when nothing is active afterwards

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 15:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.alter_column("digest", existing_type=sa.String(length=80), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM releases WHERE digest IS NULL")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.alter_column("digest", existing_type=sa.String(length=80), nullable=False)
