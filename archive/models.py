"""The index: patients, studies, series and instances, and what hangs off them.

Columns exist for every attribute the matching engine can match on (C-FIND
required and unique keys of PS3.4 C.6.1/C.6.2, QIDO-RS matching keys of PS3.18
10.6.1); everything else a query may ask to have returned lives in each
level's ``attrs`` (DICOM JSON, PS3.18 F.2), so answering never opens a file.

Text columns are unbounded: PostgreSQL counts VARCHAR limits in characters
and would refuse an over-long value a modality sent, losing the image.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

UID = String(64)

# Constraint names the same on SQLite and PostgreSQL, so migrations can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, str: Text}


class Patient(Base):
    __tablename__ = "patient"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Issuer + Patient ID, or a per-study key when the Patient ID is empty:
    # patients are never merged on anything weaker than an ID.
    patient_key: Mapped[str] = mapped_column(unique=True)
    patient_id: Mapped[str] = mapped_column(index=True)
    issuer_of_patient_id: Mapped[str]
    patient_name: Mapped[str]
    patient_name_key: Mapped[str] = mapped_column(index=True)
    patient_birth_date: Mapped[str] = mapped_column(index=True)
    patient_sex: Mapped[str]
    attrs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    __tablename__ = "study"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk"), index=True)
    #: The patient key the modality sent with the study's first instance. The study
    #: may since be filed under another patient (reconciled with its order, merged);
    #: later instances that still say this patient then belong here without a warning.
    received_patient_key: Mapped[str] = mapped_column(server_default=text("''"))
    study_date: Mapped[str] = mapped_column(index=True)
    # HHMMSS.ffffff, so time ranges compare as strings.
    study_time: Mapped[str]
    accession_number: Mapped[str] = mapped_column(index=True)
    study_id: Mapped[str]
    referring_physician_name: Mapped[str]
    referring_physician_name_key: Mapped[str]
    study_description: Mapped[str]
    # Backslash-joined, kept in step with the series.
    modalities_in_study: Mapped[str]
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attrs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    #: On legal hold (a complaint, a court case): retention never deletes its images.
    legal_hold: Mapped[bool] = mapped_column(Boolean, server_default=false())
    hold_reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: When retention deleted its images (the study, its order and report stay); None while it has them.
    images_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Series(Base):
    __tablename__ = "series"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    modality: Mapped[str] = mapped_column(index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str]
    series_date: Mapped[str]
    series_time: Mapped[str]
    body_part_examined: Mapped[str]
    performed_procedure_step_start_date: Mapped[str]
    performed_procedure_step_start_time: Mapped[str]
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    attrs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SeriesRequest(Base):
    """One item of a series' Request Attributes Sequence (0040,0275)."""

    __tablename__ = "series_request"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.pk"), index=True)
    requested_procedure_id: Mapped[str] = mapped_column(index=True)
    scheduled_procedure_step_id: Mapped[str] = mapped_column(index=True)
    accession_number: Mapped[str]


class Instance(Base):
    __tablename__ = "instance"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.pk"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID, index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    content_date: Mapped[str]
    content_time: Mapped[str]
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    bits_allocated: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(unique=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    calling_ae: Mapped[str]
    peer_address: Mapped[str]
    attrs: Mapped[dict[str, Any]]


class NameToken(Base):
    """Folded words of indexed person names, for order-free wildcard matching."""

    __tablename__ = "name_token"
    # (kind, token, owner) answers "who has a word like this" from the index alone.
    __table_args__ = (Index("ix_name_token_kind_token_owner", "kind", "token", "owner_pk"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[int] = mapped_column(SmallInteger)
    owner_pk: Mapped[int] = mapped_column(Integer, index=True)
    token: Mapped[str]


class PatientIdentifier(Base):
    """Other Patient IDs: the citizen ID (CCCD), the health-insurance number, ..."""

    __tablename__ = "patient_identifier"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk"), index=True)
    value: Mapped[str] = mapped_column(index=True)
    issuer: Mapped[str]
    type_of_id: Mapped[str]


class DuplicateConflict(Base):
    """A resent SOP Instance whose bytes differ from the stored one.

    The first copy stays in the index; the later copy is kept in the object
    store under its own key and recorded here, never silently dropped.
    """

    __tablename__ = "duplicate_conflict"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    storage_key: Mapped[str] = mapped_column(unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    calling_ae: Mapped[str]
    peer_address: Mapped[str]


class ApplicationEntity(Base):
    """A known DICOM peer: a C-MOVE destination and, in registered-only mode, an allowed caller."""

    __tablename__ = "application_entity"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str]
    port: Mapped[int] = mapped_column(Integer)
    description: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """Who read or changed patient data, when, from where (DESIGN.md promise)."""

    __tablename__ = "audit_event"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(index=True)
    address: Mapped[str]
    action: Mapped[str] = mapped_column(index=True)
    level: Mapped[str]
    uid: Mapped[str] = mapped_column(index=True)
    outcome: Mapped[str]
    detail: Mapped[str]


class UserAccount(Base):
    """A person who logs in to the HTTP edge: radiologist, technologist, referrer, admin."""

    __tablename__ = "user_account"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Lower case; what the person types at the login form.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str]
    role: Mapped[str] = mapped_column(String(16))
    #: Argon2id hash in PHC string format (parameters included).
    password_hash: Mapped[str]
    disabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Practising-certificate number (số chứng chỉ hành nghề): the claim's MA_BS_DOC_KQ for a signer.
    practising_certificate: Mapped[str] = mapped_column(String(64), server_default=text("''"))
    #: The web UI's language ("vi" or "en"; "" until the person picks one), remembered across logins.
    ui_language: Mapped[str] = mapped_column(String(8), server_default=text("''"))
    #: The viewer's low-bandwidth mode: small JPEG previews only until the person asks for full quality.
    low_bandwidth: Mapped[bool] = mapped_column(Boolean, server_default=false())


class ApiToken(Base):
    """A bearer token for a system (the EMR, a script): shown once, stored as a hash."""

    __tablename__ = "api_token"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of the whole token, hex: tokens are 256 random bits, so a fast
    #: hash is enough and a lookup by it is one index probe.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    #: The token's first characters, to tell tokens apart in lists and logs.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SiteSecret(Base):
    """A key every node of a site must share (archive/site_keys.py): the index is what they all reach."""

    __tablename__ = "site_secret"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
