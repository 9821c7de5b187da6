"""Initial index schema: patients, studies, series, instances, registry, audit.

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('application_entity',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('ae_title', sa.String(length=16), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_application_entity')),
    sa.UniqueConstraint('ae_title', name=op.f('uq_application_entity_ae_title'))
    )
    op.create_table('audit_event',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('level', sa.Text(), nullable=False),
    sa.Column('uid', sa.Text(), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_audit_event'))
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_actor'), ['actor'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_uid'), ['uid'], unique=False)

    op.create_table('duplicate_conflict',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.Text(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('calling_ae', sa.Text(), nullable=False),
    sa.Column('peer_address', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_duplicate_conflict')),
    sa.UniqueConstraint('storage_key', name=op.f('uq_duplicate_conflict_storage_key'))
    )
    with op.batch_alter_table('duplicate_conflict', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_duplicate_conflict_sop_instance_uid'), ['sop_instance_uid'], unique=False)

    op.create_table('name_token',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('kind', sa.SmallInteger(), nullable=False),
    sa.Column('owner_pk', sa.Integer(), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_name_token'))
    )
    with op.batch_alter_table('name_token', schema=None) as batch_op:
        batch_op.create_index('ix_name_token_kind_token_owner', ['kind', 'token', 'owner_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_name_token_owner_pk'), ['owner_pk'], unique=False)

    op.create_table('patient',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('patient_key', sa.Text(), nullable=False),
    sa.Column('patient_id', sa.Text(), nullable=False),
    sa.Column('issuer_of_patient_id', sa.Text(), nullable=False),
    sa.Column('patient_name', sa.Text(), nullable=False),
    sa.Column('patient_name_key', sa.Text(), nullable=False),
    sa.Column('patient_birth_date', sa.Text(), nullable=False),
    sa.Column('patient_sex', sa.Text(), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_patient')),
    sa.UniqueConstraint('patient_key', name=op.f('uq_patient_patient_key'))
    )
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_patient_birth_date'), ['patient_birth_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_patient_name_key'), ['patient_name_key'], unique=False)

    op.create_table('patient_identifier',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('type_of_id', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.pk'], name=op.f('fk_patient_identifier_patient_pk_patient')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_patient_identifier'))
    )
    with op.batch_alter_table('patient_identifier', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_identifier_patient_pk'), ['patient_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_identifier_value'), ['value'], unique=False)

    op.create_table('study',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('study_date', sa.Text(), nullable=False),
    sa.Column('study_time', sa.Text(), nullable=False),
    sa.Column('accession_number', sa.Text(), nullable=False),
    sa.Column('study_id', sa.Text(), nullable=False),
    sa.Column('referring_physician_name', sa.Text(), nullable=False),
    sa.Column('referring_physician_name_key', sa.Text(), nullable=False),
    sa.Column('study_description', sa.Text(), nullable=False),
    sa.Column('modalities_in_study', sa.Text(), nullable=False),
    sa.Column('num_series', sa.Integer(), nullable=False),
    sa.Column('num_instances', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.pk'], name=op.f('fk_study_patient_pk_patient')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_study')),
    sa.UniqueConstraint('study_instance_uid', name=op.f('uq_study_study_instance_uid'))
    )
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_study_patient_pk'), ['patient_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_study_study_date'), ['study_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_study_updated_at'), ['updated_at'], unique=False)

    op.create_table('series',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_pk', sa.Integer(), nullable=False),
    sa.Column('modality', sa.Text(), nullable=False),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('series_description', sa.Text(), nullable=False),
    sa.Column('series_date', sa.Text(), nullable=False),
    sa.Column('series_time', sa.Text(), nullable=False),
    sa.Column('body_part_examined', sa.Text(), nullable=False),
    sa.Column('performed_procedure_step_start_date', sa.Text(), nullable=False),
    sa.Column('performed_procedure_step_start_time', sa.Text(), nullable=False),
    sa.Column('num_instances', sa.Integer(), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_pk'], ['study.pk'], name=op.f('fk_series_study_pk_study')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_series')),
    sa.UniqueConstraint('series_instance_uid', name=op.f('uq_series_series_instance_uid'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_modality'), ['modality'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_study_pk'), ['study_pk'], unique=False)

    op.create_table('instance',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_pk', sa.Integer(), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('content_date', sa.Text(), nullable=False),
    sa.Column('content_time', sa.Text(), nullable=False),
    sa.Column('number_of_frames', sa.Integer(), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('columns', sa.Integer(), nullable=True),
    sa.Column('bits_allocated', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax_uid', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('calling_ae', sa.Text(), nullable=False),
    sa.Column('peer_address', sa.Text(), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['series_pk'], ['series.pk'], name=op.f('fk_instance_series_pk_series')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_instance')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_instance_sop_instance_uid')),
    sa.UniqueConstraint('storage_key', name=op.f('uq_instance_storage_key'))
    )
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instance_series_pk'), ['series_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_instance_sop_class_uid'), ['sop_class_uid'], unique=False)

    op.create_table('series_request',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('series_pk', sa.Integer(), nullable=False),
    sa.Column('requested_procedure_id', sa.Text(), nullable=False),
    sa.Column('scheduled_procedure_step_id', sa.Text(), nullable=False),
    sa.Column('accession_number', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['series_pk'], ['series.pk'], name=op.f('fk_series_request_series_pk_series')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_series_request'))
    )
    with op.batch_alter_table('series_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_request_requested_procedure_id'), ['requested_procedure_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_request_scheduled_procedure_step_id'), ['scheduled_procedure_step_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_request_series_pk'), ['series_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('series_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_request_series_pk'))
        batch_op.drop_index(batch_op.f('ix_series_request_scheduled_procedure_step_id'))
        batch_op.drop_index(batch_op.f('ix_series_request_requested_procedure_id'))

    op.drop_table('series_request')
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_sop_class_uid'))
        batch_op.drop_index(batch_op.f('ix_instance_series_pk'))

    op.drop_table('instance')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_pk'))
        batch_op.drop_index(batch_op.f('ix_series_modality'))

    op.drop_table('series')
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_updated_at'))
        batch_op.drop_index(batch_op.f('ix_study_study_date'))
        batch_op.drop_index(batch_op.f('ix_study_patient_pk'))
        batch_op.drop_index(batch_op.f('ix_study_accession_number'))

    op.drop_table('study')
    with op.batch_alter_table('patient_identifier', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_identifier_value'))
        batch_op.drop_index(batch_op.f('ix_patient_identifier_patient_pk'))

    op.drop_table('patient_identifier')
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_patient_name_key'))
        batch_op.drop_index(batch_op.f('ix_patient_patient_id'))
        batch_op.drop_index(batch_op.f('ix_patient_patient_birth_date'))

    op.drop_table('patient')
    with op.batch_alter_table('name_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_name_token_owner_pk'))
        batch_op.drop_index('ix_name_token_kind_token_owner')

    op.drop_table('name_token')
    with op.batch_alter_table('duplicate_conflict', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_duplicate_conflict_sop_instance_uid'))

    op.drop_table('duplicate_conflict')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_uid'))
        batch_op.drop_index(batch_op.f('ix_audit_event_at'))
        batch_op.drop_index(batch_op.f('ix_audit_event_actor'))
        batch_op.drop_index(batch_op.f('ix_audit_event_action'))

    op.drop_table('audit_event')
    op.drop_table('application_entity')
