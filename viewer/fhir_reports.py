"""FHIR R4 (R4B models) DiagnosticReport and ImagingStudy for the EMR: pure functions of our own types.

DiagnosticReport, from a ReportView (reports/types.py):

=====================================  ===============================================
DiagnosticReport                       report
=====================================  ===============================================
id                                     the report's row key (one report per accession)
identifier, type ACSN (v2-0203)        accession number (system ``urn:minipacs:accession``,
                                       the same as ServiceRequest's)
basedOn                                ``ServiceRequest/<accession>`` (the worklist's id) with
                                       the placer order number, when the study had an order
status                                 draft = registered, preliminary, final, amended, cancelled
category                               RAD (v2-0074)
code                                   LOINC 18748-4 "Diagnostic imaging study" and the
                                       procedure code of the order; text: its description
subject                                ``Patient/<id>`` as /fhir/Patient reads it
effectiveDateTime                      study date and time (the server's local time)
issued                                 signing time (preliminary: last change)
performer, resultsInterpreter          the signer (a preliminary: its author), with the
                                       practising-certificate number (type MD,
                                       system ``urn:minipacs:practising-certificate``)
imagingStudy                           ``ImagingStudy/<Study Instance UID>``
conclusion                             the conclusion section (kết luận)
presentedForm                          the signed PDF by URL: <base>/api/reports/<accession>/pdf
text                                   the sections, as a generated narrative
=====================================  ===============================================

A draft (registered) or cancelled report carries no text: nothing of it is a
result yet. ImagingStudy follows FHIR R4's ImagingStudy page: the Study
Instance UID as ``urn:dicom:uid`` / ``urn:oid:...``, the accession number as
an ACSN identifier, modalities in the DICOM (DCM) code system, SOP Classes as
``urn:ietf:rfc:3986`` / ``urn:oid:...``, and a contained Endpoint of type
dicom-wado-rs whose address is our DICOMweb root, so ``{address}/studies/{uid}``
retrieves the study.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import html
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from archive.errors import InvalidQuery
from archive.patients import PatientDemographics
from reports.types import SECTION_TITLES, SECTIONS, ReportStatus, ReportView, ReportVersion
from viewer.fhir_mapping import (
    ACCESSION_SYSTEM,
    DCM_SYSTEM,
    DICOM_UID_SYSTEM,
    ISSUER_PREFIX,
    PATIENT_ID_SYSTEM,
    V2_0203,
)

LOINC_SYSTEM = "http://loinc.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
CONNECTION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
RFC3986_SYSTEM = "urn:ietf:rfc:3986"
#: Số chứng chỉ hành nghề: the practising certificate the Ministry of Health issues a physician.
CERTIFICATE_SYSTEM = "urn:minipacs:practising-certificate"
#: LOINC's code for a report of any diagnostic imaging study.
IMAGING_REPORT = ("18748-4", "Diagnostic imaging study")
#: Report status -> DiagnosticReport.status (required binding, value set diagnostic-report-status).
REPORT_STATUS = {ReportStatus.DRAFT: "registered", ReportStatus.PRELIMINARY: "preliminary",
                 ReportStatus.FINAL: "final", ReportStatus.AMENDED: "amended",
                 ReportStatus.CANCELLED: "cancelled"}  # fmt: skip
#: The id of the contained Endpoint every ImagingStudy points at.
ENDPOINT_ID = "dicomweb"
_PDF_TITLE = {"vi": "Kết quả chẩn đoán hình ảnh", "en": "Radiology report"}
_AMENDED = {"vi": "Sửa đổi, phiên bản", "en": "Amended, version"}
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_PREFIXES = ("eq", "ge", "le", "gt", "lt")


# --- DiagnosticReport -------------------------------------------------------------------


def diagnostic_report(view: ReportView, base_url: str, *, patient_pk: int | None = None,
                      pdf: bytes | None = None) -> dict[str, Any]:  # fmt: skip
    """The DiagnosticReport (JSON) for the version `view` shows.

    `base_url` is the server's root (``http://host:8080``); `patient_pk` the
    Patient id /fhir/Patient knows the patient by (None: referenced by
    identifier instead); `pdf`, when given, is put inline as well as by URL.
    """
    version = view.version
    status = REPORT_STATUS[version.status]
    has_text = version.status not in (ReportStatus.DRAFT, ReportStatus.CANCELLED)
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": str(view.id),
        "meta": {"lastUpdated": instant(view.updated_at)} if view.updated_at else None,
        "language": version.language if has_text else None,
        "identifier": [{"type": _type("ACSN", "Accession ID"), "system": ACCESSION_SYSTEM,
                        "value": view.accession_number}],
        "basedOn": [_order_reference(view)] if view.placer_order_number else None,
        "status": status,
        "category": [{"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}],
                      "text": "Chẩn đoán hình ảnh"}],
        "code": _report_code(view),
        "subject": subject(view.patient, patient_pk),
        "effectiveDateTime": fhir_datetime(view.study_date, view.study_time)
                             or fhir_datetime(view.performed.at[:8], view.performed.at[8:]),
        "issued": _issued(version),
        "imagingStudy": [{"reference": f"ImagingStudy/{view.study_instance_uid}"}] if view.study_instance_uid else None,
    }  # fmt: skip
    interpreter = _interpreter(version)
    if interpreter:
        resource["performer"] = resource["resultsInterpreter"] = [interpreter]
    if has_text:
        resource["conclusion"] = version.section("conclusion")
        resource["text"] = _narrative(view)
    if version.status.is_signed:
        resource["presentedForm"] = [_pdf_attachment(view, base_url, pdf)]
    return clean(resource)


def _report_code(view: ReportView) -> dict[str, Any]:
    codings: list[dict[str, Any]] = [{"system": LOINC_SYSTEM, "code": IMAGING_REPORT[0], "display": IMAGING_REPORT[1]}]
    if view.procedure_code:
        # The same coding ServiceRequest.code carries (viewer/fhir_mapping.py): one order, one code.
        codings.append(clean({"system": view.procedure_scheme if len(view.procedure_scheme) <= 16 else "",
                              "code": view.procedure_code, "display": view.procedure_description}))  # fmt: skip
    return clean({"coding": codings,
                  "text": view.procedure_description or view.study_description or IMAGING_REPORT[1]})  # fmt: skip


def _order_reference(view: ReportView) -> dict[str, Any]:
    placer = {"type": _type("PLAC", "Placer Identifier"), "system": view.placer_issuer,
              "value": view.placer_order_number}  # fmt: skip
    return {"reference": f"ServiceRequest/{view.accession_number}", "type": "ServiceRequest",
            "identifier": clean(placer)}  # fmt: skip


def _issued(version: ReportVersion) -> str:
    if version.signature is not None and version.status.is_signed:
        return instant(version.signature.signed_at)
    if version.status is ReportStatus.PRELIMINARY and version.updated_at:
        return instant(version.updated_at)
    return ""


def _interpreter(version: ReportVersion) -> dict[str, Any]:
    """The radiologist responsible: the signer, or the author of a preliminary read."""
    signature = version.signature
    if signature is not None and version.status.is_signed:
        reference: dict[str, Any] = {"type": "Practitioner", "display": signature.display_name}
        if signature.certificate_number:
            reference["identifier"] = {"type": _type("MD", "Medical License number"), "system": CERTIFICATE_SYSTEM,
                                       "value": signature.certificate_number}  # fmt: skip
        return reference
    if version.status is ReportStatus.PRELIMINARY and version.author_name:
        return {"type": "Practitioner", "display": version.author_name}
    return {}


def _pdf_attachment(view: ReportView, base_url: str, pdf: bytes | None) -> dict[str, Any]:
    version = view.version
    title = _PDF_TITLE.get(version.language, _PDF_TITLE["en"])
    what = view.procedure_description or view.study_description
    attachment: dict[str, Any] = {
        "contentType": "application/pdf", "language": version.language,
        "url": f"{base_url.rstrip('/')}/api/reports/{view.accession_number}/pdf",
        "title": f"{title}: {what}" if what else title,
        "creation": instant(version.signature.signed_at) if version.signature else None,
    }  # fmt: skip
    if pdf is not None:
        attachment["data"] = base64.b64encode(pdf).decode("ascii")
        attachment["size"] = len(pdf)
        attachment["hash"] = base64.b64encode(hashlib.sha1(pdf).digest()).decode("ascii")  # FHIR: SHA-1
    return clean(attachment)


def _narrative(view: ReportView) -> dict[str, str]:
    """The sections as XHTML, so an EMR that shows only the narrative still shows the report."""
    version = view.version
    titles = SECTION_TITLES.get(version.language, SECTION_TITLES["en"])
    parts = [f"<p><b>{html.escape(view.procedure_description or view.study_description)}</b></p>"]
    for name in SECTIONS:
        text = version.section(name).strip()
        if text:
            lines = "<br/>".join(html.escape(line) for line in text.splitlines())
            parts.append(f"<p><b>{html.escape(titles[name])}:</b> {lines}</p>")
    if version.status is ReportStatus.AMENDED and version.reason:
        label = _AMENDED.get(version.language, _AMENDED["en"])
        parts.append(f"<p><b>{label} ({version.number}):</b> {html.escape(version.reason)}</p>")
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{"".join(parts)}</div>'}


# --- ImagingStudy -----------------------------------------------------------------------


def imaging_study(study: dict[str, Any], series: Sequence[dict[str, Any]], instances: Iterable[dict[str, Any]],
                  base_url: str, *, patient_pk: int | None = None,
                  ordered: bool = False) -> dict[str, Any]:  # fmt: skip
    """The ImagingStudy (JSON) for a study, from the index's DICOM JSON (PS3.18 F.2).

    `study` is a study-level match, `series` its series-level matches and
    `instances` its instance-level ones; `ordered` says whether the worklist
    has the order (ServiceRequest) of its accession number.
    """
    uid = first(study, "0020000D")
    accession = first(study, "00080050")
    identifiers: list[dict[str, Any]] = [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}]
    if accession:
        identifiers.append({"type": _type("ACSN", "Accession ID"), "system": ACCESSION_SYSTEM, "value": accession})
    by_series: dict[str, list[dict[str, Any]]] = {}
    for instance in instances:
        by_series.setdefault(first(instance, "0020000E"), []).append(instance)
    patient = PatientDemographics(patient_id=first(study, "00100020"), issuer=first(study, "00100021"),
                                  name=person_name(study, "00100010"))  # fmt: skip
    referrer = person_name(study, "00080090")
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": uid,
        "contained": [_endpoint(base_url)],
        "identifier": identifiers, "status": "available",
        "modality": [{"system": DCM_SYSTEM, "code": m} for m in values(study, "00080061")],
        "subject": subject(patient, patient_pk),
        "started": fhir_datetime(first(study, "00080020"), first(study, "00080030")),
        "basedOn": [{"reference": f"ServiceRequest/{accession}", "type": "ServiceRequest"}]
                   if ordered and accession else None,
        "referrer": {"display": referrer.replace("^", " ").strip()} if referrer else None,
        "endpoint": [{"reference": f"#{ENDPOINT_ID}", "type": "Endpoint"}],
        "numberOfSeries": _count(study, "00201206"), "numberOfInstances": _count(study, "00201208"),
        "description": first(study, "00081030"),
        "series": [_series(s, by_series.get(first(s, "0020000E"), [])) for s in series],
    }  # fmt: skip
    return clean(resource)


def _series(series: dict[str, Any], instances: list[dict[str, Any]]) -> dict[str, Any]:
    number = first(series, "00200011")
    return clean({
        "uid": first(series, "0020000E"),
        "number": int(number) if number.isdigit() else None,
        # Modality is Type 1 in every image IOD; OT (other) for an image that left it out.
        "modality": {"system": DCM_SYSTEM, "code": first(series, "00080060") or "OT"},
        "description": first(series, "0008103E"),
        "numberOfInstances": _count(series, "00201209") if "00201209" in series else len(instances),
        "started": fhir_datetime(first(series, "00080021"), first(series, "00080031")),
        "instance": [_instance(i) for i in instances],
    })  # fmt: skip


def _instance(instance: dict[str, Any]) -> dict[str, Any]:
    number = first(instance, "00200013")
    return clean({
        "uid": first(instance, "00080018"),
        "sopClass": {"system": RFC3986_SYSTEM, "code": f"urn:oid:{first(instance, '00080016')}"},
        "number": int(number) if number.isdigit() else None,
    })  # fmt: skip


def _endpoint(base_url: str) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint", "id": ENDPOINT_ID, "status": "active",
        "connectionType": {"system": CONNECTION_TYPE_SYSTEM, "code": "dicom-wado-rs"},
        "name": "minipacs DICOMweb (WADO-RS, QIDO-RS)",
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": f"{base_url.rstrip('/')}/dicomweb",
    }  # fmt: skip


# --- shared pieces ----------------------------------------------------------------------


def subject(patient: PatientDemographics, patient_pk: int | None) -> dict[str, Any]:
    """A reference to the Patient: by id (when we know the row) and by the patient's identifier.

    The identifier lets an EMR match its own record without reading Patient
    (an emr token may not: Patient belongs to the HIS's "orders" family).
    """
    reference: dict[str, Any] = {"display": " ".join(patient.name.replace("^", " ").split())}
    if patient_pk is not None:
        reference["reference"] = f"Patient/{patient_pk}"
    if patient.patient_id:
        system = f"{ISSUER_PREFIX}{patient.issuer}" if patient.issuer else PATIENT_ID_SYSTEM
        reference["identifier"] = {"type": _type("MR", "Medical record number"), "system": system,
                                   "value": patient.patient_id}  # fmt: skip
    # ImagingStudy.subject is required: images that name nobody still say so.
    return clean(reference) or {"display": "Không rõ / Unknown"}


def date_range(values: Iterable[str], name: str) -> tuple[str, str]:
    """Dates a FHIR date search allows, as an inclusive YYYYMMDD range ("" = open).

    Each value is ``[eq|ge|le|gt|lt]YYYY[-MM[-DD]]`` (FHIR search, "date"); a
    repeated parameter narrows (``date=ge2026-12-01&date=le2026-12-31``). A
    range that ends before it starts matches nothing; the caller checks.
    """
    low, high = "", ""
    for raw in (v.strip() for v in values):
        if not raw:
            continue  # an empty parameter is no parameter (as _params treats the others)
        prefix = raw[:2] if raw[:2].isalpha() else "eq"
        text = raw[2:] if raw[:2].isalpha() else raw
        match = _DATE.match(text)
        if prefix not in _PREFIXES or match is None:
            raise InvalidQuery(f"{name}={raw[:30]!r}: give [eq|ge|le|gt|lt]YYYY-MM-DD (or YYYY-MM, YYYY)")
        start, end = _period(match, name, raw)
        if prefix in ("eq", "ge"):
            low = max(low, start)
        if prefix in ("eq", "le"):
            high = min(high, end) if high else end
        if prefix == "gt":
            low = max(low, _shift(end, 1))
        if prefix == "lt":
            high = min(high, _shift(start, -1)) if high else _shift(start, -1)
    return low, high


def _period(match: re.Match[str], name: str, raw: str) -> tuple[str, str]:
    year, month, day = match.group(1), match.group(2), match.group(3)
    try:
        if day:
            date(int(year), int(month), int(day))
            return f"{year}{month}{day}", f"{year}{month}{day}"
        if month:
            last = calendar.monthrange(int(year), int(month))[1]
            return f"{year}{month}01", f"{year}{month}{last:02d}"
    except ValueError:
        raise InvalidQuery(f"{name}={raw[:30]!r} is not a date in the calendar") from None
    return f"{year}0101", f"{year}1231"


def _shift(day: str, days: int) -> str:
    moved = datetime.strptime(day, "%Y%m%d") + timedelta(days=days)
    return moved.strftime("%Y%m%d") if 1 <= moved.year <= 9999 else day


def token(value: str, name: str) -> tuple[str, str]:
    """A FHIR token search value ``[system|]code`` as (system, code); system "": any.

    The code must be a plain identifier: no wildcards or backslashes (the
    archive's matching would read them as DICOM wildcards), 1 to 64 characters.
    """
    system, bar, code = value.partition("|")
    if not bar:
        system, code = "", value
    if not code or len(code) > 64 or len(system) > 255 or re.search(r"[\x00-\x1f*?\\|,]", code):
        raise InvalidQuery(f"{name}={value[:80]!r}: give one [system|]value, the value 1 to 64 characters "
                           "without wildcards or commas")  # fmt: skip
    return system, code


def fhir_datetime(day: str, time: str) -> str:
    """DICOM DA and TM (the server's local time) as a FHIR dateTime with the local offset."""
    if len(day) != 8 or not day.isdigit():
        return ""
    if len(time) < 4 or not time[:4].isdigit():
        return f"{day[:4]}-{day[4:6]}-{day[6:]}"
    seconds = time[4:6] if time[4:6].isdigit() else "00"
    try:
        local = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), int(time[:2]), int(time[2:4]), int(seconds))
    except ValueError:
        return ""
    return local.astimezone().isoformat()


def instant(text: str) -> str:
    """An ISO timestamp as a FHIR instant (the database keeps UTC; SQLite drops the offset)."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def first(attrs: dict[str, Any], tag: str) -> str:
    """The first value of a DICOM JSON attribute as text ("" when absent or empty)."""
    found = values(attrs, tag)
    return found[0] if found else ""


def values(attrs: dict[str, Any], tag: str) -> list[str]:
    return [str(v) for v in attrs.get(tag, {}).get("Value", []) if v not in (None, "")]


def person_name(attrs: dict[str, Any], tag: str) -> str:
    """A PN attribute's alphabetic form (Family^Given)."""
    found = attrs.get(tag, {}).get("Value", [])
    return str(found[0].get("Alphabetic", "")) if found and isinstance(found[0], dict) else ""


def _count(attrs: dict[str, Any], tag: str) -> int | None:
    value = first(attrs, tag)
    return int(value) if value.isdigit() else None


def _type(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": V2_0203, "code": code, "display": display}]}


def clean(resource: dict[str, Any]) -> dict[str, Any]:
    """Leave out empty values: FHIR JSON has no empty strings, lists or objects."""
    return {k: v for k, v in resource.items() if v not in ("", None, [], {})}
