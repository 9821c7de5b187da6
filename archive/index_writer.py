"""Adding one instance to the index inside one write transaction.

Patient, study and series rows are created on first sight and then only
counted; their attributes come from the first instance (as Orthanc does).
A later instance that disagrees about which patient or study it belongs to
is filed under the existing row and the disagreement is reported, never
resolved by merging patients.

Statements are built once at import: constructing SQLAlchemy statements per
call cost more than executing them, on the path every image takes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from archive.attributes import (
    TOKEN_PATIENT_NAME,
    TOKEN_REFERRING_PHYSICIAN,
    IndexRecord,
    PatientRecord,
)
from archive.audit import audit_row
from archive.models import (
    AuditEvent,
    Base,
    DuplicateConflict,
    Instance,
    NameToken,
    Patient,
    PatientIdentifier,
    Series,
    SeriesRequest,
    Study,
)
from archive.origin import Origin

log = logging.getLogger(__name__)


def _table(model: type[Base]) -> Table:
    """A model's table (declarative models type __table__ as a plain FromClause)."""
    return cast(Table, model.__table__)


P, S, SE, I = _table(Patient), _table(Study), _table(Series), _table(Instance)
_IDS = _table(PatientIdentifier)

_FIND_INSTANCE = select(I.c.sha256, I.c.storage_key).where(I.c.sop_instance_uid == bindparam("uid"))
_C = _table(DuplicateConflict)
_FIND_CONFLICT = select(_C.c.pk).where(
    _C.c.sop_instance_uid == bindparam("uid"), _C.c.sha256 == bindparam("sha")
)
_FIND_PATIENT = select(P.c.pk).where(P.c.patient_key == bindparam("key"))
_FIND_STUDY = (
    select(S.c.pk, P.c.patient_key, S.c.received_patient_key)
    .join_from(S, P, S.c.patient_pk == P.c.pk)
    .where(S.c.study_instance_uid == bindparam("uid"))
)
_FIND_SERIES = select(SE.c.pk, SE.c.study_pk).where(SE.c.series_instance_uid == bindparam("uid"))
_KNOWN_IDS = select(_IDS.c.value).where(_IDS.c.patient_pk == bindparam("pk"))
# FOR UPDATE: two new series of one study written at once on PostgreSQL must
# not each overwrite the other's modality (SQLite, one writer, ignores it).
_MODALITIES = select(S.c.modalities_in_study).where(S.c.pk == bindparam("pk")).with_for_update()
_INSERT_PATIENT = insert(P).returning(P.c.pk)
_INSERT_STUDY = insert(S).returning(S.c.pk)
_INSERT_SERIES = insert(SE).returning(SE.c.pk)
_INSERT_INSTANCE = insert(I)
_INSERT_IDS = insert(_IDS)
_INSERT_TOKENS = insert(_table(NameToken))
_INSERT_REQUESTS = insert(_table(SeriesRequest))
_INSERT_AUDIT = insert(_table(AuditEvent))
_INSERT_CONFLICT = insert(_table(DuplicateConflict))
_COUNT_SERIES = (
    update(SE).where(SE.c.pk == bindparam("b_pk")).values(num_instances=SE.c.num_instances + 1)
)
_COUNT_STUDY = (
    update(S)
    .where(S.c.pk == bindparam("b_pk"))
    .values(
        num_instances=S.c.num_instances + 1,
        size_bytes=S.c.size_bytes + bindparam("b_size"),
        updated_at=bindparam("b_now"),
        images_deleted_at=None,  # images sent again after retention deleted them: the study has images again
    )
)
_COUNT_NEW_SERIES = _COUNT_STUDY.values(
    num_series=S.c.num_series + 1, modalities_in_study=bindparam("b_modalities")
)


@dataclass(frozen=True)
class StoredInstance:
    """The stored object behind a new index row."""

    storage_key: str
    size: int
    sha256: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class Existing:
    """An instance already in the index under the same SOP Instance UID."""

    sha256: str
    storage_key: str


@dataclass(frozen=True)
class NewStudy:
    """What a study hook is told: the index has just created a study for an arriving instance."""

    study_pk: int
    #: The patient row the study was filed under (the modality's patient).
    patient_pk: int
    #: The first instance's index record: the modality's patient and study attributes.
    record: IndexRecord
    origin: Origin
    at: datetime


#: Called inside the ingest transaction when an instance creates a study (worklist
#: reconciliation hangs off this; the archive imports no worklist code).
StudyHook = Callable[[Connection, NewStudy], None]


def find_existing(conn: Connection, sop_instance_uid: str) -> Existing | None:
    row = conn.execute(_FIND_INSTANCE, {"uid": sop_instance_uid}).first()
    return Existing(row.sha256, row.storage_key) if row else None


