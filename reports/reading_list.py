"""The reading list: studies with their order's priority and their report's status, one page at a time.

The radiologist's start page (viewer/ui/studies.py) and anything else that
lists studies "to read" call `reading_list`. One SQL statement answers a page
(the total rides along as a window count), whatever the filters:

* the archive's study, patient and series tables for what the modality sent;
* the worklist's study_match and procedure_step for the order's priority
  (STAT, HIGH) — a study that matched no order has none;
* the reports' report and report_version for the status and who signed.

Patient name, patient ID, accession number, date and modality match through
the archive's one matching engine (archive/matching.py, the targets of
archive/query.py), so "nguyen van an" finds "Nguyễn^Văn An" here exactly as a
C-FIND or QIDO-RS query would. The SQL is SQLAlchemy Core only (CASE, EXISTS,
correlated subqueries, ``count(*) OVER ()``), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from pydicom.datadict import tag_for_keyword
from sqlalchemy import ColumnElement, Table, and_, case, func, literal, or_, select, true, union

from archive.db import Database
from archive.errors import InvalidArgument, InvalidQuery
from archive.matching import Condition, Exact, Range, TextTarget, Wildcard, is_date, parse_value
from archive.models import Patient, PatientIdentifier, Series, Study
from archive.query import TARGETS
from archive.text import name_tokens
from reports.models import Report, ReportVersionRow
from reports.types import ReportStatus
from worklist.models import ProcedureStep, StudyMatch

_S = cast(Table, Study.__table__)
_P = cast(Table, Patient.__table__)
_SERIES = cast(Table, Series.__table__)
_MATCH = cast(Table, StudyMatch.__table__)
_STEP = cast(Table, ProcedureStep.__table__)
_REPORT = cast(Table, Report.__table__)
_VERSION = cast(Table, ReportVersionRow.__table__)
_IDS = cast(Table, PatientIdentifier.__table__)

#: Status filters for staff: "todo" is what still needs a radiologist (no report, or one not signed).
STATUSES = ("todo", "unread", "draft", "final", "all")
#: Status filters for a referrer, who sees only whether a signed report exists.
FINAL_ONLY_STATUSES = ("notfinal", "final", "all")
#: Sort keys; a leading "-" reverses. "" is the reading order: urgent unsigned studies first, then newest.
SORTS = ("date", "patient", "modality", "priority")
MAX_PAGE_SIZE = 200
#: Longest text a filter takes (a Vietnamese name has 2-5 words; IDs and accession numbers are short).
MAX_NAME_CHARS = 64
MAX_ID_CHARS = 64
MAX_ACCESSION_CHARS = 16
#: Objects a study gains beside its images (the signed report's SR and PDF, key images, presentation states):
#: shown as the study's modality only when it has nothing else.
NON_IMAGE_MODALITIES = frozenset({"SR", "DOC", "KO", "PR"})
#: Priorities that put a study ahead of the others, most urgent first (worklist.types.PRIORITIES).
URGENT = ("STAT", "HIGH")

_SIGNED = (ReportStatus.FINAL.value, ReportStatus.AMENDED.value)
_OPEN = (ReportStatus.DRAFT.value, ReportStatus.PRELIMINARY.value)


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


@dataclass(frozen=True)
class ReadingListQuery:
    """What the list shows. Dates are YYYYMMDD (inclusive); empty strings filter nothing."""

    status: str = "all"
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    patient_name: str = ""
    patient_id: str = ""
    accession: str = ""
    sort: str = ""
    page: int = 1
    page_size: int = 50
    #: A referrer's view: a report is "final" (some version signed) or "notfinal", no draft's author.
    final_only: bool = False


@dataclass(frozen=True)
class ReadingListRow:
    study_instance_uid: str
    #: DICOM PN as stored ("Nguyễn^Văn An").
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    #: HHMMSS.ffffff, or "".
    study_time: str
    modalities: tuple[str, ...]
    description: str
    accession_number: str
    images: int
    #: The order's priority (STAT, HIGH, ROUTINE...), "" without an order.
    priority: str
    #: unread, draft, preliminary, final or amended; for `final_only`: final or notfinal.
    report_status: str
    #: Who signed the newest signed version ("" when nothing is signed).
    signed_by: str
    #: Who wrote the open version (a draft's author; always "" for `final_only`).
    draft_author: str

    @property
    def urgent(self) -> bool:
        return self.priority in URGENT


@dataclass(frozen=True)
class ReadingListPage:
    rows: list[ReadingListRow]
    total: int
    page: int
    pages: int
    page_size: int


def check(query: ReadingListQuery) -> None:
    """Raise InvalidArgument for a query the list cannot answer (the edge checks first, in the user's words)."""
    allowed = FINAL_ONLY_STATUSES if query.final_only else STATUSES
    if query.status not in allowed:
        raise InvalidArgument(f"status {query.status!r} is not one of {', '.join(allowed)}")
    for value in (query.date_from, query.date_to):
        if value and not is_date(value):
            raise InvalidArgument(f"date {value!r} is not YYYYMMDD")
    if query.date_from and query.date_to and query.date_from > query.date_to:
        raise InvalidArgument("the first date is after the last one")
    if query.sort.removeprefix("-") not in ("", *SORTS) or query.sort == "-":
        raise InvalidArgument(f"sort {query.sort!r} is not one of {', '.join(SORTS)} (or -key)")
    if not 1 <= query.page_size <= MAX_PAGE_SIZE or query.page < 1:
        raise InvalidArgument(f"page must be 1 or more and page size 1-{MAX_PAGE_SIZE}")
    if query.modality and not (len(query.modality) <= 16 and query.modality.replace("_", "").isalnum()):
        raise InvalidArgument(f"modality {query.modality!r} is not a DICOM modality code (CT, DX, US...)")
    for value, limit, what in ((query.patient_name, MAX_NAME_CHARS, "patient name"),
                               (query.patient_id, MAX_ID_CHARS, "patient ID"),
                               (query.accession, MAX_ACCESSION_CHARS, "accession number")):  # fmt: skip
        if len(value) > limit:
            raise InvalidArgument(f"{what}: at most {limit} characters")
        if any(ord(c) < 0x20 or c == "\x7f" for c in value):
            raise InvalidArgument(f"{what}: control characters are no text")


def reading_list(db: Database, query: ReadingListQuery) -> ReadingListPage:
    """One page of studies matching `query`, in its order; `page` past the end shows the last page."""
    check(query)
    stmt = _statement(query)
    with db.read() as conn:
        rows = conn.execute(_page(stmt, query.page, query.page_size)).mappings().all()
        page = query.page
        if rows:
            total = int(rows[0]["total"])
        else:
            total = int(conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
            if total and page > 1:  # past the end (the list shrank, or a hand-made URL): the last page
                page = -(-total // query.page_size)
                rows = conn.execute(_page(stmt, page, query.page_size)).mappings().all()
    pages = max(1, -(-total // query.page_size))
    return ReadingListPage([_row(r, query.final_only) for r in rows], total, min(page, pages), pages,
                           query.page_size)  # fmt: skip


def modalities(db: Database) -> list[str]:
    """Every imaging modality the archive holds a series of (for the filter's choices)."""
    stmt = (select(_SERIES.c.modality).where(_SERIES.c.modality != "", _SERIES.c.modality.not_in(NON_IMAGE_MODALITIES))
            .distinct().order_by(_SERIES.c.modality))  # fmt: skip
    with db.read() as conn:
        return list(map(str, conn.execute(stmt).scalars()))


def name_pattern(text: str) -> str:
    """What a typed name matches: its words are words of the name, in any order, the last one as typed so far.

    "nguyen van an" becomes ``NGUYEN VAN AN*`` (Nguyễn Văn An and Nguyễn Văn
    Anh); "nguyen van" finds every Nguyễn Văn...; words typed with their own
    wildcards ("ng* van") are taken as they are. Whole words first keep the
    search an index lookup: every word a prefix costs ten times as much over
    a few thousand patients (bench/reading_list.py).
    """
    words = name_tokens(text)
    if words and "*" not in words[-1] and "?" not in words[-1]:
        words[-1] += "*"
    return " ".join(words)


def _statement(query: ReadingListQuery) -> Any:
    # The study's report: one per study (the newest, should its accession number have changed).
    any_report = _REPORT.alias("study_report")
    latest = select(func.max(any_report.c.pk)).where(any_report.c.study_pk == _S.c.pk).scalar_subquery()
    signed = _VERSION.alias("signed_version")
    signer = (select(signed.c.signer_name)
              .where(signed.c.report_pk == _REPORT.c.pk, signed.c.status.in_(_SIGNED))
              .order_by(signed.c.number.desc()).limit(1).scalar_subquery())  # fmt: skip
    current = _VERSION.alias("current_version")
    joined = (_S.join(_P, _P.c.pk == _S.c.patient_pk)
              .outerjoin(_MATCH, _MATCH.c.study_pk == _S.c.pk)
              .outerjoin(_STEP, _STEP.c.pk == _MATCH.c.step_pk)
              .outerjoin(_REPORT, _REPORT.c.pk == latest))  # fmt: skip
    author: Any = literal("")
    if not query.final_only:
        joined = joined.outerjoin(current, and_(current.c.report_pk == _REPORT.c.pk,
                                                current.c.number == _REPORT.c.current_version))  # fmt: skip
        author = current.c.author_name
    columns = [
        _S.c.pk, _S.c.study_instance_uid, _S.c.study_date, _S.c.study_time, _S.c.study_description,
        _S.c.accession_number, _S.c.modalities_in_study, _S.c.num_instances,
        _P.c.patient_name, _P.c.patient_id, _P.c.patient_birth_date, _P.c.patient_sex,
        _STEP.c.priority, _STEP.c.requested_procedure_description,
        _REPORT.c.status.label("report_status"), _REPORT.c.finalised_at, signer.label("signed_by"),
        author.label("draft_author"), func.count().over().label("total"),
    ]  # fmt: skip
    return select(*columns).select_from(joined).where(*_filters(query)).order_by(*_order(query))


def _filters(query: ReadingListQuery) -> list[ColumnElement[bool]]:
    def target(keyword: str) -> Any:
        return TARGETS[_tag(keyword)][1]

    clauses: list[ColumnElement[bool]] = [_status_clause(query)]
    try:
        if query.date_from or query.date_to:
            clauses.append(target("StudyDate").clause(Range(query.date_from, query.date_to)))
        if query.modality:
            clauses.append(target("ModalitiesInStudy").clause(Exact(query.modality.strip().upper())))
        pattern = name_pattern(query.patient_name)
        if pattern:
            clauses.append(target("PatientName").clause(Wildcard(pattern)))
        if query.patient_id.strip():
            condition = parse_value("LO", query.patient_id, "patient ID")
            clauses.append(_P.c.pk.in_(_patients_with_id(condition)))
        if query.accession.strip():
            clauses.append(target("AccessionNumber").clause(parse_value("SH", query.accession, "accession number")))
    except InvalidQuery as exc:
        raise InvalidArgument(str(exc)) from None
    return clauses


def _patients_with_id(condition: Condition) -> Any:
    """Patients whose Patient ID or one of whose Other Patient IDs (CCCD, BHYT) matches.

    A UNION of two indexed lookups: written as ``patient_id = x OR EXISTS (other IDs)``
    neither database can use an index and both read every study (1.4 s over 108,000
    studies on PostgreSQL, bench/query_plans.py "reading list, patient ID").
    """
    patient = _P.alias("id_patient")
    return union(
        select(patient.c.pk).where(TextTarget(patient.c.patient_id).clause(condition)),
        select(_IDS.c.patient_pk).where(TextTarget(_IDS.c.value).clause(condition)),
    )


def _status_clause(query: ReadingListQuery) -> ColumnElement[bool]:
    status, report = query.status, _REPORT.c
    no_report = report.pk.is_(None)
    if query.final_only:
        if status == "final":
            return report.finalised_at.is_not(None)
        if status == "notfinal":
            return or_(no_report, report.finalised_at.is_(None))
    elif status == "unread":  # a cancelled report is only "cancelled" when nothing was ever signed
        return or_(no_report, report.status == ReportStatus.CANCELLED.value)
    elif status == "draft":
        return report.status.in_(_OPEN)
    elif status == "final":
        return report.status.in_(_SIGNED)
    elif status == "todo":
        return or_(no_report, report.status.not_in(_SIGNED))
    return true()


def _order(query: ReadingListQuery) -> list[Any]:
    rank = case((_STEP.c.priority == "STAT", 0), (_STEP.c.priority == "HIGH", 1), else_=2)
    newest = [_S.c.study_date.desc(), _S.c.study_time.desc()]
    key, descending = query.sort.removeprefix("-"), query.sort.startswith("-")
    if key == "date":
        order = newest if descending else [_S.c.study_date.asc(), _S.c.study_time.asc()]
    elif key == "patient":
        order = [_P.c.patient_name.desc() if descending else _P.c.patient_name.asc(), *newest]
    elif key == "modality":
        order = [_S.c.modalities_in_study.desc() if descending else _S.c.modalities_in_study.asc(), *newest]
    elif key == "priority":
        order = [rank.desc() if descending else rank.asc(), *newest]
    else:  # the reading order: a signed report needs no one in a hurry any more
        signed = (_REPORT.c.finalised_at.is_not(None) if query.final_only
                  else _REPORT.c.status.in_(_SIGNED))  # fmt: skip
        order = [case((signed, 2), else_=rank).asc(), *newest]
    return [*order, _S.c.pk.desc()]


def _page(stmt: Any, page: int, size: int) -> Any:
    return stmt.limit(size).offset((page - 1) * size)


def _shown_modalities(joined: str) -> tuple[str, ...]:
    every = tuple(m for m in joined.split("\\") if m)
    images = tuple(m for m in every if m not in NON_IMAGE_MODALITIES)
    return images or every


def _row(row: Any, final_only: bool) -> ReadingListRow:
    status = row["report_status"] or ""
    if final_only:
        shown = "final" if row["finalised_at"] is not None else "notfinal"
    elif not status or status == ReportStatus.CANCELLED.value:
        shown = "unread"
    else:
        shown = status
    return ReadingListRow(
        study_instance_uid=row["study_instance_uid"], patient_name=row["patient_name"] or "",
        patient_id=row["patient_id"] or "", birth_date=row["patient_birth_date"] or "", sex=row["patient_sex"] or "",
        study_date=row["study_date"] or "", study_time=row["study_time"] or "",
        modalities=_shown_modalities(row["modalities_in_study"] or ""),
        description=row["study_description"] or row["requested_procedure_description"] or "",
        accession_number=row["accession_number"] or "", images=int(row["num_instances"] or 0),
        priority=row["priority"] or "", report_status=shown, signed_by=row["signed_by"] or "",
        draft_author="" if final_only or shown not in _OPEN else (row["draft_author"] or ""),
    )  # fmt: skip


__all__ = ["FINAL_ONLY_STATUSES", "MAX_PAGE_SIZE", "SORTS", "STATUSES", "ReadingListPage", "ReadingListQuery",
           "ReadingListRow", "check", "modalities", "name_pattern", "reading_list"]  # fmt: skip
