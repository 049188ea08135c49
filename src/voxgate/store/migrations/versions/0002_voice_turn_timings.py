"""voice turn timings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:58:47.726227
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('voice_turns',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('speech_end_audio_ms', sa.Float(), nullable=True),
    sa.Column('endpoint_ms', sa.Float(), nullable=True),
    sa.Column('asr_final_ms', sa.Float(), nullable=True),
    sa.Column('asr_compute_ms', sa.Float(), nullable=True),
    sa.Column('intent_ms', sa.Float(), nullable=True),
    sa.Column('first_tts_ms', sa.Float(), nullable=True),
    sa.Column('voice_to_voice_ms', sa.Float(), nullable=True),
    sa.Column('speculative_hit', sa.Boolean(), nullable=False),
    sa.Column('interrupted', sa.Boolean(), nullable=False),
    sa.Column('dtmf', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('voice_turns', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_voice_turns_session_id'), ['session_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('voice_turns', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_voice_turns_session_id'))

    op.drop_table('voice_turns')
