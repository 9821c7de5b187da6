"""The report PDF, read back by poppler (pdftotext, pdffonts, pdfimages) as any reader would."""

from __future__ import annotations

import io
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import qrcode
from PIL import Image

from reports.pdf import FontMissing, natural_name, render_pdf
from reports.types import Hospital, ReportStatus
from tests.reports.factory import CONCLUSION_VI, FINDINGS_VI, amended_view, report_view, signed_version

HOSPITAL = Hospital(name="Bệnh viện Đa khoa Huyện Củ Chi", department="Khoa Chẩn đoán hình ảnh",
                    address="1 Đường Lê Lợi, Củ Chi", phone="028 3790 1234")  # fmt: skip
SHARE_URL = "https://pacs.benhvien.vn/s/Xk3vQ9zR2mT8pL5w"


def write(tmp_path: Path, pdf: bytes, name: str = "report.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(pdf)
    return path


def poppler(*args: str | Path) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=60).stdout


def text_of(tmp_path: Path, pdf: bytes, *pages: int) -> str:
    span = ["-f", str(pages[0]), "-l", str(pages[-1])] if pages else []
    return poppler("pdftotext", *span, write(tmp_path, pdf), "-")


def page_count(tmp_path: Path, pdf: bytes) -> int:
    match = re.search(r"^Pages:\s+(\d+)$", poppler("pdfinfo", write(tmp_path, pdf)), re.M)
    assert match
    return int(match.group(1))


def image_list(tmp_path: Path, pdf: bytes) -> list[list[str]]:
    lines = poppler("pdfimages", "-list", write(tmp_path, pdf)).splitlines()[2:]
    return [line.split() for line in lines]


