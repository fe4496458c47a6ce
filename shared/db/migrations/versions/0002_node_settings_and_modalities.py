"""node settings and modalities (live configuration)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('node_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_node_settings'))
    )
    op.create_table('modalities',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('ae_title', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('allow', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('local_ae_title', sa.String(length=16), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_modalities'))
    )
    with op.batch_alter_table('modalities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_modalities_ae_title'), ['ae_title'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('modalities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_modalities_ae_title'))

    op.drop_table('modalities')
    op.drop_table('node_settings')
