"""ui preferences: each user's web UI language and low-bandwidth viewer mode

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ui_language', sa.String(length=8), server_default=sa.text("''"), nullable=False))
        batch_op.add_column(sa.Column('low_bandwidth', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_column('low_bandwidth')
        batch_op.drop_column('ui_language')
