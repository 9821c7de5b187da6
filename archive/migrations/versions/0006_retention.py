"""retention: legal hold on studies, and when retention deleted a study's images

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 03:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN, also on SQLite: a batch copy of the study table would trip
    # the foreign keys of series, reports and orders that point at it.
    op.add_column('study', sa.Column('legal_hold', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('study', sa.Column('hold_reason', sa.Text(), server_default=sa.text("''"), nullable=False))
    op.add_column('study', sa.Column('images_deleted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('study', 'images_deleted_at')
    op.drop_column('study', 'hold_reason')
    op.drop_column('study', 'legal_hold')
