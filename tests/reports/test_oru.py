"""The ORU^R01 of a signed report, parsed back with python-hl7 (and with our own inbound reader for PID)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime

import hl7
import pytest

from reports.oru import build_oru
from reports.types import ReportStatus, ReportView
from tests.reports.factory import CONCLUSION_VI, FINDINGS_VI, amended_view, report_view, signed_version
from worklist.hl7 import Message, patient_of, read_header

NOW = datetime(2026, 12, 5, 2, 16, 0, tzinfo=UTC)


def oru(view: ReportView, pdf: bytes | None = None, control_id: str = "20261205021600a1b2c3") -> bytes:
    return build_oru(view, sending_application="MINIPACS", sending_facility="BVHUYEN", receiving_application="EMR",
                     receiving_facility="BV_EMR", control_id=control_id, now=NOW, pdf=pdf)  # fmt: skip


def parse(raw: bytes) -> hl7.Message:
    assert raw.endswith(b"\r") and b"\n" not in raw
    return hl7.parse(raw.decode("utf-8"))


def field(msg: hl7.Message, segment: str, n: int, component: int = 1, repetition: int = 1, sub: int = 1,
          index: int = 1) -> str:  # fmt: skip
    """One value, unescaped, the way a receiver reads it (python-hl7's extract_field unescapes)."""
    return str(msg.extract_field(segment, index, n, repetition, component, sub))


def stamp(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y%m%d%H%M%S%z")


def obx_by_code(msg: hl7.Message) -> dict[str, int]:
    return {field(msg, "OBX", 3, index=i): i for i in range(1, len(msg.segments("OBX")) + 1)}


def test_header_patient_visit_and_order() -> None:
    view = report_view()
    msg = parse(oru(view))
    assert [str(s[0]) for s in msg] == ["MSH", "PID", "PV1", "ORC", "OBR", "OBX", "OBX", "OBX", "OBX"]
    assert str(msg.segment("MSH")[2]) == "^~\\&"
    assert [field(msg, "MSH", n) for n in (3, 4, 5, 6)] == ["MINIPACS", "BVHUYEN", "EMR", "BV_EMR"]
    assert field(msg, "MSH", 7) == NOW.astimezone().strftime("%Y%m%d%H%M%S%z")
    assert (field(msg, "MSH", 9, 1), field(msg, "MSH", 9, 2), field(msg, "MSH", 9, 3)) == ("ORU", "R01", "ORU_R01")
    assert field(msg, "MSH", 10) == "20261205021600a1b2c3"
    assert (field(msg, "MSH", 11), field(msg, "MSH", 12), field(msg, "MSH", 18)) == ("P", "2.5", "UNICODE UTF-8")

    assert [field(msg, "PID", 3, c) for c in (1, 4, 5)] == ["BN0012345", "BVHUYEN", "PI"]
    assert [field(msg, "PID", 3, c, repetition=2) for c in (1, 4, 5)] == ["079080012345", "CCCD", "NNVNM"]
    assert [field(msg, "PID", 3, c, repetition=3) for c in (1, 4, 5)] == ["DN4797912345678", "BHYT", "HC"]
    assert (field(msg, "PID", 5, 1), field(msg, "PID", 5, 2)) == ("Nguyễn", "Văn An")
    assert (field(msg, "PID", 7), field(msg, "PID", 8)) == ("19800315", "M")
    assert (field(msg, "PV1", 2), field(msg, "PV1", 8, 2), field(msg, "PV1", 8, 3)) == ("U", "Lê", "Minh Tuấn")

    signed = stamp(view.version.signature.signed_at)  # type: ignore[union-attr]
    assert (field(msg, "ORC", 1), field(msg, "ORC", 5), field(msg, "ORC", 9)) == ("RE", "CM", signed)
    assert (field(msg, "ORC", 2, 1), field(msg, "ORC", 2, 2)) == ("CD2612050007", "HIS")
    assert (field(msg, "ORC", 3, 1), field(msg, "ORC", 3, 2)) == ("XQ2612050001", "MINIPACS")
    assert (field(msg, "OBR", 2, 1), field(msg, "OBR", 2, 2)) == ("CD2612050007", "HIS")
    assert (field(msg, "OBR", 3, 1), field(msg, "OBR", 3, 2)) == ("XQ2612050001", "MINIPACS")
    assert [field(msg, "OBR", 4, c) for c in (1, 2, 3)] == ["18.0001.0028", "Chụp X-quang ngực thẳng", "DVKT"]
    assert field(msg, "OBR", 7) == "20261205085512"
    assert (field(msg, "OBR", 16, 2), field(msg, "OBR", 16, 3)) == ("Lê", "Minh Tuấn")
    assert (field(msg, "OBR", 18), field(msg, "OBR", 19)) == ("XQ2612050001", "")
    assert (field(msg, "OBR", 22), field(msg, "OBR", 24), field(msg, "OBR", 25)) == (signed, "DX", "F")
    assert (field(msg, "OBR", 32, 1, sub=1), field(msg, "OBR", 32, 1, sub=2)) == ("003421/HCM-CCHN",
                                                                                   "BS. Trần Thị Lan")  # fmt: skip


def test_our_own_inbound_reader_reads_the_patient_back() -> None:
    raw = oru(report_view())
    header = read_header(raw)
    assert (header.message_type, header.control_id, header.charset) == ("ORU^R01", "20261205021600a1b2c3",
                                                                          "UNICODE UTF-8")  # fmt: skip
    patient = patient_of(Message(raw.decode("utf-8"), header))
    expected = report_view().patient
    assert (patient.patient_id, patient.name, patient.birth_date, patient.sex) == (
        expected.patient_id, expected.name, expected.birth_date, expected.sex)  # fmt: skip
    assert patient.other_ids == expected.other_ids


def test_one_obx_per_non_empty_section_in_loinc() -> None:
    view = report_view()
    msg = parse(oru(view))
    signed = stamp(view.version.signature.signed_at)  # type: ignore[union-attr]
    rows = {}
    for i in range(1, 5):
        assert field(msg, "OBX", 1, index=i) == str(i)
        assert field(msg, "OBX", 2, index=i) == "FT"
        assert (field(msg, "OBX", 3, 3, index=i), field(msg, "OBX", 3, 6, index=i)) == ("LN", "L")
        assert field(msg, "OBX", 11, index=i) == "F"
        assert field(msg, "OBX", 14, index=i) == "20261205085512"
        assert (field(msg, "OBX", 16, 1, index=i), field(msg, "OBX", 16, 2, index=i)) == ("003421/HCM-CCHN",
                                                                                          "BS. Trần Thị Lan")  # fmt: skip
        assert field(msg, "OBX", 19, index=i) == signed
        rows[field(msg, "OBX", 3, index=i)] = (field(msg, "OBX", 3, 5, index=i), field(msg, "OBX", 5, index=i))
    assert rows == {
        "55752-0": ("Thông tin lâm sàng", "Ho kéo dài 3 tuần, sốt nhẹ về chiều."),
        "55111-9": ("Kỹ thuật", "Chụp X-quang ngực thẳng tư thế đứng, hít vào sâu."),
        "59776-5": ("Mô tả", FINDINGS_VI.replace("\n", "\r")),  # \.br\ is a line break to the receiver
        "19005-8": ("Kết luận", CONCLUSION_VI),
    }  # the empty recommendation has no OBX
    with_recommendation = replace(view, version=signed_version(sections={**view.version.sections,
                                                                         "recommendation": "Chụp CT ngực."}))  # fmt: skip
    assert "18783-1" in obx_by_code(parse(oru(with_recommendation)))


def test_delimiters_and_line_breaks_in_vietnamese_text_survive() -> None:
    tricky = "Tỷ lệ tim/ngực 0,48 | ổn\r\nKích thước ^ 12 & 15 mm ~ cũ\\mới\n\nĐ/đ: đường kính\x0b\x1c"
    view = report_view(signed_version(sections={"findings": tricky, "conclusion": "Kết luận: A|B^C~D&E\\F"}),
                       patient=replace(report_view().patient, name="Trần|Thị^Bé~&\\"))  # fmt: skip
    raw = oru(view)
    assert b"\x0b" not in raw and b"\x1c" not in raw  # would end the MLLP frame early
    msg = parse(raw)
    assert len(msg.segments("OBX")) == 2 and len(msg) == 7  # nothing split into extra segments or fields
    rows = obx_by_code(msg)
    assert field(msg, "OBX", 5, index=rows["59776-5"]) == (
        "Tỷ lệ tim/ngực 0,48 | ổn\rKích thước ^ 12 & 15 mm ~ cũ\\mới\r\rĐ/đ: đường kính")  # fmt: skip
    assert field(msg, "OBX", 5, index=rows["19005-8"]) == "Kết luận: A|B^C~D&E\\F"
    assert (field(msg, "PID", 5, 1), field(msg, "PID", 5, 2)) == ("Trần|Thị", "Bé~&\\")


def test_an_amendment_is_status_c_with_its_reason() -> None:
    view = amended_view()
    msg = parse(oru(view))
    assert field(msg, "OBR", 25) == "C"
    assert {field(msg, "OBX", 11, index=i) for i in range(1, len(msg.segments("OBX")) + 1)} == {"C"}
    assert field(msg, "NTE", 3) == "Bổ sung: nốt mờ 6 mm thùy trên phổi phải"
    assert [str(s[0]) for s in msg][4:6] == ["OBR", "NTE"]
    assert field(msg, "OBX", 5, index=obx_by_code(msg)["19005-8"]) == view.version.section("conclusion")
    assert field(msg, "OBR", 22) == stamp(view.version.signature.signed_at)  # type: ignore[union-attr]
    # The original version, sent again (e.g. replayed), stays F.
    assert field(parse(oru(view.at_version(1))), "OBR", 25) == "F"


def test_the_signed_pdf_rides_along_as_base64_ed() -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
    msg = parse(oru(report_view(), pdf=pdf))
    last = len(msg.segments("OBX"))
    assert (field(msg, "OBX", 1, index=last), field(msg, "OBX", 2, index=last)) == (str(last), "ED")
    assert (field(msg, "OBX", 3, 1, index=last), field(msg, "OBX", 3, 3, index=last)) == ("18748-4", "LN")
    assert [field(msg, "OBX", 5, c, index=last) for c in (1, 2, 3, 4)] == ["MINIPACS", "AP", "PDF", "Base64"]
    assert base64.b64decode(field(msg, "OBX", 5, 5, index=last), validate=True) == pdf
    assert field(msg, "OBX", 11, index=last) == "F"


def test_control_ids_differ_per_message() -> None:
    assert field(parse(oru(report_view(), control_id="X1")), "MSH", 10) == "X1"
    assert field(parse(oru(report_view(), control_id="X2")), "MSH", 10) == "X2"


@pytest.mark.parametrize("status", [ReportStatus.DRAFT, ReportStatus.PRELIMINARY, ReportStatus.CANCELLED])
def test_only_signed_versions_are_results(status: ReportStatus) -> None:
    view = report_view(signed_version(status=status, signature=None))
    with pytest.raises(ValueError, match="only a signed"):
        oru(view)
