"""Reconciliation: arriving studies matched to the orders they were made for.

The archive calls `Reconciler.study_arrived` inside the ingest transaction of
the first instance of every new study (``Archive.add_study_hook``). A study is
matched to a step by Accession Number, else by Study Instance UID (the step's
pre-assigned UID, handed to the modality in the worklist). A match

* records a ``study_match`` row and a ``matched`` step event;
* files the study under the order's patient when the modality sent another
  Patient ID (or no ID) and ``worklist.correct_demographics`` is on: the HIS is
  right about who the patient is. The modality's patient row goes away when no
  other study or order uses it. Every such correction is in the audit log
  (action RECONCILE: what the modality sent, what the order says);
* gives the study the order's accession number in the index when it arrived
  without it (matched by UID, or by hand), so the EMR finds it by accession;
* moves a SCHEDULED step to IN PROGRESS: images exist, so the exam has begun.
  MPPS normally says so first (PS3.4 F.7); many district modalities (CR,
  ultrasound) send no MPPS, and an item left SCHEDULED would stay on the
  console's worklist and could be picked again. Later MPPS messages still
  move the step on (IN PROGRESS again is a resend; COMPLETED follows).

An automatic match by accession number is recorded even when the step
already has a study (a second study for one order, e.g. a late
reconstruction sent under a new UID) or is CANCELLED/COMPLETED (its status is
then left alone); a match by hand refuses a step that has another study.

Only the index is corrected: stored objects are never rewritten, so WADO and
C-MOVE return the header exactly as the modality sent it, while C-FIND, QIDO
and the viewer's lists show the order's patient and accession number.

Studies that match no order get a ``study_match`` row without a step (the
"unmatched" list). An order that arrives later with their accession number
(or pre-assigned UID) takes them over (`order_arrived`), and a technologist
can match one by hand (`match_manual`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, func, insert, or_, select, update

from archive.audit import audit_row
from archive.errors import NotFound
from archive.index_writer import NewStudy
from archive.models import AuditEvent, Patient, Study
from archive.origin import Origin
from archive.patients import PatientDemographics, delete_patient, read_patient
from worklist.errors import OrderConflict, UnknownOrder
from worklist.models import ProcedureStep, StepEvent, StudyMatch
from worklist.types import StepStatus

if TYPE_CHECKING:
    from worklist.service import Worklist

log = logging.getLogger(__name__)

STEP = cast(Table, ProcedureStep.__table__)
EVENT = cast(Table, StepEvent.__table__)
MATCH = cast(Table, StudyMatch.__table__)
_S = cast(Table, Study.__table__)
_P = cast(Table, Patient.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)

#: DICOM JSON tag of AccessionNumber in the study level's attrs.
_ACCESSION_TAG = "00080050"


class Reconciler:
    """Matches studies to steps; owned by a Worklist (its status listeners see the IN PROGRESS move)."""

    def __init__(self, worklist: Worklist) -> None:
        self.worklist = worklist

    # --- the archive's hook ----------------------------------------------------

    def study_arrived(self, conn: Connection, new: NewStudy) -> None:
        """The archive's study hook: match a new study, or list it as unmatched."""
        accession = new.record.study.accession_number.strip()
        step_pk, matched_by = None, "unmatched"
        if accession:
            step_pk = conn.execute(select(STEP.c.pk).where(STEP.c.accession_number == accession)).scalar()
            matched_by = "accession"
        if step_pk is None:
            step_pk = conn.execute(select(STEP.c.pk).where(
                STEP.c.study_instance_uid == new.record.study_instance_uid)).scalar()  # fmt: skip
            matched_by = "study_uid" if step_pk is not None else "unmatched"
        if step_pk is None:
            conn.execute(insert(MATCH), {"study_pk": new.study_pk, "step_pk": None, "matched_by": "unmatched",
                                         "at": new.at, "actor": new.origin.actor,
                                         "detail": f"no order with accession number {accession!r}"
                                         if accession else "no accession number and no order for the study UID"})  # fmt: skip
            log.info("study %s from %s: no order with accession number %r; listed as unmatched",
                     new.record.study_instance_uid, new.origin, accession)  # fmt: skip
            return
        p = new.record.patient
        sent = PatientDemographics(p.patient_id, p.issuer_of_patient_id, p.patient_name,
                                   p.patient_birth_date, p.patient_sex)  # fmt: skip
        self._match(conn, new.study_pk, int(step_pk), matched_by, new.origin, new.at, sent)

    # --- orders arriving after their images ------------------------------------

    def order_arrived(self, conn: Connection, step_pk: int, origin: Origin) -> int:
        """Match the unmatched studies that carry a new order's accession number or UID; returns how many.

        Runs inside the order's transaction, in a savepoint: a failure here is
        logged and never refuses the order (the study stays unmatched).
        """
        step = conn.execute(select(STEP.c.accession_number, STEP.c.study_instance_uid)
                            .where(STEP.c.pk == step_pk)).one()  # fmt: skip
        matched_elsewhere = select(MATCH.c.study_pk).where(MATCH.c.step_pk.is_not(None))
        waiting = conn.execute(
            select(_S.c.pk, _S.c.accession_number).where(
                or_(_S.c.accession_number == step.accession_number,
                    _S.c.study_instance_uid == step.study_instance_uid),
                _S.c.pk.not_in(matched_elsewhere),
            ).order_by(_S.c.pk)
        ).all()  # fmt: skip
        done = 0
        for study in waiting:
            try:
                with conn.begin_nested():
                    by = "accession" if study.accession_number == step.accession_number else "study_uid"
                    self._match(conn, int(study.pk), step_pk, by, origin, datetime.now(UTC), None)
                    done += 1
            except Exception:
                log.exception("could not match study %s to the new order %s", study.pk, step.accession_number)
        return done

    # --- the technologist ------------------------------------------------------

    def match_manual(self, conn: Connection, study_instance_uid: str, accession_number: str,
                     origin: Origin) -> dict[str, Any]:  # fmt: skip
        """Match a study to the step with `accession_number` by hand (it may re-match a wrong automatic match)."""
        study = conn.execute(select(_S.c.pk).where(_S.c.study_instance_uid == study_instance_uid.strip())).first()
        if study is None:
            raise NotFound(f"no study {study_instance_uid} in the archive")
        step = conn.execute(select(STEP.c.pk).where(STEP.c.accession_number == accession_number.strip())).first()
        if step is None:
            raise UnknownOrder(f"no order with accession number {accession_number}")
        current = conn.execute(select(MATCH.c.step_pk).where(MATCH.c.study_pk == study.pk)).first()
        if current is not None and current.step_pk == step.pk:
            return self._summary(conn, study.pk, step.pk, [], changed=False)
        other = conn.execute(select(_S.c.study_instance_uid).join(MATCH, MATCH.c.study_pk == _S.c.pk).where(
            MATCH.c.step_pk == step.pk, MATCH.c.study_pk != study.pk)).first()  # fmt: skip
        if other is not None:
            raise OrderConflict(f"order {accession_number} already has study {other.study_instance_uid}; "
                                "match that one elsewhere first")  # fmt: skip
        now = datetime.now(UTC)
        if current is not None and current.step_pk is not None:
            old = conn.execute(select(STEP.c.accession_number, STEP.c.status)
                               .where(STEP.c.pk == current.step_pk)).one()  # fmt: skip
            _event(conn, current.step_pk, "unmatched", old.status, origin, now,
                   f"study {study_instance_uid} matched by hand to {accession_number} instead")  # fmt: skip
        corrections = self._match(conn, int(study.pk), int(step.pk), "manual", origin, now, None)
        return self._summary(conn, study.pk, step.pk, corrections, changed=True)

    def unmatched(self, conn: Connection, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Studies that match no order, newest first."""
        rows = conn.execute(
            select(_S.c.study_instance_uid, _S.c.study_date, _S.c.study_time, _S.c.accession_number,
                   _S.c.modalities_in_study.label("modalities"), _S.c.num_instances, _S.c.study_description,
                   _P.c.patient_id, _P.c.patient_name, _S.c.created_at.label("received_at"))
            .join(MATCH, MATCH.c.study_pk == _S.c.pk).join(_P, _P.c.pk == _S.c.patient_pk)
            .where(MATCH.c.step_pk.is_(None))
            .order_by(_S.c.created_at.desc(), _S.c.pk.desc()).limit(limit).offset(offset)
        ).all()  # fmt: skip
        out = []
        for r in rows:
            item = dict(r._mapping)
            item["received_at"] = _utc(r.received_at).isoformat()
            out.append(item)
        return out

    def count_unmatched(self, conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(MATCH).where(MATCH.c.step_pk.is_(None))).scalar_one())

    # --- internals -------------------------------------------------------------

    def _match(self, conn: Connection, study_pk: int, step_pk: int, matched_by: str, origin: Origin,
               now: datetime, sent: PatientDemographics | None) -> list[str]:  # fmt: skip
        """Record the match, correct the index from the order, start the step. Returns the corrections.

        `sent` is the patient as the modality's header has it (a new study);
        otherwise the study's current patient row stands for what it sent.
        """
        step = conn.execute(select(STEP.c.accession_number, STEP.c.patient_pk, STEP.c.status)
                            .where(STEP.c.pk == step_pk)).one()  # fmt: skip
        study = conn.execute(select(_S.c.study_instance_uid, _S.c.patient_pk, _S.c.accession_number, _S.c.attrs)
                             .where(_S.c.pk == study_pk)).one()  # fmt: skip
        order_patient = read_patient(conn, step.patient_pk)
        sent = sent or read_patient(conn, study.patient_pk)
        differences = patient_differences(sent, order_patient)
        corrections: list[str] = []
        detail = [f"study {study.study_instance_uid} by {matched_by}"]
        correct = self.worklist.config.correct_demographics
        if study.patient_pk != step.patient_pk:
            if correct:
                _move_study(conn, study_pk, study.patient_pk, step.patient_pk)
                corrections.append(f"filed under the order's patient {order_patient.patient_id!r}")
            else:
                detail.append("the modality's patient differs from the order's; not corrected "
                              "(worklist.correct_demographics is off)")  # fmt: skip
        if differences and (correct or study.patient_pk == step.patient_pk):
            corrections.extend(differences)
        if study.accession_number != step.accession_number:
            _set_accession(conn, study_pk, study.attrs, step.accession_number)
            corrections.append(f"accession number: modality {study.accession_number!r}, "
                               f"order {step.accession_number!r}")  # fmt: skip
        if corrections:
            detail.append("corrected from the order: " + "; ".join(corrections))
        if matched_by == "manual":
            conn.execute(insert(_AUDIT), audit_row(origin, "RECONCILE", "STUDY", study.study_instance_uid,
                                                   "matched by hand", f"to order {step.accession_number}"))  # fmt: skip
        if corrections:
            conn.execute(insert(_AUDIT), audit_row(
                origin, "RECONCILE", "STUDY", study.study_instance_uid, "corrected",
                f"order {step.accession_number}: " + "; ".join(corrections),
            ))  # fmt: skip
        values = {"step_pk": step_pk, "matched_by": matched_by, "at": now, "actor": origin.actor,
                  "detail": "; ".join(detail)[:2000]}  # fmt: skip
        if conn.execute(update(MATCH).where(MATCH.c.study_pk == study_pk).values(**values)).rowcount == 0:
            conn.execute(insert(MATCH), {"study_pk": study_pk, **values})
        _event(conn, step_pk, "matched", step.status, origin, now, "; ".join(detail))
        log.info("study %s (%s): matched to order %s by %s%s", study.study_instance_uid, origin,
                 step.accession_number, matched_by,
                 f"; {len(corrections)} corrections from the order" if corrections else "")  # fmt: skip
        if corrections:
            log.debug("study %s corrections: %s", study.study_instance_uid, "; ".join(corrections))
        if step.status == StepStatus.SCHEDULED.value:
            self.worklist.transition(conn, step_pk, StepStatus.IN_PROGRESS, origin,
                                     f"images arrived (study {study.study_instance_uid})")  # fmt: skip
        return corrections

    def _summary(self, conn: Connection, study_pk: int, step_pk: int, corrections: list[str],
                 changed: bool) -> dict[str, Any]:  # fmt: skip
        row = conn.execute(
            select(_S.c.study_instance_uid, STEP.c.accession_number, STEP.c.status, _P.c.patient_id,
                   MATCH.c.matched_by)
            .select_from(MATCH.join(_S, _S.c.pk == MATCH.c.study_pk).join(STEP, STEP.c.pk == MATCH.c.step_pk)
                         .join(_P, _P.c.pk == _S.c.patient_pk))
            .where(MATCH.c.study_pk == study_pk, MATCH.c.step_pk == step_pk)
        ).one()  # fmt: skip
        return {"study_instance_uid": row.study_instance_uid, "accession_number": row.accession_number,
                "matched_by": row.matched_by, "status": row.status, "patient_id": row.patient_id,
                "changed": changed, "corrections": corrections}  # fmt: skip


def patient_differences(sent: PatientDemographics, order: PatientDemographics) -> list[str]:
    """What the modality sent that the order says otherwise (values the order leaves empty are not compared)."""
    out = []
    pairs = (("patient ID", f"{sent.issuer}/{sent.patient_id}" if sent.issuer else sent.patient_id,
              f"{order.issuer}/{order.patient_id}" if order.issuer else order.patient_id, order.patient_id),
             ("name", _pn(sent.name), _pn(order.name), order.name),
             ("birth date", sent.birth_date.strip(), order.birth_date.strip(), order.birth_date),
             ("sex", sent.sex.strip().upper(), order.sex.strip().upper(), order.sex))  # fmt: skip
    for what, got, wanted, given in pairs:
        if given.strip() and got != wanted:
            out.append(f"{what}: modality {got!r}, order {wanted!r}")
    return out


def _pn(name: str) -> str:
    return "=".join(group.rstrip("^ ") for group in name.strip().split("=")).rstrip("=")


def _move_study(conn: Connection, study_pk: int, from_pk: int, to_pk: int) -> None:
    """File the study under the order's patient; drop the modality's row if nothing else uses it."""
    conn.execute(update(_S).where(_S.c.pk == study_pk).values(patient_pk=to_pk))
    still_used = conn.execute(select(_S.c.pk).where(_S.c.patient_pk == from_pk).limit(1)).first() or \
        conn.execute(select(STEP.c.pk).where(STEP.c.patient_pk == from_pk).limit(1)).first()  # fmt: skip
    if still_used is None:
        delete_patient(conn, from_pk)


def _set_accession(conn: Connection, study_pk: int, attrs: dict[str, Any] | None, accession: str) -> None:
    new_attrs = {**(attrs or {}), _ACCESSION_TAG: {"vr": "SH", "Value": [accession]}}
    conn.execute(update(_S).where(_S.c.pk == study_pk).values(accession_number=accession, attrs=new_attrs))


def _event(conn: Connection, step_pk: int, action: str, status: str, origin: Origin, now: datetime,
           detail: str) -> None:  # fmt: skip
    conn.execute(insert(EVENT), {"step_pk": step_pk, "at": now, "action": action, "status": status,
                                 "actor": origin.actor, "via": origin.via, "detail": detail[:2000]})  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = ["Reconciler", "patient_differences"]
