"""FHIR R4 for HIS products that speak REST: ``/fhir/ServiceRequest`` and ``/fhir/Patient``;
for the EMR: ``/fhir/DiagnosticReport`` and ``/fhir/ImagingStudy``.

Resources are validated with the ``fhir.resources`` package (8.x). Its
top-level models are FHIR R5; its ``R4B`` models are the closest it ships to
R4 (R4B is R4's technical correction: ServiceRequest and Patient are the same
in both), so those are what we validate against and answer in.

- ``POST /fhir/ServiceRequest``: place an order (201 with Location; the same
  order again: 200, nothing written; the same order number with other values: 409).
- ``PUT /fhir/ServiceRequest/<id>``: change it; ``status`` revoked or
  entered-in-error cancels it. No create-by-PUT: an unknown id is 404.
- ``GET /fhir/ServiceRequest/<id>``; ``GET /fhir/ServiceRequest?identifier=system|value
  &patient=Patient/<id>&patient.identifier=system|value&status=active|revoked|completed&_count=``.
- ``GET /fhir/Patient/<id>``; ``GET /fhir/Patient?identifier=system|value&name=&birthdate=YYYY-MM-DD&_count=``
  (name: each word a prefix of a name word, case and diacritics ignored).
- ``GET /fhir/DiagnosticReport/<id>``; ``GET /fhir/DiagnosticReport?identifier=[system|]accession
  &patient=Patient/<id>&patient.identifier=system|value&date=[eq|ge|le|gt|lt]YYYY-MM-DD`` (date
  repeatable for a range; the study date).
- ``GET /fhir/ImagingStudy/<Study Instance UID>``; ``GET /fhir/ImagingStudy?identifier=[system|]accession``
  (or ``urn:dicom:uid|urn:oid:<Study Instance UID>``) ``&patient=&patient.identifier=&started=[prefix]YYYY-MM-DD``.
- ``GET /fhir/metadata``: the CapabilityStatement (fhirVersion 4.3.0, R4B).

How fields map is in viewer/fhir_mapping.py and viewer/fhir_reports.py. Answers are application/fhir+json;
searches are a Bundle of type searchset; every error is an OperationOutcome
(400 invalid, 401/403, 404 not found, 409 conflict, 413, 415 wrong content
type, 422 business rule), never a stack trace. Who may call: ServiceRequest
and Patient, the "orders" family (admin and his tokens); DiagnosticReport and
ImagingStudy, the "results" family (staff, referrers and emr tokens), where
referrers and the EMR see signed (final, amended) reports only.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any, TypeVar

from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest
from flask import Blueprint, Response, current_app, g, request
from pydantic import ValidationError
from pydicom.dataset import Dataset
from werkzeug.exceptions import HTTPException

from archive import Archive, ArchiveError, InvalidQuery, Level, NotFound, Query, query_from_identifier
from archive.uids import uid_problem
from reports.service import latest_signed
from reports.types import ReportView
from viewer.access import ROLES, check
from viewer.auth import CHALLENGE, Throttled, Unauthorized
from viewer.fhir_mapping import (
    ACCESSION_SYSTEM,
    BHYT_SYSTEM,
    CCCD_SYSTEM,
    DICOM_UID_SYSTEM,
    ISSUER_PREFIX,
    PATIENT_ID_SYSTEM,
    REQUEST_STATUSES,
    STATUS,
    STATUS_SEARCH,
    BusinessRule,
    demographics_from,
    order_from,
    patient_resource,
    service_request,
)
from viewer.fhir_reports import date_range, diagnostic_report, first, imaging_study, token
from viewer.session import SessionRefused
from viewer.urls import base_url
from viewer.worklist_http import Unavailable, audit, json_body, origin, record_request, worklist
from worklist.errors import InvalidTransition, UnknownOrder
from worklist.patient_search import FoundPatient, patient_by_pk, patient_pk, search_patients
from worklist.service import Outcome
from worklist.types import PatientDemographics, StepView

if TYPE_CHECKING:
    from reports.service import Reports

log = logging.getLogger(__name__)

blueprint = Blueprint("fhir", __name__)
#: The access family (viewer/access.py) of each resource type: orders for the HIS, results for the EMR.
_FAMILY = {"ServiceRequest": "orders", "Patient": "orders", "DiagnosticReport": "results", "ImagingStudy": "results"}
#: Roles that see signed reports only (FHIR has no drafts for them: an unsigned report is not a result).
_FINAL_ONLY_ROLES = frozenset({"referrer", "emr"})


@blueprint.before_request
def _allowed() -> None:
    """Check the caller's role against the family of the resource type in the path.

    /fhir/metadata and unknown paths are open to both families, so an EMR's
    client can ask what is supported and get a 404 rather than a 403.
    """
    kind, _, rest = request.path.removeprefix("/fhir").strip("/").partition("/")
    family = _FAMILY.get(kind)
    if family is None:
        family = "results" if g.principal.role in ROLES["results"] else "orders"
    elif family == "results":  # what a refused request was after, for its audit line
        level = "REPORT" if kind == "DiagnosticReport" else "STUDY"
        audit(f"{level}_{'READ' if rest else 'SEARCH'}", level, rest[:64], f"{request.method} {request.path[:200]}")
    check(family)


blueprint.after_request(lambda response: record_request(response, "FHIR"))

FHIR_JSON = "application/fhir+json"
_VIA = "FHIR"
_MEDIA = (FHIR_JSON, "application/json")
_MAX_COUNT = 500
#: Reports.find's largest page: a report search reaching it has no exact total.
_REPORTS_CAP = 1000
_ID = re.compile(r"^[^\x00-\x1f/]{1,64}$")
#: OperationOutcome issue codes (FHIR issue-type value set) per HTTP status.
_ISSUE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
          409: "conflict", 413: "too-costly", 415: "not-supported", 422: "business-rule",
          429: "throttled", 503: "transient"}  # fmt: skip
_RESOURCES = ("ServiceRequest", "Patient", "DiagnosticReport", "ImagingStudy")
Model = TypeVar("Model", ServiceRequest, Patient)
#: A search's patient that matches nobody (an unknown reference): the answer is an empty Bundle.
_UNKNOWN = PatientDemographics(patient_id="\x00unknown")


# --- answers and errors --------------------------------------------------------


def fhir_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, ensure_ascii=False), status=status,
                        content_type=f"{FHIR_JSON}; charset=utf-8")  # fmt: skip
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def outcome(status: int, diagnostics: str, headers: dict[str, str] | None = None) -> Response:
    """An OperationOutcome answer: one issue with severity, code and what was wrong."""
    body = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error" if status < 500 else "fatal", "code": _ISSUE.get(status, "exception"),
        "diagnostics": diagnostics,
    }]}  # fmt: skip
    return fhir_response(body, status, headers)


@blueprint.errorhandler(ArchiveError)
def archive_error(exc: ArchiveError) -> Response:
    return outcome(exc.http_status, exc.message)


@blueprint.errorhandler(Unauthorized)
def unauthorized(exc: Unauthorized) -> Response:
    return outcome(401, exc.message, {"WWW-Authenticate": CHALLENGE})


@blueprint.errorhandler(Throttled)
def throttled(exc: Throttled) -> Response:
    return outcome(429, str(exc), {"Retry-After": str(exc.retry_after)})


@blueprint.errorhandler(SessionRefused)
def session_refused(exc: SessionRefused) -> Response:
    return outcome(exc.status, exc.message)


@blueprint.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    return outcome(exc.code or 500, exc.description or exc.name)


@blueprint.errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    log.exception("unexpected error answering a FHIR request")
    return outcome(500, "internal error; the server log has the details")


# --- ServiceRequest ----------------------------------------------------------------


@blueprint.post("/ServiceRequest")
def create() -> Response:
    resource = _parse(ServiceRequest)
    _check_request_status(resource)
    if resource.status != "active":
        raise BusinessRule(f"a new ServiceRequest must be active, not {resource.status!r}")
    order = order_from(resource, _subject(resource), g.principal.name)
    audit("ORDER_CREATE", "ORDER", order.placer_order_number)
    result = worklist().create(order, origin(_VIA))
    step = result.step
    log.info("FHIR create ServiceRequest %s from %s: %s %s", order.placer_order_number, origin(_VIA),
             result.outcome.value, step.accession_number)  # fmt: skip
    created = result.outcome is Outcome.CREATED
    headers = {"Location": _url(f"ServiceRequest/{step.accession_number}")} if created else {}
    return fhir_response(_service_request(step), 201 if created else 200, headers)


@blueprint.put("/ServiceRequest/<id_>")
def update(id_: str) -> Response:
    accession = _checked_id(id_)
    audit("ORDER_CHANGE", "ORDER", accession)
    current = worklist().get(accession)
    resource = _parse(ServiceRequest)
    if resource.id is not None and resource.id != accession:
        raise InvalidQuery(f"ServiceRequest.id {resource.id!r} is not {accession!r} of the URL")
    _check_request_status(resource)
    if resource.status in ("revoked", "entered-in-error"):
        reason = f"ServiceRequest {resource.status} by the HIS"
        step = worklist().cancel(current.placer_issuer, current.placer_order_number, origin(_VIA), reason)
        log.info("FHIR update ServiceRequest %s from %s: %s", accession, origin(_VIA), step.status)
        return fhir_response(_service_request(step))
    if resource.status != "active":
        raise BusinessRule(f"status {resource.status!r}: an update may keep the order active, or revoke it "
                           "(revoked, entered-in-error); the modality reports progress and completion")  # fmt: skip
    if STATUS.get(current.status) != "active":
        raise InvalidTransition(f"ServiceRequest {accession} is {STATUS.get(current.status)} "
                                f"({current.status}): it cannot be made active again; place a new order")
    order = order_from(resource, _subject(resource), g.principal.name)
    if (order.placer_issuer, order.placer_order_number) != (current.placer_issuer, current.placer_order_number):
        raise BusinessRule(f"the PLAC identifier {order.placer_issuer}|{order.placer_order_number} is not this "
                           f"ServiceRequest's ({current.placer_issuer}|{current.placer_order_number})")  # fmt: skip
    if order.accession_number and order.accession_number != accession:
        raise BusinessRule(f"the ACSN identifier {order.accession_number!r} is not the id {accession!r}: "
                           "an accession number cannot change")  # fmt: skip
    result = worklist().change(order, origin(_VIA))
    log.info("FHIR update ServiceRequest %s from %s: %s", accession, origin(_VIA), result.outcome.value)
    return fhir_response(_service_request(result.step))


@blueprint.get("/ServiceRequest/<id_>")
def read(id_: str) -> Response:
    accession = _checked_id(id_)
    audit("ORDER_READ", "ORDER", accession)
    try:
        step = worklist().get(accession)
    except UnknownOrder:
        raise NotFound(f"no ServiceRequest {accession}") from None
    return fhir_response(_service_request(step))


@blueprint.get("/ServiceRequest")
def search_requests() -> Response:
    params = _params(("identifier", "patient", "patient.identifier", "status", "_count"))
    count = _count(params)
    statuses: tuple[str | None, ...] = (None,)
    if params.get("status"):
        if params["status"] not in STATUS_SEARCH:
            raise InvalidQuery(f"status={params['status'][:20]!r}: search by {', '.join(STATUS_SEARCH)}")
        statuses = STATUS_SEARCH[params["status"]]
    audit("ORDER_SEARCH", "ORDER", "", "; ".join(f"{k}={v[:64]}" for k, v in params.items()))
    patient = _patient_filter(params)
    if patient is _UNKNOWN:
        return _bundle([])
    steps: list[StepView] = []
    if params.get("identifier"):
        steps = _by_identifier(params["identifier"])
    else:
        for status in statuses:
            steps += worklist().steps(status=status or "", limit=count,
                                      patient_id=patient.patient_id if patient else "")  # fmt: skip
    steps = [s for s in steps if (statuses == (None,) or s.status in statuses)
             and (not patient or (s.patient.patient_id, s.patient.issuer) == (patient.patient_id, patient.issuer))]
    return _bundle([_service_request(s) for s in steps[:count]])


def _by_identifier(value: str) -> list[StepView]:
    system, bar, number = value.partition("|")
    if not bar:
        system, number = "", value
    found: list[StepView] = []
    try:
        if system in ("", ACCESSION_SYSTEM):
            found.append(worklist().get(number))
    except UnknownOrder:
        pass
    if not found and system != ACCESSION_SYSTEM:
        try:
            found.append(worklist().get_order(system or g.principal.name, number))
        except UnknownOrder:
            pass
    return found


def _patient_filter(params: dict[str, str]) -> PatientDemographics | None:
    """The patient a search names (None: no patient filter; _UNKNOWN: a patient we do not know)."""
    if params.get("patient"):
        pk = params["patient"].rstrip("/").rsplit("/", 1)[-1]
        found = patient_by_pk(_archive().db, int(pk)) if pk.isdigit() and len(pk) < 12 else None
        return found.demographics if found else _UNKNOWN
    if params.get("patient.identifier"):
        matches = _patients_by_identifier(params["patient.identifier"], 2)
        return matches[0].demographics if len(matches) == 1 else _UNKNOWN
    return None


# --- Patient -------------------------------------------------------------------------


@blueprint.get("/Patient/<id_>")
def read_patient(id_: str) -> Response:
    audit("PATIENT_READ", "PATIENT", id_[:64])
    found = patient_by_pk(_archive().db, int(id_)) if id_.isdigit() and len(id_) < 12 else None
    if found is None:
        raise NotFound(f"no Patient {id_[:64]}")
    return fhir_response(patient_resource(found))


@blueprint.get("/Patient")
def search_patient() -> Response:
    params = _params(("identifier", "name", "birthdate", "_count"))
    count = _count(params)
    birth = params.get("birthdate", "").removeprefix("eq")
    if birth and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", birth):
        raise InvalidQuery(f"birthdate={birth[:20]!r} is not a date YYYY-MM-DD")
    if not params:
        raise InvalidQuery("search patients by identifier, name or birthdate")
    audit("PATIENT_SEARCH", "PATIENT", "", "; ".join(f"{k}={v[:64]}" for k, v in params.items()))
    if params.get("identifier"):
        found = _patients_by_identifier(params["identifier"], count, params.get("name", ""), birth.replace("-", ""))
    else:
        found = search_patients(_archive().db, name=params.get("name", ""), birth_date=birth.replace("-", ""),
                                limit=count)  # fmt: skip
    return _bundle([patient_resource(p) for p in found])


def _patients_by_identifier(value: str, limit: int, name: str = "", birth_date: str = "") -> list[FoundPatient]:
    system, bar, number = value.partition("|")
    if not bar:
        system, number = "", value
    issuer: str | None = None
    if system == CCCD_SYSTEM:
        issuer = "CCCD"
    elif system == BHYT_SYSTEM:
        issuer = "BHYT"
    elif system == PATIENT_ID_SYSTEM:
        issuer = ""
    elif system.startswith(ISSUER_PREFIX):
        issuer = system.removeprefix(ISSUER_PREFIX)
    return search_patients(_archive().db, identifier=number, issuer=issuer, name=name, birth_date=birth_date,
                           limit=limit)  # fmt: skip


# --- DiagnosticReport and ImagingStudy: results for the EMR ------------------------------


@blueprint.get("/DiagnosticReport/<id_>")
def read_report(id_: str) -> Response:
    audit("REPORT_READ", "REPORT", id_[:64], f"DiagnosticReport/{id_[:64]}")
    try:
        if not id_.isdigit() or len(id_) > 12:
            raise NotFound(id_)
        view = _issued(_reports().get_by_id(int(id_), final_only=g.principal.role in _FINAL_ONLY_ROLES))
    except NotFound:
        raise NotFound(f"no DiagnosticReport {id_[:64]}") from None
    audit("REPORT_READ", "REPORT", view.accession_number, f"DiagnosticReport/{id_} {_seen([view])}")
    return fhir_response(_diagnostic_report(view))


@blueprint.get("/DiagnosticReport")
def search_reports() -> Response:
    params = _search_params(("identifier", "patient", "patient.identifier", "date", "_count"), repeatable=("date",))
    count = _count(params)
    low, high = date_range(request.args.getlist("date"), "date")
    system, accession = token(params["identifier"], "identifier") if "identifier" in params else ("", "")
    audit("REPORT_SEARCH", "REPORT", accession, _asked())
    patient = _patient_filter(params)
    if patient is _UNKNOWN or system not in ("", ACCESSION_SYSTEM) or (low and high and low > high):
        return _bundle([])
    views = _reports().find(accession=accession, patient_id=patient.patient_id if patient else "",
                            date_from=low, date_to=high, final_only=g.principal.role in _FINAL_ONLY_ROLES,
                            limit=_REPORTS_CAP)  # fmt: skip
    if patient:
        views = [v for v in views if v.patient.issuer == patient.issuer]
    shown = [_issued(v) for v in views[:count]]
    audit("REPORT_SEARCH", "REPORT", shown[0].accession_number if len(shown) == 1 else accession,
          f"{_asked()} -> {len(views)} matches {_seen(shown)}")  # fmt: skip
    return _bundle([_diagnostic_report(v) for v in shown], total=len(views), exact=len(views) < _REPORTS_CAP)


@blueprint.get("/ImagingStudy/<id_>")
def read_study(id_: str) -> Response:
    audit("STUDY_READ", "STUDY", id_[:64], f"ImagingStudy/{id_[:64]}")
    found = [] if uid_problem(id_) else _find(Level.STUDY, _STUDY_KEYS, {"StudyInstanceUID": id_}, 1)
    if not found:
        raise NotFound(f"no ImagingStudy {id_[:64]}")
    audit("STUDY_READ", "STUDY", id_, f"ImagingStudy/{id_} PatientID={first(found[0], '00100020')}")
    return fhir_response(_imaging_study(found[0]))


@blueprint.get("/ImagingStudy")
def search_studies() -> Response:
    params = _search_params(("identifier", "patient", "patient.identifier", "started", "_count"),
                            repeatable=("started",))  # fmt: skip
    count = _count(params)
    low, high = date_range(request.args.getlist("started"), "started")
    keys: dict[str, str] = {"StudyDate": f"{low}-{high}"} if low or high else {}
    system, value = token(params["identifier"], "identifier") if "identifier" in params else ("", "")
    if system == DICOM_UID_SYSTEM or (not system and value.startswith("urn:oid:")):
        uid = value.removeprefix("urn:oid:")
        if uid_problem(uid):
            raise InvalidQuery(f"identifier {value[:80]!r}: a Study Instance UID is urn:oid:<UID>, {uid_problem(uid)}")
        keys["StudyInstanceUID"] = uid
    elif value and system in ("", ACCESSION_SYSTEM):
        keys["AccessionNumber"] = value
    audit("STUDY_SEARCH", "STUDY", keys.get("StudyInstanceUID", ""), _asked())
    patient = _patient_filter(params)
    if patient is _UNKNOWN or (value and not keys.keys() & {"StudyInstanceUID", "AccessionNumber"}) or (
            low and high and low > high):  # fmt: skip
        return _bundle([])
    if patient:
        # The ID alone matches any issuer's patient with that ID (an empty issuer matches every issuer),
        # so the few studies of the ID are fetched and those of another issuer left out.
        keys["PatientID"] = patient.patient_id
        found = [s for s in _find(Level.STUDY, _STUDY_KEYS, keys, _MAX_COUNT)
                 if first(s, "00100021") == patient.issuer]  # fmt: skip
        total = len(found)
    else:
        found = _find(Level.STUDY, _STUDY_KEYS, keys, count)
        total = _archive().count(_query(Level.STUDY, _STUDY_KEYS, keys))
    shown = found[:count]
    audit("STUDY_SEARCH", "STUDY", first(shown[0], "0020000D") if len(shown) == 1 else keys.get("StudyInstanceUID", ""),
          f"{_asked()} -> {total} matches " + " ".join(
              f"{first(s, '0020000D')} PatientID={first(s, '00100020')}" for s in shown))  # fmt: skip
    return _bundle([_imaging_study(s) for s in shown], total=total)


#: What an ImagingStudy needs at each level (the index's DICOM JSON answers with these).
_STUDY_KEYS = ("StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime", "StudyDescription",
               "ModalitiesInStudy", "ReferringPhysicianName", "PatientName", "PatientID", "IssuerOfPatientID",
               "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")  # fmt: skip
_SERIES_KEYS = ("SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription", "SeriesDate", "SeriesTime",
                "NumberOfSeriesRelatedInstances")  # fmt: skip
_INSTANCE_KEYS = ("SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber")


def _imaging_study(study: dict[str, Any]) -> dict[str, Any]:
    uid = first(study, "0020000D")
    series = _find(Level.SERIES, _SERIES_KEYS, {"StudyInstanceUID": uid})
    instances = _find(Level.IMAGE, _INSTANCE_KEYS, {"StudyInstanceUID": uid})
    accession = first(study, "00080050")
    pk = patient_pk(_archive().db, first(study, "00100020"), first(study, "00100021"))
    return imaging_study(study, series, instances, _root(), patient_pk=pk, ordered=_has_order(accession))


def _find(level: Level, wanted: tuple[str, ...], keys: dict[str, str],
          limit: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Matches (oldest first) through the archive's one matching engine, as the index's DICOM JSON."""
    query = _query(level, wanted, keys)
    query.limit = limit
    return list(_archive().find_json(query))