def jpeg(width: int, height: int, colour: tuple[int, int, int] = (90, 90, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="JPEG")
    return buf.getvalue()


def test_vietnamese_report_reads_back_exactly(tmp_path: Path) -> None:
    text = text_of(tmp_path, render_pdf(report_view(), HOSPITAL, share_url=SHARE_URL))
    lines = [line.strip() for line in text.splitlines()]
    assert CONCLUSION_VI in lines  # the conclusion, character for character (NFC, with its diacritics)
    for line in FINDINGS_VI.splitlines():
        assert line in lines
    for expected in ("Bệnh viện Đa khoa Huyện Củ Chi", "Khoa Chẩn đoán hình ảnh", "PHIẾU KẾT QUẢ CHẨN ĐOÁN HÌNH ẢNH",
                     "Nguyễn Văn An", "BN0012345", "15/03/1980", "Nam", "DN4797912345678", "XQ2612050001",
                     "Chụp X-quang ngực thẳng", "DX", "05/12/2026 08:55", "Lê Minh Tuấn",
                     "Thông tin lâm sàng", "Kỹ thuật", "Mô tả", "Kết luận",
                     "BS. Trần Thị Lan", "Số CCHN: 003421/HCM-CCHN", "Đã ký số",
                     "Quét mã để xem ảnh và kết quả", "Trang 1/1"):  # fmt: skip
        assert expected in text, expected
    # Signed at 02:15:30 UTC: 09:15 in Vietnam (UTC+7).
    assert "Thời gian ký: 05/12/2026 09:15" in text
    assert "Đề nghị" not in text  # the empty recommendation is left out
    assert "Nguyễn^Văn" not in text and "CHƯA KÝ" not in text and "SỬA ĐỔI" not in text
    # Labels come in the order of SECTIONS.
    order = [text.index(h) for h in ("Thông tin lâm sàng", "Kỹ thuật\n", "Mô tả", "Kết luận\n")]
    assert order == sorted(order)


def test_english_report_has_english_headings(tmp_path: Path) -> None:
    version = signed_version(language="en", template_id="xq-chest-pa-en", sections={
        "clinical_information": "Cough for three weeks.", "technique": "", "findings": "Clear lungs.",
        "conclusion": "Normal chest radiograph.", "recommendation": "Follow up if symptoms persist.",
    })  # fmt: skip
    text = " ".join(text_of(tmp_path, render_pdf(report_view(version), HOSPITAL, share_url=SHARE_URL)).split())
    for expected in ("DIAGNOSTIC IMAGING REPORT", "Clinical information", "Findings", "Conclusion", "Recommendation",
                     "Normal chest radiograph.", "Male", "Digitally signed", "Practising certificate no.",
                     "Signed at: 05/12/2026 09:15", "Scan to see the images and the report", "Page 1/1",
                     "Nguyễn Văn An"):  # fmt: skip
        assert expected in text, expected
    assert "Technique" not in text  # empty section
    assert "Kết luận" not in text and "PHIẾU" not in text


def test_amended_version_carries_the_notice_with_reason_and_number(tmp_path: Path) -> None:
    view = amended_view()
    text = text_of(tmp_path, render_pdf(view, HOSPITAL))
    flat = " ".join(text.split())
    assert "BẢN SỬA ĐỔI (phiên bản 2)" in flat
    assert "Lý do: Bổ sung: nốt mờ 6 mm thùy trên phổi phải" in flat
    assert "Nốt mờ 6 mm thùy trên phổi phải, đề nghị chụp CT ngực." in flat
    # The old version printed on its own has no notice and its own conclusion.
    old = " ".join(text_of(tmp_path, render_pdf(view.at_version(1), HOSPITAL)).split())
    assert "SỬA ĐỔI" not in old and CONCLUSION_VI in old


def test_drafts_and_cancelled_versions_say_so(tmp_path: Path) -> None:
    draft = report_view(signed_version(status=ReportStatus.DRAFT, signature=None))
    text = " ".join(text_of(tmp_path, render_pdf(draft, HOSPITAL)).split())
    assert "CHƯA KÝ" in text and "Đã ký số" not in text and "Số CCHN" not in text
    cancelled = report_view(signed_version(status=ReportStatus.CANCELLED, signature=None, reason="Chỉ định nhầm"))
    assert "ĐÃ HỦY. Lý do: Chỉ định nhầm" in " ".join(text_of(tmp_path, render_pdf(cancelled, HOSPITAL)).split())


def test_dejavu_is_embedded(tmp_path: Path) -> None:
    fonts = poppler("pdffonts", write(tmp_path, render_pdf(report_view(), HOSPITAL))).splitlines()[2:]
    rows = {line.split()[0].split("+")[-1]: line.split() for line in fonts}
    for name in ("DejaVuSans", "DejaVuSans-Bold"):
        assert name in rows, fonts
        assert rows[name][-5] == "yes", rows[name]  # the "emb" column
    assert all(row[-5] == "yes" for name, row in rows.items() if name.startswith("DejaVu"))


def test_qr_code_encodes_the_share_link(tmp_path: Path) -> None:
    pdf = render_pdf(report_view(), HOSPITAL, share_url=SHARE_URL)
    images = image_list(tmp_path, pdf)
    assert len(images) == 1, images
    # No QR decoder is installed: extract the image and compare it module by module with
    # the symbol the qrcode library makes for the link (same version, error correction, mask).
    poppler("pdfimages", "-png", write(tmp_path, pdf), tmp_path / "img")
    printed = Image.open(tmp_path / "img-000.png").convert("L")
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(SHARE_URL)
    code.make(fit=True)
    matrix = code.get_matrix()  # with the border
    modules = len(matrix)
    assert printed.width == printed.height and printed.width % modules == 0
    box = printed.width // modules
    seen = [[printed.getpixel((x * box + box // 2, y * box + box // 2)) < 128 for x in range(modules)]  # type: ignore[operator]
            for y in range(modules)]  # fmt: skip
    assert seen == matrix
    # Without a link there is no code and no caption.
    assert image_list(tmp_path, render_pdf(report_view(), HOSPITAL)) == []
    assert "Quét mã" not in text_of(tmp_path, render_pdf(report_view(), HOSPITAL))


def test_key_images_are_printed_scaled(tmp_path: Path) -> None:
    pdf = render_pdf(report_view(), HOSPITAL, key_images=[jpeg(512, 512), jpeg(1200, 300, (200, 10, 10))])
    images = image_list(tmp_path, pdf)
    assert [(row[3], row[4]) for row in images] == [("512", "512"), ("1200", "300")]
    assert "Hình ảnh minh họa" in text_of(tmp_path, pdf)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    with pytest.raises(ValueError, match=r"key_images\[1\] is a PNG image, not a JPEG"):
        render_pdf(report_view(), HOSPITAL, key_images=[jpeg(8, 8), buf.getvalue()])
    with pytest.raises(ValueError, match=r"key_images\[0\] is not a JPEG image"):
        render_pdf(report_view(), HOSPITAL, key_images=[b"not an image"])


def test_logo_is_printed_and_a_bad_one_is_left_out(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    Image.new("RGB", (200, 100), (0, 90, 160)).save(logo)
    assert len(image_list(tmp_path, render_pdf(report_view(), replace(HOSPITAL, logo_path=str(logo))))) == 1
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a PNG")
    for path in (broken, tmp_path / "missing.png"):
        pdf = render_pdf(report_view(), replace(HOSPITAL, logo_path=str(path)))
        assert image_list(tmp_path, pdf) == [] and "Bệnh viện Đa khoa Huyện Củ Chi" in text_of(tmp_path, pdf)


def test_long_findings_flow_onto_further_pages(tmp_path: Path) -> None:
    paragraph = ("Nhu mô gan đồng nhất, bờ đều, không thấy khối khu trú; đường mật trong và ngoài gan không giãn; "
                 "túi mật thành mỏng, không có sỏi. ")  # fmt: skip
    findings = "\n".join(f"{i}. {paragraph * 3}" for i in range(1, 41))
    version = signed_version(sections={**signed_version().sections, "findings": findings})
    pdf = render_pdf(report_view(version), HOSPITAL, share_url=SHARE_URL)
    pages = page_count(tmp_path, pdf)
    assert pages >= 3
    assert f"Trang 1/{pages}" in text_of(tmp_path, pdf, 1)
    last = text_of(tmp_path, pdf, pages)
    assert f"Trang {pages}/{pages}" in last
    assert CONCLUSION_VI in last and "Đã ký số" in last  # the end of the report is on the last page
    whole = " ".join(text_of(tmp_path, pdf).split())
    assert "40. Nhu mô gan đồng nhất" in whole  # nothing cut off


def test_markup_in_the_text_is_printed_as_text(tmp_path: Path) -> None:
    sections = {**signed_version().sections, "findings": "Khối 3 < 5 cm & <b>không</b> rõ <br/> bờ"}
    text = text_of(tmp_path, render_pdf(report_view(signed_version(sections=sections)), HOSPITAL))
    assert "Khối 3 < 5 cm & <b>không</b> rõ <br/> bờ" in text


def test_same_view_same_bytes(tmp_path: Path) -> None:
    assert render_pdf(report_view(), HOSPITAL, share_url=SHARE_URL) == render_pdf(report_view(), HOSPITAL,
                                                                                  share_url=SHARE_URL)  # fmt: skip
    info = poppler("pdfinfo", write(tmp_path, render_pdf(report_view(), HOSPITAL)))
    assert re.search(r"CreationDate:\s+Sat Dec\s+5 02:15:30 2026", info), info  # the signing time


def test_renders_in_threads_are_the_same_as_alone() -> None:
    """gunicorn's gthread workers render in threads; reportlab's shared font state must not mix documents."""
    views = [report_view(), amended_view()] * 6
    alone = [render_pdf(v, HOSPITAL, share_url=SHARE_URL) for v in views]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda v: render_pdf(v, HOSPITAL, share_url=SHARE_URL), views))
    assert together == alone


def test_a_missing_font_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(FontMissing, match=r"apt-get install fonts-dejavu-core"):
        render_pdf(report_view(), HOSPITAL, font_dir=tmp_path)


@pytest.mark.parametrize(("pn", "natural"), [
    ("Nguyễn^Văn An", "Nguyễn Văn An"),
    ("Nguyễn^An^Văn", "Nguyễn Văn An"),
    ("Trần Thị Lan", "Trần Thị Lan"),
    ("Lê^Minh Tuấn^^BS.", "BS. Lê Minh Tuấn"),
    ("NGUYEN^VAN AN=Nguyễn^Văn An", "NGUYEN VAN AN"),
    ("", ""),
])  # fmt: skip
def test_natural_name(pn: str, natural: str) -> None:
    assert natural_name(pn) == natural
