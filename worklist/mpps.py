"""Modality Performed Procedure Step (PS3.4 F.7): what the modality says it did.

N-CREATE opens a performed step IN PROGRESS and moves the scheduled step(s)
it names to IN PROGRESS; N-SET updates it and, with COMPLETED or
DISCONTINUED, closes it and moves the scheduled step along. The performed
step row, the step's new status, its history and the audit rows are one
transaction: a refused request changes nothing.

No DIMSE here: the DICOM edge (dicom_scp.mpps_handlers) hands over the
datasets and answers with the status each error carries.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Connection, Table, insert, select, update

from archive import Origin
from archive.audit import audit_row
from archive.models import AuditEvent
from archive.uids import uid_problem
from worklist.errors import OrderError
from worklist.models import PerformedStep, ProcedureStep
from worklist.service import Worklist
from worklist.types import StepStatus

log = logging.getLogger(__name__)

PPS = cast(Table, PerformedStep.__table__)
STEP = cast(Table, ProcedureStep.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
_FINAL = {COMPLETED: StepStatus.COMPLETED, DISCONTINUED: StepStatus.DISCONTINUED}


class MppsError(OrderError):
    """An MPPS request refused; the DIMSE edge answers with these values (PS3.7 C, PS3.4 F.7.2)."""

    dimse_status = 0x0110
    #: Error ID (0000,0903), where the standard gives one.
    error_id: int | None = None

    def __init__(self, message: str, attribute: int | None = None) -> None:
        super().__init__(message)
        #: Attribute Identifier List (0000,1005): the attribute at fault.
        self.attribute = attribute


class MissingAttribute(MppsError):
    dimse_status = 0x0120


class MissingAttributeValue(MppsError):
    dimse_status = 0x0121


class InvalidAttributeValue(MppsError):
    dimse_status = 0x0106


class InvalidObjectInstance(MppsError):
    dimse_status = 0x0117


class DuplicateInstance(MppsError):
    dimse_status = 0x0111


class NoSuchInstance(MppsError):
    dimse_status = 0x0112


class NoLongerUpdatable(MppsError):
    """PS3.4 F.7.2.2.4, Table F.7.2-2: a COMPLETED or DISCONTINUED step is final."""

    dimse_status = 0x0110
    error_id = 0xA710
    comment = "Performed Procedure Step Object may no longer be updated"


#: Type 1 in the N-CREATE of the SCU (PS3.4 Table F.7.2-1).
_REQUIRED = ("PerformedProcedureStepStatus", "PerformedStationAETitle", "PerformedProcedureStepStartDate",
             "PerformedProcedureStepStartTime", "PerformedProcedureStepID", "Modality",
             "ScheduledStepAttributesSequence")  # fmt: skip
#: "Not allowed" in N-SET (Table F.7.2-1): set once by N-CREATE.
_CREATE_ONLY = ("ScheduledStepAttributesSequence", "PatientName", "PatientID", "PatientBirthDate",
                "PatientSex", "ReferencedPatientSequence", "PerformedProcedureStepID",
                "PerformedStationAETitle", "PerformedStationName", "PerformedLocation",
                "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "Modality",
                "StudyID")  # fmt: skip
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?$")


@dataclass(frozen=True)
class PerformedResult:
    sop_instance_uid: str
    status: str
    #: Accession numbers of the scheduled steps it performs (empty: unscheduled).
    accessions: tuple[str, ...]


class PerformedSteps:
    """The MPPS SCP's state: performed_step rows, and the scheduled steps they move."""

    def __init__(self, worklist: Worklist) -> None:
        self.worklist = worklist

    def create(self, sop_instance_uid: str | None, attrs: Dataset, origin: Origin) -> PerformedResult:
        """N-CREATE (PS3.4 F.7.2.1): a new performed step, which must start IN PROGRESS.

        The scheduled step is found through the Scheduled Step Attributes
        Sequence: by accession number, then SPS ID, then Study Instance UID.
        No match is an unscheduled exam, recorded with no step.
        """
        uid = (sop_instance_uid or "").strip() or generate_uid()
        if uid_problem(uid):
            raise InvalidObjectInstance(f"Affected SOP Instance UID {uid_problem(uid)}")
        _check_create(attrs)
        now = datetime.now(UTC)
        stored = _json(attrs)
        with self.worklist.db.write() as conn:
            if conn.execute(select(PPS.c.pk).where(PPS.c.sop_instance_uid == uid)).first() is not None:
                raise DuplicateInstance(f"performed procedure step {uid} already exists")
            steps = _scheduled_steps(conn, attrs)
            for pk, _ in steps:
                self.worklist.transition(conn, pk, StepStatus.IN_PROGRESS, origin, f"MPPS {uid} started")
            conn.execute(insert(PPS), {
                "sop_instance_uid": uid, "step_pk": steps[0][0] if steps else None, "status": IN_PROGRESS,
                "calling_ae": origin.actor, "attrs": stored, "created_at": now, "updated_at": now,
            })  # fmt: skip
            accessions = tuple(a for _, a in steps)
            conn.execute(insert(_AUDIT), audit_row(origin, "MPPS", "PPS", uid, IN_PROGRESS,
                                                   ", ".join(accessions) or "unscheduled"))  # fmt: skip
        log.info("MPPS %s from %s: IN PROGRESS, %s", uid, origin,
                 f"step {', '.join(accessions)}" if accessions else "unscheduled")  # fmt: skip
        return PerformedResult(uid, IN_PROGRESS, accessions)

    def set(self, sop_instance_uid: str, modifications: Dataset, origin: Origin) -> PerformedResult:
        """N-SET (PS3.4 F.7.2.2): update an IN PROGRESS step; COMPLETED/DISCONTINUED close it."""
        uid = (sop_instance_uid or "").strip()
        changes = _json(modifications)
        now = datetime.now(UTC)
        with self.worklist.db.write() as conn:
            row = conn.execute(select(PPS).where(PPS.c.sop_instance_uid == uid)).first()
            if row is None:
                raise NoSuchInstance(f"no performed procedure step {uid}")
            if row.status != IN_PROGRESS:
                raise NoLongerUpdatable(NoLongerUpdatable.comment)
            attrs: dict[str, Any] = dict(row.attrs or {})
            for keyword in _CREATE_ONLY:
                key = _key(keyword)
                if key in changes and changes[key] != attrs.get(key, changes[key]):
                    raise InvalidAttributeValue(f"{keyword} is set by N-CREATE; N-SET may not change it",
                                                _tag(keyword))  # fmt: skip
            attrs.update(changes)
            status = _value(attrs, "PerformedProcedureStepStatus")
            if status not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
                raise InvalidAttributeValue(f"PerformedProcedureStepStatus {status!r} is not IN PROGRESS, "
                                            "COMPLETED or DISCONTINUED", _tag("PerformedProcedureStepStatus"))
            if status in _FINAL:
                _check_end(attrs)
            steps = _scheduled_steps(conn, _dataset(attrs))
            if status in _FINAL:
                for pk, _ in steps:
                    self.worklist.transition(conn, pk, _FINAL[status], origin, f"MPPS {uid} {status.lower()}")
            conn.execute(update(PPS).where(PPS.c.pk == row.pk).values(status=status, attrs=attrs, updated_at=now))
            series = len(attrs.get(_key("PerformedSeriesSequence"), {}).get("Value", []))
            accessions = tuple(a for _, a in steps)
            if status in _FINAL:
                conn.execute(insert(_AUDIT), audit_row(origin, "MPPS", "PPS", uid, status,
                                                       f"{series} series; {', '.join(accessions) or 'unscheduled'}"))
        log.info("MPPS %s from %s: N-SET, %s, %d performed series%s", uid, origin, status, series,
                 f", step {', '.join(accessions)}" if accessions else "")  # fmt: skip
        return PerformedResult(uid, status, accessions)

    def get(self, sop_instance_uid: str) -> dict[str, Any]:
        """The performed step as stored: status, step accession number, its attributes (DICOM JSON)."""
        with self.worklist.db.read() as conn:
            row = conn.execute(
                select(PPS, STEP.c.accession_number).select_from(PPS.outerjoin(STEP, STEP.c.pk == PPS.c.step_pk))
                .where(PPS.c.sop_instance_uid == sop_instance_uid)
            ).first()  # fmt: skip
        if row is None:
            raise NoSuchInstance(f"no performed procedure step {sop_instance_uid}")
        return {"sop_instance_uid": row.sop_instance_uid, "status": row.status, "calling_ae": row.calling_ae,
                "accession_number": row.accession_number, "attrs": row.attrs}  # fmt: skip


