"""Which attributes belong to which level, and the index record of an instance.

The level sets follow the Patient/Study/Series/Composite Object Instance keys
of PS3.4 C.6.1.1 and C.6.2.1 and the QIDO-RS attribute tables of PS3.18 10.6.
What a level stores of these is its ``attrs`` (DICOM JSON). The instance set
is kept short on purpose: it is converted for every image received, and the
image-level details a viewer needs (windows, spacing, positions) come from
the object's own header (WADO-RS metadata), as in Orthanc.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from archive.text import name_key, name_tokens, nfc

PATIENT_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID", "OtherPatientIDsSequence", "OtherPatientIDs", "OtherPatientNames",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "EthnicGroup", "PatientComments",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "PatientSpeciesDescription", "PatientBreedDescription", "ResponsiblePerson",
    "PatientIdentityRemoved", "DeidentificationMethod",
)  # fmt: skip

STUDY_KEYWORDS: tuple[str, ...] = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyID", "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence", "StudyDescription", "ProcedureCodeSequence",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription",
    "PatientAge", "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
    "TimezoneOffsetFromUTC", "RequestingPhysician", "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure", "RequestingService", "StudyComments",
)  # fmt: skip

SERIES_KEYWORDS: tuple[str, ...] = (
    "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "Laterality", "ProtocolName", "PerformingPhysicianName",
    "OperatorsName", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "RequestAttributesSequence",
    "Manufacturer", "ManufacturerModelName", "StationName", "InstitutionName",
    "InstitutionalDepartmentName", "DeviceSerialNumber", "SoftwareVersions",
    "FrameOfReferenceUID", "PatientPosition", "ViewPosition", "SeriesType",
)  # fmt: skip

INSTANCE_KEYWORDS: tuple[str, ...] = (
    "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate", "ContentTime",
    "AcquisitionDateTime", "ImageType", "NumberOfFrames", "Rows", "Columns", "BitsAllocated",
    "PhotometricInterpretation", "ConceptNameCodeSequence", "CompletionFlag", "VerificationFlag",
    "ContentLabel", "ContentDescription", "DocumentTitle", "MIMETypeOfEncapsulatedDocument",
)  # fmt: skip

# Binary values are bulk data: they stay in the object, never in the index.
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}

# Person-name token kinds in the name_token table.
TOKEN_PATIENT_NAME = 1
TOKEN_REFERRING_PHYSICIAN = 2

_TIME_RE = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(?:\.(\d{1,6}))?$")


def _tags(keywords: tuple[str, ...]) -> frozenset[int]:
    return frozenset(int(Tag(k)) for k in keywords)


PATIENT_TAGS = _tags(PATIENT_KEYWORDS)
STUDY_TAGS = _tags(STUDY_KEYWORDS)
SERIES_TAGS = _tags(SERIES_KEYWORDS)
INSTANCE_TAGS = _tags(INSTANCE_KEYWORDS)


@dataclass
class _Level:
    """A level's part of an index record; its ``attrs`` are worked out on first use.

    Most instances add to an existing study and series, whose attributes are
    never needed again; converting them to JSON for every instance was the
    largest single cost of ingest.
    """

    source: Dataset = field(repr=False, compare=False)
    TAGS: ClassVar[frozenset[int]] = frozenset()

    @cached_property
    def attrs(self) -> dict[str, Any]:
        return level_attrs(self.source, self.TAGS)


@dataclass
class PatientRecord(_Level):
    TAGS = PATIENT_TAGS
    patient_key: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_name_key: str
    name_tokens: list[str]
    patient_birth_date: str
    patient_sex: str
    other_ids: list[tuple[str, str, str]]


@dataclass
class StudyRecord(_Level):
    TAGS = STUDY_TAGS
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    referring_physician_name: str
    referring_physician_name_key: str
    referring_tokens: list[str]
    study_description: str


@dataclass
class SeriesRecord(_Level):
    TAGS = SERIES_TAGS
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    series_date: str
    series_time: str
    body_part_examined: str
    performed_procedure_step_start_date: str
    performed_procedure_step_start_time: str
    requests: list[tuple[str, str, str]]


@dataclass
class InstanceRecord(_Level):
    TAGS = INSTANCE_TAGS
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    content_date: str
    content_time: str
    number_of_frames: int | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None


@dataclass
class IndexRecord:
    """Everything the index keeps about one instance, split by level.

    The keys that decide where an instance goes (patient key, study and
    series UIDs) are read up front; each level's other fields only when that
    level's row is created. Most instances join an existing series, and
    decoding the attributes of every level for each of them was most of the
    CPU time of ingest.
    """

    source: Dataset = field(repr=False, compare=False)
    patient_key: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str

    @cached_property
    def patient(self) -> PatientRecord:
        ds = self.source
        patient_name = person_name(ds, "PatientName")
        return PatientRecord(
            source=ds,
            patient_key=self.patient_key,
            patient_id=text(ds, "PatientID"),
            issuer_of_patient_id=text(ds, "IssuerOfPatientID"),
            patient_name=patient_name,
            patient_name_key=name_key(patient_name),
            name_tokens=sorted(set(name_tokens(patient_name))),
            patient_birth_date=text(ds, "PatientBirthDate"),
            patient_sex=text(ds, "PatientSex"),
            other_ids=self.other_ids,
        )

    @cached_property
    def other_ids(self) -> list[tuple[str, str, str]]:
        return other_patient_ids(self.source)

    @cached_property
    def study(self) -> StudyRecord:
        ds = self.source
        referring = person_name(ds, "ReferringPhysicianName")
        return StudyRecord(
            source=ds,
            study_instance_uid=self.study_instance_uid,
            study_date=text(ds, "StudyDate"),
            study_time=normalize_time(text(ds, "StudyTime")),
            accession_number=text(ds, "AccessionNumber"),
            study_id=text(ds, "StudyID"),
            referring_physician_name=referring,
            referring_physician_name_key=name_key(referring),
            referring_tokens=sorted(set(name_tokens(referring))),
            study_description=text(ds, "StudyDescription"),
        )

    @cached_property
    def series(self) -> SeriesRecord:
        ds = self.source
        return SeriesRecord(
            source=ds,
            series_instance_uid=self.series_instance_uid,
            modality=text(ds, "Modality").upper(),
            series_number=integer(ds, "SeriesNumber"),
            series_description=text(ds, "SeriesDescription"),
            series_date=text(ds, "SeriesDate"),
            series_time=normalize_time(text(ds, "SeriesTime")),
            body_part_examined=text(ds, "BodyPartExamined"),
            performed_procedure_step_start_date=text(ds, "PerformedProcedureStepStartDate"),
            performed_procedure_step_start_time=normalize_time(
                text(ds, "PerformedProcedureStepStartTime")
            ),
            requests=request_attributes(ds),
        )

    @cached_property
    def instance(self) -> InstanceRecord:
        ds = self.source
        return InstanceRecord(
            source=ds,
            sop_instance_uid=self.sop_instance_uid,
            sop_class_uid=text(ds, "SOPClassUID"),
            instance_number=integer(ds, "InstanceNumber"),
            content_date=text(ds, "ContentDate"),
            content_time=normalize_time(text(ds, "ContentTime")),
            number_of_frames=integer(ds, "NumberOfFrames"),
            rows=integer(ds, "Rows"),
            columns=integer(ds, "Columns"),
            bits_allocated=integer(ds, "BitsAllocated"),
        )


def index_record(ds: Dataset) -> IndexRecord:
    """The index record of `ds`, whose UIDs the caller has validated."""
    study_uid = text(ds, "StudyInstanceUID")
    patient_id = text(ds, "PatientID")
    issuer = text(ds, "IssuerOfPatientID")
    # An empty Patient ID identifies nobody: such a study gets a patient of its own
    # rather than being merged with every other study that lacks an ID.
    patient_key = f"id\x1f{issuer}\x1f{patient_id}" if patient_id else f"study\x1f{study_uid}"
    return IndexRecord(
        source=ds,
        patient_key=patient_key,
        study_instance_uid=study_uid,
        series_instance_uid=text(ds, "SeriesInstanceUID"),
        sop_instance_uid=text(ds, "SOPInstanceUID"),
    )


def text(ds: Dataset, keyword: str) -> str:
    """The value of `keyword` as NFC text ('' when absent); multiple values joined by '\\'."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(nfc(str(v)).strip() for v in value)
    if isinstance(value, bytes):
        return ""
    return nfc(str(value)).strip()


