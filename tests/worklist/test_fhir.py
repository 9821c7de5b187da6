"""FHIR R4 /fhir/ServiceRequest and /fhir/Patient against a running `minipacs serve`: create, read,
search, update, cancel through status, and an OperationOutcome for every bad request. Answers are
parsed back with fhir.resources' R4B models (the package's closest to R4)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest

from tests.dicom_scp.helpers import stop_and_check
from tests.worklist.web_helpers import Site, start_site

FHIR = "application/fhir+json"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
HIS = "http://benhvien.example/his/phieu-chi-dinh"
TODAY = datetime.now().astimezone()


def request_for(number: str, patient_id: str = "BN77001", **changes: Any) -> dict[str, Any]:
    """A ServiceRequest as a HIS would send it, the patient contained."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "contained": [{
            "resourceType": "Patient", "id": "bn",
            "identifier": [
                {"type": {"coding": [{"system": V2, "code": "MR"}]}, "system": "urn:minipacs:patient-id",
                 "value": patient_id},
                {"system": "urn:minipacs:id:cccd", "value": "079190001234"},
                {"system": "https://bhxh.example/bhyt", "value": "HC4790123456789"},
            ],
            "name": [{"family": "Lê", "given": ["Thị", "Hồng", "Đào"]}],
            "gender": "female", "birthDate": "1991-07-04",
        }],
        "identifier": [{"type": {"coding": [{"system": V2, "code": "PLAC"}]}, "system": HIS, "value": number}],
        "status": "active", "intent": "order", "priority": "stat",
        "code": {"coding": [{"system": "LOCAL", "code": "CT-SONAO", "display": "CT sọ não"}]},
        "subject": {"reference": "#bn"},
        "occurrenceDateTime": TODAY.replace(hour=9, minute=45, second=0, microsecond=0).isoformat(),
        "requester": {"display": "Phạm Minh Tuấn"},
        "reasonCode": [{"text": "Chấn thương đầu"}],
    }  # fmt: skip
    resource.update(changes)
    return resource


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = start_site(tmp_path_factory.mktemp("fhir") / "data")
    yield site
    stop_and_check(site.server)


def send(site: Site, method: str, path: str, body: Any = None, as_: str | None = "his-vn",
         content_type: str = FHIR, data: bytes | None = None) -> requests.Response:  # fmt: skip
    payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
    return site.call(method, f"/fhir/{path}", as_=as_, data=payload, headers={"Content-Type": content_type})


def outcome_of(answer: requests.Response, status: int, *words: str) -> OperationOutcome:
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    assert answer.headers["Content-Type"].startswith(FHIR)
    parsed = OperationOutcome.model_validate(answer.json())
    issue = parsed.issue[0]
    assert issue.severity == "error" and issue.code and issue.diagnostics
    for word in words:
        assert word in issue.diagnostics, issue.diagnostics
    assert "Traceback" not in answer.text
    return parsed


