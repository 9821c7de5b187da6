"""A report as every output sees it: the HTTP API, the PDF, the DICOM SR, HL7 ORU, FHIR, the claim values.

The service builds a `ReportView` from the database; the outputs are pure
functions of it (plus their own settings), so each can be tested on its own
and they cannot disagree about what the report says.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from archive.patients import OtherId, PatientDemographics


class ReportStatus(str, Enum):
    """A version's status. FINAL and AMENDED versions are signed and never change again."""

    DRAFT = "draft"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"
    CANCELLED = "cancelled"

    @property
    def is_signed(self) -> bool:
        return self in (ReportStatus.FINAL, ReportStatus.AMENDED)

    @property
    def is_open(self) -> bool:
        """A draft or preliminary version: its author may still change it."""
        return self in (ReportStatus.DRAFT, ReportStatus.PRELIMINARY)


#: The sections of a report, in print order.
SECTIONS = ("clinical_information", "technique", "findings", "conclusion", "recommendation")

#: Section headings in the two languages of the product.
SECTION_TITLES: dict[str, dict[str, str]] = {
    "vi": {
        "clinical_information": "Thông tin lâm sàng",
        "technique": "Kỹ thuật",
        "findings": "Mô tả",
        "conclusion": "Kết luận",
        "recommendation": "Đề nghị",
    },
    "en": {
        "clinical_information": "Clinical information",
        "technique": "Technique",
        "findings": "Findings",
        "conclusion": "Conclusion",
        "recommendation": "Recommendation",
    },
}

#: How the patient took their results home (the HIS bills "không in phim" differently).
DELIVERY_MODES = ("film", "link", "cd")


@dataclass(frozen=True)
class Signature:
    """Who signed a version, with what, and when (ISO 8601 UTC)."""

    username: str
    display_name: str
    #: Practising-certificate number (số chứng chỉ hành nghề), from the user record: MA_BS_DOC_KQ.
    certificate_number: str
    signed_at: str
    #: The X.509 certificate that made the PAdES signature: serial (hex) and subject.
    x509_serial: str = ""
    x509_subject: str = ""


@dataclass(frozen=True)
class ReportVersion:
    """One version of a report. Numbers start at 1; an amendment is a new number."""

    number: int
    status: ReportStatus
    #: "vi" or "en": the language the text is in and the PDF is printed in.
    language: str
    template_id: str
    #: Section name (SECTIONS) -> free text, NFC. Missing sections are "".
    sections: dict[str, str]
    #: Optional structured fields from the template (measurements, BI-RADS, ...): name -> value.
    structured: dict[str, Any]
    author: str
    author_name: str
    created_at: str
    updated_at: str
    signature: Signature | None = None
    #: Why this version exists (an amendment) or why it was cancelled.
    reason: str = ""
    #: SHA-256 (hex) of the signed PDF, when there is one.
    pdf_sha256: str = ""
    #: SOP Instance UIDs of the DICOM SR and Encapsulated PDF made from it ("" until stored).
    sr_sop_instance_uid: str = ""
    pdf_sop_instance_uid: str = ""

    def section(self, name: str) -> str:
        return self.sections.get(name, "")


@dataclass(frozen=True)
class Performed:
    """When and by whom the examination was done (MPPS, else the study's own attributes)."""

    #: YYYYMMDDHHMMSS local time, or "".
    at: str = ""
    #: Operator or performing physician name (PN), or "".
    performer: str = ""
    station_ae_title: str = ""
    device_serial_number: str = ""


@dataclass(frozen=True)
class ReportView:
    """A report with its order, study and patient: everything an output needs.

    `version` is the version being shown or output (the current one unless a
    caller asked for an older one); `versions` lists all of them, oldest first.
    """

    id: int
    accession_number: str
    status: ReportStatus
    #: Changes on every write: the optimistic-locking token (HTTP ETag / If-Match).
    revision: int
    patient: PatientDemographics
    study_instance_uid: str
    #: YYYYMMDD and HHMMSS from the study, or "".
    study_date: str
    study_time: str
    study_description: str
    modality: str
    #: The order, when there is one (a study without an order still gets a report).
    placer_issuer: str
    placer_order_number: str
    filler_order_number: str
    procedure_code: str
    procedure_scheme: str
    procedure_description: str
    #: Mã dịch vụ kỹ thuật and mã chỉ số, from the procedure catalogue through the order.
    service_code: str
    indicator_code: str
    referring_physician: str
    priority: str
    performed: Performed
    version: ReportVersion
    versions: tuple[ReportVersion, ...] = field(default_factory=tuple)
    created_at: str = ""
    updated_at: str = ""

    def at_version(self, number: int) -> ReportView:
        """The same report showing version `number` (KeyError when there is none)."""
        for v in self.versions:
            if v.number == number:
                return replace(self, version=v)
        raise KeyError(number)

    @property
    def etag(self) -> str:
        return f'"r{self.id}-{self.revision}"'


@dataclass(frozen=True)
class Hospital:
    """Who issues the report: the PDF header, the HL7 sending facility, the device codes' facility."""

    name: str = "Bệnh viện"
    department: str = "Khoa Chẩn đoán hình ảnh"
    address: str = ""
    phone: str = ""
    #: A PNG or JPEG printed at the top left of the PDF ("" for none).
    logo_path: str = ""
    #: Mã cơ sở khám chữa bệnh (5 digits), the YYYYY of a device code.
    facility_code: str = ""


@dataclass(frozen=True)
class ReportDraft:
    """What a radiologist sends to create or update a draft. None leaves a field as it is."""

    sections: dict[str, str] | None = None
    structured: dict[str, Any] | None = None
    language: str | None = None
    template_id: str | None = None
    #: Mark the draft preliminary (a resident's read waiting for sign-off) or back to draft.
    preliminary: bool | None = None


__all__ = [
    "DELIVERY_MODES",
    "Hospital",
    "SECTIONS",
    "SECTION_TITLES",
    "OtherId",
    "PatientDemographics",
    "Performed",
    "ReportDraft",
    "ReportStatus",
    "ReportVersion",
    "ReportView",
    "Signature",
]
