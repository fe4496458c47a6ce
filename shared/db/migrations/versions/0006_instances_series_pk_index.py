"""instances: index (series_fk, pk) in place of (series_fk)

The computed C-FIND keys (NumberOf*RelatedInstances) and the representative instance of each study or series
(min(pk) per series) read every instance row of the matched series; with pk in the index they become
index-only scans. Measured on PostgreSQL at 1,000,000 instances (bench/query.py), a study query matching 771
studies: 142 -> 23 ms for NumberOfStudyRelatedInstances, 155 -> 40 ms for the representative attributes. The
index replaces ix_instances_series_fk, whose lookups it serves as well, so ingest keeps the same number of indexes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 07:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index("ix_instances_series_fk_pk", ["series_fk", "pk"], unique=False)
        batch_op.drop_index("ix_instances_series_fk")


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index("ix_instances_series_fk", ["series_fk"], unique=False)
        batch_op.drop_index("ix_instances_series_fk_pk")