def _query(level: Level, wanted: tuple[str, ...], keys: dict[str, str]) -> Query:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.name
    for keyword in wanted:
        setattr(identifier, keyword, None)
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return query_from_identifier(identifier, patient_root=False)


def _has_order(accession: str) -> bool:
    """Whether /fhir/ServiceRequest/<accession> exists, so basedOn never points at nothing."""
    service = current_app.config.get("WORKLIST")
    if not accession or service is None:
        return False
    try:
        service.get(accession)
    except UnknownOrder:
        return False
    return True


def _issued(view: ReportView) -> ReportView:
    """The report as issued: its newest signed version while an amendment is being written."""
    return latest_signed(view) or view


def _search_params(known: tuple[str, ...], repeatable: tuple[str, ...]) -> dict[str, str]:
    """_params, and each parameter once but `repeatable` (a date range): no silent AND of two identifiers."""
    params = _params(known)
    for name in set(request.args) - set(repeatable):
        if len(request.args.getlist(name)) > 1:
            raise InvalidQuery(f"give {name} once")
    return params


def _diagnostic_report(view: ReportView) -> dict[str, Any]:
    pk = patient_pk(_archive().db, view.patient.patient_id, view.patient.issuer)
    return diagnostic_report(view, _root(), patient_pk=pk)


