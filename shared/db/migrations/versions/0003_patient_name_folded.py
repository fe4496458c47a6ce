"""patients.patient_name_folded: the case-folded name that PatientName matching uses by default

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_name_folded", sa.Text(), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_patients_patient_name_folded"), ["patient_name_folded"], unique=False)
    # Names indexed before this column existed: fold them here (ASCII case folding; the indexer folds fully).
    op.execute("UPDATE patients SET patient_name_folded = lower(patient_name)")


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_patient_name_folded"))
        batch_op.drop_column("patient_name_folded")