def test_create_read_and_resend(site: Site) -> None:
    answer = send(site, "POST", "ServiceRequest", request_for("CD-0001"))
    assert answer.status_code == 201, answer.text
    assert answer.headers["Content-Type"].startswith(FHIR)
    created = ServiceRequest.model_validate(answer.json())
    assert answer.headers["Location"].endswith(f"/fhir/ServiceRequest/{created.id}")
    assert created.status == "active" and created.priority == "stat" and created.intent == "order"
    kinds = {i.type.coding[0].code: i for i in created.identifier if i.type}
    assert kinds["PLAC"].value == "CD-0001" and kinds["PLAC"].system == HIS
    assert kinds["ACSN"].value == created.id
    assert created.code.coding[0].code == "CT-SONAO"
    assert created.occurrenceDateTime.strftime("%H%M") == "0945"
    assert created.requester.display == "Phạm Minh Tuấn"
    assert created.reasonCode[0].text == "Chấn thương đầu"

    read = send(site, "GET", f"ServiceRequest/{created.id}")
    assert read.status_code == 200 and ServiceRequest.model_validate(read.json()).id == created.id

    patient_ref = created.subject.reference
    assert patient_ref.startswith("Patient/")
    patient = Patient.model_validate(send(site, "GET", patient_ref).json())
    assert patient.name[0].family == "Lê" and patient.name[0].given == ["Thị", "Hồng", "Đào"]
    assert patient.gender == "female" and str(patient.birthDate) == "1991-07-04"
    systems = {i.system: i.value for i in patient.identifier}
    assert systems["urn:minipacs:patient-id"] == "BN77001"
    assert systems["urn:minipacs:id:cccd"] == "079190001234"
    assert systems["urn:minipacs:id:bhyt"] == "HC4790123456789"  # recognised by "bhyt" in its system

    again = send(site, "POST", "ServiceRequest", request_for("CD-0001"))
    assert again.status_code == 200 and again.json()["id"] == created.id
    conflict = send(site, "POST", "ServiceRequest", request_for("CD-0001", priority="routine"))
    outcome_of(conflict, 409, "CD-0001")


def test_search_service_requests(site: Site) -> None:
    first = send(site, "POST", "ServiceRequest", request_for("CD-S1", patient_id="BN-SEARCH")).json()
    second = send(site, "POST", "ServiceRequest", request_for("CD-S2", patient_id="BN-SEARCH")).json()
    send(site, "PUT", f"ServiceRequest/{second['id']}", {**request_for("CD-S2", patient_id="BN-SEARCH"),
                                                          "status": "revoked"})  # fmt: skip

    def ids(query: str) -> list[str]:
        answer = send(site, "GET", f"ServiceRequest?{query}")
        assert answer.status_code == 200, answer.text
        bundle = Bundle.model_validate(answer.json())
        assert bundle.type == "searchset"
        return [e.resource.id for e in bundle.entry or []]

    assert ids(f"identifier={HIS}|CD-S1") == [first["id"]]
    assert ids(f"identifier=urn:minipacs:accession|{second['id']}") == [second["id"]]
    assert ids(f"identifier={second['id']}") == [second["id"]]
    assert ids(f"identifier={HIS}|NO-SUCH") == []
    patient = first["subject"]["reference"]
    assert set(ids(f"patient={patient}")) == {first["id"], second["id"]}
    assert ids(f"patient={patient}&status=active") == [first["id"]]
    assert ids(f"patient={patient}&status=revoked") == [second["id"]]
    assert ids("patient.identifier=urn:minipacs:patient-id|BN-SEARCH&status=revoked") == [second["id"]]
    assert ids("patient=Patient/999999") == []
    assert ids(f"identifier={HIS}|CD-S1&status=revoked") == []
    outcome_of(send(site, "GET", "ServiceRequest?status=finished"), 400, "status")
    outcome_of(send(site, "GET", "ServiceRequest?colour=red"), 400, "colour")
    outcome_of(send(site, "GET", "ServiceRequest?_count=0"), 400, "_count")


