"""storage lifecycle: protected_studies, pending_deletions

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "protected_studies",
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("protected_at", UTC_DATETIME, nullable=False),
        sa.Column("protected_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("study_instance_uid", name=op.f("pk_protected_studies")),
    )
    op.create_table(
        "pending_deletions",
        sa.Column("pk", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pending_deletions")),
    )
    with op.batch_alter_table("pending_deletions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pending_deletions_sop_instance_uid"), ["sop_instance_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pending_deletions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_deletions_sop_instance_uid"))
    op.drop_table("pending_deletions")
    op.drop_table("protected_studies")
