"""initial index schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 01:04:56.409680
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('audit_events',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('remote_aet', sa.String(length=16), nullable=False),
    sa.Column('remote_ip', sa.String(length=64), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_audit_events_event_id'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_occurred_at'), ['occurred_at'], unique=False)

    op.create_table('dead_letters',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('object_key', sa.String(length=1024), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('event', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_dead_letters')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_dead_letters_sop_instance_uid'))
    )
    op.create_table('patients',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('patient_key', sa.String(length=200), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('patient_name', sa.Text(), nullable=False),
    sa.Column('patient_name_search', sa.Text(), nullable=False),
    sa.Column('patient_birth_date', sa.String(length=8), nullable=False),
    sa.Column('patient_sex', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_patients')),
    sa.UniqueConstraint('patient_key', name=op.f('uq_patients_patient_key'))
    )
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patients_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_patients_patient_name_search'), ['patient_name_search'], unique=False)

    op.create_table('service_heartbeats',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('instance_name', sa.String(length=200), nullable=False),
    sa.Column('service', sa.String(length=32), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_service_heartbeats')),
    sa.UniqueConstraint('instance_name', name=op.f('uq_service_heartbeats_instance_name'))
    )
    with op.batch_alter_table('service_heartbeats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_heartbeats_service'), ['service'], unique=False)

    op.create_table('studies',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_fk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('study_date', sa.String(length=8), nullable=False),
    sa.Column('study_time', sa.String(length=16), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('study_id', sa.String(length=16), nullable=False),
    sa.Column('study_description', sa.Text(), nullable=False),
    sa.Column('referring_physician_name', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_update', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_fk'], ['patients.pk'], name=op.f('fk_studies_patient_fk_patients')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_studies')),
    sa.UniqueConstraint('study_instance_uid', name=op.f('uq_studies_study_instance_uid'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_patient_fk'), ['patient_fk'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_study_date'), ['study_date'], unique=False)

    op.create_table('series',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_fk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('series_description', sa.Text(), nullable=False),
    sa.Column('body_part_examined', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_update', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_fk'], ['studies.pk'], name=op.f('fk_series_study_fk_studies')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_series')),
    sa.UniqueConstraint('series_instance_uid', name=op.f('uq_series_series_instance_uid'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_modality'), ['modality'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_study_fk'), ['study_fk'], unique=False)

    op.create_table('instances',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('series_fk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('patient_fk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax', sa.String(length=64), nullable=False),
    sa.Column('object_key', sa.String(length=1024), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('remote_aet', sa.String(length=16), nullable=False),
    sa.Column('called_aet', sa.String(length=16), nullable=False),
    sa.Column('remote_ip', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('indexed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('specific_character_set', sa.String(length=200), nullable=False),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['patient_fk'], ['patients.pk'], name=op.f('fk_instances_patient_fk_patients')),
    sa.ForeignKeyConstraint(['series_fk'], ['series.pk'], name=op.f('fk_instances_series_fk_series')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_instances')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_instances_sop_instance_uid'))
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_patient_fk'), ['patient_fk'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_remote_aet'), ['remote_aet'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_series_fk'), ['series_fk'], unique=False)
        batch_op.create_index('ix_instances_series_number', ['series_fk', 'instance_number'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index('ix_instances_series_number')
        batch_op.drop_index(batch_op.f('ix_instances_series_fk'))
        batch_op.drop_index(batch_op.f('ix_instances_remote_aet'))
        batch_op.drop_index(batch_op.f('ix_instances_received_at'))
        batch_op.drop_index(batch_op.f('ix_instances_patient_fk'))

    op.drop_table('instances')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_fk'))
        batch_op.drop_index(batch_op.f('ix_series_modality'))

    op.drop_table('series')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_study_date'))
        batch_op.drop_index(batch_op.f('ix_studies_patient_fk'))
        batch_op.drop_index(batch_op.f('ix_studies_accession_number'))

    op.drop_table('studies')
    with op.batch_alter_table('service_heartbeats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_heartbeats_service'))

    op.drop_table('service_heartbeats')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patients_patient_name_search'))
        batch_op.drop_index(batch_op.f('ix_patients_patient_id'))

    op.drop_table('patients')
    op.drop_table('dead_letters')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')

