"""The reports' tables: reports and their versions, delivery of results, the device
registry behind the claim's MA_MAY, and patient share links.

They live in the archive's metadata (one schema, one Alembic history) and
refer to its patient and study rows and to the worklist's procedure steps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from archive.models import UID, Base


class Report(Base):
    """One report per accession number (one requested procedure), whatever its versions."""

    __tablename__ = "report"
    __table_args__ = (Index("ix_report_status_updated", "status", "updated_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    accession_number: Mapped[str] = mapped_column(String(16), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    #: The order it answers, when there is one.
    step_pk: Mapped[int | None] = mapped_column(ForeignKey("procedure_step.pk"), index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk"), index=True)
    #: The current version's status (reports.types.ReportStatus).
    status: Mapped[str] = mapped_column(String(16))
    current_version: Mapped[int] = mapped_column(Integer)
    #: Bumped by every change: the optimistic-locking token.
    revision: Mapped[int] = mapped_column(Integer)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: When the first version was signed (None while never final).
    finalised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class ReportVersionRow(Base):
    """A version of a report. Open (draft/preliminary) versions change in place; signed ones never."""

    __tablename__ = "report_version"
    __table_args__ = (UniqueConstraint("report_pk", "number"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_pk: Mapped[int] = mapped_column(ForeignKey("report.pk"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8))
    template_id: Mapped[str] = mapped_column(String(64))
    #: Section name -> text (reports.types.SECTIONS).
    sections: Mapped[dict[str, Any]]
    structured: Mapped[dict[str, Any]]
    author: Mapped[str] = mapped_column(String(64))
    author_name: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    signer: Mapped[str] = mapped_column(String(64))
    signer_name: Mapped[str]
    #: The signer's practising-certificate number at signing time (MA_BS_DOC_KQ).
    signer_certificate_number: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    x509_serial: Mapped[str] = mapped_column(String(64))
    x509_subject: Mapped[str]
    reason: Mapped[str]
    #: The signed PDF in the object store ("" when none).
    pdf_key: Mapped[str]
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    sr_sop_instance_uid: Mapped[str] = mapped_column(UID)
    pdf_sop_instance_uid: Mapped[str] = mapped_column(UID)


class StudyDelivery(Base):
    """How a study's results went home with the patient: film, a link/QR code, or a CD. Latest wins."""

    __tablename__ = "study_delivery"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    #: film, link or cd (reports.types.DELIVERY_MODES).
    mode: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str]


class Device(Base):
    """A modality as the health-insurance claim names it: MA_MAY, keyed by its AE title."""

    __tablename__ = "device"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    #: XX.n.YYYYY.Z: device type (XQ, CL, SA, MRI...), funding source, facility code, serial.
    device_code: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16))
    #: Device Serial Number (0018,1000) as the modality last sent it.
    serial_number: Mapped[str] = mapped_column(String(64))
    description: Mapped[str]
    #: "admin" when a person set the code, "auto" when pre-filled from what the modality sent.
    source: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ShareLink(Base):
    """A patient's link (and QR code) to their images and final report, instead of a film."""

    __tablename__ = "share_link"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Random, URL-safe, unguessable (128 bits or more).
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk"), index=True)
    created_by: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str]
    #: Argon2id of the optional PIN ("" for none).
    pin_hash: Mapped[str]
    failed_attempts: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    use_count: Mapped[int] = mapped_column(Integer)


class SigningIdentity(Base):
    """A radiologist's signing certificate and key: a PKCS#12 file, encrypted by its own passphrase.

    Kept in the database (not a node's disk) so every node can sign; the
    passphrase is the signing PIN the radiologist types at each signature and
    is never stored.
    """

    __tablename__ = "signing_identity"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    pkcs12: Mapped[bytes] = mapped_column(LargeBinary)
    x509_serial: Mapped[str] = mapped_column(String(64))
    x509_subject: Mapped[str]
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