def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


def _key(keyword: str) -> str:
    return f"{_tag(keyword):08X}"


def _json(ds: Dataset) -> dict[str, Any]:
    """The dataset as DICOM JSON; a value pydicom cannot read is an invalid attribute."""
    try:
        result: dict[str, Any] = ds.to_json_dict()
        return result
    except Exception as exc:
        raise InvalidAttributeValue(f"cannot read the attributes: {exc}") from None


def _dataset(attrs: dict[str, Any]) -> Dataset:
    return Dataset.from_json(attrs)


def _value(attrs: dict[str, Any], keyword: str) -> str:
    values = attrs.get(_key(keyword), {}).get("Value") or [""]
    return str(values[0] or "").strip()


def _check_create(ds: Dataset) -> None:
    for keyword in _REQUIRED:
        if keyword not in ds:
            raise MissingAttribute(f"{keyword} is missing (Type 1, PS3.4 F.7.2.1)", _tag(keyword))
        if ds[keyword].VR != "SQ" and str(ds[keyword].value or "").strip() == "":
            raise MissingAttributeValue(f"{keyword} has no value (Type 1, PS3.4 F.7.2.1)", _tag(keyword))
    status = str(ds.PerformedProcedureStepStatus).strip()
    if status != IN_PROGRESS:
        raise InvalidAttributeValue(f"PerformedProcedureStepStatus {status!r}: a step starts IN PROGRESS",
                                    _tag("PerformedProcedureStepStatus"))  # fmt: skip
    _check_date_time(ds, "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime")
    items = ds.ScheduledStepAttributesSequence
    if not items:
        raise MissingAttributeValue("ScheduledStepAttributesSequence has no item",
                                    _tag("ScheduledStepAttributesSequence"))  # fmt: skip
    for item in items:
        study = str(item.get("StudyInstanceUID", "") or "").strip()
        if not study:
            raise MissingAttributeValue("ScheduledStepAttributesSequence item without StudyInstanceUID",
                                        _tag("StudyInstanceUID"))  # fmt: skip
        if uid_problem(study):
            raise InvalidAttributeValue(f"StudyInstanceUID {uid_problem(study)}", _tag("StudyInstanceUID"))
    if len(str(ds.Modality)) > 16:
        raise InvalidAttributeValue("Modality is longer than 16 characters", _tag("Modality"))


