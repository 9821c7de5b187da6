"""The reports API under ``/api``: what the viewer's report panel and simple EMRs call.

Radiologists (family "reports"):
- ``POST /api/reports`` ``{"study_instance_uid", "template_id"?, "language"?, "sections"?, "structured"?}``
  starts a draft (201).
- ``PUT /api/reports/<accession>`` changes the open version (autosave). The revision read goes in
  ``If-Match`` (the ETag ``GET`` gave) or as ``"revision"`` in the body; someone else's change in
  between is 409 and nothing is overwritten.
- ``POST /api/reports/<accession>/sign`` ``{"pin", "revision"}``: PDF made and signed with the
  radiologist's own certificate, unlocked by the PIN; the outputs are queued.
- ``POST .../amend`` ``{"reason", "revision"}`` opens a new version of a signed report;
  ``POST .../cancel`` ``{"reason"?, "revision"}`` withdraws an open version.
- ``GET /api/report-templates?modality=&language=``.

Readers (family "results": the EMR, referrers — final reports only — and staff):
- ``GET /api/reports?accession=&patient_id=&status=&modality=&date_from=&date_to=&limit=&offset=``
- ``GET /api/reports/<accession>[?version=N]`` (ETag), ``GET /api/reports/<accession>/pdf[?version=N]``
- ``GET /api/studies?accession=...``: patient, study, report status and text, viewer and PDF links,
  delivery mode and the claim values.
Staff (family "worklist"): ``PUT /api/studies/<study_uid>/delivery`` ``{"mode": "film"|"link"|"cd"}``.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from pydicom.dataset import Dataset

from archive import Archive, InvalidQuery, query_from_identifier
from archive.errors import InvalidArgument
from archive.text import name_key
from reports.claim import claim_values
from reports.delivery import Deliveries
from reports.devices import DeviceRegistry
from reports.errors import SigningLocked
from reports.service import Reports, latest_signed
from reports.types import ReportDraft, ReportView
from viewer.access import check
from viewer.admin_api import outbox_json
from viewer.errors import json_error
from viewer.urls import base_url, path_uid
from worklist.outbox import Outbox
from viewer.worklist_http import BadBody, Unavailable, audit, int_arg, json_body, origin, record_request

blueprint = Blueprint("reports_api", __name__)
blueprint.after_request(lambda response: record_request(response, "REPORTS"))


@blueprint.errorhandler(SigningLocked)
def _locked(exc: SigningLocked) -> Response:
    return json_error(exc.http_status, exc.message, {"Retry-After": str(exc.retry_after)})


_VIA = "REPORTS"
_ACCESSION = re.compile(r"^[^\x00-\x1f\\]{1,16}$")
_DRAFT_KEYS = {"sections", "structured", "language", "template_id", "preliminary", "revision"}
#: Roles that read signed reports only.
_FINAL_ONLY = frozenset({"referrer", "emr", "anonymous"})


def reports() -> Reports:
    service: Reports | None = current_app.config.get("REPORTS")
    if service is None:
        raise Unavailable("reports are not running in this server")
    return service


def deliveries() -> Deliveries:
    archive: Archive = current_app.config["ARCHIVE"]
    return Deliveries(archive.db)


def final_only() -> bool:
    """Referrers and the EMR see signed reports only, never a draft."""
    return bool(g.principal.role in _FINAL_ONLY)


# --- radiologists ------------------------------------------------------------------


@blueprint.post("/reports")
def create() -> tuple[Response, int]:
    check("reports")
    body = _object(json_body())
    _only(body, (_DRAFT_KEYS - {"revision"}) | {"study_instance_uid"})
    study_uid = path_uid(_text(body, "study_instance_uid", required=True), "study")
    audit("REPORT_CREATE", "REPORT", study_uid)
    view = reports().create(study_uid, _draft(body), g.principal.name, origin(_VIA))
    return _answer(view), 201


@blueprint.put("/reports/<accession>")
def update(accession: str) -> Response:
    check("reports")
    body = _object(json_body())
    _only(body, _DRAFT_KEYS)
    audit("REPORT_UPDATE", "REPORT", _accession(accession))
    view = reports().update(accession, _draft(body), g.principal.name, _revision(body), origin(_VIA))
    return _answer(view)


@blueprint.post("/reports/<accession>/sign")
def sign(accession: str) -> Response:
    check("reports")
    body = _object(json_body())
    _only(body, {"pin", "revision"})
    audit("REPORT_SIGN", "REPORT", _accession(accession))
    pin = body.get("pin")
    if not isinstance(pin, str) or not pin:
        raise BadBody("send the signing PIN as \"pin\" (the passphrase of your signing certificate)")
    view = reports().sign(accession, g.principal.name, pin, _revision(body), origin(_VIA))
    return _answer(view)


@blueprint.post("/reports/<accession>/amend")
def amend(accession: str) -> Response:
    check("reports")
    body = _object(json_body())
    _only(body, {"reason", "revision"})
    audit("REPORT_AMEND", "REPORT", _accession(accession))
    view = reports().amend(accession, g.principal.name, _text(body, "reason", required=True), _revision(body),
                           origin(_VIA))  # fmt: skip
    return _answer(view)


@blueprint.post("/reports/<accession>/cancel")
def cancel(accession: str) -> Response:
    check("reports")
    body = _object(json_body())
    _only(body, {"reason", "revision"})
    audit("REPORT_CANCEL", "REPORT", _accession(accession))
    view = reports().cancel(accession, g.principal.name, _text(body, "reason"), _revision(body), origin(_VIA))
    return _answer(view)


@blueprint.get("/report-templates")
def templates() -> Response:
    check("reports")
    modality = request.args.get("modality", "").strip()[:16]
    language = request.args.get("language", "").strip()
    if language and language not in ("vi", "en"):
        raise InvalidQuery("language must be vi or en")
    audit("REPORT_TEMPLATES", "REPORT")
    return jsonify([t.as_json() for t in reports().templates.all(modality, language)])


# --- readers -------------------------------------------------------------------------


@blueprint.get("/reports")
def search() -> Response:
    check("results")
    args = request.args
    known = {"accession", "patient_id", "status", "modality", "date_from", "date_to", "limit", "offset"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")
    accession = args.get("accession", "")
    audit("REPORT_SEARCH", "REPORT", accession, f"GET {request.full_path}"[:300])
    views = reports().find(
        accession=accession, patient_id=args.get("patient_id", ""), status=args.get("status", ""),
        modality=args.get("modality", ""), date_from=args.get("date_from", ""), date_to=args.get("date_to", ""),
        final_only=final_only(), limit=int_arg("limit", 100, 1, 1000), offset=int_arg("offset", 0, 0, 10**9),
    )  # fmt: skip
    return jsonify([report_json(v) for v in views])


@blueprint.get("/reports/<accession>")
def read(accession: str) -> Response:
    check("results")
    audit("REPORT_READ", "REPORT", _accession(accession))
    version = int_arg("version", 0, 1, 10_000) or None
    view = reports().get(accession, version, final_only=final_only())
    response = _answer(view)
    if request.if_none_match and view.etag.strip('"') in request.if_none_match and version is None:
        return Response(status=304, headers={"ETag": view.etag})
    return response


@blueprint.get("/reports/<accession>/pdf")
def pdf(accession: str) -> Response:
    check("results")
    audit("REPORT_PDF", "REPORT", _accession(accession))
    version = int_arg("version", 0, 1, 10_000) or None
    service = reports()
    view = service.get(accession, version, final_only=final_only())
    if not view.version.status.is_signed and version is None:
        view = service.get(accession, None, final_only=True)
    data = service.pdf(accession, view.version.number)
    name = f"{accession}-v{view.version.number}.pdf"
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{name}"'})  # fmt: skip


@blueprint.get("/studies")
def studies() -> Response:
    check("results")
    accession = request.args.get("accession", "")
    unknown = sorted(set(request.args) - {"accession"})
    if unknown or not accession:
        raise InvalidQuery("give the accession number: /api/studies?accession=...")
    _accession(accession)
    audit("STUDY_LOOKUP", "STUDY", accession)
    archive: Archive = current_app.config["ARCHIVE"]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.AccessionNumber = accession
    for keyword in ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "ModalitiesInStudy",
                    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "PatientID", "PatientName",
                    "PatientBirthDate", "PatientSex"):  # fmt: skip
        setattr(identifier, keyword, "")
    found = list(archive.find_json(query_from_identifier(identifier, patient_root=False)))
    return jsonify([study_json(s) for s in found])


@blueprint.put("/studies/<study_uid>/delivery")
def delivery(study_uid: str) -> Response:
    check("worklist")
    path_uid(study_uid, "study")
    body = _object(json_body())
    _only(body, {"mode"})
    audit("DELIVERY", "STUDY", study_uid)
    done = deliveries().record(study_uid, _text(body, "mode", required=True), origin(_VIA))
    return jsonify(done.__dict__)


# --- JSON shapes -----------------------------------------------------------------------


def site_url() -> str:
    """Our root URL as the client reached it (the DICOMweb root without /dicomweb)."""
    return base_url().removesuffix("/dicomweb")


def report_json(view: ReportView) -> dict[str, Any]:
    """A report as the API answers it: the shown version in full, the others in brief."""
    site = site_url()
    v = view.version
    out: dict[str, Any] = {
        "id": view.id, "accession_number": view.accession_number, "status": view.status.value,
        "revision": view.revision, "study_instance_uid": view.study_instance_uid,
        "patient": _patient(view), "study": {
            "date": view.study_date, "time": view.study_time, "description": view.study_description,
            "modality": view.modality},
        "order": {"placer_issuer": view.placer_issuer, "placer_order_number": view.placer_order_number,
                  "filler_order_number": view.filler_order_number, "procedure_code": view.procedure_code,
                  "procedure_description": view.procedure_description, "service_code": view.service_code,
                  "indicator_code": view.indicator_code, "referring_physician": view.referring_physician,
                  "priority": view.priority},
        "performed": view.performed.__dict__,
        "version": {
            "number": v.number, "status": v.status.value, "language": v.language, "template_id": v.template_id,
            "sections": v.sections, "structured": v.structured, "author": v.author, "author_name": v.author_name,
            "created_at": v.created_at, "updated_at": v.updated_at, "reason": v.reason,
            "signature": v.signature.__dict__ if v.signature else None, "pdf_sha256": v.pdf_sha256},
        "versions": [{"number": x.number, "status": x.status.value, "reason": x.reason,
                      "signed_at": x.signature.signed_at if x.signature else None,
                      "signer": x.signature.display_name if x.signature else None}
                     for x in view.versions if not final_only() or x.status.is_signed],
        "claim": claim_json(view),
        "outputs": outputs_json(view) if g.principal.role not in _FINAL_ONLY else None,
        "links": {
            "self": f"{site}/api/reports/{view.accession_number}",
            "pdf": f"{site}/api/reports/{view.accession_number}/pdf" if v.status.is_signed else None,
            "viewer": f"{site}/iid?requestType=STUDY&studyUID={view.study_instance_uid}"},
    }  # fmt: skip
    return out


def study_json(study: dict[str, Any]) -> dict[str, Any]:
    """A study found by accession number, with its report and delivery: what a simple EMR shows."""
    site = site_url()
    uid = _first(study, "0020000D")
    report = reports().for_study(uid)
    shown = latest_signed(report) if report is not None and final_only() else report
    delivered = deliveries().latest(uid)
    name = study.get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", "")
    return {
        "study_instance_uid": uid, "accession_number": _first(study, "00080050"),
        "patient": {"patient_id": _first(study, "00100020"), "name": name,
                    "birth_date": _first(study, "00100030"), "sex": _first(study, "00100040")},
        "study": {"date": _first(study, "00080020"), "time": _first(study, "00080030"),
                  "description": _first(study, "00081030"),
                  "modalities": study.get("00080061", {}).get("Value", []),
                  "series": _first(study, "00201206"), "instances": _first(study, "00201208")},
        "report": None if shown is None else {
            "status": shown.status.value, "version": shown.version.number,
            "findings": shown.version.section("findings"), "conclusion": shown.version.section("conclusion"),
            "recommendation": shown.version.section("recommendation"),
            "signed_by": shown.version.signature.display_name if shown.version.signature else None,
            "signed_at": shown.version.signature.signed_at if shown.version.signature else None,
            "pdf": f"{site}/api/reports/{shown.accession_number}/pdf" if shown.version.status.is_signed else None,
            "report": f"{site}/api/reports/{shown.accession_number}"},
        "delivery": delivered.__dict__ if delivered else None,
        "claim": claim_json(shown) if shown is not None else None,
        "links": {"viewer": f"{site}/iid?requestType=STUDY&studyUID={uid}",
                  "dicomweb": f"{site}/dicomweb/studies/{uid}"},
    }  # fmt: skip


def outputs_json(view: ReportView) -> list[dict[str, object]]:
    """Where the signed versions went (ORU to the EMR, SR/PDF into the study) and whether it arrived."""
    archive: Archive = current_app.config["ARCHIVE"]
    entries = Outbox(archive.db).entries(subject=view.accession_number, limit=50)
    return [outbox_json(e) for e in entries if e.kind in ("ORU^R01", "REPORT DICOM")]


def claim_json(view: ReportView) -> dict[str, Any] | None:
    """The health-insurance claim values of a signed version (None for an open one): what the HIS's XML needs."""
    if not view.version.status.is_signed:
        return None
    archive: Archive = current_app.config["ARCHIVE"]
    device = DeviceRegistry(archive.db).get(view.performed.station_ae_title) if view.performed.station_ae_title else None
    delivered = deliveries().latest(view.study_instance_uid)
    return dict(claim_values(view, device, delivered.mode if delivered else "",
                             performer_code=performer_code(archive, view.performed.performer)))  # fmt: skip