def person_name(ds: Dataset, keyword: str) -> str:
    """A PN value in its DICOM string form (``Family^Given=...``), NFC-normalised."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if value else ""
    return nfc(str(value)).strip()


def integer(ds: Dataset, keyword: str) -> int | None:
    """An IS/US value as int, or None when absent or not a number."""
    value = ds.get(keyword)
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if value else None
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def normalize_time(value: str) -> str:
    """A TM value as ``HHMMSS.ffffff`` so that times compare as strings ('' stays '')."""
    match = _TIME_RE.match(value.strip())
    if not match:
        return ""
    hh, mm, ss, frac = match.groups()
    return f"{hh}{mm or '00'}{ss or '00'}.{(frac or '').ljust(6, '0')}"


def other_patient_ids(ds: Dataset) -> list[tuple[str, str, str]]:
    """(value, issuer, type) of each Other Patient ID, from the sequence and the retired list."""
    found: list[tuple[str, str, str]] = []
    for item in ds.get("OtherPatientIDsSequence") or []:
        value = text(item, "PatientID")
        if value:
            found.append((value, text(item, "IssuerOfPatientID"), text(item, "TypeOfPatientID")))
    for value in text(ds, "OtherPatientIDs").split("\\"):
        if value and value not in {v for v, _, _ in found}:
            found.append((value, "", ""))
    return found


def request_attributes(ds: Dataset) -> list[tuple[str, str, str]]:
    """(Requested Procedure ID, Scheduled Procedure Step ID, Accession) per request item."""
    return [
        (
            text(item, "RequestedProcedureID"),
            text(item, "ScheduledProcedureStepID"),
            text(item, "AccessionNumber"),
        )
        for item in ds.get("RequestAttributesSequence") or []
    ]


def level_attrs(ds: Dataset, tags: frozenset[int]) -> dict[str, Any]:
    """The DICOM JSON of the non-binary attributes of one level, text NFC-normalised."""
    subset = Dataset()
    for tag in sorted(tags.intersection(ds.keys())):
        element = ds[tag]
        if element.VR not in _BINARY_VRS:
            subset.add(element)
    result: dict[str, Any] = _nfc_json(subset.to_json_dict(suppress_invalid_tags=True))
    return result


def _nfc_json(value: Any) -> Any:
    if isinstance(value, str):
        return nfc(value)
    if isinstance(value, list):
        return [_nfc_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _nfc_json(v) for k, v in value.items()}
    return value
