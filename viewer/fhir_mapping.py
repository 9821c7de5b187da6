"""FHIR R4 (R4B models) ServiceRequest and Patient, to and from the worklist's own types.

The mapping, one table (what viewer/fhir.py documents for HIS integrators):

=====================================  ===============================================
ServiceRequest                         worklist
=====================================  ===============================================
id                                     the accession number (stable: a PUT cannot change it)
identifier, type PLAC (v2-0203)        placer order number; its ``system`` is the placer
                                       issuer (no system: the token's name)
identifier, type ACSN                  accession number (system ``urn:minipacs:accession``)
identifier, system ``urn:dicom:uid``   Study Instance UID (value ``urn:oid:1.2...``)
status                                 active = SCHEDULED or IN PROGRESS, completed = COMPLETED,
                                       revoked = CANCELLED or DISCONTINUED; a PUT with revoked
                                       or entered-in-error cancels
subject                                ``#id`` of a contained Patient, ``Patient/<id>`` of a
                                       patient we know, or an ``identifier`` we know
code.coding[0]                         procedure code (system: coding scheme when at most
                                       16 characters), display or code.text: description
occurrenceDateTime                     scheduled date and time (the server's local time)
priority                               stat = STAT, asap and urgent = HIGH, routine = ROUTINE
extension ``urn:minipacs:fhir:modality``
or category / performerType coding of
the DICOM system (DCM)                 modality (CT, DX...); otherwise from the catalogue
requester.display                      referring physician ("Trần Thị Bình" -> Trần^Thị Bình)
reasonCode[0].text (or display)        reason for the requested procedure
=====================================  ===============================================

Patient: id is the archive's patient row key (stable until a merge removes the
row); identifier type MR is the Patient ID (system ``urn:minipacs:patient-id``,
or ``urn:minipacs:issuer:<issuer>`` when the ID has an issuer); the citizen ID
card number is system ``urn:minipacs:id:cccd`` (type NI), the health-insurance
card ``urn:minipacs:id:bhyt`` (type NH); an incoming identifier whose system
mentions "cccd" or "bhyt", or of type NI / NH, is recognised too. name.family
and name.given make the DICOM name Family^Given; name.text alone is read
family name first. gender male/female/other = M/F/O.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest

from archive.errors import ArchiveError
from archive.patients import OtherId, PatientDemographics
from worklist.patient_search import FoundPatient
from worklist.types import OrderRequest, StepView

ACCESSION_SYSTEM = "urn:minipacs:accession"
PATIENT_ID_SYSTEM = "urn:minipacs:patient-id"
ISSUER_PREFIX = "urn:minipacs:issuer:"
CCCD_SYSTEM = "urn:minipacs:id:cccd"
BHYT_SYSTEM = "urn:minipacs:id:bhyt"
DICOM_UID_SYSTEM = "urn:dicom:uid"
MODALITY_EXTENSION = "urn:minipacs:fhir:modality"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

#: Step status -> ServiceRequest.status.
STATUS = {"SCHEDULED": "active", "IN PROGRESS": "active", "COMPLETED": "completed",
          "CANCELLED": "revoked", "DISCONTINUED": "revoked"}  # fmt: skip
#: ServiceRequest.status searches -> step statuses.
STATUS_SEARCH = {"active": ("SCHEDULED", "IN PROGRESS"), "completed": ("COMPLETED",),
                 "revoked": ("CANCELLED", "DISCONTINUED")}  # fmt: skip
#: The request-status value set (required binding; the models do not check it).
REQUEST_STATUSES = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")
PRIORITY_IN = {"stat": "STAT", "asap": "HIGH", "urgent": "HIGH", "routine": "ROUTINE"}
PRIORITY_OUT = {"STAT": "stat", "HIGH": "urgent", "ROUTINE": "routine", "MEDIUM": "routine", "LOW": "routine"}
GENDER_IN = {"male": "M", "female": "F", "other": "O", "unknown": ""}
GENDER_OUT = {"M": "male", "F": "female", "O": "other"}


class InvalidResource(ArchiveError):
    """A resource the models accept but FHIR does not (a code outside a required value set)."""

    http_status = 400


class BusinessRule(ArchiveError):
    """A valid resource the worklist cannot take as it is (FHIR's 422 Unprocessable Entity)."""

    http_status = 422


def order_from(resource: ServiceRequest, patient: PatientDemographics, default_issuer: str) -> OrderRequest:
    """The OrderRequest a validated ServiceRequest means (the patient already resolved)."""
    placer, placer_system, accession, study_uid = "", "", "", ""
    for identifier in resource.identifier or []:
        kind = _type_code(identifier.type)
        if kind == "PLAC" and not placer:
            placer, placer_system = identifier.value or "", identifier.system or ""
        elif kind == "ACSN" or identifier.system == ACCESSION_SYSTEM:
            accession = identifier.value or ""
        elif identifier.system == DICOM_UID_SYSTEM:
            study_uid = (identifier.value or "").removeprefix("urn:oid:")
    if not placer:
        raise BusinessRule("ServiceRequest.identifier: an identifier of type PLAC (the HIS's order number, "
                           f"type.coding {V2_0203}|PLAC) is required")  # fmt: skip
    coding = resource.code.coding[0] if resource.code and resource.code.coding else None
    code = (coding.code or "") if coding else ""
    scheme = (coding.system or "") if coding else ""
    description = (resource.code.text if resource.code else "") or ((coding.display or "") if coding else "")
    start_date, start_time = _occurrence(resource.occurrenceDateTime)
    priority = PRIORITY_IN.get(resource.priority or "routine")
    if priority is None:
        raise InvalidResource(f"ServiceRequest.priority {resource.priority!r} is not one of {', '.join(PRIORITY_IN)}")
    reason = ""
    if resource.reasonCode:
        first = resource.reasonCode[0]
        reason = first.text or next((c.display or c.code or "" for c in first.coding or []), "")
    requester = (resource.requester.display or "") if resource.requester else ""
    return OrderRequest(
        placer_issuer=placer_system or default_issuer, placer_order_number=placer, patient=patient,
        accession_number=accession, study_instance_uid=study_uid, procedure_code=code,
        procedure_scheme=scheme if len(scheme) <= 16 else "", procedure_description=description,
        modality=_modality(resource), start_date=start_date, start_time=start_time, priority=priority,
        referring_physician=person_name(requester), reason=reason[:1024],
    )  # fmt: skip


def demographics_from(patient: Patient) -> PatientDemographics:
    """The patient a validated (contained) Patient resource describes."""
    patient_id, issuer, others = "", "", []
    for identifier in patient.identifier or []:
        value, system, kind = identifier.value or "", identifier.system or "", _type_code(identifier.type)
        if not value:
            continue
        if kind == "NI" or system == CCCD_SYSTEM or "cccd" in system.lower():
            others.append(OtherId(value, "CCCD"))
        elif kind == "NH" or system == BHYT_SYSTEM or "bhyt" in system.lower():
            others.append(OtherId(value, "BHYT"))
        elif (kind == "MR" or not kind) and not patient_id:
            patient_id, issuer = value, system.removeprefix(ISSUER_PREFIX) if system.startswith(ISSUER_PREFIX) else ""
        else:
            others.append(OtherId(value, system.removeprefix(ISSUER_PREFIX)[:64]))
    if not patient_id:
        raise BusinessRule("Patient.identifier: the patient's ID (an identifier of type MR, "
                           f"or with system {PATIENT_ID_SYSTEM}) is required")  # fmt: skip
    name = ""
    if patient.name:
        first = patient.name[0]
        if first.family or first.given:
            given = " ".join(str(g) for g in first.given or [] if g)
            name = f"{first.family or ''}^{given}".rstrip("^")
        elif first.text:
            name = person_name(first.text)
    birth = patient.birthDate
    if birth is not None and not isinstance(birth, date):
        raise BusinessRule("Patient.birthDate must be a full date (YYYY-MM-DD)")
    if (patient.gender or "unknown") not in GENDER_IN:
        raise InvalidResource(f"Patient.gender {str(patient.gender)[:20]!r} is not one of {', '.join(GENDER_IN)}")
    gender = GENDER_IN[patient.gender or "unknown"]
    return PatientDemographics(patient_id=patient_id, issuer=issuer[:64], name=name,
                               birth_date=birth.strftime("%Y%m%d") if birth else "", sex=gender,
                               other_ids=tuple(others))  # fmt: skip


def service_request(step: StepView, patient_pk: int | None) -> dict[str, Any]:
    """The ServiceRequest resource (JSON) for a step."""
    identifiers: list[dict[str, Any]] = [
        {"type": _type("PLAC", "Placer Identifier"), "system": step.placer_issuer, "value": step.placer_order_number},
        {"type": _type("ACSN", "Accession ID"), "system": ACCESSION_SYSTEM, "value": step.accession_number},
        {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{step.study_instance_uid}"},
    ]
    coding: dict[str, Any] = {"code": step.procedure_code or step.requested_procedure_id}
    if step.procedure_scheme:
        coding["system"] = step.procedure_scheme
    if step.procedure_description:
        coding["display"] = step.procedure_description
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": step.accession_number,
        "meta": {"lastUpdated": _instant(step.updated_at)},
        "identifier": identifiers, "status": STATUS.get(step.status, "unknown"), "intent": "order",
        "category": [{"coding": [{"system": DCM_SYSTEM, "code": step.modality}]}],
        "priority": PRIORITY_OUT.get(step.priority, "routine"),
        "code": {"coding": [coding], "text": step.procedure_description},
        "subject": _clean({"reference": f"Patient/{patient_pk}" if patient_pk is not None else "",
                           "display": " ".join(step.patient.name.replace("^", " ").split())}),
        "occurrenceDateTime": _fhir_datetime(step.start_date, step.start_time),
        "extension": [{"url": MODALITY_EXTENSION, "valueCode": step.modality}],
    }  # fmt: skip
    if step.referring_physician:
        resource["requester"] = {"display": step.referring_physician.replace("^", " ")}
    if step.reason:
        resource["reasonCode"] = [{"text": step.reason}]
    if step.station_ae_title:
        resource["performer"] = [{"display": step.station_ae_title}]
    return _clean(resource)


def patient_resource(found: FoundPatient) -> dict[str, Any]:
    """The Patient resource (JSON) for an archive patient."""
    demo = found.demographics
    system = f"{ISSUER_PREFIX}{demo.issuer}" if demo.issuer else PATIENT_ID_SYSTEM
    identifiers: list[dict[str, Any]] = [{"type": _type("MR", "Medical record number"), "system": system,
                                          "value": demo.patient_id}]  # fmt: skip
    for other in demo.other_ids:
        if other.issuer == "CCCD":
            identifiers.append({"type": _type("NI", "National unique individual identifier"),
                                "system": CCCD_SYSTEM, "value": other.value})  # fmt: skip
        elif other.issuer == "BHYT":
            identifiers.append({"type": _type("NH", "National Health Plan Identifier"),
                                "system": BHYT_SYSTEM, "value": other.value})  # fmt: skip
        else:
            identifiers.append({"system": f"{ISSUER_PREFIX}{other.issuer}" if other.issuer else PATIENT_ID_SYSTEM,
                                "value": other.value})  # fmt: skip
    identifiers = [i for i in identifiers if i["value"].strip()]  # images without a Patient ID have none
    resource: dict[str, Any] = {"resourceType": "Patient", "id": str(found.pk)}
    if identifiers:
        resource["identifier"] = identifiers
    if demo.name:
        family, _, given = demo.name.partition("^")
        name: dict[str, Any] = {"text": demo.name.replace("^", " ").strip()}
        if family:
            name["family"] = family
        if given.replace("^", " ").split():
            name["given"] = given.replace("^", " ").split()
        resource["name"] = [name]
    if demo.sex in GENDER_OUT:
        resource["gender"] = GENDER_OUT[demo.sex]
    if len(demo.birth_date) == 8:
        resource["birthDate"] = f"{demo.birth_date[:4]}-{demo.birth_date[4:6]}-{demo.birth_date[6:]}"
    return resource


def person_name(text: str) -> str:
    """A full name in one field, family name first ("Trần Thị Bình") as DICOM PN ("Trần^Thị Bình")."""
    words = text.split()
    if "^" in text or len(words) < 2:
        return " ".join(words)
    return f"{words[0]}^{' '.join(words[1:])}"


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    """Leave out empty values: FHIR JSON has no empty strings, lists or objects."""
    return {k: v for k, v in resource.items() if v not in ("", None, [], {})}


def _type(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": V2_0203, "code": code, "display": display}]}


def _type_code(concept: Any) -> str:
    if concept is None:
        return ""
    return next((c.code or "" for c in concept.coding or [] if c.code), "")


def _modality(resource: ServiceRequest) -> str:
    for extension in resource.extension or []:
        if extension.url == MODALITY_EXTENSION:
            return str(extension.valueCode or extension.valueString or "")
    for concept in [*(resource.category or []), *([resource.performerType] if resource.performerType else [])]:
        for coding in concept.coding or []:
            if coding.system == DCM_SYSTEM and coding.code:
                return str(coding.code)
    return ""


def _occurrence(value: Any) -> tuple[str, str]:
    if value is None:
        return "", ""
    if isinstance(value, datetime):
        local = value.astimezone() if value.tzinfo is not None else value
        return local.strftime("%Y%m%d"), local.strftime("%H%M%S")
    if isinstance(value, date):
        return value.strftime("%Y%m%d"), ""
    raise BusinessRule("ServiceRequest.occurrenceDateTime must be a full date or date and time")


def _instant(text: str) -> str:
    """An ISO timestamp as a FHIR instant: the index keeps UTC, SQLite without the offset."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _fhir_datetime(day: str, time: str) -> str:
    if len(day) != 8:
        return ""
    if len(time) < 4:
        return f"{day[:4]}-{day[4:6]}-{day[6:]}"
    seconds = time[4:6] or "00"
    local = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), int(time[:2]), int(time[2:4]), int(seconds))
    return local.astimezone().isoformat()