def _check_end(attrs: dict[str, Any]) -> None:
    """COMPLETED and DISCONTINUED need the end date and time (PS3.4 F.7.2.2.2)."""
    for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"):
        if not _value(attrs, keyword):
            raise MissingAttributeValue(f"{keyword} must have a value to end the step (PS3.4 F.7.2.2.2)",
                                        _tag(keyword))  # fmt: skip
    ds = Dataset()
    ds.PerformedProcedureStepEndDate = _value(attrs, "PerformedProcedureStepEndDate")
    ds.PerformedProcedureStepEndTime = _value(attrs, "PerformedProcedureStepEndTime")
    _check_date_time(ds, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")


def _check_date_time(ds: Dataset, date_keyword: str, time_keyword: str) -> None:
    date, time = str(ds[date_keyword].value).strip(), str(ds[time_keyword].value).strip()
    if not _DATE.match(date):
        raise InvalidAttributeValue(f"{date_keyword} {date!r} is not a date YYYYMMDD", _tag(date_keyword))
    if not _TIME.match(time):
        raise InvalidAttributeValue(f"{time_keyword} {time!r} is not a time HHMMSS", _tag(time_keyword))


def _scheduled_steps(conn: Connection, ds: Dataset) -> list[tuple[int, str]]:
    """(pk, accession number) of each scheduled step the Scheduled Step Attributes Sequence names."""
    found: list[tuple[int, str]] = []
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        pk = None
        for keyword, column in (("AccessionNumber", STEP.c.accession_number),
                                ("ScheduledProcedureStepID", STEP.c.sps_id),
                                ("StudyInstanceUID", STEP.c.study_instance_uid)):  # fmt: skip
            value = str(item.get(keyword, "") or "").strip()
            if not value:
                continue
            rows = conn.execute(select(STEP.c.pk, STEP.c.accession_number).where(column == value).limit(2)).all()
            if len(rows) == 1:
                pk = (int(rows[0].pk), str(rows[0].accession_number))
                break
        if pk is not None and pk not in found:
            found.append(pk)
    return found


__all__ = ["DuplicateInstance", "InvalidAttributeValue", "InvalidObjectInstance", "MissingAttribute",
           "MissingAttributeValue", "MppsError", "NoLongerUpdatable", "NoSuchInstance", "PerformedResult",
           "PerformedSteps"]  # fmt: skip
