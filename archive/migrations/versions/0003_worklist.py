"""worklist: procedure steps, history, MPPS, study matches, HL7 log, outbox; the patient a study was received with

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The patient the modality sent, kept when reconciliation files the study under the order's.
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.add_column(sa.Column('received_patient_key', sa.Text(), server_default=sa.text("''"), nullable=False))
    op.execute("UPDATE study SET received_patient_key = (SELECT patient_key FROM patient WHERE patient.pk = study.patient_pk)")
    
    op.create_table('hl7_message',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('sending_application', sa.String(length=180), nullable=False),
    sa.Column('sending_facility', sa.String(length=180), nullable=False),
    sa.Column('control_id', sa.String(length=199), nullable=False),
    sa.Column('message_type', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('peer_address', sa.Text(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('ack_code', sa.String(length=2), nullable=False),
    sa.Column('ack', sa.LargeBinary(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_hl7_message')),
    sa.UniqueConstraint('sending_application', 'sending_facility', 'control_id', name=op.f('uq_hl7_message_sending_application_sending_facility_control_id'))
    )
    with op.batch_alter_table('hl7_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hl7_message_received_at'), ['received_at'], unique=False)

    op.create_table('outbox_message',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_outbox_message'))
    )
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_message_next_attempt_at'), ['next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_message_state'), ['state'], unique=False)

    op.create_table('procedure_step',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('placer_issuer', sa.String(length=64), nullable=False),
    sa.Column('placer_order_number', sa.String(length=64), nullable=False),
    sa.Column('filler_order_number', sa.Text(), nullable=False),
    sa.Column('accession_number', sa.String(length=16), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('requested_procedure_id', sa.String(length=16), nullable=False),
    sa.Column('requested_procedure_description', sa.Text(), nullable=False),
    sa.Column('procedure_code', sa.Text(), nullable=False),
    sa.Column('procedure_scheme', sa.Text(), nullable=False),
    sa.Column('service_code', sa.Text(), nullable=False),
    sa.Column('indicator_code', sa.Text(), nullable=False),
    sa.Column('sps_id', sa.String(length=16), nullable=False),
    sa.Column('sps_description', sa.Text(), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('station_ae_title', sa.String(length=16), nullable=False),
    sa.Column('station_name', sa.Text(), nullable=False),
    sa.Column('start_date', sa.String(length=8), nullable=False),
    sa.Column('start_time', sa.String(length=13), nullable=False),
    sa.Column('performing_physician', sa.Text(), nullable=False),
    sa.Column('referring_physician', sa.Text(), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('pregnancy_status', sa.SmallInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.pk'], name=op.f('fk_procedure_step_patient_pk_patient')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_procedure_step')),
    sa.UniqueConstraint('accession_number', name=op.f('uq_procedure_step_accession_number')),
    sa.UniqueConstraint('placer_issuer', 'placer_order_number', name=op.f('uq_procedure_step_placer_issuer_placer_order_number')),
    sa.UniqueConstraint('study_instance_uid', name=op.f('uq_procedure_step_study_instance_uid'))
    )
    with op.batch_alter_table('procedure_step', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_procedure_step_modality'), ['modality'], unique=False)
        batch_op.create_index(batch_op.f('ix_procedure_step_patient_pk'), ['patient_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_procedure_step_requested_procedure_id'), ['requested_procedure_id'], unique=False)
        batch_op.create_index('ix_procedure_step_start', ['start_date', 'start_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_procedure_step_station_ae_title'), ['station_ae_title'], unique=False)
        batch_op.create_index(batch_op.f('ix_procedure_step_status'), ['status'], unique=False)

    op.create_table('performed_step',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('step_pk', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('calling_ae', sa.Text(), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['step_pk'], ['procedure_step.pk'], name=op.f('fk_performed_step_step_pk_procedure_step')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_performed_step')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_performed_step_sop_instance_uid'))
    )
    with op.batch_alter_table('performed_step', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_performed_step_step_pk'), ['step_pk'], unique=False)

    op.create_table('step_event',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('step_pk', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['step_pk'], ['procedure_step.pk'], name=op.f('fk_step_event_step_pk_procedure_step')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_step_event'))
    )
    with op.batch_alter_table('step_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_step_event_step_pk'), ['step_pk'], unique=False)

    op.create_table('study_match',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('study_pk', sa.Integer(), nullable=False),
    sa.Column('step_pk', sa.Integer(), nullable=True),
    sa.Column('matched_by', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['step_pk'], ['procedure_step.pk'], name=op.f('fk_study_match_step_pk_procedure_step')),
    sa.ForeignKeyConstraint(['study_pk'], ['study.pk'], name=op.f('fk_study_match_study_pk_study')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_study_match')),
    sa.UniqueConstraint('study_pk', name=op.f('uq_study_match_study_pk'))
    )
    with op.batch_alter_table('study_match', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_match_matched_by'), ['matched_by'], unique=False)
        batch_op.create_index(batch_op.f('ix_study_match_step_pk'), ['step_pk'], unique=False)

    


def downgrade() -> None:
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.drop_column('received_patient_key')
    
    with op.batch_alter_table('study_match', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_match_step_pk'))
        batch_op.drop_index(batch_op.f('ix_study_match_matched_by'))

    op.drop_table('study_match')
    with op.batch_alter_table('step_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_step_event_step_pk'))

    op.drop_table('step_event')
    with op.batch_alter_table('performed_step', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_performed_step_step_pk'))

    op.drop_table('performed_step')
    with op.batch_alter_table('procedure_step', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_procedure_step_status'))
        batch_op.drop_index(batch_op.f('ix_procedure_step_station_ae_title'))
        batch_op.drop_index('ix_procedure_step_start')
        batch_op.drop_index(batch_op.f('ix_procedure_step_requested_procedure_id'))
        batch_op.drop_index(batch_op.f('ix_procedure_step_patient_pk'))
        batch_op.drop_index(batch_op.f('ix_procedure_step_modality'))

    op.drop_table('procedure_step')
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_message_state'))
        batch_op.drop_index(batch_op.f('ix_outbox_message_next_attempt_at'))

    op.drop_table('outbox_message')
    with op.batch_alter_table('hl7_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hl7_message_received_at'))

    op.drop_table('hl7_message')
    
