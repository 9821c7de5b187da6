"""A signed report as DICOM objects in its study: a Structured Report and an Encapsulated PDF.

Any DICOM viewer or PACS that receives the study then shows the report: the
SR as text (DCMR TID 2000 Basic Diagnostic Imaging Report in a Comprehensive
SR, PS3.16 A.35.1 / PS3.3 A.35.3), the PDF as the signed document itself
(Encapsulated PDF, PS3.3 A.45.1), its bytes untouched so the PAdES signature
still verifies after extraction.

Every UID is derived from the study, the accession number, the version and
the kind of object, and every date from the signing time, so building the
same version twice gives byte-identical Part 10 files: a retried job is
stored once (the archive answers "already stored").
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import highdicom as hd
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID, ComprehensiveSRStorage, EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DA, TM

from archive import Archive, Origin
from archive.ingest import StoreResult
from archive.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from archive.patients import patient_module
from reports.types import Hospital, ReportVersion, ReportView, Signature

log = logging.getLogger(__name__)

#: Dates and times in the objects are local: the appliance serves Vietnamese hospitals (UTC+7, no DST).
LOCAL_TIME = ZoneInfo("Asia/Ho_Chi_Minh")
MANUFACTURER = "minipacs"
CHARSET = "ISO_IR 192"

#: High series numbers sort the report series after the images in a viewer's series list.
SR_SERIES_NUMBER = 9001
PDF_SERIES_NUMBER = 9002
SR_SERIES_DESCRIPTION = "Kết quả chẩn đoán / Report"
PDF_SERIES_DESCRIPTION = "Kết quả chẩn đoán (PDF) / Report (PDF)"

#: CID 7000 document title: the root container of TID 2000 and the PDF's Concept Name.
DOCUMENT_TITLE_CODE = codes.cid7000.DiagnosticImagingReport  # (18748-4, LN)
DOCUMENT_TITLES = {"vi": "Kết quả chẩn đoán hình ảnh", "en": "Diagnostic imaging report"}

#: Report section -> (CID 7001 section heading, CID 7002 report element) for TID 2000 / TID 2002.
SECTION_CODES: dict[str, tuple[Code, Code]] = {
    "clinical_information": (codes.cid7001.ClinicalInformation, codes.cid7002.History),
    "technique": (codes.cid7001.CurrentProcedureDescriptions, codes.cid7002.ProcedureDescription),
    "findings": (codes.cid7001.Findings, codes.cid7002.Finding),
    "conclusion": (codes.cid7001.Impressions, codes.cid7002.Impression),
    "recommendation": (codes.cid7001.Recommendations, codes.cid7002.Recommendation),
}

#: CID 5000 languages (RFC 5646 tags) for TID 1204 Language of Content Item and Descendants.
LANGUAGES = {
    "vi": hd.sr.CodedConcept("vi", "RFC5646", "Vietnamese"),
    "en": hd.sr.CodedConcept("en", "RFC5646", "English"),
}

#: TID 2000 row 4: the procedure the report is about.
PROCEDURE_REPORTED = Code("121058", "DCM", "Procedure reported")

#: Designators every DICOM reader knows (PS3.16 8); any other is declared in the object.
STANDARD_SCHEMES = frozenset({"DCM", "LN", "SCT", "SRT", "RADLEX", "UCUM", "RFC5646", "ISO3166_1"})

SR_KIND = "sr"
PDF_KIND = "pdf"


# --------------------------------------------------------------------------
# UIDs
# --------------------------------------------------------------------------


def _uid(view: ReportView, *parts: str) -> str:
    """A UID derived (SHA-512, pydicom's root) from the report's study and accession and `parts`."""
    return str(generate_uid(entropy_srcs=[view.study_instance_uid, view.accession_number, *parts]))


def sr_uids(view: ReportView) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of the SR of `view.version`.

    All versions of a report share one SR series (Instance Number = version
    number), so a viewer lists an amendment next to the version it replaces.
    """
    return _uid(view, SR_KIND, "series"), _uid(view, SR_KIND, str(view.version.number))


def pdf_uids(view: ReportView) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of the Encapsulated PDF of `view.version`."""
    return _uid(view, PDF_KIND, "series"), _uid(view, PDF_KIND, str(view.version.number))


# --------------------------------------------------------------------------
# Shared attributes
# --------------------------------------------------------------------------


def _signature(version: ReportVersion) -> Signature:
    if not version.status.is_signed or version.signature is None:
        raise ValueError(f"version {version.number} is {version.status.value}: only a signed version is output")
    return version.signature


def signed_at_local(signature: Signature) -> datetime:
    """The signing time in Vietnam local time (the signature records ISO 8601, usually UTC)."""
    moment = datetime.fromisoformat(signature.signed_at)
    if moment.tzinfo is None:
        raise ValueError(f"signed_at {signature.signed_at!r} has no time zone")
    return moment.astimezone(LOCAL_TIME)


def _dicom_datetime(moment: datetime) -> tuple[str, str, str, str]:
    """(DA, TM, DT with offset, Timezone Offset From UTC) of an aware datetime."""
    offset = moment.strftime("%z")
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S"), moment.strftime("%Y%m%d%H%M%S") + offset, offset


def _lo(value: str) -> str:
    """`value` cut to the 64 characters of a LO element (PS3.5 6.2)."""
    return value.strip()[:64]


def person_name(display_name: str) -> str:
    """A display name as a PN value.

    A name already in PN form ("Trần^Thị Lan") is kept. A free-text display
    name ("BS. Trần Thị Lan") becomes the family-name component as written,
    with a trailing caret that says so (PS3.5 6.2.1): guessing where a title
    or the given names start would misspell some names.
    """
    name = display_name.strip()
    return name if "^" in name else f"{name[:63]}^"  # a component group holds 64 characters


def patient_study_header(view: ReportView) -> Dataset:
    """Patient and General Study module attributes of the report's study (PS3.3 C.7.1.1, C.7.2.1)."""
    ds = patient_module(view.patient)
    ds.SpecificCharacterSet = CHARSET
    ds.StudyInstanceUID = view.study_instance_uid
    ds.StudyDate = view.study_date
    ds.StudyTime = view.study_time
    ds.ReferringPhysicianName = view.referring_physician
    # IHE Scheduled Workflow fills Study ID from the Requested Procedure ID, which the
    # worklist makes the accession number unless the HIS sent one.
    ds.StudyID = view.accession_number[:16]
    ds.AccessionNumber = view.accession_number
    if view.study_description:
        ds.StudyDescription = _lo(view.study_description)
    return ds


def _requested_procedure(view: ReportView) -> Dataset:
    """An item of the Referenced Request Sequence (PS3.3 C.17.2): the order this report answers."""
    item = Dataset()
    item.StudyInstanceUID = view.study_instance_uid
    item.ReferencedStudySequence = []
    item.AccessionNumber = view.accession_number
    # The worklist makes the Requested Procedure ID the accession number unless the HIS sent one.
    item.RequestedProcedureID = view.accession_number[:16]
    item.RequestedProcedureDescription = _lo(view.procedure_description)
    code = _procedure_code(view)
    item.RequestedProcedureCodeSequence = [code] if code is not None else []
    item.PlacerOrderNumberImagingServiceRequest = view.placer_order_number
    item.FillerOrderNumberImagingServiceRequest = view.filler_order_number
    return item


def _procedure_code(view: ReportView) -> hd.sr.CodedConcept | None:
    """The ordered procedure as a code, as the worklist gave it to the modality (MWL)."""
    if not view.procedure_code:
        return None
    meaning = view.procedure_description or view.study_description or view.procedure_code
    return hd.sr.CodedConcept(view.procedure_code, view.procedure_scheme or "LOCAL", meaning[:64])


def _local_scheme(designator: str) -> Dataset:
    """Declares the HIS's own coding scheme (Coding Scheme Identification Sequence, PS3.3 C.12.1.1.2)."""
    item = Dataset()
    item.CodingSchemeDesignator = designator
    item.CodingSchemeName = "Danh mục kỹ thuật của HIS / HIS procedure catalogue"
    return item


def _has_order(view: ReportView) -> bool:
    return bool(view.placer_order_number or view.filler_order_number)


# --------------------------------------------------------------------------
# Structured Report
# --------------------------------------------------------------------------


def _content(view: ReportView, signature: Signature, hospital: Hospital) -> hd.sr.ContainerContentItem:
    """The TID 2000 content tree: language, observer, one section per non-empty report section."""
    version = view.version
    language = LANGUAGES.get(version.language)
    if language is None:
        raise ValueError(f"language {version.language!r} is not one of {sorted(LANGUAGES)}")
    items: list[hd.sr.ContentItem] = []
    items.extend(item for item in hd.sr.LanguageOfContentItemAndDescendants(language))  # TID 1204
    observer = hd.sr.PersonObserverIdentifyingAttributes(  # TID 1003
        name=person_name(signature.display_name or signature.username), login_name=signature.username,
        organization_name=hospital.name or None,
    )  # fmt: skip
    items.extend(item for item in hd.sr.ObserverContext(codes.cid270.Person, observer))  # TID 1002
    procedure = _procedure_code(view)
    if procedure is not None:
        items.append(hd.sr.CodeContentItem(PROCEDURE_REPORTED, procedure,
                                           relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD))
    for section, (heading, element) in SECTION_CODES.items():
        # Trailing spaces of a UT value are padding to a reader (PS3.5 6.2): drop them here, knowingly.
        text = version.section(section).rstrip(" ")
        if not text.strip():
            continue
        container = hd.sr.ContainerContentItem(heading, is_content_continuous=False,
                                               relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        container.ContentSequence = hd.sr.ContentSequence([  # TID 2002 Report Narrative
            hd.sr.TextContentItem(element, text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        ])  # fmt: skip
        items.append(container)
    root = hd.sr.ContainerContentItem(DOCUMENT_TITLE_CODE, is_content_continuous=False, template_id="2000")
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root


def _previous_signed(view: ReportView) -> ReportView | None:
    """The report showing the signed version `view.version` amends, or None for a first version."""
    earlier = [v for v in view.versions if v.number < view.version.number and v.status.is_signed]
    return view.at_version(earlier[-1].number) if earlier else None


def _predecessor_sr(view: ReportView) -> Dataset | None:
    """The SR of the version this one amends, as highdicom takes it for the Predecessor Documents Sequence."""
    previous = _previous_signed(view)
    if previous is None:
        return None
    series_uid, sop_uid = sr_uids(previous)
    ref = Dataset()
    ref.SOPClassUID = ComprehensiveSRStorage
    ref.SOPInstanceUID = previous.version.sr_sop_instance_uid or sop_uid
    ref.StudyInstanceUID = view.study_instance_uid
    ref.SeriesInstanceUID = series_uid
    return ref


def _predecessor_pdf(view: ReportView) -> Dataset | None:
    """A Predecessor Documents Sequence item (PS3.3 C.24.2, hierarchical reference) for the previous PDF."""
    previous = _previous_signed(view)
    if previous is None:
        return None
    series_uid, sop_uid = pdf_uids(previous)
    instance = Dataset()
    instance.ReferencedSOPClassUID = EncapsulatedPDFStorage
    instance.ReferencedSOPInstanceUID = previous.version.pdf_sop_instance_uid or sop_uid
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedSOPSequence = [instance]
    study = Dataset()
    study.StudyInstanceUID = view.study_instance_uid
    study.ReferencedSeriesSequence = [series]
    return study


def build_sr(view: ReportView, hospital: Hospital, evidence: Sequence[Dataset] = ()) -> Dataset:
    """The signed `view.version` as a Comprehensive SR (TID 2000), COMPLETE and VERIFIED.

    `evidence` are the study's instances the report was read from (each with
    Study/Series/SOP Class/SOP Instance UIDs, e.g. IMAGE-level C-FIND
    results); they go into the Current Requested Procedure Evidence Sequence.
    Raises ValueError for a version that is not signed.
    """
    signature = _signature(view.version)
    moment = signed_at_local(signature)
    date, time, stamp, offset = _dicom_datetime(moment)
    series_uid, sop_uid = sr_uids(view)
    header = patient_study_header(view)
    # highdicom takes patient and study from its first evidence item; the
    # report's own header stands in for it and is not recorded as evidence.
    # A one-component patient name ("NGUYEN VAN AN") would make it warn: it
    # sees a caret-terminated copy, and the name as the HIS sent it is put back.
    stand_in = patient_study_header(view)
    stand_in.PatientName = person_name(view.patient.name) if view.patient.name.strip() else ""
    stand_in.SOPClassUID = ComprehensiveSRStorage
    stand_in.SOPInstanceUID = sop_uid
    stand_in.SeriesInstanceUID = series_uid
    predecessor = _predecessor_sr(view)
    organization = _lo(hospital.name) or MANUFACTURER
    signer = person_name(signature.display_name or signature.username)
    sr = hd.sr.ComprehensiveSR(
        evidence=[stand_in, *evidence], content=_content(view, signature, hospital),
        series_instance_uid=series_uid, series_number=SR_SERIES_NUMBER, sop_instance_uid=sop_uid,
        instance_number=view.version.number, manufacturer=MANUFACTURER,
        is_complete=True, is_final=True, is_verified=True,
        institution_name=_lo(hospital.name) or None, institutional_department_name=_lo(hospital.department) or None,
        verifying_observer_name=signer, verifying_organization=organization,
        requested_procedures=[_requested_procedure(view)] if _has_order(view) else None,
        previous_versions=[predecessor] if predecessor is not None else None,
        series_description=SR_SERIES_DESCRIPTION, content_date=date, content_time=time,
        specific_character_set=CHARSET,
    )  # fmt: skip
    sr.update(header)
    # highdicom stamps "now" in several places; the signing time keeps the bytes reproducible.
    sr.InstanceCreationDate, sr.InstanceCreationTime = DA(date), TM(time)
    sr.TimezoneOffsetFromUTC = offset
    sr.VerifyingObserverSequence[0].VerificationDateTime = stamp
    for equipment in sr.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:
            equipment.ContributionDateTime = stamp
    _drop_self_evidence(sr, series_uid)
    procedure = _procedure_code(view)
    if procedure is not None and procedure.CodingSchemeDesignator not in STANDARD_SCHEMES:
        sr.CodingSchemeIdentificationSequence = [_local_scheme(procedure.CodingSchemeDesignator)]
    log.debug("SR %s for report %s version %d", sop_uid, view.accession_number, view.version.number)
    return sr


def _drop_self_evidence(sr: Dataset, own_series_uid: str) -> None:
    """Drop the stand-in header's reference to the SR itself from the evidence highdicom collected."""
    kept = []
    for study in sr.get("CurrentRequestedProcedureEvidenceSequence", []):
        study.ReferencedSeriesSequence = [s for s in study.ReferencedSeriesSequence
                                          if s.SeriesInstanceUID != own_series_uid]  # fmt: skip
        if study.ReferencedSeriesSequence:
            kept.append(study)
    if kept:
        sr.CurrentRequestedProcedureEvidenceSequence = kept
    elif "CurrentRequestedProcedureEvidenceSequence" in sr:
        del sr.CurrentRequestedProcedureEvidenceSequence


# --------------------------------------------------------------------------
# Encapsulated PDF
# --------------------------------------------------------------------------


def build_encapsulated_pdf(view: ReportView, pdf: bytes, hospital: Hospital) -> Dataset:
    """The signed PDF of `view.version` as Encapsulated PDF Storage (PS3.3 A.45.1), bytes untouched.

    An amendment references the PDF of the version it replaces (Predecessor
    Documents Sequence), as its SR does.

    The PDF is padded to an even length on writing (PS3.5 7.1.1);
    Encapsulated Document Length (0042,0015) records the real length, which
    `extract_pdf` uses to give back the exact signed bytes.
    """
    signature = _signature(view.version)
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("pdf does not start with %PDF-")
    date, time, stamp, offset = _dicom_datetime(signed_at_local(signature))
    series_uid, sop_uid = pdf_uids(view)
    ds = patient_study_header(view)
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.TimezoneOffsetFromUTC = offset
    # Encapsulated Document Series (C.24.1)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDescription = PDF_SERIES_DESCRIPTION
    # General Equipment (C.7.5.1) and SC Equipment (C.8.6.1): a workstation made it.
    ds.Manufacturer = MANUFACTURER
    if hospital.name:
        ds.InstitutionName = _lo(hospital.name)
    if hospital.department:
        ds.InstitutionalDepartmentName = _lo(hospital.department)
    ds.ConversionType = "WSD"
    # Encapsulated Document (C.24.2)
    ds.InstanceNumber = view.version.number
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = stamp
    ds.BurnedInAnnotation = "YES"  # the PDF names the patient
    ds.VerificationFlag = "VERIFIED"  # signed by the radiologist (Type 3 here)
    ds.DocumentTitle = f"{DOCUMENT_TITLES.get(view.version.language, DOCUMENT_TITLES['vi'])} {view.accession_number}"
    ds.ConceptNameCodeSequence = [hd.sr.CodedConcept.from_code(DOCUMENT_TITLE_CODE)]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    predecessor = _predecessor_pdf(view)
    if predecessor is not None:
        ds.PredecessorDocumentsSequence = [predecessor]
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf
    return ds


def extract_pdf(ds: Dataset) -> bytes:
    """The PDF inside an Encapsulated PDF, without the even-length padding."""
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if length is not None:
        return data[: int(length)]
    # Without the length, strip the single NUL a writer may have added after %%EOF.
    return data[:-1] if data.endswith(b"\x00") and len(data) % 2 == 0 else data


# --------------------------------------------------------------------------
# Part 10 and the archive
# --------------------------------------------------------------------------


def to_part10(ds: Dataset) -> bytes:
    """`ds` as a Part 10 file in Explicit VR Little Endian, with minipacs's File Meta (PS3.10 7.1)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    out = Dataset()
    out.update(ds)
    out.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, out, enforce_file_format=True)
    return buffer.getvalue()


#: How report objects appear in the archive's index and audit log.
ORIGIN = Origin("minipacs-reports", "", "REPORT")


def store_report_objects(archive: Archive, view: ReportView, hospital: Hospital, *, sr: bool = True,
                         pdf: bytes | None = None, evidence: Sequence[Dataset] = ()) -> list[StoreResult]:  # fmt: skip
    """Build and ingest the SR and/or the Encapsulated PDF of `view.version` into its study.

    Idempotent: a second run stores nothing new (status ALREADY_STORED).
    """
    objects = []
    if sr:
        objects.append(build_sr(view, hospital, evidence))
    if pdf is not None:
        objects.append(build_encapsulated_pdf(view, pdf, hospital))
    results = [archive.ingest(io.BytesIO(to_part10(ds)), ORIGIN) for ds in objects]
    for result in results:
        log.info("report %s version %d: %s %s", view.accession_number, view.version.number,
                 result.sop_instance_uid, result.status.value)  # fmt: skip
    return results


__all__ = [
    "build_encapsulated_pdf",
    "build_sr",
    "extract_pdf",
    "pdf_uids",
    "person_name",
    "sr_uids",
    "store_report_objects",
    "to_part10",
]