def conflict_known(conn: Connection, sop_instance_uid: str, sha256: str) -> bool:
    """True when this exact differing copy was already set aside once."""
    return conn.execute(_FIND_CONFLICT, {"uid": sop_instance_uid, "sha": sha256}).first() is not None


def add_instance(
    conn: Connection, record: IndexRecord, stored: StoredInstance, origin: Origin, now: datetime,
    study_hooks: Sequence[StudyHook] = (),
) -> list[str]:
    """Insert `record`; return warnings about disagreements with what was already indexed.

    The caller has checked, inside the same transaction, that there is no row
    for this SOP Instance UID. `study_hooks` run when the instance created a
    study, after its rows are written; an instance of a known study costs nothing.
    """
    warnings: list[str] = []
    study_pk, new_study, own_patient = _study(conn, record, now)
    if not own_patient:
        warnings.append(
            f"study {record.study_instance_uid} is already filed under another patient "
            "ID; the instance was filed with that study"
        )
    series_pk, series_study_pk, new_series = _series(conn, record, study_pk, now)
    if series_study_pk != study_pk:
        warnings.append(
            f"series {record.series_instance_uid} already belongs to another study; "
            "the instance was filed with that series"
        )
    elif not new_study and own_patient and record.other_ids:
        _other_ids(conn, record)  # a later instance may bring new Other Patient IDs
    inst = record.instance
    conn.execute(_INSERT_INSTANCE, {
        "sop_instance_uid": inst.sop_instance_uid,
        "series_pk": series_pk,
        "sop_class_uid": inst.sop_class_uid,
        "instance_number": inst.instance_number,
        "content_date": inst.content_date,
        "content_time": inst.content_time,
        "number_of_frames": inst.number_of_frames,
        "rows": inst.rows,
        "columns": inst.columns,
        "bits_allocated": inst.bits_allocated,
        "transfer_syntax_uid": stored.transfer_syntax_uid,
        "size_bytes": stored.size,
        "sha256": stored.sha256,
        "storage_key": stored.storage_key,
        "received_at": now,
        "calling_ae": origin.actor,
        "peer_address": origin.address,
        "attrs": inst.attrs,
    })  # fmt: skip
    conn.execute(_COUNT_SERIES, {"b_pk": series_pk})
    if new_series:
        modalities: str = conn.execute(_MODALITIES, {"pk": series_study_pk}).scalar_one()
        if record.series.modality:
            listed = {m for m in modalities.split("\\") if m} | {record.series.modality}
            modalities = "\\".join(sorted(listed))
        conn.execute(_COUNT_NEW_SERIES, {"b_pk": series_study_pk, "b_size": stored.size,
                                         "b_modalities": modalities, "b_now": now})  # fmt: skip
    else:
        conn.execute(_COUNT_STUDY, {"b_pk": series_study_pk, "b_size": stored.size, "b_now": now})
    outcome = "stored with warnings" if warnings else "stored"
    detail = f"study {record.study_instance_uid}" + ("; new study" if new_study else "")
    conn.execute(_INSERT_AUDIT, audit_row(origin, "STORE", "IMAGE", inst.sop_instance_uid, outcome, detail))
    if new_study and study_hooks:
        _run_hooks(conn, study_hooks, record, study_pk, origin, now)
    return warnings


def _run_hooks(conn: Connection, hooks: Sequence[StudyHook], record: IndexRecord, study_pk: int,
               origin: Origin, now: datetime) -> None:  # fmt: skip
    """Run each hook in a savepoint: a failing hook is undone and logged, the image is still stored.

    A reconciliation bug must never cost an acknowledged image; the study
    then simply was not reconciled (the log says so).
    """
    patient_pk = int(conn.execute(select(S.c.patient_pk).where(S.c.pk == study_pk)).scalar_one())
    new = NewStudy(study_pk, patient_pk, record, origin, now)
    for hook in hooks:
        try:
            with conn.begin_nested():
                hook(conn, new)
        except Exception:
            log.exception("study hook %s failed for study %s from %s; the instance is stored, the "
                          "hook's changes were undone", getattr(hook, "__qualname__", hook),
                          record.study_instance_uid, origin)  # fmt: skip


def add_conflict(
    conn: Connection, sop_instance_uid: str, stored: StoredInstance, origin: Origin, now: datetime
) -> None:
    """Record a differing resend whose bytes were kept under their own key."""
    conn.execute(_INSERT_CONFLICT, {
        "sop_instance_uid": sop_instance_uid,
        "storage_key": stored.storage_key,
        "size_bytes": stored.size,
        "sha256": stored.sha256,
        "received_at": now,
        "calling_ae": origin.actor,
        "peer_address": origin.address,
    })  # fmt: skip
    conn.execute(_INSERT_AUDIT, audit_row(
        origin, "STORE", "IMAGE", sop_instance_uid, "conflict kept",
        f"differing resend kept as {stored.storage_key}",
    ))  # fmt: skip


