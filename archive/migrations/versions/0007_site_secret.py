"""site_secret: keys every node shares (the HTTP session key), kept in the index

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'site_secret',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_site_secret')),
    )


def downgrade() -> None:
    op.drop_table('site_secret')
