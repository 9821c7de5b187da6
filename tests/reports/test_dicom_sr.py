"""The signed report as a DICOM Comprehensive SR (TID 2000): checked by dciodvfy and dsrdump, read back with pydicom."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian

from archive import Archive, query_from_identifier
from archive.ingest import StoreStatus
from archive.part10 import IMPLEMENTATION_CLASS_UID
from archive.patients import PatientDemographics
from reports.dicom_sr import (
    build_encapsulated_pdf,
    build_sr,
    extract_pdf,
    pdf_uids,
    sr_uids,
    store_report_objects,
    to_part10,
)
from reports.types import ReportStatus, SECTIONS
from tests.archive.helpers import identifier, ingest_ds, make_dataset
from tests.reports.dicom_checks import HOSPITAL, KNOWN_WARNINGS, dciodvfy, small_pdf, write
from tests.reports.factory import CONCLUSION_VI, FINDINGS_VI, amended_view, report_view, signed_version

#: TID 2000 section headings (CID 7001) each report section goes under.
HEADINGS = {
    "clinical_information": ("55752-0", "Clinical Information"),
    "technique": ("55111-9", "Current Procedure Descriptions"),
    "findings": ("59776-5", "Findings"),
    "conclusion": ("19005-8", "Impressions"),
    "recommendation": ("18783-1", "Recommendations"),
}


def reread(ds: Dataset) -> Dataset:
    return dcmread(io.BytesIO(to_part10(ds)))


def code(item: Dataset) -> tuple[str, str]:
    concept = item.ConceptNameCodeSequence[0]
    return concept.CodeValue, concept.CodeMeaning


def sections(sr: Dataset) -> dict[str, str]:
    """Section heading code -> the text of its TEXT item, from the content tree as read back."""
    found = {}
    for item in sr.ContentSequence:
        if item.ValueType == "CONTAINER":
            (text,) = item.ContentSequence
            assert text.ValueType == "TEXT" and text.RelationshipType == "CONTAINS"
            found[code(item)[0]] = text.TextValue
    return found


@pytest.mark.parametrize("view", [report_view(), amended_view()], ids=["final", "amended"])
def test_dciodvfy_finds_no_errors(view: Any, tmp_path: Path) -> None:
    verdict = dciodvfy(write(build_sr(view, HOSPITAL), tmp_path / "sr.dcm"))
    assert verdict.returncode == 0, verdict.output
    assert verdict.errors == [], verdict.output
    assert "ComprehensiveSR" in verdict.output
    assert set(verdict.warnings) <= KNOWN_WARNINGS, verdict.output


def test_without_a_local_procedure_code_dciodvfy_has_no_warnings(tmp_path: Path) -> None:
    view = report_view(procedure_code="", procedure_scheme="")
    verdict = dciodvfy(write(build_sr(view, HOSPITAL), tmp_path / "sr.dcm"))
    assert (verdict.returncode, verdict.errors, verdict.warnings) == (0, [], []), verdict.output


def test_dsrdump_prints_the_tree(tmp_path: Path) -> None:
    path = write(build_sr(amended_view(), HOSPITAL), tmp_path / "sr.dcm")
    assert shutil.which("dsrdump"), "dsrdump is not installed (dcmtk)"
    done = subprocess.run(["dsrdump", "+Pl", "+Pt", "+Pc", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # dcmtk 3.6.7's value checker cannot check UTF-8 text; it says so once and reads on.
    dcmtk_note = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"
    assert set(done.stderr.splitlines()) <= {dcmtk_note}
    out = done.stdout
    assert "Comprehensive SR Document" in out
    assert "Completion Flag     : COMPLETE" in out
    assert "Verification Flag   : VERIFIED" in out
    assert "Predecessor Docs    : 1" in out
    assert "2026-12-05 09:15:30 +07:00, BS. Trần Thị Lan^, Bệnh viện Đa khoa Huyện" in out
    assert '<CONTAINER:(18748-4,LN,"Diagnostic Imaging Report")=SEPARATE' in out
    assert "TID 2000 (DCMR)" in out
    assert '=(vi,RFC5646,"Vietnamese")' in out
    assert '<has obs context PNAME:(121008,DCM,"Person Observer Name")="BS. Trần Thị Lan^">' in out
    assert '<contains CONTAINER:(19005-8,LN,"Impressions")=SEPARATE>' in out
    assert '"Nốt mờ 6 mm thùy trên phổi phải, đề nghị chụp CT ngực."' in out


def test_vietnamese_text_round_trips_exactly() -> None:
    view = report_view()
    sr = reread(build_sr(view, HOSPITAL))
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    texts = sections(sr)
    assert texts["59776-5"] == FINDINGS_VI  # the line break included
    assert texts["19005-8"] == CONCLUSION_VI
    assert texts["55752-0"] == view.version.section("clinical_information")
    assert texts["55111-9"] == view.version.section("technique")
    assert "18783-1" not in texts  # an empty recommendation has no section
    assert str(sr.PatientName) == "Nguyễn^Văn An"
    assert str(sr.ReferringPhysicianName) == "Lê^Minh Tuấn"
    assert sr.SeriesDescription == "Kết quả chẩn đoán / Report"
    assert sr.InstitutionName == "Bệnh viện Đa khoa Huyện"


def test_every_section_in_print_order_with_its_cid_7001_heading() -> None:
    text = {name: f"{name}: Đ đ ư ơ — văn bản " + "x" * (name == "findings") * 3000 for name in SECTIONS}
    view = report_view(signed_version(sections=text))
    sr = reread(build_sr(view, HOSPITAL))
    containers = [item for item in sr.ContentSequence if item.ValueType == "CONTAINER"]
    assert [code(item) for item in containers] == [HEADINGS[name] for name in SECTIONS]
    assert sections(sr) == {HEADINGS[name][0]: text[name].rstrip(" ") for name in SECTIONS}


def test_document_header() -> None:
    view = report_view()
    sr = reread(build_sr(view, HOSPITAL))
    assert sr.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert sr.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert (sr.SOPClassUID, sr.Modality, sr.Manufacturer) == (ComprehensiveSRStorage, "SR", "minipacs")
    assert (sr.PatientID, sr.IssuerOfPatientID, sr.PatientBirthDate, sr.PatientSex) == (
        "BN0012345", "BVHUYEN", "19800315", "M")
    assert [(o.PatientID, o.IssuerOfPatientID) for o in sr.OtherPatientIDsSequence] == [
        ("079080012345", "CCCD"), ("DN4797912345678", "BHYT")]
    assert (sr.StudyInstanceUID, sr.AccessionNumber, sr.StudyDate, sr.StudyTime) == (
        view.study_instance_uid, "XQ2612050001", "20261205", "085512")
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
    # Signed 02:15:30 UTC: 09:15:30 in Hà Nội / Hồ Chí Minh.
    assert (sr.ContentDate, sr.ContentTime, sr.TimezoneOffsetFromUTC) == ("20261205", "091530", "+0700")
    (observer,) = sr.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == "BS. Trần Thị Lan^"
    assert observer.VerifyingOrganization == "Bệnh viện Đa khoa Huyện"
    assert observer.VerificationDateTime == "20261205091530+0700"
    (request,) = sr.ReferencedRequestSequence
    assert (request.StudyInstanceUID, request.AccessionNumber, request.RequestedProcedureID) == (
        view.study_instance_uid, "XQ2612050001", "XQ2612050001")
    assert (request.PlacerOrderNumberImagingServiceRequest, request.FillerOrderNumberImagingServiceRequest) == (
        "CD2612050007", "XQ2612050001")
    procedure = request.RequestedProcedureCodeSequence[0]
    assert (procedure.CodeValue, procedure.CodingSchemeDesignator) == ("18.0001.0028", "DVKT")
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "DVKT"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert sr.ContentTemplateSequence[0].MappingResource == "DCMR"
    assert code(sr) == ("18748-4", "Diagnostic Imaging Report")
    assert "PredecessorDocumentsSequence" not in sr
    assert "CurrentRequestedProcedureEvidenceSequence" not in sr  # no images given: none invented


def test_observer_and_language_context() -> None:
    sr = reread(build_sr(report_view(), HOSPITAL))
    items = {code(item)[1]: item for item in sr.ContentSequence if item.ValueType != "CONTAINER"}
    language = items["Language of Content Item and Descendants"]
    assert (language.RelationshipType, language.ConceptCodeSequence[0].CodeValue) == ("HAS CONCEPT MOD", "vi")
    assert items["Observer Type"].ConceptCodeSequence[0].CodeMeaning == "Person"
    assert str(items["Person Observer Name"].PersonName) == "BS. Trần Thị Lan^"
    assert items["Person Observer's Organization Name"].TextValue == "Bệnh viện Đa khoa Huyện"
    assert items["Procedure reported"].ConceptCodeSequence[0].CodeValue == "18.0001.0028"
    english = reread(build_sr(report_view(signed_version(language="en")), HOSPITAL))
    assert english.ContentSequence[0].ConceptCodeSequence[0].CodeValue == "en"


def test_amendment_references_its_predecessor() -> None:
    view = amended_view()
    sr = reread(build_sr(view, HOSPITAL))
    assert sr.InstanceNumber == 2
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
    (study,) = sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == view.study_instance_uid
    (series,) = study.ReferencedSeriesSequence
    (instance,) = series.ReferencedSOPSequence
    first_series, first_sop = sr_uids(view.at_version(1))
    assert (series.SeriesInstanceUID, instance.ReferencedSOPInstanceUID) == (first_series, first_sop)
    assert instance.ReferencedSOPClassUID == ComprehensiveSRStorage
    assert sections(sr)["19005-8"] == "Nốt mờ 6 mm thùy trên phổi phải, đề nghị chụp CT ngực."
    # The first version, built on its own, is exactly the object referenced.
    first = build_sr(view.at_version(1), HOSPITAL)
    assert first.SOPInstanceUID == first_sop and "PredecessorDocumentsSequence" not in first


def test_a_stored_sr_uid_is_what_the_amendment_references() -> None:
    view = amended_view()
    first = replace(view.versions[0], sr_sop_instance_uid="1.2.3.4.5")
    view = replace(view, versions=(first, view.version))
    sr = build_sr(view, HOSPITAL)
    assert sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == "1.2.3.4.5"  # fmt: skip


def test_uids_are_stable_and_differ_between_versions_and_kinds() -> None:
    view = amended_view()
    first, second = view.at_version(1), view
    assert to_part10(build_sr(second, HOSPITAL)) == to_part10(build_sr(second, HOSPITAL))  # byte for byte
    assert sr_uids(second) == sr_uids(amended_view())
    assert sr_uids(first)[1] != sr_uids(second)[1]
    assert sr_uids(first)[0] == sr_uids(second)[0]  # one report series, one instance per version
    assert pdf_uids(first)[1] != pdf_uids(second)[1]
    assert len({*sr_uids(second), *pdf_uids(second)}) == 4
    other_study = replace(view, study_instance_uid="1.2.826.0.1.3680043.8.498.2")
    assert sr_uids(other_study)[1] != sr_uids(second)[1]
    assert build_sr(second, HOSPITAL).SOPInstanceUID == sr_uids(second)[1]


@pytest.mark.parametrize("status", [ReportStatus.DRAFT, ReportStatus.PRELIMINARY, ReportStatus.CANCELLED])
def test_only_signed_versions_become_objects(status: ReportStatus) -> None:
    view = report_view(signed_version(status=status, signature=None), status=status)
    with pytest.raises(ValueError, match="only a signed version"):
        build_sr(view, HOSPITAL)
    with pytest.raises(ValueError, match="only a signed version"):
        build_encapsulated_pdf(view, small_pdf(), HOSPITAL)


def test_a_one_component_patient_name_is_kept_as_sent(tmp_path: Path) -> None:
    patient = PatientDemographics(patient_id="BN1", name="NGUYEN VAN AN", birth_date="", sex="")
    view = report_view(patient=patient, referring_physician="", study_date="", study_time="",
                       placer_order_number="", filler_order_number="", procedure_code="")  # fmt: skip
    sr = build_sr(view, HOSPITAL)  # filterwarnings=error: highdicom must not warn either
    assert str(reread(sr).PatientName) == "NGUYEN VAN AN"
    assert "ReferencedRequestSequence" not in sr  # a study without an order
    verdict = dciodvfy(write(sr, tmp_path / "sr.dcm"))
    assert (verdict.returncode, verdict.errors) == (0, []), verdict.output


def test_images_read_are_the_evidence(tmp_path: Path) -> None:
    view = report_view()
    image = make_dataset(1, study=view.study_instance_uid, modality="DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1")
    sr = build_sr(view, HOSPITAL, evidence=[image])
    (study,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == view.study_instance_uid
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == image.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    verdict = dciodvfy(write(sr, tmp_path / "sr.dcm"))
    assert (verdict.returncode, verdict.errors) == (0, []), verdict.output


def series_in_study(archive: Archive, study_uid: str) -> dict[str, dict[str, Any]]:
    """Series-level C-FIND / QIDO matches of the study: Modality -> DICOM JSON."""
    query = query_from_identifier(identifier("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=None,
                                             Modality=None, SeriesDescription=None, SeriesNumber=None,
                                             NumberOfSeriesRelatedInstances=None), patient_root=False)  # fmt: skip
    return {match["00080060"]["Value"][0]: match for match in archive.find_json(query)}


def test_stored_into_the_archive_next_to_the_images(archive: Archive) -> None:
    view = amended_view()
    image = make_dataset(1, study=view.study_instance_uid, modality="DX", AccessionNumber=view.accession_number,
                         patient_id=view.patient.patient_id, IssuerOfPatientID="BVHUYEN")  # fmt: skip
    ingest_ds(archive, image)
    pdf = small_pdf()
    first = store_report_objects(archive, view.at_version(1), HOSPITAL, pdf=pdf)
    second = store_report_objects(archive, view, HOSPITAL, pdf=pdf)
    assert [r.status for r in first + second] == [StoreStatus.STORED] * 4
    series = series_in_study(archive, view.study_instance_uid)
    assert set(series) == {"DX", "SR", "DOC"}
    assert series["SR"]["0020000E"]["Value"] == [sr_uids(view)[0]]
    assert series["SR"]["0008103E"]["Value"] == ["Kết quả chẩn đoán / Report"]
    assert series["SR"]["00201209"]["Value"] == [2]  # both versions in the report series
    assert series["DOC"]["0020000E"]["Value"] == [pdf_uids(view)[0]]
    # A retried job stores nothing new.
    again = store_report_objects(archive, view, HOSPITAL, pdf=pdf)
    assert [r.status for r in again] == [StoreStatus.ALREADY_STORED] * 2
    # What the archive gives back is what was built.
    (ref,) = archive.instances(query_from_identifier(identifier("IMAGE", StudyInstanceUID=view.study_instance_uid,
                                                                SOPInstanceUID=pdf_uids(view)[1]), False))  # fmt: skip
    assert extract_pdf(archive.read_dataset(ref)) == pdf
    (ref,) = archive.instances(query_from_identifier(identifier("IMAGE", StudyInstanceUID=view.study_instance_uid,
                                                                SOPInstanceUID=sr_uids(view)[1]), False))  # fmt: skip
    assert sections(archive.read_dataset(ref))["19005-8"] == view.version.section("conclusion")
