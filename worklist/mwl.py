"""The Modality Worklist: scheduled procedure steps as MWL C-FIND answers (PS3.4 K.6).

Matching goes through the archive's one engine (archive.matching): the
query's values become conditions there (so a malformed date or a wildcard in
a UID is refused the same way as for C-FIND and QIDO), and each attribute is
matched by one of its targets. Patient keys use the very targets of the
archive's Q/R model (archive.query.TARGETS), so "nguyen*" finds Nguyễn here as
it does in the study list.

Each step becomes one dataset holding every Type 1 and 2 return key of the
Modality Worklist IOD (PS3.4 K.6.1.2.2, Table K.6-1); the answer carries the
keys the query asked for, as C-FIND answers do (archive.query). Consoles that
only show ASCII get transliterated text and no Specific Character Set.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, Table, and_, func, or_, select

from archive.db import Database
from archive.errors import InvalidQuery
from archive.matching import (
    Condition,
    Exact,
    Range,
    RangeTarget,
    Target,
    TextTarget,
    UidTarget,
    Universal,
    Wildcard,
    condition_for,
    where,
)
from archive.models import Patient
from archive.query import TARGETS, Level
from archive.text import fold, name_key, name_tokens
from worklist.models import ProcedureStep
from worklist.types import StepStatus

STEP = cast(Table, ProcedureStep.__table__)
_P = cast(Table, Patient.__table__)


@functools.cache
def _t(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


@functools.cache
def _k(keyword: str) -> str:
    return f"{_t(keyword):08X}"


@functools.cache
def _vr(keyword: str) -> str:
    return str(dictionary_VR(_t(keyword)))


SPS_SEQUENCE = _t("ScheduledProcedureStepSequence")
_CHARSET = _k("SpecificCharacterSet")
_START_DATE = _t("ScheduledProcedureStepStartDate")
_START_TIME = _t("ScheduledProcedureStepStartTime")
_PERFORMER = _t("ScheduledPerformingPhysicianName")
_STATUS = _t("ScheduledProcedureStepStatus")

#: The steps shown when the query names no status: what is still to be done.
OPEN_STATUSES = (StepStatus.SCHEDULED.value, StepStatus.IN_PROGRESS.value)

#: The scheduled time as HHMMSS.ffffff, the form the engine's TM bounds take.
#: Stored times are at least HHMMSS (worklist.service pads them).
_TIME = STEP.c.start_time + func.substr(".000000", func.length(STEP.c.start_time) - 5)

#: Matching keys at the top level of the identifier.
TOP_TARGETS: dict[int, Target] = {
    **{tag: target for tag, (level, target) in TARGETS.items() if level is Level.PATIENT},
    _t("AccessionNumber"): TextTarget(STEP.c.accession_number),
    _t("RequestedProcedureID"): TextTarget(STEP.c.requested_procedure_id),
    _t("StudyInstanceUID"): UidTarget(STEP.c.study_instance_uid),
    _t("RequestedProcedurePriority"): TextTarget(STEP.c.priority),
}
#: Matching keys inside the Scheduled Procedure Step Sequence item.
SPS_TARGETS: dict[int, Target] = {
    _t("ScheduledStationAETitle"): TextTarget(STEP.c.station_ae_title),
    _t("Modality"): TextTarget(STEP.c.modality),
    _t("ScheduledProcedureStepID"): TextTarget(STEP.c.sps_id),
    _t("ScheduledStationName"): TextTarget(STEP.c.station_name),
    _STATUS: TextTarget(STEP.c.status),
}
#: Matched here rather than by a target: dates and times together, and the physician's name.
_SPS_SPECIAL = {_START_DATE, _START_TIME, _PERFORMER}


@dataclass
class WorklistQuery:
    """A parsed MWL identifier: conditions on the step and the keys to send back."""

    top: dict[int, Condition] = field(default_factory=dict)
    sps: dict[int, Condition] = field(default_factory=dict)
    return_keys: Dataset = field(default_factory=Dataset)

    def keywords(self) -> list[str]:
        """The matching keys used, for the log (no values: they may be names)."""
        from pydicom.datadict import keyword_for_tag

        return sorted(keyword_for_tag(t) or f"{t:08X}" for t in (*self.top, *self.sps))


def parse_query(identifier: Dataset) -> WorklistQuery:
    """Parse an MWL C-FIND identifier (PS3.4 K.6.1.2). Raises InvalidQuery.

    Keys the SCP does not match on are return keys only (PS3.4 C.2.2.1.2);
    the matching keys of Table K.6-1 sit at the top level or inside the
    Scheduled Procedure Step Sequence's one item.
    """
    query = WorklistQuery(return_keys=identifier)
    for element in identifier:
        tag = int(element.tag)
        if tag == SPS_SEQUENCE:
            if element.VR != "SQ":
                raise InvalidQuery("ScheduledProcedureStepSequence (0040,0100) is not a sequence")
            items = element.value or []
            if len(items) > 1:
                raise InvalidQuery("ScheduledProcedureStepSequence may hold one item in a query (PS3.4 C.2.2.2.6)")
            for item_element in items[0] if items else []:
                item_tag = int(item_element.tag)
                if item_tag in SPS_TARGETS or item_tag in _SPS_SPECIAL:
                    _add(query.sps, item_tag, item_element)
        elif tag in TOP_TARGETS:
            _add(query.top, tag, element)
    return query


def _add(conditions: dict[int, Condition], tag: int, element: DataElement) -> None:
    condition = condition_for(element)
    if not isinstance(condition, Universal):
        conditions[tag] = condition


def find(db: Database, query: WorklistQuery, ascii_only: bool = False) -> Iterator[dict[str, Any]]:
    """One DICOM JSON object (PS3.18 F.2) per matching step, STAT first, then by scheduled time.

    `ascii_only`: the console shows only ASCII: text is transliterated
    (Nguyễn^Văn An becomes NGUYEN^VAN AN) and no Specific Character Set is sent.
    """
    clauses = where(TOP_TARGETS, query.top)
    clauses += where(SPS_TARGETS, query.sps)
    clauses += _schedule(query.sps.get(_START_DATE), query.sps.get(_START_TIME))
    if _STATUS not in query.sps:
        clauses.append(STEP.c.status.in_(OPEN_STATUSES))
    stmt = (
        select(STEP, _P.c.patient_name, _P.c.patient_id, _P.c.issuer_of_patient_id,
               _P.c.patient_birth_date, _P.c.patient_sex, _P.c.attrs.label("patient_attrs"))
        .select_from(STEP.join(_P, _P.c.pk == STEP.c.patient_pk))
        .where(*clauses)
        .order_by(STEP.c.priority != "STAT", STEP.c.start_date, STEP.c.start_time, STEP.c.pk)
    )  # fmt: skip
    performer = query.sps.get(_PERFORMER)
    plan = selection(query.return_keys)
    with db.read() as conn:
        rows = conn.execute(stmt).mappings().all()
    for row in rows:
        if performer is not None and not name_matches(performer, row["performing_physician"]):
            continue
        answer = select_keys(worklist_item(row), plan)
        if ascii_only:
            answer = transliterated(answer)
        else:
            answer[_CHARSET] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        yield {key: answer[key] for key in sorted(answer)}


def _schedule(date: Condition | None, time: Condition | None) -> list[ColumnElement[bool]]:
    """Scheduled start date and time; together they are one date-time range (PS3.4 C.2.2.2.5.1).

    ``20261201-20261202`` with ``0800-1200`` means from 1 December 08:00 to
    2 December 12:00, not 08:00-12:00 on each day. A time with no date is a
    time of any day; a date with no time is the whole day.
    """
    date_target, time_target = RangeTarget(STEP.c.start_date), RangeTarget(cast(Any, _TIME))
    if date is None and time is None:
        return []
    if time is None:
        return [date_target.clause(cast(Condition, date))]
    if date is None:
        return [time_target.clause(time)]
    if not isinstance(time, Range):
        raise InvalidQuery("ScheduledProcedureStepStartTime: not a time or time range")
    if isinstance(date, Exact):
        return [STEP.c.start_date == date.value, time_target.clause(time)]
    if not isinstance(date, Range):
        raise InvalidQuery("ScheduledProcedureStepStartDate: not a date or date range")
    # The plain date range first: the index narrows the rows, the rest refines the ends.
    clauses = [date_target.clause(date)]
    if date.low and time.low:
        clauses.append(or_(STEP.c.start_date > date.low, and_(STEP.c.start_date == date.low, _TIME >= time.low)))
    if date.high and time.high:
        clauses.append(or_(STEP.c.start_date < date.high,
                           and_(STEP.c.start_date == date.high, _TIME <= time.high)))  # fmt: skip
    return clauses


def name_matches(condition: Condition, stored: str) -> bool:
    """Person name matching for the performing physician, by the engine's rules.

    The step keeps no folded key or name words for the physician (the patient
    has both, see archive.matching.PersonNameTarget), so the few physician
    names are compared here with the same folding (archive.text): without
    wildcards the sorted folded words must be equal; with wildcards each query
    word must match a different word of the name, in any order.
    """
    if isinstance(condition, Exact):
        key = name_key(condition.value)
        return not key or key == name_key(stored)
    if not isinstance(condition, Wildcard):
        raise InvalidQuery("ScheduledPerformingPhysicianName: unsupported matching")
    words = [w for w in name_tokens(condition.pattern) if set(w) != {"*"}]
    return _assign([w.replace("[", "[[]") for w in words], name_tokens(stored))


def _assign(patterns: list[str], words: list[str]) -> bool:
    """Can each pattern match a different word? (a few words: plain backtracking)"""
    if not patterns:
        return True
    first, rest = patterns[0], patterns[1:]
    return any(fnmatch.fnmatchcase(word, first) and _assign(rest, words[:i] + words[i + 1:])
               for i, word in enumerate(words))  # fmt: skip


# --- the worklist item (PS3.4 Table K.6-1) -------------------------------------------


def _text(keyword: str, value: object) -> tuple[str, dict[str, Any]]:
    """A JSON element; empty values make an empty (Type 2) element."""
    vr = _vr(keyword)
    if value is None or value == "":
        return _k(keyword), {"vr": vr}
    if vr == "PN":
        return _k(keyword), {"vr": vr, "Value": [{"Alphabetic": str(value)}]}
    return _k(keyword), {"vr": vr, "Value": [value]}


def _code(value: str, scheme: str, meaning: str) -> dict[str, Any]:
    """A code sequence item (PS3.3 8.8); codes longer than SH go to Long Code Value."""
    item = dict([_text("CodingSchemeDesignator", scheme or "LOCAL"), _text("CodeMeaning", meaning[:64])])
    item.update([_text("CodeValue" if len(value) <= 16 else "LongCodeValue", value)])
    return {key: item[key] for key in sorted(item)}


def _sequence(keyword: str, items: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return _k(keyword), ({"vr": "SQ", "Value": items} if items else {"vr": "SQ"})


def worklist_item(row: Any) -> dict[str, Any]:
    """Every Type 1 and 2 return key of the MWL IOD for one step (row of procedure_step + patient).

    Values the order carried beyond the step's columns (admission ID,
    allergies... as DICOM JSON in ``attrs``) fill the keys we otherwise leave
    empty; the step's own values always win.
    """
    code = [_code(row["procedure_code"], row["procedure_scheme"], row["requested_procedure_description"])] \
        if row["procedure_code"] else []
    sps = dict([
        _text("ScheduledStationAETitle", row["station_ae_title"]),
        _text("ScheduledStationName", row["station_name"]),
        _text("ScheduledProcedureStepLocation", ""),
        _text("ScheduledProcedureStepStartDate", row["start_date"]),
        _text("ScheduledProcedureStepStartTime", row["start_time"]),
        _text("Modality", row["modality"]),
        _text("ScheduledPerformingPhysicianName", row["performing_physician"]),
        _text("ScheduledProcedureStepDescription", row["sps_description"]),
        _sequence("ScheduledProtocolCodeSequence", code),
        _text("PreMedication", ""),
        _text("ScheduledProcedureStepID", row["sps_id"]),
        _text("RequestedContrastAgent", ""),
        _text("ScheduledProcedureStepStatus", row["status"]),
    ])  # fmt: skip
    patient_attrs: dict[str, Any] = row["patient_attrs"] or {}
    other_ids = patient_attrs.get(_k("OtherPatientIDsSequence"), {"vr": "SQ"})
    extra: dict[str, Any] = row["attrs"] or {}
    # The ordering doctor: the order's own value if it named one, else the referring physician.
    requesting = extra.get(_k("RequestingPhysician")) or _text("RequestingPhysician", row["referring_physician"])[1]
    item = dict([
        _text("AccessionNumber", row["accession_number"]),
        _text("ReferringPhysicianName", row["referring_physician"]),
        _sequence("ReferencedStudySequence", []),
        _sequence("ReferencedPatientSequence", []),
        _text("PatientName", row["patient_name"]),
        _text("PatientID", row["patient_id"]),
        _text("IssuerOfPatientID", row["issuer_of_patient_id"]),
        _text("PatientBirthDate", row["patient_birth_date"]),
        _text("PatientSex", row["patient_sex"]),
        _text("PatientWeight", ""),
        _text("MedicalAlerts", ""),
        _text("Allergies", ""),
        _text("PregnancyStatus", row["pregnancy_status"]),
        _text("StudyInstanceUID", row["study_instance_uid"]),
        _text("RequestedProcedureDescription", row["requested_procedure_description"]),
        _sequence("RequestedProcedureCodeSequence", code),
        _text("AdmissionID", ""),
        _text("SpecialNeeds", ""),
        _text("CurrentPatientLocation", ""),
        _text("PatientState", ""),
        _text("RequestedProcedureID", row["requested_procedure_id"]),
        _text("RequestedProcedurePriority", row["priority"]),
        _text("PatientTransportArrangements", ""),
        _text("ConfidentialityConstraintOnPatientDataDescription", ""),
    ])  # fmt: skip
    item[_k("OtherPatientIDsSequence")] = other_ids
    item[_k("RequestingPhysician")] = requesting
    item[_k("ScheduledProcedureStepSequence")] = {"vr": "SQ", "Value": [{k: sps[k] for k in sorted(sps)}]}
    for key, element in extra.items():
        if key not in item or "Value" not in item[key]:
            item[key] = element
    return item


#: Which keys to answer with: (JSON key, VR, the item's selection for a sequence that names item keys).
Selection = list[tuple[str, str, "Selection | None"]]


def selection(return_keys: Dataset) -> Selection:
    """The return keys of an identifier, read once per query rather than once per match."""
    out: Selection = []
    for element in return_keys:
        tag = int(element.tag)
        if element.tag.group in (0x0000, 0x0002) or tag == _t("SpecificCharacterSet"):
            continue
        items = (element.value or []) if element.VR == "SQ" else []
        out.append((f"{tag:08X}", element.VR, selection(items[0]) if items and len(items[0]) else None))
    return out


def select_keys(item: dict[str, Any], wanted: Selection) -> dict[str, Any]:
    """The keys the query asked for, with our values (empty where we have none).

    A sequence key with an item returns only the item's keys; an empty one
    (or one with an empty item) returns the whole sequence, as archive.query does.
    """
    out: dict[str, Any] = {}
    for key, vr, item_keys in wanted:
        value = item.get(key)
        if value is None:
            out[key] = {"vr": vr}
            continue
        if item_keys is not None and value.get("vr") == "SQ":
            items = [select_keys(i, item_keys) for i in value.get("Value", [])]
            value = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        out[key] = value
    return out


# --- ASCII consoles ----------------------------------------------------------------

_EXTRA = str.maketrans({"Đ": "D", "đ": "d", "Ð": "D", "ð": "d"})
_NON_ASCII = re.compile(r"[^\x20-\x7e]")


def ascii_text(value: str) -> str:
    """Text without diacritics (Đ as D), anything still not ASCII as '?': "Sọ não" -> "So nao"."""
    decomposed = unicodedata.normalize("NFD", value.translate(_EXTRA))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ASCII.sub("?", stripped)


def ascii_name(value: str) -> str:
    """A person name folded as the archive folds names, its ^ structure kept: NGUYEN^VAN AN."""
    return _NON_ASCII.sub("?", fold(value))


def transliterated(attrs: dict[str, Any]) -> dict[str, Any]:
    """`attrs` with every text value in ASCII (names upper-case, as consoles show them)."""
    out: dict[str, Any] = {}
    for key, element in attrs.items():
        values = element.get("Value")
        if not values:
            out[key] = element
            continue
        vr = element.get("vr")
        if vr == "SQ":
            values = [transliterated(item) for item in values]
        elif vr == "PN":
            values = [{g: ascii_name(str(v)) for g, v in p.items()} if isinstance(p, dict)
                      else ascii_name(str(p)) for p in values]  # fmt: skip
        else:
            values = [ascii_text(v) if isinstance(v, str) else v for v in values]
        out[key] = {**element, "Value": values}
    return out


__all__ = ["OPEN_STATUSES", "WorklistQuery", "ascii_name", "ascii_text", "find", "name_matches",
           "parse_query", "select_keys", "selection", "transliterated", "worklist_item"]  # fmt: skip
