"""modalities: facility (the site or department a remote AE belongs to; studies are filtered by it)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("modalities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("facility", sa.String(length=64), nullable=False, server_default=""))
        batch_op.create_index("ix_modalities_facility", ["facility"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("modalities", schema=None) as batch_op:
        batch_op.drop_index("ix_modalities_facility")
        batch_op.drop_column("facility")