def _reports() -> Reports:
    service: Reports | None = current_app.config.get("REPORTS")
    if service is None:
        raise Unavailable("reports are not running in this server")
    return service


def _seen(views: list[ReportView]) -> str:
    """What an audit line says a report answer showed: the audit's patient search finds PatientID=."""
    return " ".join(f"{v.accession_number} {v.study_instance_uid} PatientID={v.patient.patient_id}" for v in views)


def _asked() -> str:
    return "; ".join(f"{k}={v[:64]}" for k, v in request.args.items(multi=True))[:1000]


def _root() -> str:
    """The server's root URL as the client reached it (links to the PDF and to DICOMweb)."""
    return base_url().removesuffix("/dicomweb")


# --- what this server can do ---------------------------------------------------------


@blueprint.get("/metadata")
def capabilities() -> Response:
    """The CapabilityStatement FHIR clients ask for first: what is supported, nothing more."""
    search = {
        "ServiceRequest": [("identifier", "token"), ("patient", "reference"), ("patient.identifier", "token"),
                           ("status", "token")],
        "Patient": [("identifier", "token"), ("name", "string"), ("birthdate", "date")],
        "DiagnosticReport": [("identifier", "token"), ("patient", "reference"), ("patient.identifier", "token"),
                             ("date", "date")],
        "ImagingStudy": [("identifier", "token"), ("patient", "reference"), ("patient.identifier", "token"),
                         ("started", "date")],
    }  # fmt: skip
    interactions = {"ServiceRequest": ("create", "read", "update", "search-type"),
                    "Patient": ("read", "search-type"), "DiagnosticReport": ("read", "search-type"),
                    "ImagingStudy": ("read", "search-type")}  # fmt: skip
    return fhir_response({
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-12-05", "kind": "instance",
        "fhirVersion": "4.3.0", "format": ["application/fhir+json"],
        "software": {"name": "minipacs"},
        "implementation": {"description": "minipacs: orders in and their status out; reports and studies out",
                           "url": request.url_root.rstrip("/") + "/fhir"},
        "rest": [{"mode": "server", "resource": [
            {"type": kind, "interaction": [{"code": code} for code in interactions[kind]],
             "searchParam": [{"name": name, "type": type_} for name, type_ in search[kind]]}
            for kind in _RESOURCES
        ]}],
    })  # fmt: skip


