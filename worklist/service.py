"""The worklist service: orders become scheduled procedure steps, and move through their states.

Every door (HL7 v2, the JSON API, FHIR, the walk-in form, MPPS) calls these
methods, so an order means the same whichever way it came. Each call is one
write transaction: the step, its history, the patient correction and the
audit rows are committed together or not at all, which is what lets the HL7
edge promise "AE/AR and then nothing changes".
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, cast

from pydicom.uid import generate_uid
from sqlalchemy import Connection, Table, and_, func, insert, or_, select, update

from archive import Archive, Origin
from archive.audit import audit_row
from archive.matching import is_date
from archive.models import AuditEvent, Patient, PatientIdentifier, Study
from archive.patients import (
    PatientDemographics,
    changes,
    delete_patient,
    find_patient,
    merge_patients,
    read_patient,
    upsert_patient,
)
from archive.text import nfc
from archive.uids import uid_problem
from worklist.catalogue import Catalogue
from worklist.errors import InvalidOrder, InvalidTransition, OrderConflict, UnknownOrder
from worklist.models import ProcedureStep, StepEvent, StudyMatch
from worklist.reconcile import Reconciler
from worklist.types import PRIORITIES, OrderRequest, StepStatus, StepView

log = logging.getLogger(__name__)

STEP = cast(Table, ProcedureStep.__table__)
EVENT = cast(Table, StepEvent.__table__)
MATCH = cast(Table, StudyMatch.__table__)
_P = cast(Table, Patient.__table__)
_S = cast(Table, Study.__table__)
_IDS = cast(Table, PatientIdentifier.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)

#: Which status may follow which (PS3.4 F.7.2: IN PROGRESS -> COMPLETED | DISCONTINUED).
TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.SCHEDULED: frozenset({StepStatus.IN_PROGRESS, StepStatus.COMPLETED,
                                     StepStatus.DISCONTINUED, StepStatus.CANCELLED}),  # fmt: skip
    StepStatus.IN_PROGRESS: frozenset({StepStatus.COMPLETED, StepStatus.DISCONTINUED}),
    StepStatus.COMPLETED: frozenset(),
    StepStatus.DISCONTINUED: frozenset(),
    StepStatus.CANCELLED: frozenset(),
}

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_SEQ = re.compile(r"\{seq(?::0?(\d+)d?)?\}")

#: Called inside the transaction of every status change: (connection, the step as it is now,
#: the previous status, who made the change). The HL7 status-update outbox hangs off this.
StatusListener = Callable[[Connection, StepView, str, Origin], None]


@dataclass(frozen=True)
class WorklistConfig:
    #: Accession numbers made for orders that bring none: {date} is YYMMDD, {seq:4} a daily counter.
    accession_pattern: str = "{date}{seq:4}"
    #: File the study under the order's patient when the modality typed something else.
    correct_demographics: bool = True
    catalogue: Catalogue = field(default_factory=Catalogue.load)


class Outcome(Enum):
    CREATED = "created"
    CHANGED = "changed"
    #: The same order again (a resend): nothing was written.
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PlaceResult:
    outcome: Outcome
    step: StepView
    #: What changed (for a change or a patient correction), for the log and the caller.
    changes: tuple[str, ...] = ()


class Worklist:
    """Orders, steps and patients of the modality worklist, over the archive's index."""

    def __init__(self, archive: Archive, config: WorklistConfig | None = None) -> None:
        self.archive = archive
        self.db = archive.db
        self.config = config or WorklistConfig()
        self.status_listeners: list[StatusListener] = []
        self._joined = threading.local()
        self.reconciler = Reconciler(self)
        self._reconciling = False

    def reconcile_ingest(self) -> None:
        """Reconcile every study the archive ingests from now on with the orders (worklist.reconcile).

        `minipacs serve`, its workers and `minipacs import` call this; an
        Archive opened on its own (tests, bench) ingests without reconciling.
        """
        if not self._reconciling:
            self.archive.add_study_hook(self.reconciler.study_arrived)
            self._reconciling = True

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction that the service calls made inside it (same thread) join.

        The HL7 edge logs the raw message and applies it in one commit, so a
        crash cannot apply a message without logging it or log it unapplied.
        Each joined call runs in a savepoint: when it raises, its own writes
        are undone and the caller's (the log row) stay.
        """
        with self.db.write() as conn:
            self._joined.conn = conn
            try:
                yield conn
            finally:
                self._joined.conn = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        joined: Connection | None = getattr(self._joined, "conn", None)
        if joined is None:
            with self.db.write() as conn:
                yield conn
        else:
            with joined.begin_nested():
                yield joined

    # --- orders --------------------------------------------------------------

    def create(self, order: OrderRequest, origin: Origin) -> PlaceResult:
        """A new order (HL7 NW, POST /api/orders, FHIR create).

        The same order number again with the same content is a resend and
        changes nothing; with different content it is refused (a change must
        say it is one: HL7 XO, PUT).
        """
        order = self._checked(order)
        now = datetime.now(UTC)
        with self._write() as conn:
            row = _find_order(conn, order.placer_issuer, order.placer_order_number)
            if row is not None:
                diff = _differences(conn, row, order, self.config.catalogue)
                if diff:
                    raise OrderConflict(
                        f"order {order.placer_order_number} from {order.placer_issuer} already exists "
                        f"with other values ({'; '.join(diff)}); send it as a change (HL7 ORC-1 XO, PUT)"
                    )
                return PlaceResult(Outcome.UNCHANGED, step_view(conn, row.pk))
            patient_pk, patient_changes = upsert_patient(conn, order.patient, now)
            values = self._values(conn, order, now)
            pk: int = conn.execute(insert(STEP).returning(STEP.c.pk), {
                **values, "patient_pk": patient_pk, "status": StepStatus.SCHEDULED.value,
                "created_at": now, "updated_at": now,
            }).scalar_one()  # fmt: skip
            _event(conn, pk, "created", StepStatus.SCHEDULED.value, origin, now,
                   f"{values['requested_procedure_description']} on {values['modality']}")  # fmt: skip
            _audit(conn, origin, "ORDER", values["accession_number"], "created",
                   f"order {order.placer_order_number} from {order.placer_issuer}")  # fmt: skip
            _audit_patient(conn, origin, order.patient.patient_id, patient_changes)
            self.reconciler.order_arrived(conn, int(pk), origin)
            view = step_view(conn, int(pk))
        log.info("order %s from %s (%s): created step %s, %s %s", order.placer_order_number,
                 order.placer_issuer, origin, view.accession_number, view.modality,
                 view.procedure_code)  # fmt: skip
        return PlaceResult(Outcome.CREATED, view, tuple(patient_changes))

    def change(self, order: OrderRequest, origin: Origin) -> PlaceResult:
        """Change an existing, not yet started order (HL7 XO, PUT /api/orders/N, FHIR update)."""
        order = self._checked(order)
        now = datetime.now(UTC)
        with self._write() as conn:
            row = _find_order(conn, order.placer_issuer, order.placer_order_number)
            if row is None:
                raise UnknownOrder(f"no order {order.placer_order_number} from {order.placer_issuer} to change")
            diff = _differences(conn, row, order, self.config.catalogue)
            if not diff:
                return PlaceResult(Outcome.UNCHANGED, step_view(conn, row.pk))
            if row.status != StepStatus.SCHEDULED.value:
                raise InvalidTransition(
                    f"order {order.placer_order_number} is {row.status}: it can no longer be changed; "
                    "cancel it and order again if the exam must be redone"
                )
            patient_pk, patient_changes = upsert_patient(conn, order.patient, now)
            values = self._values(conn, order, now, keep=row)
            conn.execute(update(STEP).where(STEP.c.pk == row.pk).values(
                **values, patient_pk=patient_pk, updated_at=now))  # fmt: skip
            _event(conn, row.pk, "changed", row.status, origin, now, "; ".join(diff))
            _audit(conn, origin, "ORDER", values["accession_number"], "changed", "; ".join(diff))
            _audit_patient(conn, origin, order.patient.patient_id, patient_changes)
            self.reconciler.order_arrived(conn, row.pk, origin)
            view = step_view(conn, row.pk)
        log.info("order %s from %s (%s): changed step %s (%s)", order.placer_order_number,
                 order.placer_issuer, origin, view.accession_number, "; ".join(diff))  # fmt: skip
        return PlaceResult(Outcome.CHANGED, view, tuple(diff))

    def cancel(self, placer_issuer: str, placer_order_number: str, origin: Origin, reason: str = "") -> StepView:
        """The HIS withdrew the order (HL7 CA): it leaves the worklist. Only before the exam starts."""
        return self._order_status(placer_issuer, placer_order_number, StepStatus.CANCELLED, origin,
                                  reason or "cancelled by the HIS")  # fmt: skip

    def discontinue(self, placer_issuer: str, placer_order_number: str, origin: Origin,
                    reason: str = "") -> StepView:  # fmt: skip
        """The HIS stopped the order (HL7 DC), started or not."""
        return self._order_status(placer_issuer, placer_order_number, StepStatus.DISCONTINUED, origin,
                                  reason or "discontinued by the HIS")  # fmt: skip

    def order_status(self, placer_issuer: str, placer_order_number: str, status: StepStatus,
                     origin: Origin, detail: str = "") -> StepView:  # fmt: skip
        """A status the HIS reports (HL7 SC), or the technologist sets."""
        return self._order_status(placer_issuer, placer_order_number, status, origin, detail)

    def _order_status(self, issuer: str, number: str, status: StepStatus, origin: Origin,
                      detail: str) -> StepView:  # fmt: skip
        with self._write() as conn:
            row = _find_order(conn, issuer, number)
            if row is None:
                raise UnknownOrder(f"no order {number} from {issuer}")
            self.transition(conn, row.pk, status, origin, detail)
            view = step_view(conn, row.pk)
        return view

    def set_status(self, accession_number: str, status: StepStatus, origin: Origin, detail: str = "") -> StepView:
        """Move a step by its accession number (technologist pages, CLI)."""
        with self._write() as conn:
            pk = _step_pk(conn, accession_number)
            self.transition(conn, pk, status, origin, detail)
            return step_view(conn, pk)

    def transition(self, conn: Connection, step_pk: int, status: StepStatus, origin: Origin,
                   detail: str = "") -> bool:  # fmt: skip
        """Move a step to `status` inside the caller's transaction (MPPS uses this too).

        Returns False when the step already has that status (a resend).
        Raises InvalidTransition when the state does not allow it.
        """
        row = conn.execute(select(STEP.c.status, STEP.c.accession_number).where(STEP.c.pk == step_pk)).one()
        current = StepStatus(row.status)
        if current is status:
            return False
        if status not in TRANSITIONS[current]:
            raise InvalidTransition(
                f"step {row.accession_number} is {current.value}: it cannot become {status.value}"
            )
        now = datetime.now(UTC)
        conn.execute(update(STEP).where(STEP.c.pk == step_pk).values(status=status.value, updated_at=now))
        _event(conn, step_pk, "status", status.value, origin, now, detail)
        _audit(conn, origin, "ORDER", row.accession_number, status.value.lower(), detail)
        log.info("step %s: %s -> %s (%s)%s", row.accession_number, current.value, status.value, origin,
                 f": {detail}" if detail else "")  # fmt: skip
        if self.status_listeners:
            view = step_view(conn, step_pk)
            for listener in self.status_listeners:
                listener(conn, view, current.value, origin)
        return True

    def walk_in(self, order: OrderRequest, origin: Origin) -> PlaceResult:
        """A patient registered at the modality while the HIS is down: the order number is ours.

        The HIS's order arrives later with the same accession number (or is
        matched by hand) and takes the step over.
        """
        if not order.placer_order_number:
            order = replace(order, placer_order_number=f"WALKIN-{generate_uid(prefix=None)[-12:]}")
        return self.create(replace(order, placer_issuer=order.placer_issuer or "WALKIN"), origin)

    # --- reading -------------------------------------------------------------

    def get(self, accession_number: str) -> StepView:
        with self.db.read() as conn:
            return step_view(conn, _step_pk(conn, accession_number))

    def get_order(self, placer_issuer: str, placer_order_number: str) -> StepView:
        with self.db.read() as conn:
            row = _find_order(conn, placer_issuer, placer_order_number)
            if row is None:
                raise UnknownOrder(f"no order {placer_order_number} from {placer_issuer}")
            return step_view(conn, row.pk)

    def steps(
        self, *, start_date: str = "", modality: str = "", station_ae_title: str = "",
        status: str = "", patient_id: str = "", placer_issuer: str = "", limit: int = 100, offset: int = 0,
    ) -> list[StepView]:  # fmt: skip
        """Steps, STAT first and then by scheduled time (today's worklist, the order list)."""
        clauses = []
        if start_date:
            clauses.append(STEP.c.start_date == start_date)
        if modality:
            clauses.append(STEP.c.modality == modality.upper())
        if station_ae_title:
            clauses.append(STEP.c.station_ae_title == station_ae_title)
        if status:
            clauses.append(STEP.c.status == status.upper())
        if placer_issuer:
            clauses.append(STEP.c.placer_issuer == placer_issuer)
        if patient_id:
            clauses.append(STEP.c.patient_pk.in_(select(_P.c.pk).where(_P.c.patient_id == patient_id)))
        stat_first = (STEP.c.priority != "STAT")
        stmt = (select(STEP.c.pk).where(*clauses)
                .order_by(stat_first, STEP.c.start_date, STEP.c.start_time, STEP.c.pk)
                .limit(limit).offset(offset))  # fmt: skip
        with self.db.read() as conn:
            pks: list[int] = list(conn.execute(stmt).scalars())
            return [step_view(conn, pk) for pk in pks]

    def history(self, accession_number: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            pk = _step_pk(conn, accession_number)
            rows = conn.execute(select(EVENT).where(EVENT.c.step_pk == pk).order_by(EVENT.c.pk)).all()
        return [{"at": r.at.isoformat(), "action": r.action, "status": r.status, "actor": r.actor,
                 "via": r.via, "detail": r.detail} for r in rows]  # fmt: skip

    def priors(self, accession_number: str) -> list[dict[str, Any]]:
        """The patient's studies in the archive, by their Patient ID or any Other Patient ID, newest first.

        Shown with the order so the technologist and radiologist see earlier
        exams before exposing the patient again.
        """
        with self.db.read() as conn:
            step = conn.execute(select(STEP.c.patient_pk, STEP.c.study_instance_uid)
                                .where(STEP.c.accession_number == accession_number)).first()  # fmt: skip
            if step is None:
                raise UnknownOrder(f"no step with accession number {accession_number}")
            demo = read_patient(conn, step.patient_pk)
            ids = {demo.patient_id} | {o.value for o in demo.other_ids}
            same_person = select(_P.c.pk).where(or_(
                _P.c.pk == step.patient_pk,
                _P.c.patient_id.in_(ids),
                _P.c.pk.in_(select(_IDS.c.patient_pk).where(_IDS.c.value.in_(ids))),
            ))  # fmt: skip
            rows = conn.execute(
                select(_S.c.study_instance_uid, _S.c.study_date, _S.c.study_time, _S.c.accession_number,
                       _S.c.study_description, _S.c.modalities_in_study, _S.c.num_instances)
                .where(_S.c.patient_pk.in_(same_person), _S.c.study_instance_uid != step.study_instance_uid)
                .order_by(_S.c.study_date.desc(), _S.c.study_time.desc())
            ).all()  # fmt: skip
        return [dict(r._mapping) for r in rows]

    # --- reconciliation ----------------------------------------------------------

    def unmatched_studies(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Studies that matched no order, newest first (study_instance_uid, study_date, study_time,
        accession_number, modalities, num_instances, study_description, patient_id, patient_name, received_at)."""
        with self.db.read() as conn:
            return self.reconciler.unmatched(conn, limit, offset)

    def match_study(self, study_instance_uid: str, accession_number: str, origin: Origin) -> dict[str, Any]:
        """A technologist matches a study to an order by hand: filed under the order's patient and accession.

        Raises NotFound (unknown study), UnknownOrder (unknown accession number)
        or OrderConflict (the order already has another study).
        """
        with self._write() as conn:
            result = self.reconciler.match_manual(conn, study_instance_uid, accession_number, origin)
        log.info("study %s matched by hand to order %s by %s%s", study_instance_uid, accession_number, origin,
                 "" if result["changed"] else " (already matched)")  # fmt: skip
        return result

    # --- patients --------------------------------------------------------------

    def update_patient(self, demo: PatientDemographics, origin: Origin) -> list[str]:
        """The HIS corrected a patient (ADT^A08/A31). Returns what changed."""
        _check_patient(demo)
        with self._write() as conn:
            if find_patient(conn, demo.patient_id, demo.issuer) is None:
                raise UnknownOrder(f"no patient {demo.patient_id} to update")
            _, changed = upsert_patient(conn, demo, datetime.now(UTC))
            _audit_patient(conn, origin, demo.patient_id, changed)
        log.info("patient %s updated by %s: %s", demo.patient_id, origin, "; ".join(changed) or "no change")
        return changed

    def merge_patient(self, surviving: PatientDemographics, prior_id: str, prior_issuer: str,
                      origin: Origin) -> int:  # fmt: skip
        """ADT^A40: the prior patient's studies and orders move to the surviving ID. Returns studies moved."""
        _check_patient(surviving)
        if not prior_id.strip():
            raise InvalidOrder("the merge names no prior patient ID (MRG-1)")
        now = datetime.now(UTC)
        with self._write() as conn:
            prior = find_patient(conn, prior_id.strip(), prior_issuer.strip())
            if prior is None:
                raise UnknownOrder(f"no patient {prior_id} to merge into {surviving.patient_id}")
            survivor_pk, changed = upsert_patient(conn, surviving, now)
            moved = merge_patients(conn, survivor_pk, prior.pk)
            steps = conn.execute(update(STEP).where(STEP.c.patient_pk == prior.pk)
                                 .values(patient_pk=survivor_pk, updated_at=now)).rowcount  # fmt: skip
            delete_patient(conn, prior.pk)
            detail = f"merged {prior_id} into {surviving.patient_id}: {moved} studies, {steps} orders moved"
            conn.execute(insert(_AUDIT), audit_row(origin, "MERGE", "PATIENT", surviving.patient_id, "merged", detail))
        log.info("patient %s (%s)", detail, origin)
        return int(moved)

    # --- internals -------------------------------------------------------------

    def _checked(self, order: OrderRequest) -> OrderRequest:
        """Validate and normalise an order; InvalidOrder says which value is wrong."""
        _check_patient(order.patient)
        for name in ("placer_issuer", "placer_order_number"):
            value = getattr(order, name).strip()
            if not value:
                raise InvalidOrder(f"{name.replace('_', ' ')} is missing")
            if len(value) > 64:
                raise InvalidOrder(f"{name.replace('_', ' ')} is longer than 64 characters")
        if len(order.accession_number.strip()) > 16:
            raise InvalidOrder(f"accession number {order.accession_number!r} is longer than 16 characters (DICOM SH)")
        if order.study_instance_uid and uid_problem(order.study_instance_uid):
            raise InvalidOrder(f"study instance UID {uid_problem(order.study_instance_uid)}")
        if order.start_date and not is_date(order.start_date):
            raise InvalidOrder(f"scheduled date {order.start_date!r} is not a date YYYYMMDD")
        if order.start_time and not _TIME.match(order.start_time):
            raise InvalidOrder(f"scheduled time {order.start_time!r} is not a time HHMMSS")
        priority = (order.priority or "ROUTINE").strip().upper()
        if priority not in PRIORITIES:
            raise InvalidOrder(f"priority {order.priority!r} is not one of {', '.join(PRIORITIES)}")
        if order.pregnancy_status not in (None, 1, 2, 3, 4):
            raise InvalidOrder("pregnancy status must be 1 (not pregnant), 2 (possibly), 3 (definitely) or 4 (unknown)")
        procedure = self.config.catalogue.get(order.procedure_code) if order.procedure_code else None
        modality = (order.modality or (procedure.modality if procedure else "")).strip().upper()
        if not modality:
            raise InvalidOrder(f"no modality: procedure code {order.procedure_code!r} is not in the "
                               "catalogue and the order names no modality")  # fmt: skip
        if not re.fullmatch(r"[A-Z0-9_]{1,16}", modality):
            raise InvalidOrder(f"modality {modality!r} is not a DICOM modality code")
        if len(order.sps_id.strip()) > 16 or len(order.requested_procedure_id.strip()) > 16:
            raise InvalidOrder("SPS ID and requested procedure ID are at most 16 characters (DICOM SH)")
        if len(order.station_ae_title) > 16:
            raise InvalidOrder(f"station AE title {order.station_ae_title!r} is longer than 16 characters")
        return replace(order, placer_issuer=order.placer_issuer.strip(),
                       placer_order_number=order.placer_order_number.strip(),
                       accession_number=order.accession_number.strip(), modality=modality,
                       priority=priority, procedure_description=nfc(order.procedure_description.strip()))  # fmt: skip

    def _values(self, conn: Connection, order: OrderRequest, now: datetime, keep: Any = None) -> dict[str, Any]:
        """The step's columns for `order`; identifiers a change leaves out are kept."""
        procedure = self.config.catalogue.get(order.procedure_code) if order.procedure_code else None
        accession = order.accession_number or (keep.accession_number if keep is not None else "")
        if not accession:
            accession = next_accession(conn, self.config.accession_pattern, now)
        owner = conn.execute(select(STEP.c.pk).where(STEP.c.accession_number == accession)).scalar()
        if owner is not None and (keep is None or owner != keep.pk):
            raise OrderConflict(f"accession number {accession} already belongs to another order")
        study_uid = order.study_instance_uid or (keep.study_instance_uid if keep is not None else "")
        study_uid = study_uid or generate_uid(prefix=None)
        owner = conn.execute(select(STEP.c.pk).where(STEP.c.study_instance_uid == study_uid)).scalar()
        if owner is not None and (keep is None or owner != keep.pk):
            raise OrderConflict(f"study instance UID {study_uid} already belongs to another order")
        local = now.astimezone()
        description = order.procedure_description or (procedure.name if procedure else order.procedure_code)
        return {
            "placer_issuer": order.placer_issuer,
            "placer_order_number": order.placer_order_number,
            "filler_order_number": order.filler_order_number or accession,
            "accession_number": accession,
            "study_instance_uid": study_uid,
            "requested_procedure_id": (order.requested_procedure_id or accession)[:16],
            "requested_procedure_description": description,
            "procedure_code": order.procedure_code,
            "procedure_scheme": order.procedure_scheme or ("LOCAL" if order.procedure_code else ""),
            "service_code": procedure.service_code if procedure else "",
            "indicator_code": procedure.indicator_code if procedure else "",
            "sps_id": (order.sps_id or (keep.sps_id if keep is not None else accession))[:16],
            "sps_description": description,
            "modality": order.modality,
            "station_ae_title": order.station_ae_title or (procedure.station_ae if procedure else ""),
            "station_name": order.station_name,
            "start_date": order.start_date or local.strftime("%Y%m%d"),
            # Padded to HHMMSS: a partial time ("0800") would compare below "080000" in MWL ranges.
            "start_time": _full_time(order.start_time) or local.strftime("%H%M%S"),
            "performing_physician": nfc(order.performing_physician),
            "referring_physician": nfc(order.referring_physician),
            "priority": order.priority,
            "pregnancy_status": order.pregnancy_status,
            "reason": nfc(order.reason),
            "attrs": order.attrs,
        }


def _full_time(value: str) -> str:
    """HH or HHMM as HHMMSS (the seconds and minutes it stands for start at 00)."""
    head, dot, fraction = value.partition(".")
    return head.ljust(6, "0") + dot + fraction if head else ""


def _check_patient(demo: PatientDemographics) -> None:
    if not demo.patient_id.strip():
        raise InvalidOrder("the patient ID is missing")
    if len(demo.patient_id.strip()) > 64:
        raise InvalidOrder("the patient ID is longer than 64 characters (DICOM LO)")
    if demo.birth_date and not is_date(demo.birth_date):
        raise InvalidOrder(f"birth date {demo.birth_date!r} is not a date YYYYMMDD")
    if demo.sex.strip().upper() not in ("", "M", "F", "O"):
        raise InvalidOrder(f"sex {demo.sex!r} is not M, F or O")
    if len(demo.name) > 64 * 5:
        raise InvalidOrder("the patient name is too long")


def next_accession(conn: Connection, pattern: str, now: datetime) -> str:
    """The next accession number of `pattern` ({date} YYMMDD, {seq:N} a counter per prefix)."""
    stamp = now.astimezone().strftime("%y%m%d")
    match = _SEQ.search(pattern)
    width = int(match.group(1)) if match and match.group(1) else 4
    head = pattern[: match.start()] if match else pattern
    tail = pattern[match.end():] if match else ""
    prefix, suffix = head.replace("{date}", stamp), tail.replace("{date}", stamp)
    taken = conn.execute(
        select(func.max(STEP.c.accession_number)).where(
            STEP.c.accession_number.like(f"{prefix}%{suffix}"),
            func.length(STEP.c.accession_number) == len(prefix) + width + len(suffix),
        )
    ).scalar()  # fmt: skip
    number = 1
    if taken:
        digits = taken[len(prefix): len(taken) - len(suffix)]
        number = int(digits) + 1 if digits.isdigit() else 1
    accession = f"{prefix}{number:0{width}d}{suffix}"
    if len(accession) > 16:
        raise InvalidOrder(f"worklist.accession_pattern {pattern!r} makes accession numbers longer than 16 characters")
    return accession


def _find_order(conn: Connection, issuer: str, number: str) -> Any:
    return conn.execute(select(STEP).where(and_(STEP.c.placer_issuer == issuer.strip(),
                                                STEP.c.placer_order_number == number.strip()))).first()  # fmt: skip


def _step_pk(conn: Connection, accession_number: str) -> int:
    pk: int | None = conn.execute(select(STEP.c.pk).where(STEP.c.accession_number == accession_number)).scalar()
    if pk is None:
        raise UnknownOrder(f"no step with accession number {accession_number}")
    return int(pk)


_COMPARED = ("accession_number", "study_instance_uid", "procedure_code", "modality", "station_ae_title",
             "start_date", "start_time", "priority", "pregnancy_status", "referring_physician",
             "performing_physician", "reason")  # fmt: skip


def _differences(conn: Connection, row: Any, order: OrderRequest, catalogue: Catalogue) -> list[str]:
    """What `order` would change of the stored step `row` (values it leaves empty change nothing)."""
    out = []
    wanted = {
        "accession_number": order.accession_number, "study_instance_uid": order.study_instance_uid,
        "procedure_code": order.procedure_code, "modality": order.modality,
        "station_ae_title": order.station_ae_title, "start_date": order.start_date,
        "start_time": order.start_time, "priority": order.priority,
        "pregnancy_status": order.pregnancy_status, "referring_physician": nfc(order.referring_physician),
        "performing_physician": nfc(order.performing_physician), "reason": nfc(order.reason),
    }  # fmt: skip
    for name in _COMPARED:
        value = wanted[name]
        if value in ("", None):
            continue
        if name == "start_time" and str(row.start_time).startswith(str(value)):
            continue
        if value != getattr(row, name):
            out.append(f"{name}: {getattr(row, name)!r} -> {value!r}")
    if order.procedure_description and order.procedure_description != row.requested_procedure_description:
        out.append(f"procedure: {row.requested_procedure_description!r} -> {order.procedure_description!r}")
    stored = read_patient(conn, row.patient_pk)
    if (order.patient.patient_id, order.patient.issuer) != (stored.patient_id, stored.issuer):
        out.append(f"patient: {stored.patient_id!r} -> {order.patient.patient_id!r}")
    else:
        out.extend(f"patient {c}" for c in changes(stored, order.patient.normalised()))
    return out


def step_view(conn: Connection, pk: int) -> StepView:
    row = conn.execute(select(STEP).where(STEP.c.pk == pk)).one()
    return StepView(
        accession_number=row.accession_number, placer_issuer=row.placer_issuer,
        placer_order_number=row.placer_order_number, filler_order_number=row.filler_order_number,
        study_instance_uid=row.study_instance_uid, requested_procedure_id=row.requested_procedure_id,
        procedure_code=row.procedure_code, procedure_scheme=row.procedure_scheme,
        procedure_description=row.requested_procedure_description, service_code=row.service_code,
        indicator_code=row.indicator_code, sps_id=row.sps_id, modality=row.modality,
        station_ae_title=row.station_ae_title, station_name=row.station_name,
        start_date=row.start_date, start_time=row.start_time,
        performing_physician=row.performing_physician, referring_physician=row.referring_physician,
        priority=row.priority, pregnancy_status=row.pregnancy_status, reason=row.reason,
        status=row.status, patient=read_patient(conn, row.patient_pk),
        created_at=row.created_at.isoformat(), updated_at=row.updated_at.isoformat(),
    )  # fmt: skip


def _event(conn: Connection, step_pk: int, action: str, status: str, origin: Origin, now: datetime,
           detail: str = "") -> None:  # fmt: skip
    conn.execute(insert(EVENT), {"step_pk": step_pk, "at": now, "action": action, "status": status,
                                 "actor": origin.actor, "via": origin.via, "detail": detail[:2000]})  # fmt: skip


def _audit(conn: Connection, origin: Origin, action: str, uid: str, outcome: str, detail: str = "") -> None:
    conn.execute(insert(_AUDIT), audit_row(origin, action, "ORDER", uid, outcome, detail))


def _audit_patient(conn: Connection, origin: Origin, patient_id: str, changed: list[str]) -> None:
    if changed and changed != ["created"]:
        conn.execute(insert(_AUDIT), audit_row(origin, "PATIENT UPDATE", "PATIENT", patient_id, "corrected",
                                               "; ".join(changed)))  # fmt: skip
    elif changed == ["created"]:
        conn.execute(insert(_AUDIT), audit_row(origin, "PATIENT CREATE", "PATIENT", patient_id, "created"))