def _patient(conn: Connection, rec: PatientRecord, now: datetime) -> int:
    """The patient's pk, creating the patient on first sight; Other Patient IDs are added."""
    pk = conn.execute(_FIND_PATIENT, {"key": rec.patient_key}).scalar()
    if pk is None:
        pk = conn.execute(_INSERT_PATIENT, {
            "patient_key": rec.patient_key,
            "patient_id": rec.patient_id,
            "issuer_of_patient_id": rec.issuer_of_patient_id,
            "patient_name": rec.patient_name,
            "patient_name_key": rec.patient_name_key,
            "patient_birth_date": rec.patient_birth_date,
            "patient_sex": rec.patient_sex,
            "attrs": rec.attrs,
            "created_at": now,
            "updated_at": now,
        }).scalar_one()  # fmt: skip
        _tokens(conn, TOKEN_PATIENT_NAME, pk, rec.name_tokens)
    _insert_new_ids(conn, int(pk), rec.other_ids)
    return int(pk)


def _insert_new_ids(conn: Connection, patient_pk: int, other_ids: list[tuple[str, str, str]]) -> None:
    if not other_ids:
        return
    known: set[str] = set(conn.execute(_KNOWN_IDS, {"pk": patient_pk}).scalars())
    new_ids = [(v, i, t) for v, i, t in other_ids if v not in known]
    if new_ids:
        conn.execute(_INSERT_IDS, [
            {"patient_pk": patient_pk, "value": v, "issuer": i, "type_of_id": t}
            for v, i, t in new_ids
        ])  # fmt: skip


def _other_ids(conn: Connection, record: IndexRecord) -> None:
    pk = conn.execute(_FIND_PATIENT, {"key": record.patient_key}).scalar()
    if pk is not None:
        _insert_new_ids(conn, int(pk), record.other_ids)


def _study(conn: Connection, record: IndexRecord, now: datetime) -> tuple[int, bool, bool]:
    """Return (study pk, whether it is new, whether it belongs to the instance's patient).

    The patient is only looked up or created for a new study: an instance
    that names another patient for a known study must not leave behind a
    patient row with no studies.
    """
    row = conn.execute(_FIND_STUDY, {"uid": record.study_instance_uid}).first()
    if row is not None:
        return int(row.pk), False, record.patient_key in (row.patient_key, row.received_patient_key)
    patient_pk = _patient(conn, record.patient, now)
    rec = record.study
    pk: int = conn.execute(_INSERT_STUDY, {
        "study_instance_uid": rec.study_instance_uid,
        "received_patient_key": record.patient_key,
        "patient_pk": patient_pk,
        "study_date": rec.study_date,
        "study_time": rec.study_time,
        "accession_number": rec.accession_number,
        "study_id": rec.study_id,
        "referring_physician_name": rec.referring_physician_name,
        "referring_physician_name_key": rec.referring_physician_name_key,
        "study_description": rec.study_description,
        "modalities_in_study": "",
        "num_series": 0,
        "num_instances": 0,
        "size_bytes": 0,
        "attrs": rec.attrs,
        "created_at": now,
        "updated_at": now,
    }).scalar_one()  # fmt: skip
    _tokens(conn, TOKEN_REFERRING_PHYSICIAN, pk, rec.referring_tokens)
    return int(pk), True, True


def _series(
    conn: Connection, record: IndexRecord, study_pk: int, now: datetime
) -> tuple[int, int, bool]:
    row = conn.execute(_FIND_SERIES, {"uid": record.series_instance_uid}).first()
    if row is not None:
        return int(row.pk), int(row.study_pk), False
    rec = record.series
    pk: int = conn.execute(_INSERT_SERIES, {
        "series_instance_uid": rec.series_instance_uid,
        "study_pk": study_pk,
        "modality": rec.modality,
        "series_number": rec.series_number,
        "series_description": rec.series_description,
        "series_date": rec.series_date,
        "series_time": rec.series_time,
        "body_part_examined": rec.body_part_examined,
        "performed_procedure_step_start_date": rec.performed_procedure_step_start_date,
        "performed_procedure_step_start_time": rec.performed_procedure_step_start_time,
        "num_instances": 0,
        "attrs": rec.attrs,
        "created_at": now,
    }).scalar_one()  # fmt: skip
    if rec.requests:
        conn.execute(_INSERT_REQUESTS, [
            {"series_pk": pk, "requested_procedure_id": r, "scheduled_procedure_step_id": s,
             "accession_number": a}
            for r, s, a in rec.requests
        ])  # fmt: skip
    return int(pk), study_pk, True


def _tokens(conn: Connection, kind: int, owner_pk: int, tokens: list[str]) -> None:
    if tokens:
        conn.execute(_INSERT_TOKENS, [{"kind": kind, "owner_pk": owner_pk, "token": t} for t in tokens])