# --- anything else -------------------------------------------------------------------


@blueprint.route("/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def unsupported(rest: str) -> Response:
    kind = rest.split("/", 1)[0]
    if kind in _RESOURCES:
        return outcome(405, f"{request.method} /fhir/{rest[:80]} is not supported: {kind} supports "
                       + ("create (POST), read, update (PUT) and search" if kind == "ServiceRequest"
                          else "read and search"))  # fmt: skip
    return outcome(404, f"no FHIR endpoint /fhir/{rest[:80]}: this server has {', '.join(_RESOURCES)}")


# --- helpers ---------------------------------------------------------------------------


def _parse(model: type[Model]) -> Model:
    """The request's resource, validated; 400 OperationOutcome naming what is wrong."""
    body = json_body(_MEDIA)
    name = model.__name__
    if not isinstance(body, dict):
        raise InvalidQuery(f"the body must be a {name} resource (a JSON object)")
    if body.get("resourceType") != name:
        raise InvalidQuery(f"resourceType is {str(body.get('resourceType'))[:40]!r}: this endpoint takes {name}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [f"{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        raise InvalidQuery("; ".join(problems)[:2000]) from None
    except (ValueError, TypeError) as exc:
        raise InvalidQuery(f"{name}: {str(exc)[:500]}") from None


def _check_request_status(resource: ServiceRequest) -> None:
    if resource.status not in REQUEST_STATUSES:
        raise InvalidQuery(f"ServiceRequest.status {str(resource.status)[:40]!r} is not one of "
                           f"{', '.join(REQUEST_STATUSES)}")  # fmt: skip


def _subject(resource: ServiceRequest) -> PatientDemographics:
    """The patient the order is for: contained, a Patient we know, or one we know by identifier."""
    subject = resource.subject
    reference = subject.reference or ""
    if reference.startswith("#"):
        for contained in resource.contained or []:
            if contained.get_resource_type() == "Patient" and contained.id == reference[1:]:
                return demographics_from(Patient.model_validate(contained.model_dump()))
        raise InvalidQuery(f"ServiceRequest.subject {reference[:40]!r}: no contained Patient has that id")
    if reference:
        if "Patient/" not in reference:
            raise InvalidQuery(f"ServiceRequest.subject {reference[:60]!r} is not a Patient reference")
        pk = reference.rstrip("/").rsplit("/", 1)[-1]
        found = patient_by_pk(_archive().db, int(pk)) if pk.isdigit() and len(pk) < 12 else None
        if found is None:
            raise BusinessRule(f"ServiceRequest.subject {reference[:60]!r}: no such Patient here; "
                               "send the patient as a contained Patient")  # fmt: skip
        return found.demographics
    if subject.identifier is not None and subject.identifier.value:
        system = subject.identifier.system or ""
        matches = _patients_by_identifier(f"{system}|{subject.identifier.value}", 2)
        if len(matches) != 1:
            raise BusinessRule(f"ServiceRequest.subject.identifier {subject.identifier.value[:40]!r}: "
                               f"{'no patient' if not matches else 'more than one patient'} has it; "
                               "send the patient as a contained Patient")  # fmt: skip
        return matches[0].demographics
    raise InvalidQuery("ServiceRequest.subject must reference a contained Patient (#id), a Patient/<id>, "
                       "or carry the patient's identifier")  # fmt: skip


def _service_request(step: StepView) -> dict[str, Any]:
    return service_request(step, patient_pk(_archive().db, step.patient.patient_id, step.patient.issuer))


def _bundle(resources: list[dict[str, Any]], total: int | None = None, exact: bool = True) -> Response:
    """A searchset; `total` counts every match when _count left some out (not `exact`: left out)."""
    body: dict[str, Any] = {
        "resourceType": "Bundle", "type": "searchset", "total": len(resources) if total is None else total,
        "link": [{"relation": "self", "url": request.url}],
        "entry": [{"fullUrl": _url(f"{r['resourceType']}/{r['id']}"), "resource": r, "search": {"mode": "match"}}
                  for r in resources],
    }  # fmt: skip
    if not exact:
        del body["total"]
    return fhir_response(body)


def _params(known: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(request.args) - set(known))
    if unknown:
        raise InvalidQuery(f"search parameter {unknown[0][:40]!r} is not supported: use {', '.join(known)}")
    return {k: v.strip() for k, v in request.args.items() if v.strip()}


def _count(params: dict[str, str]) -> int:
    value = params.get("_count", "50")
    if not value.isdigit() or not 1 <= int(value) <= _MAX_COUNT:
        raise InvalidQuery(f"_count must be a number from 1 to {_MAX_COUNT}")
    return int(value)


def _checked_id(value: str) -> str:
    if not _ID.match(value):
        raise InvalidQuery("the id in the URL must be 1 to 64 printable characters")
    return value


def _url(path: str) -> str:
    return f"{request.url_root}fhir/{path}"


def _archive() -> Archive:
    archive: Archive = current_app.config["ARCHIVE"]
    return archive
