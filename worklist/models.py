"""The worklist's tables: scheduled procedure steps from HIS orders, their history,
performed steps (MPPS), how arriving studies were matched to steps, the raw
HL7 message log and the outbox of messages back to the HIS.

They live in the archive's metadata (one schema, one Alembic history) and
refer to the archive's patient and study rows: an order's patient is the same
row the images are filed under, so an HIS correction (ADT^A08) or merge
(ADT^A40) is seen by every edge at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from archive.models import UID, Base


class ProcedureStep(Base):
    """One order of the HIS as the modality sees it: a requested procedure with one scheduled step.

    District hospitals order one procedure per order ("CT sọ não không tiêm
    thuốc"), so order, requested procedure and scheduled procedure step are one
    row; the DICOM identifiers of each level are kept apart all the same.
    """

    __tablename__ = "procedure_step"
    __table_args__ = (
        # Idempotency: the same HIS order number from the same HIS is the same order.
        UniqueConstraint("placer_issuer", "placer_order_number"),
        Index("ix_procedure_step_start", "start_date", "start_time"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The ordering system (HL7 MSH-3 sending application, the JSON mapping's name, "FHIR", "WALKIN").
    placer_issuer: Mapped[str] = mapped_column(String(64))
    #: The HIS order number (HL7 ORC-2, the JSON API's order id, ServiceRequest.identifier).
    placer_order_number: Mapped[str] = mapped_column(String(64))
    #: Our order number (ORC-3), or the HIS's filler number when it assigns one.
    filler_order_number: Mapped[str]
    accession_number: Mapped[str] = mapped_column(String(16), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk"), index=True)
    requested_procedure_id: Mapped[str] = mapped_column(String(16), index=True)
    requested_procedure_description: Mapped[str]
    #: Code of the procedure (OBR-4 / the catalogue's code) and its coding scheme.
    procedure_code: Mapped[str]
    procedure_scheme: Mapped[str]
    #: National service code (mã DVKT) and imaging indicator code the HIS bills with.
    service_code: Mapped[str]
    indicator_code: Mapped[str]
    sps_id: Mapped[str] = mapped_column(String(16))
    sps_description: Mapped[str]
    modality: Mapped[str] = mapped_column(String(16), index=True)
    station_ae_title: Mapped[str] = mapped_column(String(16), index=True)
    station_name: Mapped[str]
    #: Scheduled start, local time: YYYYMMDD and HHMMSS (compared as strings, like the archive's).
    start_date: Mapped[str] = mapped_column(String(8))
    start_time: Mapped[str] = mapped_column(String(13))
    performing_physician: Mapped[str]
    referring_physician: Mapped[str]
    #: STAT, HIGH, ROUTINE, MEDIUM or LOW (Requested Procedure Priority).
    priority: Mapped[str] = mapped_column(String(8))
    #: Pregnancy Status (0010,21C0): 1 not pregnant, 2 possibly, 3 definitely, 4 unknown.
    pregnancy_status: Mapped[int | None] = mapped_column(SmallInteger)
    reason: Mapped[str]
    #: SCHEDULED, IN PROGRESS, COMPLETED, DISCONTINUED or CANCELLED.
    status: Mapped[str] = mapped_column(String(16), index=True)
    #: Everything else the order said (admission number, department, clinical info), DICOM JSON.
    attrs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StepEvent(Base):
    """The history of a step: every change, who made it, through which door."""

    __tablename__ = "step_event"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_pk: Mapped[int] = mapped_column(ForeignKey("procedure_step.pk"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: created, changed, status, cancelled, merged, matched, ...
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str]
    via: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str]


class PerformedStep(Base):
    """A Modality Performed Procedure Step (PS3.4 F.7) as the modality reported it."""

    __tablename__ = "performed_step"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    step_pk: Mapped[int | None] = mapped_column(ForeignKey("procedure_step.pk"), index=True)
    #: IN PROGRESS, COMPLETED or DISCONTINUED.
    status: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str]
    #: The MPPS attributes as last set (DICOM JSON), performed series included.
    attrs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StudyMatch(Base):
    """How an arriving study was reconciled with the worklist: matched to a step, or not."""

    __tablename__ = "study_match"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.pk"), unique=True)
    #: None while the study matches no order (the "unmatched" list).
    step_pk: Mapped[int | None] = mapped_column(ForeignKey("procedure_step.pk"), index=True)
    #: accession, study_uid, manual, or unmatched.
    matched_by: Mapped[str] = mapped_column(String(16), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str]
    detail: Mapped[str]


class Hl7Message(Base):
    """Every inbound HL7 message, stored raw before it is acknowledged."""

    __tablename__ = "hl7_message"
    # MSH-10 is unique per sending application and facility (HL7 2.5 2.15.9.10).
    __table_args__ = (UniqueConstraint("sending_application", "sending_facility", "control_id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sending_application: Mapped[str] = mapped_column(String(180))
    sending_facility: Mapped[str] = mapped_column(String(180))
    control_id: Mapped[str] = mapped_column(String(199))
    message_type: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    peer_address: Mapped[str]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    #: AA, AE or AR once processed; the stored ACK is sent again for a replay.
    ack_code: Mapped[str] = mapped_column(String(2))
    ack: Mapped[bytes] = mapped_column(LargeBinary)
    detail: Mapped[str]


class OutboxMessage(Base):
    """A message waiting to go out (HL7 status updates to the HIS), retried until acknowledged."""

    __tablename__ = "outbox_message"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Where it goes: a name from the settings ("his").
    destination: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    #: What it is about (an accession number), for lists and logs.
    subject: Mapped[str]
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    #: pending, sent or failed (gave up; an operator can retry it).
    state: Mapped[str] = mapped_column(String(8), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_error: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