def performer_code(archive: Archive, performer: str) -> str:
    """The practising-certificate number of the user whose name is the one the modality sent as operator."""
    key = name_key(performer) if performer else ""
    if not key:
        return ""
    for user in archive.accounts.users():
        if user.practising_certificate and not user.disabled and name_key(user.display_name) == key:
            return user.practising_certificate
    return ""


def _patient(view: ReportView) -> dict[str, Any]:
    p = view.patient
    return {"patient_id": p.patient_id, "issuer": p.issuer, "name": p.name, "birth_date": p.birth_date,
            "sex": p.sex, "other_ids": [{"value": o.value, "issuer": o.issuer} for o in p.other_ids]}  # fmt: skip


def _first(study: dict[str, Any], tag: str) -> Any:
    values = study.get(tag, {}).get("Value") or [""]
    return values[0]


# --- request parts ---------------------------------------------------------------------


def _answer(view: ReportView) -> Response:
    response = jsonify(report_json(view))
    response.headers["ETag"] = view.etag
    return response


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    return body


def _only(body: dict[str, Any], keys: set[str]) -> None:
    unknown = sorted(set(body) - keys)
    if unknown:
        raise BadBody(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(keys))})")


def _text(body: dict[str, Any], key: str, required: bool = False) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadBody(f"{key!r} must be {'non-empty ' if required else ''}text")
    return value


