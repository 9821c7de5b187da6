"""FHIR R4 DiagnosticReport and ImagingStudy for the EMR.

The mapping (viewer/fhir_reports.py) is checked on the factory's ReportViews;
the endpoints against a running `minipacs serve` holding the sample CT (two
series) and DX studies, and for DiagnosticReport, reports written and signed
(PAdES, the test CA) through the Reports service before the server starts.
Every answer is parsed back with fhir.resources' R4B models, as viewer/fhir.py
answers in them.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from pydicom import dcmread
from pydicom.uid import generate_uid

from archive import Archive, InvalidQuery, Origin
from archive.audit import search as audit_search
from archive.patients import PatientDemographics
from reports.types import ReportStatus
from tests.conftest import CT_FILES, DX_FILE, US_FILES
from tests.dicom_scp.helpers import stop_and_check, wait_for
from tests.reports.factory import CONCLUSION_VI, amended_view, report_view, signed_version
from tests.worklist.web_helpers import Site, start_site
from viewer.fhir_reports import date_range, diagnostic_report, imaging_study, token

FHIR = "application/fhir+json"
ACSN_SYSTEM = "urn:minipacs:accession"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
BASE = "http://pacs.benhvien.example:8080"
CT_STUDY = str(dcmread(CT_FILES[0], stop_before_pixels=True).StudyInstanceUID)
CT_ACCESSION = "CT2611200001"
DX_STUDY = str(dcmread(DX_FILE, stop_before_pixels=True).StudyInstanceUID)
DX_ACCESSION = "DX2611200002"
#: The second CT series: copies of the first three images under a new series.
EXTRA_SERIES = generate_uid(prefix="2.25.")


# --- the mapping, on the factory's views -------------------------------------------------


def test_final_report() -> None:
    resource = diagnostic_report(report_view(), BASE, patient_pk=12)
    report = DiagnosticReport.model_validate(resource)
    assert report.id == "7" and report.status == "final"
    acsn = report.identifier[0]
    assert (acsn.system, acsn.value, acsn.type.coding[0].code) == (ACSN_SYSTEM, "XQ2612050001", "ACSN")
    assert report.category[0].coding[0].code == "RAD"
    assert report.category[0].coding[0].system == "http://terminology.hl7.org/CodeSystem/v2-0074"
    codes = {(c.system, c.code) for c in report.code.coding}
    assert ("http://loinc.org", "18748-4") in codes and ("DVKT", "18.0001.0028") in codes
    assert report.code.text == "Chụp X-quang ngực thẳng"
    assert report.subject.reference == "Patient/12" and report.subject.display == "Nguyễn Văn An"
    assert report.subject.identifier.value == "BN0012345"
    assert report.subject.identifier.system == "urn:minipacs:issuer:BVHUYEN"
    assert report.basedOn[0].reference == "ServiceRequest/XQ2612050001"
    assert report.basedOn[0].identifier.value == "CD2612050007"
    assert report.imagingStudy[0].reference == "ImagingStudy/1.2.826.0.1.3680043.8.498.11111111111111111111111111111"
    assert report.effectiveDateTime.strftime("%Y%m%d%H%M%S") == "20261205085512"
    assert report.issued.isoformat() == "2026-12-05T02:15:30+00:00"
    for who in (report.performer[0], report.resultsInterpreter[0]):
        assert who.display == "BS. Trần Thị Lan" and who.type == "Practitioner"
        assert who.identifier.value == "003421/HCM-CCHN"
        assert who.identifier.system == "urn:minipacs:practising-certificate"
        assert who.identifier.type.coding[0].code == "MD"
    assert report.conclusion == CONCLUSION_VI
    form = report.presentedForm[0]
    assert form.contentType == "application/pdf" and form.data is None
    assert form.url == f"{BASE}/api/reports/XQ2612050001/pdf"
    assert form.title.startswith("Kết quả chẩn đoán hình ảnh") and form.creation == report.issued
    assert "Góc sườn hoành hai bên nhọn." in report.text.div and "Kết luận" in report.text.div


def test_amended_report_shows_the_amendment() -> None:
    report = DiagnosticReport.model_validate(diagnostic_report(amended_view(), BASE, patient_pk=12))
    assert report.status == "amended"
    assert report.conclusion == "Nốt mờ 6 mm thùy trên phổi phải, đề nghị chụp CT ngực."
    assert "Bổ sung: nốt mờ 6 mm" in report.text.div  # the reason is part of what the EMR shows


def test_unsigned_and_cancelled_reports_carry_no_result() -> None:
    draft = signed_version(status=ReportStatus.DRAFT, signature=None)
    resource = diagnostic_report(report_view(draft), BASE)
    report = DiagnosticReport.model_validate(resource)
    assert report.status == "registered"
    assert report.conclusion is None and report.presentedForm is None and report.text is None
    assert report.issued is None and report.performer is None
    assert report.subject.reference is None and report.subject.identifier.value == "BN0012345"

    preliminary = signed_version(status=ReportStatus.PRELIMINARY, signature=None)
    report = DiagnosticReport.model_validate(diagnostic_report(report_view(preliminary), BASE))
    assert report.status == "preliminary" and report.conclusion == CONCLUSION_VI
    assert report.presentedForm is None  # nothing is signed, so there is no PDF
    assert report.issued.isoformat() == preliminary.updated_at
    assert report.resultsInterpreter[0].display == "BS. Trần Thị Lan"
    assert report.resultsInterpreter[0].identifier is None

    cancelled = signed_version(status=ReportStatus.CANCELLED, signature=None, reason="Chỉ định nhầm")
    report = DiagnosticReport.model_validate(diagnostic_report(report_view(cancelled), BASE))
    assert report.status == "cancelled" and report.conclusion is None and report.text is None


def test_pdf_inline_when_asked_and_no_order() -> None:
    pdf = b"%PDF-1.7\n" + "Kết luận".encode() * 50
    view = report_view(placer_issuer="", placer_order_number="", procedure_code="", procedure_description="")
    report = DiagnosticReport.model_validate(diagnostic_report(view, BASE + "/", pdf=pdf))
    assert report.basedOn is None
    assert [c.code for c in report.code.coding] == ["18748-4"] and report.code.text == "X-quang ngực thẳng"
    form = report.presentedForm[0]  # the model decodes base64Binary
    assert form.data == pdf and form.size == len(pdf)
    assert form.hash == hashlib.sha1(pdf).digest()  # FHIR's Attachment.hash is SHA-1
    raw = diagnostic_report(view, BASE, pdf=pdf)["presentedForm"][0]
    assert base64.b64decode(raw["data"], validate=True) == pdf
    assert form.url == f"{BASE}/api/reports/XQ2612050001/pdf"


def test_english_report_and_html_in_the_text() -> None:
    version = signed_version(language="en", sections={"findings": "Nodule <6 mm> & effusion", "conclusion": "Normal"})
    report = DiagnosticReport.model_validate(diagnostic_report(report_view(replace(version)), BASE))
    assert "Nodule &lt;6 mm&gt; &amp; effusion" in report.text.div and "Findings" in report.text.div
    assert report.presentedForm[0].title.startswith("Radiology report") and report.language == "en"


def test_imaging_study_of_a_bare_study() -> None:
    """A study without accession number, patient row, order or Modality still maps to a valid ImagingStudy."""
    study = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00100010": {"vr": "PN"},
             "00201206": {"vr": "IS", "Value": [1]}, "00201208": {"vr": "IS", "Value": [2]}}
    series = [{"0020000E": {"vr": "UI", "Value": ["1.2.3.1"]}}]
    instances = [{"0020000E": {"vr": "UI", "Value": ["1.2.3.1"]}, "00080018": {"vr": "UI", "Value": [f"1.2.3.1.{n}"]},
                  "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]}} for n in (1, 2)]
    resource = imaging_study(study, series, instances, BASE)
    parsed = ImagingStudy.model_validate(resource)
    assert [i.system for i in parsed.identifier] == ["urn:dicom:uid"] and parsed.basedOn is None
    assert parsed.subject.reference is None and parsed.subject.display == "Không rõ / Unknown"
    assert parsed.series[0].modality.code == "OT" and parsed.series[0].numberOfInstances == 2
    assert [i.uid for i in parsed.series[0].instance] == ["1.2.3.1.1", "1.2.3.1.2"]
    assert parsed.started is None and parsed.modality is None


@pytest.mark.parametrize(("values", "expected"), [
    (["2026-12-05"], ("20261205", "20261205")),
    (["eq2026-12-05"], ("20261205", "20261205")),
    (["ge2026-12-01", "le2026-12-31"], ("20261201", "20261231")),
    (["gt2026-12-31"], ("20270101", "")),
    (["lt2026-03-01"], ("", "20260228")),
    (["2024-02"], ("20240201", "20240229")),
    (["2026"], ("20260101", "20261231")),
    (["ge2026", "lt2026-06"], ("20260101", "20260531")),
    ([], ("", "")),
])  # fmt: skip
def test_date_range(values: list[str], expected: tuple[str, str]) -> None:
    assert date_range(values, "date") == expected


@pytest.mark.parametrize("value", ["2026-13-01", "2026-02-30", "20261205", "ne2026-12-05", "sa2026",
                                   "2026-12-05T08:00:00+07:00", "ge", "hôm nay"])  # fmt: skip
def test_date_range_refuses(value: str) -> None:
    with pytest.raises(InvalidQuery, match="date="):
        date_range([value], "date")


def test_token() -> None:
    assert token("urn:minipacs:accession|CT1", "identifier") == ("urn:minipacs:accession", "CT1")
    assert token("CT1", "identifier") == ("", "CT1")
    assert token("|CT1", "identifier") == ("", "CT1")
    for bad in ("urn:minipacs:accession|", "CT*", "CT?1", "a|b|c", "x" * 65, "CT\\1", "CT\x001"):
        with pytest.raises(InvalidQuery, match="identifier="):
            token(bad, "identifier")


# --- the endpoints, against minipacs serve -------------------------------------------------


def _store_samples(data: Path) -> None:
    """The sample CT (one series of 20 images, plus three copied into a second series) and the DX."""
    data.mkdir(parents=True, exist_ok=True)
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    origin = Origin("IMPORT", "", "IMPORT")
    try:
        for path in [*CT_FILES, DX_FILE]:
            with open(path, "rb") as f:
                archive.ingest(f, origin)
        for path in CT_FILES[:3]:
            ds = dcmread(path)
            ds.SeriesInstanceUID, ds.SeriesNumber = EXTRA_SERIES, 3
            ds.SeriesDescription = "Sọ não 1mm cửa sổ xương"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            buffer.seek(0)
            archive.ingest(buffer, origin)
    finally:
        archive.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("fhir-results") / "data"
    _store_samples(data)
    site = start_site(data)
    yield site
    stop_and_check(site.server)


def get(site: Site, path: str, as_: str | None = "emr") -> requests.Response:
    return site.call("GET", f"/fhir/{path}", as_=as_)


def outcome_of(answer: requests.Response, status: int, *words: str) -> OperationOutcome:
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    assert answer.headers["Content-Type"].startswith(FHIR)
    parsed = OperationOutcome.model_validate(answer.json())
    assert parsed.issue[0].diagnostics and "Traceback" not in answer.text
    for word in words:
        assert word in parsed.issue[0].diagnostics, parsed.issue[0].diagnostics
    return parsed


def search(site: Site, query: str, as_: str = "emr") -> Bundle:
    answer = get(site, query, as_)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(FHIR)
    bundle = Bundle.model_validate(answer.json())
    assert bundle.type == "searchset" and bundle.total is not None
    for entry in bundle.entry or []:
        assert entry.fullUrl.endswith(f"/fhir/{entry.resource.get_resource_type()}/{entry.resource.id}")
    return bundle


def study_ids(site: Site, query: str, as_: str = "emr") -> list[str]:
    bundle = search(site, f"ImagingStudy?{query}", as_)
    found = [ImagingStudy.model_validate(e.resource.model_dump()).id for e in bundle.entry or []]
    assert bundle.total == len(found)
    return found


def test_imaging_study_read(site: Site) -> None:
    answer = get(site, f"ImagingStudy/{CT_STUDY}")
    assert answer.status_code == 200, answer.text
    study = ImagingStudy.model_validate(answer.json())
    assert study.id == CT_STUDY and study.status == "available"
    identifiers = {i.system: i for i in study.identifier}
    assert identifiers["urn:dicom:uid"].value == f"urn:oid:{CT_STUDY}"
    assert identifiers[ACSN_SYSTEM].value == CT_ACCESSION and identifiers[ACSN_SYSTEM].type.coding[0].code == "ACSN"
    assert [(m.system, m.code) for m in study.modality] == [("http://dicom.nema.org/resources/ontology/DCM", "CT")]
    assert study.numberOfSeries == 2 and study.numberOfInstances == 23
    assert study.subject.reference.startswith("Patient/") and study.subject.display == "Nguyễn Văn An"
    assert study.subject.identifier.value == "BN26001001"
    assert study.started.strftime("%Y%m%d%H%M") == "202611200815"
    assert study.description == "CT sọ não không tiêm thuốc" and study.referrer.display == "Phạm Minh Tuấn"
    assert study.basedOn is None  # no order in the worklist for this accession

    series = {s.uid: s for s in study.series}
    first = str(dcmread(CT_FILES[0], stop_before_pixels=True).SeriesInstanceUID)
    assert set(series) == {first, EXTRA_SERIES}
    assert series[first].numberOfInstances == 20 and len(series[first].instance) == 20
    assert series[first].number == 2 and series[first].modality.code == "CT"
    assert series[first].description == "Sọ não 5mm H30s"
    assert series[EXTRA_SERIES].numberOfInstances == 3 and series[EXTRA_SERIES].number == 3
    stored = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in CT_FILES}
    assert {i.uid for i in series[first].instance} == stored
    assert sorted(i.number for i in series[first].instance) == list(range(1, 21))
    assert {(i.sopClass.system, i.sopClass.code) for s in study.series for i in s.instance} == {
        ("urn:ietf:rfc:3986", "urn:oid:1.2.840.10008.5.1.4.1.1.2")}

    # The endpoint is our DICOMweb: {address}/studies/{uid} answers with the study.
    assert study.endpoint[0].reference == "#dicomweb"
    endpoint = Endpoint.model_validate(study.contained[0].model_dump())
    assert endpoint.connectionType.code == "dicom-wado-rs" and endpoint.status == "active"
    assert endpoint.address == f"{site.url}/dicomweb"
    metadata = site.call("GET", f"/dicomweb/studies/{CT_STUDY}/metadata", as_="emr")
    assert metadata.status_code == 200 and len(metadata.json()) == 23


def test_imaging_study_search(site: Site) -> None:
    assert study_ids(site, f"identifier={CT_ACCESSION}") == [CT_STUDY]
    assert study_ids(site, f"identifier={ACSN_SYSTEM}|{CT_ACCESSION}") == [CT_STUDY]
    assert study_ids(site, f"identifier=urn:dicom:uid|urn:oid:{DX_STUDY}") == [DX_STUDY]
    assert study_ids(site, f"identifier=urn:oid:{DX_STUDY}") == [DX_STUDY]
    assert study_ids(site, f"identifier=http://other.example/acc|{CT_ACCESSION}") == []
    assert study_ids(site, "identifier=CT0000000000") == []
    assert set(study_ids(site, "")) == {CT_STUDY, DX_STUDY}

    ct = ImagingStudy.model_validate(get(site, f"ImagingStudy/{CT_STUDY}").json())
    patient = ct.subject.reference
    assert study_ids(site, f"patient={patient}") == [CT_STUDY]
    assert study_ids(site, f"patient={site.url}/fhir/{patient}") == [CT_STUDY]
    assert study_ids(site, "patient=Patient/999999") == []
    assert study_ids(site, "patient.identifier=urn:minipacs:issuer:BVDKCG|BN26001001") == [CT_STUDY]
    assert study_ids(site, "patient.identifier=BN26001002") == [DX_STUDY]
    assert study_ids(site, "patient.identifier=urn:minipacs:issuer:OTHER|BN26001001") == []
    assert study_ids(site, "patient=nobody") == []

    assert set(study_ids(site, "started=2026-11-20")) == {CT_STUDY, DX_STUDY}
    assert set(study_ids(site, "started=ge2026-11-01&started=le2026-11-30")) == {CT_STUDY, DX_STUDY}
    assert study_ids(site, "started=gt2026-11-20") == []
    assert study_ids(site, "started=2026-11-20&started=lt2026-11-20") == []
    assert study_ids(site, f"started=2026-11&patient={patient}&identifier={CT_ACCESSION}") == [CT_STUDY]

    page = search(site, "ImagingStudy?_count=1")
    assert page.total == 2 and len(page.entry) == 1


def test_imaging_study_errors(site: Site) -> None:
    outcome_of(get(site, "ImagingStudy/2.25.1234"), 404, "2.25.1234")
    outcome_of(get(site, "ImagingStudy/not-a-uid"), 404)
    outcome_of(get(site, "ImagingStudy?modality=CT"), 400, "modality")
    outcome_of(get(site, "ImagingStudy?started=2026-02-30"), 400, "started")
    outcome_of(get(site, "ImagingStudy?started=tomorrow"), 400, "started")
    outcome_of(get(site, "ImagingStudy?identifier=CT*"), 400, "identifier")
    outcome_of(get(site, "ImagingStudy?identifier=urn:dicom:uid|urn:oid:1..2"), 400, "identifier")
    outcome_of(get(site, "ImagingStudy?_count=100000"), 400, "_count")
    outcome_of(get(site, f"ImagingStudy?patient=Patient/1&patient=Patient/2"), 400, "once")
    outcome_of(site.call("DELETE", f"/fhir/ImagingStudy/{CT_STUDY}", as_="admin"), 405)
    assert get(site, f"ImagingStudy/{CT_STUDY}").status_code == 200  # still there, server still up


def test_who_may_read_results(site: Site) -> None:
    for who in ("emr", "referrer", "technologist", "radiologist", "admin"):
        assert get(site, f"ImagingStudy/{CT_STUDY}", as_=who).status_code == 200, who
        assert get(site, "DiagnosticReport?identifier=XQ0", as_=who).status_code in (200, 503), who
    for path in (f"ImagingStudy/{CT_STUDY}", "ImagingStudy", "DiagnosticReport", "DiagnosticReport/1"):
        outcome_of(get(site, path, as_="his-vn"), 403, "results")
        outcome_of(get(site, path, as_=None), 401)
    # The HIS's doors stay closed to the EMR, and open to the HIS.
    outcome_of(get(site, "Patient?name=nguyen", as_="emr"), 403, "orders")
    outcome_of(site.call("POST", "/fhir/ServiceRequest", as_="emr", data=b"{}",
                         headers={"Content-Type": FHIR}), 403, "orders")  # fmt: skip
    assert get(site, "ServiceRequest", as_="his-vn").status_code == 200
    outcome_of(get(site, "Observation", as_="emr"), 404, "DiagnosticReport")
    statement = CapabilityStatement.model_validate(get(site, "metadata", as_="emr").json())
    kinds = {r.type: r for r in statement.rest[0].resource}
    assert {p.name for p in kinds["DiagnosticReport"].searchParam} == {"identifier", "patient", "patient.identifier",
                                                                       "date"}
    assert {p.name for p in kinds["ImagingStudy"].searchParam} == {"identifier", "patient", "patient.identifier",
                                                                   "started"}


def test_reads_are_audited(site: Site) -> None:
    get(site, f"ImagingStudy/{DX_STUDY}")
    get(site, f"ImagingStudy?identifier={CT_ACCESSION}", as_="referrer")
    get(site, f"ImagingStudy/{DX_STUDY}", as_="his-vn")  # refused: audited too
    archive = site.archive()
    try:
        archive.audit.flush()

        def events() -> set[tuple[str, str, str, str]]:
            return {(r.actor, r.action, r.uid, r.outcome) for r in audit_search(archive.db, limit=1000)
                    if r.action.startswith("STUDY_")}  # fmt: skip

        wait_for(lambda: ("his-vn", "STUDY_READ", DX_STUDY, "refused 403") in events(), what="the refusal audited")
        assert ("emr", "STUDY_READ", DX_STUDY, "ok") in events()
        assert ("referrer", "STUDY_SEARCH", CT_STUDY, "ok") in events()
        # The administrator's "who looked at this patient" finds the FHIR reads too.
        mine = {(r.actor, r.action) for r in audit_search(archive.db, patient="BN26001001", limit=1000)}
        assert ("referrer", "STUDY_SEARCH") in mine
    finally:
        archive.close()


# --- DiagnosticReport, against minipacs serve, reports written through the service ------------

RADIOLOGIST = "bs.lan"
CERTIFICATE = "003421/HCM-CCHN"
FIRST_CONCLUSION = "Không thấy hình ảnh chảy máu nội sọ."
AMENDED_CONCLUSION = "Máu tụ dưới màng cứng mỏng vùng thái dương trái, dày 3 mm."
US_STUDY = str(dcmread(US_FILES[0], stop_before_pixels=True).StudyInstanceUID)
US_ACCESSION = "US2611210003"
US_CONCLUSION = "Gan nhiễm mỡ độ I."


@dataclass
class ReportSite:
    site: Site
    ct_report: str
    dx_report: str
    us_report: str


def _write_reports(data: Path) -> tuple[int, int, int]:
    """An order for the CT before its images; the CT report signed, then amended; the DX report a draft;
    the US report signed, its amendment a draft."""
    from reports.identities import SigningIdentities
    from reports.service import Reports
    from reports.signoff import PadesSigner
    from reports.types import Hospital, ReportDraft
    from tests.reports.ca import PASSPHRASE, radiologist
    from tests.worklist.helpers import HIS, order
    from tests.worklist.web_helpers import ADMIN, PASSWORD
    from worklist.service import Worklist

    data.mkdir(parents=True, exist_ok=True)
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        worklist = Worklist(archive)
        worklist.reconcile_ingest()
        patient = PatientDemographics("BN26001001", issuer="BVDKCG", name="Nguyễn^Văn An", birth_date="19680315",
                                      sex="M")  # fmt: skip
        worklist.create(replace(order("CD-FHIR-1", CT_ACCESSION, study_instance_uid=CT_STUDY), patient=patient), HIS)
        archive.close()
        _store_samples(data)
        archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
        accounts = archive.accounts
        accounts.add_user(RADIOLOGIST, "radiologist", PASSWORD, ADMIN, display_name="BS. Trần Thị Lan")
        accounts.set_practising_certificate(RADIOLOGIST, CERTIFICATE, ADMIN)
        identities = SigningIdentities(archive.db, archive.audit)
        identities.install(RADIOLOGIST, radiologist().pkcs12, radiologist().passphrase, ADMIN)
        reports = Reports(archive, signer=PadesSigner(identities, Hospital(name="Bệnh viện Đa khoa huyện")))
        view = reports.create(CT_STUDY, ReportDraft(template_id="ct-so-nao-vi"), RADIOLOGIST)
        view = reports.update(CT_ACCESSION, ReportDraft(sections={"conclusion": FIRST_CONCLUSION}), RADIOLOGIST,
                              view.revision)  # fmt: skip
        view = reports.sign(CT_ACCESSION, RADIOLOGIST, PASSPHRASE, view.revision)
        view = reports.amend(CT_ACCESSION, RADIOLOGIST, "Đọc lại cửa sổ xương", view.revision)
        view = reports.update(CT_ACCESSION, ReportDraft(sections={"conclusion": AMENDED_CONCLUSION}), RADIOLOGIST,
                              view.revision)  # fmt: skip
        ct = reports.sign(CT_ACCESSION, RADIOLOGIST, PASSPHRASE, view.revision)
        assert ct.status is ReportStatus.AMENDED and len(ct.versions) == 2
        dx = reports.create(DX_STUDY, ReportDraft(template_id="xq-nguc-thang-vi"), RADIOLOGIST)
        # The US report: signed, and an amendment being written (not issued yet).
        with open(US_FILES[0], "rb") as f:
            archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
        view = reports.create(US_STUDY, ReportDraft(sections={"conclusion": US_CONCLUSION}), RADIOLOGIST)
        view = reports.sign(US_ACCESSION, RADIOLOGIST, PASSPHRASE, view.revision)
        view = reports.amend(US_ACCESSION, RADIOLOGIST, "Bổ sung kích thước gan", view.revision)
        view = reports.update(US_ACCESSION, ReportDraft(sections={"conclusion": "Chưa ký"}), RADIOLOGIST,
                              view.revision)  # fmt: skip
        assert view.version.status is ReportStatus.DRAFT and view.version.number == 2
        return ct.id, dx.id, view.id
    finally:
        archive.close()


@pytest.fixture(scope="module")
def reports_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportSite]:
    data = tmp_path_factory.mktemp("fhir-reports") / "data"
    ct_id, dx_id, us_id = _write_reports(data)
    site = start_site(data)
    yield ReportSite(site, str(ct_id), str(dx_id), str(us_id))
    stop_and_check(site.server)


def report_entries(site: Site, query: str, as_: str = "emr") -> list[DiagnosticReport]:
    bundle = search(site, f"DiagnosticReport?{query}", as_)
    found = [DiagnosticReport.model_validate(e.resource.model_dump()) for e in bundle.entry or []]
    assert bundle.total == len(found)
    return found


def test_diagnostic_report_read(reports_site: ReportSite) -> None:
    site = reports_site.site
    answer = get(site, f"DiagnosticReport/{reports_site.ct_report}")
    assert answer.status_code == 200, answer.text
    report = DiagnosticReport.model_validate(answer.json())
    assert report.id == reports_site.ct_report and report.status == "amended"
    assert report.identifier[0].system == ACSN_SYSTEM and report.identifier[0].value == CT_ACCESSION
    assert report.conclusion == AMENDED_CONCLUSION and "Đọc lại cửa sổ xương" in report.text.div
    assert report.resultsInterpreter[0].display == "BS. Trần Thị Lan"
    assert report.resultsInterpreter[0].identifier.value == CERTIFICATE
    assert report.issued is not None and report.presentedForm[0].creation == report.issued
    assert report.effectiveDateTime.strftime("%Y%m%d%H%M") == "202611200815"
    assert report.code.coding[0].code == "18748-4" and report.category[0].coding[0].code == "RAD"

    # Every reference resolves to what this server holds.
    assert report.basedOn[0].reference == f"ServiceRequest/{CT_ACCESSION}"
    order = site.call("GET", f"/fhir/{report.basedOn[0].reference}", as_="his-vn")
    assert order.status_code == 200 and order.json()["id"] == CT_ACCESSION
    assert report.imagingStudy[0].reference == f"ImagingStudy/{CT_STUDY}"
    study = ImagingStudy.model_validate(get(site, report.imagingStudy[0].reference).json())
    assert study.numberOfInstances == 23 and study.subject.reference == report.subject.reference
    assert study.basedOn[0].reference == f"ServiceRequest/{CT_ACCESSION}"
    patient = site.call("GET", f"/fhir/{report.subject.reference}", as_="his-vn").json()
    assert patient["identifier"][0]["value"] == "BN26001001" == report.subject.identifier.value
    pdf = site.call("GET", report.presentedForm[0].url.removeprefix(site.url), as_="emr")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    outcome_of(get(site, "DiagnosticReport/999999"), 404, "999999")
    outcome_of(get(site, "DiagnosticReport/abc"), 404, "abc")


def test_diagnostic_report_search(reports_site: ReportSite) -> None:
    site, ct = reports_site.site, reports_site.ct_report
    assert [r.id for r in report_entries(site, f"identifier={CT_ACCESSION}")] == [ct]
    assert [r.id for r in report_entries(site, f"identifier={ACSN_SYSTEM}|{CT_ACCESSION}")] == [ct]
    assert report_entries(site, f"identifier=http://his.example/acc|{CT_ACCESSION}") == []
    assert report_entries(site, "identifier=CT0000000000") == []
    subject = report_entries(site, f"identifier={CT_ACCESSION}")[0].subject.reference
    assert [r.id for r in report_entries(site, f"patient={subject}")] == [ct]
    assert report_entries(site, "patient=Patient/999999") == []
    assert [r.id for r in report_entries(site, "patient.identifier=urn:minipacs:issuer:BVDKCG|BN26001001")] == [ct]
    assert [r.id for r in report_entries(site, "date=2026-11-20")] == [ct]
    assert {r.id for r in report_entries(site, "date=ge2026-11-01&date=le2026-11-30")} == {ct, reports_site.us_report}
    assert [r.id for r in report_entries(site, f"date=eq2026-11&patient={subject}&identifier={CT_ACCESSION}")] == [ct]
    assert [r.id for r in report_entries(site, "date=gt2026-11-20")] == [reports_site.us_report]
    assert report_entries(site, "date=lt2026-11-20") == []
    assert [r.id for r in report_entries(site, "date=&identifier=" + CT_ACCESSION)] == [ct]  # empty: not given
    assert report_entries(site, "date=ge2026-11-21&date=le2026-11-19") == []


def test_referrer_and_emr_see_signed_reports_only(reports_site: ReportSite) -> None:
    site, ct, dx = reports_site.site, reports_site.ct_report, reports_site.dx_report
    for who in ("emr", "referrer"):
        assert {r.id for r in report_entries(site, "", who)} == {ct, reports_site.us_report}, who
        assert report_entries(site, f"identifier={DX_ACCESSION}", who) == []
        outcome_of(get(site, f"DiagnosticReport/{dx}", who), 404, dx)
    for who in ("radiologist", "technologist", "admin"):
        assert {r.id for r in report_entries(site, "", who)} == {ct, dx, reports_site.us_report}, who
        draft = DiagnosticReport.model_validate(get(site, f"DiagnosticReport/{dx}", who).json())
        assert draft.status == "registered" and draft.conclusion is None and draft.presentedForm is None
        assert draft.basedOn is None  # the DX study has no order here
    # An amendment being written is not issued: everyone sees the signed version, final.
    for who in ("emr", "referrer", "radiologist"):
        issued = DiagnosticReport.model_validate(get(site, f"DiagnosticReport/{reports_site.us_report}", who).json())
        assert issued.status == "final" and issued.conclusion == US_CONCLUSION, who
        assert issued.presentedForm[0].url.endswith(f"/api/reports/{US_ACCESSION}/pdf")
    outcome_of(get(site, f"DiagnosticReport/{ct}", as_="his-vn"), 403, "results")
    outcome_of(get(site, "DiagnosticReport", as_="his-vn"), 403, "results")
    outcome_of(get(site, "DiagnosticReport", as_=None), 401)


def test_diagnostic_report_bad_requests(reports_site: ReportSite) -> None:
    site = reports_site.site
    outcome_of(get(site, "DiagnosticReport?date=2026-02-30"), 400, "date")
    outcome_of(get(site, "DiagnosticReport?date=ne2026-11-20"), 400, "date")
    outcome_of(get(site, "DiagnosticReport?date=2026-11-20T08:00:00Z"), 400, "date")
    outcome_of(get(site, "DiagnosticReport?identifier=CT%2A"), 400, "identifier")
    outcome_of(get(site, f"DiagnosticReport?identifier={ACSN_SYSTEM}%7C"), 400, "identifier")
    outcome_of(get(site, "DiagnosticReport?status=final"), 400, "status")
    outcome_of(get(site, "DiagnosticReport?_count=0"), 400, "_count")
    outcome_of(get(site, f"DiagnosticReport?identifier={CT_ACCESSION}&identifier={DX_ACCESSION}"), 400, "once")
    outcome_of(get(site, f"DiagnosticReport?identifier={CT_ACCESSION},{DX_ACCESSION}"), 400, "commas")
    outcome_of(site.call("POST", "/fhir/DiagnosticReport", as_="admin", data=b"{}",
                         headers={"Content-Type": FHIR}), 405)  # fmt: skip
    assert get(site, f"DiagnosticReport/{reports_site.ct_report}").status_code == 200  # still up