def test_update_and_cancel(site: Site) -> None:
    created = send(site, "POST", "ServiceRequest", request_for("CD-UPD")).json()
    later = request_for("CD-UPD", occurrenceDateTime=TODAY.replace(hour=15, minute=0, second=0,
                                                                   microsecond=0).isoformat(), priority="routine")
    answer = send(site, "PUT", f"ServiceRequest/{created['id']}", later)
    assert answer.status_code == 200, answer.text
    updated = ServiceRequest.model_validate(answer.json())
    assert updated.occurrenceDateTime.strftime("%H%M") == "1500" and updated.priority == "routine"
    # Another order's number, or a new accession number, cannot be put on this one.
    outcome_of(send(site, "PUT", f"ServiceRequest/{created['id']}", request_for("CD-OTHER")), 422, "PLAC")
    with_acsn = request_for("CD-UPD")
    with_acsn["identifier"].append({"type": {"coding": [{"system": V2, "code": "ACSN"}]}, "value": "NEW-ACSN"})
    outcome_of(send(site, "PUT", f"ServiceRequest/{created['id']}", with_acsn), 422, "accession")
    outcome_of(send(site, "PUT", "ServiceRequest/NO-SUCH", request_for("CD-UPD")), 404, "NO-SUCH")
    outcome_of(send(site, "PUT", f"ServiceRequest/{created['id']}", {**later, "id": "ELSE"}), 400, "ELSE")
    outcome_of(send(site, "PUT", f"ServiceRequest/{created['id']}", {**later, "status": "on-hold"}), 422,
               "on-hold")  # fmt: skip

    cancelled = send(site, "PUT", f"ServiceRequest/{created['id']}", {**later, "status": "revoked"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "revoked"
    again = send(site, "PUT", f"ServiceRequest/{created['id']}", {**later, "status": "entered-in-error"})
    assert again.status_code == 200 and again.json()["status"] == "revoked"
    outcome_of(send(site, "PUT", f"ServiceRequest/{created['id']}", later), 409, "CANCELLED")
    outcome_of(send(site, "PUT", f"ServiceRequest/{created['id']}", request_for("CD-UPD")), 409, "active again")


def test_subject_by_reference_and_identifier(site: Site) -> None:
    first = send(site, "POST", "ServiceRequest", request_for("CD-REF1", patient_id="BN-REF")).json()
    by_reference = request_for("CD-REF2", subject={"reference": first["subject"]["reference"]})
    del by_reference["contained"]
    answer = send(site, "POST", "ServiceRequest", by_reference)
    assert answer.status_code == 201 and answer.json()["subject"] == first["subject"]
    by_identifier = request_for("CD-REF3", subject={"identifier": {"system": "urn:minipacs:id:cccd",
                                                                   "value": "079190001234"}})  # fmt: skip
    del by_identifier["contained"]
    # The CCCD is shared by every patient these tests made, so it names more than one: refused.
    outcome_of(send(site, "POST", "ServiceRequest", by_identifier), 422, "more than one")
    by_identifier["subject"] = {"identifier": {"system": "urn:minipacs:patient-id", "value": "BN-REF"}}
    assert send(site, "POST", "ServiceRequest", by_identifier).json()["subject"] == first["subject"]
    unknown = {**by_reference, "subject": {"reference": "Patient/987654"}}
    outcome_of(send(site, "POST", "ServiceRequest", unknown), 422, "Patient/987654")


def test_patient_search(site: Site) -> None:
    send(site, "POST", "ServiceRequest", request_for("CD-PAT", patient_id="BN-PAT"))

    def found(query: str) -> list[str]:
        answer = send(site, "GET", f"Patient?{query}")
        assert answer.status_code == 200, answer.text
        bundle = Bundle.model_validate(answer.json())
        return [p.resource.identifier[0].value for p in bundle.entry or []]

    assert "BN-PAT" in found("name=le%20dao")  # diacritics, case and word order ignored
    assert "BN-PAT" in found("name=L%C3%8A%20H%E1%BB%93")  # "LÊ Hồ": prefixes of the words
    assert "BN-PAT" not in found("name=nguyen")
    assert found("identifier=urn:minipacs:patient-id|BN-PAT") == ["BN-PAT"]
    assert "BN-PAT" in found("identifier=urn:minipacs:id:cccd|079190001234&birthdate=1991-07-04")
    assert found("identifier=BN-PAT&birthdate=1990-01-01") == []
    outcome_of(send(site, "GET", "Patient?birthdate=04/07/1991"), 400, "birthdate")
    outcome_of(send(site, "GET", "Patient"), 400, "identifier")
    outcome_of(send(site, "GET", "Patient/abc"), 404)
    outcome_of(send(site, "GET", "Patient/424242"), 404)


def _bad(change: dict[str, Any], drop: str = "") -> dict[str, Any]:
    resource = copy.deepcopy(request_for("CD-BAD"))
    resource.update(change)
    if drop:
        del resource[drop]
    return resource


@pytest.mark.parametrize(("body", "status", "words"), [
    (_bad({}, drop="subject"), 400, ("ServiceRequest.subject",)),
    (_bad({"resourceType": "Patient"}), 400, ("resourceType",)),
    (_bad({"occurrenceDateTime": "2026-13-45T10:00:00+07:00"}), 400, ("occurrenceDateTime",)),
    (_bad({"status": "pending"}), 400, ("status", "pending")),
    (_bad({"status": "draft"}), 422, ("active",)),
    (_bad({"priority": "soon"}), 400, ("priority", "soon")),
    (_bad({"identifier": []}), 422, ("PLAC",)),
    (_bad({"bogus": 1}), 400, ("bogus",)),
    (_bad({"subject": {"reference": "#nobody"}}), 400, ("#nobody",)),
    (_bad({"subject": {"reference": "Device/1"}}), 400, ("Patient",)),
    (_bad({"code": {"coding": [{"code": "KHONG-CO"}]}}), 400, ("modality",)),
    (_bad({"contained": [{"resourceType": "Patient", "id": "bn", "birthDate": "1991-07-04"}]}), 422, ("MR",)),
    (_bad({"contained": [{"resourceType": "Patient", "id": "bn", "gender": "nam",
                          "identifier": [{"value": "X"}]}]}), 400, ("gender",)),
    ([1, 2], 400, ("ServiceRequest",)),
], ids=lambda v: str(v)[:24])  # fmt: skip
def test_bad_resources_get_an_operation_outcome(site: Site, body: Any, status: int, words: tuple[str, ...]) -> None:
    outcome_of(send(site, "POST", "ServiceRequest", body), status, *words)
    assert send(site, "GET", "ServiceRequest?identifier=" + HIS + "|CD-BAD").json().get("entry") in (None, [])


def test_bad_requests_get_an_operation_outcome(site: Site) -> None:
    outcome_of(send(site, "POST", "ServiceRequest", data=b'{"resourceType": '), 400, "JSON")
    outcome_of(send(site, "POST", "ServiceRequest", request_for("CD-CT"), content_type="text/xml"), 415, "text/xml")
    huge = request_for("CD-HUGE", reasonCode=[{"text": "x" * (1 << 20)}])
    outcome_of(send(site, "POST", "ServiceRequest", huge), 413)
    outcome_of(send(site, "GET", "ServiceRequest/NO-SUCH"), 404, "NO-SUCH")
    outcome_of(send(site, "DELETE", "ServiceRequest/NO-SUCH"), 405, "DELETE")
    outcome_of(send(site, "GET", "Observation"), 404, "Observation")
    outcome_of(send(site, "POST", "Patient", {"resourceType": "Patient"}), 405)
    assert site.call("GET", "/healthz", as_=None).status_code == 200


def test_who_may_use_fhir(site: Site) -> None:
    outcome_of(send(site, "GET", "ServiceRequest", as_=None), 401)
    outcome_of(send(site, "POST", "ServiceRequest", request_for("CD-ROLE"), as_=None), 401)
    for who in ("referrer", "emr", "technologist"):
        outcome_of(send(site, "POST", "ServiceRequest", request_for("CD-ROLE"), as_=who), 403, "orders")
        outcome_of(send(site, "GET", "Patient?name=le", as_=who), 403)
    assert send(site, "POST", "ServiceRequest", request_for("CD-ROLE"), as_="admin").status_code == 201


def test_capability_statement(site: Site) -> None:
    answer = send(site, "GET", "metadata")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith(FHIR)
    statement = CapabilityStatement.model_validate(answer.json())
    resources = {r.type: r for r in statement.rest[0].resource}
    assert {i.code for i in resources["ServiceRequest"].interaction} == {"create", "read", "update", "search-type"}
    assert {p.name for p in resources["Patient"].searchParam} == {"identifier", "name", "birthdate"}
