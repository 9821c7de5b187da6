"""ReportView values for the tests of the report outputs (PDF, SR, ORU, FHIR, claim values).

The outputs are pure functions of a ReportView, so their tests build one here
instead of going through the service; the service's own tests check that it
builds the same shape from the database.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from archive.patients import OtherId, PatientDemographics
from reports.types import Performed, ReportStatus, ReportVersion, ReportView, Signature

FINDINGS_VI = ("Không thấy tổn thương khu trú nhu mô phổi hai bên.\n"
               "Bóng tim không to. Góc sườn hoành hai bên nhọn.")  # fmt: skip
CONCLUSION_VI = "Hình ảnh X-quang ngực thẳng trong giới hạn bình thường."


def signed_version(number: int = 1, status: ReportStatus = ReportStatus.FINAL, **overrides: Any) -> ReportVersion:
    """A signed version in Vietnamese, as the service makes it when a radiologist signs."""
    version = ReportVersion(
        number=number, status=status, language="vi", template_id="xq-nguc-thang-vi",
        sections={
            "clinical_information": "Ho kéo dài 3 tuần, sốt nhẹ về chiều.",
            "technique": "Chụp X-quang ngực thẳng tư thế đứng, hít vào sâu.",
            "findings": FINDINGS_VI,
            "conclusion": CONCLUSION_VI,
            "recommendation": "",
        },
        structured={}, author="bs.lan", author_name="BS. Trần Thị Lan",
        created_at="2026-12-05T02:10:00+00:00", updated_at="2026-12-05T02:14:00+00:00",
        signature=Signature(username="bs.lan", display_name="BS. Trần Thị Lan", certificate_number="003421/HCM-CCHN",
                            signed_at="2026-12-05T02:15:30+00:00", x509_serial="1f2e3d",
                            x509_subject="CN=Tran Thi Lan,O=Benh vien Da khoa Huyen"),
    )  # fmt: skip
    return replace(version, **overrides)


def report_view(version: ReportVersion | None = None, **overrides: Any) -> ReportView:
    """A final chest X-ray report of a Vietnamese patient with an HIS order."""
    version = version or signed_version()
    view = ReportView(
        id=7, accession_number="XQ2612050001", status=version.status, revision=3,
        patient=PatientDemographics(patient_id="BN0012345", issuer="BVHUYEN", name="Nguyễn^Văn An",
                                    birth_date="19800315", sex="M",
                                    other_ids=(OtherId("079080012345", "CCCD"), OtherId("DN4797912345678", "BHYT"))),
        study_instance_uid="1.2.826.0.1.3680043.8.498.11111111111111111111111111111",
        study_date="20261205", study_time="085512", study_description="X-quang ngực thẳng",
        modality="DX", placer_issuer="HIS", placer_order_number="CD2612050007", filler_order_number="XQ2612050001",
        procedure_code="18.0001.0028", procedure_scheme="DVKT", procedure_description="Chụp X-quang ngực thẳng",
        service_code="18.0001.0028", indicator_code="18.0001.0028", referring_physician="Lê^Minh Tuấn",
        priority="ROUTINE",
        performed=Performed(at="20261205085512", performer="Phạm^Văn Hùng", station_ae_title="DR_ROOM1",
                            device_serial_number="SN-DR-88231"),
        version=version, versions=(version,),
        created_at="2026-12-05T02:10:00+00:00", updated_at="2026-12-05T02:15:30+00:00",
    )  # fmt: skip
    return replace(view, **overrides)


def amended_view() -> ReportView:
    """Version 1 final, version 2 an amendment with a reason (HL7 result status C)."""
    first = signed_version()
    second = signed_version(
        2, ReportStatus.AMENDED, reason="Bổ sung: nốt mờ 6 mm thùy trên phổi phải",
        sections={**first.sections, "conclusion": "Nốt mờ 6 mm thùy trên phổi phải, đề nghị chụp CT ngực."},
    )  # fmt: skip
    return report_view(second, versions=(first, second), status=ReportStatus.AMENDED, revision=6)