def _draft(body: dict[str, Any]) -> ReportDraft:
    sections = body.get("sections")
    if sections is not None and (not isinstance(sections, dict)
                                 or not all(isinstance(v, str) for v in sections.values())):  # fmt: skip
        raise BadBody("\"sections\" must be an object of section name to text")
    structured = body.get("structured")
    if structured is not None and not isinstance(structured, dict):
        raise BadBody("\"structured\" must be an object of field name to value")
    preliminary = body.get("preliminary")
    if preliminary is not None and not isinstance(preliminary, bool):
        raise BadBody("\"preliminary\" must be true or false")
    for key in ("language", "template_id"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise BadBody(f"{key!r} must be text")
    return ReportDraft(sections=sections, structured=structured, language=body.get("language") or None,
                       template_id=body.get("template_id") or None, preliminary=preliminary)  # fmt: skip


def _revision(body: dict[str, Any]) -> int:
    """The revision the caller read: If-Match (the ETag) or "revision" in the body; required."""
    value: Any = body.get("revision")
    match = request.headers.get("If-Match", "").strip()
    if match:
        found = re.fullmatch(r'(?:W/)?"r\d+-(\d+)"', match)
        if found is None:
            raise BadBody("If-Match must be the ETag this report was read with")
        value = int(found.group(1))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadBody("send the revision you read (If-Match: the ETag, or \"revision\" in the body) so that "
                      "nobody's change is overwritten")  # fmt: skip
    return int(value)


def _accession(value: str) -> str:
    if not _ACCESSION.match(value):
        raise InvalidArgument("an accession number is 1-16 characters without control characters or \\")
    return value


__all__ = ["blueprint", "report_json", "study_json"]
