"""The printed report: an A4 PDF with the hospital's header, in the report's language.

Text is real text in an embedded font (DejaVu Sans covers Vietnamese), so the
PDF can be searched, read aloud and checked with `pdftotext`, and a PAdES
signature over it (reports.signing) signs what a person reads. The layout is
reportlab's platypus: paragraphs wrap, and long findings flow onto further
pages with the accession number and "page i/n" on each.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import qrcode
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from qrcode.image.pil import PilImage
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from archive.errors import ArchiveError
from reports.types import SECTION_TITLES, SECTIONS, Hospital, ReportStatus, ReportView

log = logging.getLogger(__name__)

#: Where Debian's fonts-dejavu-core puts DejaVu Sans.
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")

#: The hospital's clock for printed times (Vietnam has no daylight saving time).
try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    LOCAL_TZ: tzinfo = ZoneInfo("Asia/Ho_Chi_Minh")
except (ImportError, ZoneInfoNotFoundError):  # no tz database on the machine
    LOCAL_TZ = timezone(timedelta(hours=7), "ICT")

QR_SIZE = 30 * mm
KEY_IMAGE_BOX = (80 * mm, 80 * mm)
LOGO_HEIGHT = 18 * mm

LABELS: dict[str, dict[str, str]] = {
    "vi": {
        "title": "PHIẾU KẾT QUẢ CHẨN ĐOÁN HÌNH ẢNH",
        "patient": "Thông tin bệnh nhân",
        "name": "Họ và tên",
        "patient_id": "Mã bệnh nhân",
        "birth_date": "Ngày sinh",
        "sex": "Giới tính",
        "bhyt": "Số thẻ BHYT",
        "study": "Thông tin chỉ định",
        "accession": "Mã phiếu chỉ định",
        "procedure": "Chỉ định",
        "modality": "Phương thức",
        "study_date": "Ngày thực hiện",
        "referring": "Bác sĩ chỉ định",
        "key_images": "Hình ảnh minh họa",
        "signer": "Bác sĩ đọc kết quả",
        "certificate": "Số CCHN",
        "signed_at": "Thời gian ký",
        "signed": "Đã ký số",
        "unsigned": "CHƯA KÝ: bản nháp, không có giá trị pháp lý",
        "amended": "BẢN SỬA ĐỔI (phiên bản {number}), thay thế các phiên bản trước. Lý do: {reason}",
        "cancelled": "ĐÃ HỦY. Lý do: {reason}",
        "qr": "Quét mã để xem ảnh và kết quả",
        "page": "Trang {page}/{pages}",
        "printed": "In lúc {at}",
        "phone": "ĐT",
        "M": "Nam",
        "F": "Nữ",
        "O": "Khác",
    },
    "en": {
        "title": "DIAGNOSTIC IMAGING REPORT",
        "patient": "Patient",
        "name": "Name",
        "patient_id": "Patient ID",
        "birth_date": "Date of birth",
        "sex": "Sex",
        "bhyt": "Health insurance no.",
        "study": "Examination",
        "accession": "Accession number",
        "procedure": "Procedure",
        "modality": "Modality",
        "study_date": "Date performed",
        "referring": "Referring physician",
        "key_images": "Key images",
        "signer": "Reporting radiologist",
        "certificate": "Practising certificate no.",
        "signed_at": "Signed at",
        "signed": "Digitally signed",
        "unsigned": "NOT SIGNED: draft, not valid as a report",
        "amended": "AMENDED REPORT (version {number}), replaces earlier versions. Reason: {reason}",
        "cancelled": "CANCELLED. Reason: {reason}",
        "qr": "Scan to see the images and the report",
        "page": "Page {page}/{pages}",
        "printed": "Printed {at}",
        "phone": "Tel.",
        "M": "Male",
        "F": "Female",
        "O": "Other",
    },
}


class FontMissing(ArchiveError):
    """The font that covers Vietnamese is not installed: the PDF would show boxes."""

    http_status = 503


def render_pdf(
    view: ReportView,
    hospital: Hospital,
    *,
    share_url: str = "",
    key_images: Sequence[bytes] = (),
    printed_at: datetime | None = None,
    font_dir: Path | None = None,
) -> bytes:
    """The report `view` (its `version`) as an A4 PDF, in the version's language.

    Parameters
    ----------
    share_url
        The patient's link; printed as a QR code with a caption when given.
    key_images
        JPEG images printed after the sections, scaled to fit.
    printed_at
        Shown in the footer. The PDF's creation date is this, else the
        signing time; nothing else varies, so the same arguments give the
        same PDF (reportlab's invariant mode).
    font_dir
        Where DejaVuSans.ttf and DejaVuSans-Bold.ttf are (default FONT_DIR).
    """
    lang = view.version.language if view.version.language in LABELS else "vi"
    labels = LABELS[lang]
    regular, bold = _fonts(font_dir or FONT_DIR)
    styles = _styles(regular, bold)
    images = [_jpeg(data, f"key_images[{i}]") for i, data in enumerate(key_images)]

    story: list[Any] = [*_header(hospital, styles), Spacer(1, 4 * mm),
                        Paragraph(escape(labels["title"]), styles["title"]), Spacer(1, 3 * mm)]  # fmt: skip
    story += _notice(view, labels, styles)
    story += _details(view, labels, styles)
    for name in SECTIONS:
        text = view.version.section(name).strip()
        if text:
            story.append(Paragraph(escape(SECTION_TITLES[lang][name]), styles["heading"]))
            story += [Paragraph(escape(line), styles["body"]) if line.strip() else Spacer(1, 2 * mm)
                      for line in text.splitlines()]  # fmt: skip
    if images:
        story.append(Paragraph(escape(labels["key_images"]), styles["heading"]))
        story.append(_image_grid(images))
    story.append(Spacer(1, 6 * mm))
    story.append(KeepTogether(_closing(view, labels, styles, share_url)))

    out = io.BytesIO()
    footer = _footer_text(view, labels, printed_at)
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=15 * mm, bottomMargin=18 * mm,
        title=f"{labels['title']} {view.accession_number}", author=hospital.name, subject=view.accession_number,
        creator="minipacs", invariant=True,
        initialFontName=regular,  # no page refers to an unembedded Helvetica
    )  # fmt: skip
    created = printed_at or _signed_at(view)
    with _build_lock:  # reportlab keeps shared state (fonts' per-document subsets, rl_config): one build at a time
        doc.build(story, canvasmaker=_numbered_canvas(footer, labels["page"], regular, created))
    pdf = out.getvalue()
    log.info("report PDF for %s version %d: %d pages, %d bytes", view.accession_number, view.version.number,
             doc.page, len(pdf))  # fmt: skip
    return pdf


# --- fonts and styles ---------------------------------------------------------------

_font_lock = threading.Lock()
_build_lock = threading.Lock()
_registered: dict[Path, tuple[str, str]] = {}


def _fonts(directory: Path) -> tuple[str, str]:
    """Register DejaVu Sans regular and bold from `directory` once; their reportlab names."""
    directory = directory.resolve()
    with _font_lock:
        if directory in _registered:
            return _registered[directory]
        paths = [directory / name for name in FONT_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FontMissing(
                f"the report font is missing ({', '.join(missing)}): install it with "
                "`apt-get install fonts-dejavu-core` (it covers Vietnamese)"
            )
        suffix = "" if not _registered else f"-{len(_registered)}"
        names = (f"DejaVuSans{suffix}", f"DejaVuSans-Bold{suffix}")
        for name, path in zip(names, paths):
            pdfmetrics.registerFont(TTFont(name, str(path)))
        pdfmetrics.registerFontFamily(names[0], normal=names[0], bold=names[1], italic=names[0],
                                      boldItalic=names[1])  # fmt: skip
        _registered[directory] = names
        return names


def _styles(regular: str, bold: str) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=regular, fontSize=10.5, leading=14, spaceAfter=1)
    return {
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=8.5, leading=11),
        "label": ParagraphStyle("label", parent=base, fontSize=9.5, leading=13, textColor=colors.HexColor("#444444")),
        "value": ParagraphStyle("value", parent=base, fontSize=10, leading=13),
        "hospital": ParagraphStyle("hospital", parent=base, fontName=bold, fontSize=12, leading=15),
        "title": ParagraphStyle("title", parent=base, fontName=bold, fontSize=15, leading=19, alignment=TA_CENTER),
        "heading": ParagraphStyle("heading", parent=base, fontName=bold, fontSize=11, leading=15,
                                  spaceBefore=7, spaceAfter=2),
        "notice": ParagraphStyle("notice", parent=base, fontName=bold, fontSize=10, leading=13,
                                 textColor=colors.HexColor("#a00000")),
        "bold": ParagraphStyle("bold", parent=base, fontName=bold),
        "caption": ParagraphStyle("caption", parent=base, fontSize=8, leading=10, alignment=TA_CENTER),
    }  # fmt: skip


# --- blocks ----------------------------------------------------------------------------


def _header(hospital: Hospital, styles: dict[str, ParagraphStyle]) -> list[Any]:
    lines = [Paragraph(escape(hospital.name), styles["hospital"])]
    if hospital.department:
        lines.append(Paragraph(escape(hospital.department), styles["body"]))
    contact = " · ".join(p for p in (hospital.address, f"ĐT/Tel. {hospital.phone}" if hospital.phone else "") if p)
    if contact:
        lines.append(Paragraph(escape(contact), styles["small"]))
    logo = _logo(hospital.logo_path)
    if logo is None:
        return lines
    table = Table([[logo, lines]], colWidths=[logo.drawWidth + 4 * mm, None])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return [table]


def _logo(path: str) -> Image | None:
    if not path:
        return None
    try:
        with PILImage.open(path) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError):
        # A bad logo setting must not stop a radiologist from signing: print without it.
        log.warning("report logo %s cannot be read as an image; printing without it", path)
        return None
    return Image(path, width=LOGO_HEIGHT * width / height, height=LOGO_HEIGHT, mask="auto")  # keep transparency


def _notice(view: ReportView, labels: dict[str, str], styles: dict[str, ParagraphStyle]) -> list[Any]:
    version = view.version
    if version.status is ReportStatus.AMENDED:
        text = labels["amended"].format(number=version.number, reason=version.reason or "-")
    elif version.status is ReportStatus.CANCELLED:
        text = labels["cancelled"].format(reason=version.reason or "-")
    elif not version.status.is_signed:
        text = labels["unsigned"]
    else:
        return []
    box = Table([[Paragraph(escape(text), styles["notice"])]], colWidths=["100%"])
    box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.8, colors.HexColor("#a00000")),
                             ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 4)]))  # fmt: skip
    return [box, Spacer(1, 3 * mm)]


def _details(view: ReportView, labels: dict[str, str], styles: dict[str, ParagraphStyle]) -> list[Any]:
    patient = view.patient
    bhyt = next((o.value for o in patient.other_ids if o.issuer.upper() == "BHYT"), "")
    left = [(labels["name"], natural_name(patient.name)), (labels["patient_id"], patient.patient_id),
            (labels["birth_date"], _date(patient.birth_date)), (labels["sex"], labels.get(patient.sex, patient.sex))]  # fmt: skip
    if bhyt:
        left.append((labels["bhyt"], bhyt))
    right = [(labels["accession"], view.accession_number),
             (labels["procedure"], view.procedure_description or view.study_description),
             (labels["modality"], view.modality), (labels["study_date"], _date(view.study_date, view.study_time)),
             (labels["referring"], natural_name(view.referring_physician))]  # fmt: skip
    rows = []
    for i in range(max(len(left), len(right))):
        row: list[Any] = []
        for pairs in (left, right):
            label, value = pairs[i] if i < len(pairs) else ("", "")
            row += [Paragraph(escape(label), styles["label"]),
                    Paragraph(escape(value), styles["bold"] if label == labels["name"] else styles["value"])]  # fmt: skip
        rows.append(row)
    table = Table(rows, colWidths=[30 * mm, 50 * mm, 36 * mm, None])
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 2),
        ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
        ("LINEABOVE", (0, 0), (-1, 0), 0.5, colors.grey), ("LINEBELOW", (0, -1), (-1, -1), 0.5, colors.grey),
    ]))  # fmt: skip
    return [table]


def _closing(view: ReportView, labels: dict[str, str], styles: dict[str, ParagraphStyle], share_url: str) -> list[Any]:
    """The QR code (left) and the signer (right), kept on one page."""
    signer: list[Any] = []
    signature, signed_at = view.version.signature, _signed_at(view)
    if signature is not None and signed_at is not None:
        signer = [
            Paragraph(escape(labels["signer"]), styles["label"]),
            Paragraph(escape(signature.display_name or signature.username), styles["bold"]),
            Paragraph(escape(f"{labels['certificate']}: {signature.certificate_number or '-'}"), styles["value"]),
            Paragraph(escape(f"{labels['signed_at']}: {signed_at.astimezone(LOCAL_TZ):%d/%m/%Y %H:%M}"),
                      styles["value"]),
            Paragraph(escape(labels["signed"]), styles["notice"]),
        ]  # fmt: skip
    qr: list[Any] = []
    if share_url:
        qr = [_qr_image(share_url), Paragraph(escape(labels["qr"]), styles["caption"])]
    if not qr and not signer:
        return []
    table = Table([[qr, signer]], colWidths=[QR_SIZE + 24 * mm, None])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (1, 0), (1, 0), 20 * mm)]))
    return [table]


def _qr_image(url: str) -> Image:
    """The share link as a QR code (ISO/IEC 18004, error correction M) via the qrcode library."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=4, border=4)
    code.add_data(url)
    code.make(fit=True)
    buf = io.BytesIO()
    code.make_image(image_factory=PilImage).save(buf)
    buf.seek(0)
    return Image(buf, width=QR_SIZE, height=QR_SIZE)


def _jpeg(data: bytes, name: str) -> tuple[bytes, int, int]:
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                raise ValueError(f"{name} is a {img.format} image, not a JPEG")
            return data, img.size[0], img.size[1]
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"{name} is not a JPEG image") from exc


def _image_grid(images: list[tuple[bytes, int, int]]) -> Table:
    max_w, max_h = KEY_IMAGE_BOX
    cells: list[Any] = []
    for data, width, height in images:
        scale = min(max_w / width, max_h / height)
        cells.append(Image(io.BytesIO(data), width=width * scale, height=height * scale))
    rows = [cells[i:i + 2] + [""] * (2 - len(cells[i:i + 2])) for i in range(0, len(cells), 2)]
    return Table(rows, colWidths=[max_w + 4 * mm] * 2, hAlign="LEFT")


# --- footer -----------------------------------------------------------------------------


def _footer_text(view: ReportView, labels: dict[str, str], printed_at: datetime | None) -> str:
    parts = [view.accession_number, f"v{view.version.number}"]
    if printed_at is not None:
        when = printed_at if printed_at.tzinfo else printed_at.replace(tzinfo=UTC)
        parts.append(labels["printed"].format(at=f"{when.astimezone(LOCAL_TZ):%d/%m/%Y %H:%M}"))
    return " · ".join(parts)


def _numbered_canvas(footer: str, page_label: str, font: str, created: datetime | None) -> type[Canvas]:
    """A canvas that writes "page i/n" once the number of pages is known (after the last one)."""

    class NumberedCanvas(Canvas):  # type: ignore[misc]  # reportlab ships no type information
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []
            if created is not None:
                # Invariant mode dates every PDF 2000-01-01; give it the real moment instead.
                stamp = self._doc._timeStamp
                stamp.t = created.timestamp()
                stamp.lt = time.gmtime(stamp.t)
                stamp.YMDhms = tuple(stamp.lt)[:6]

        def showPage(self) -> None:  # noqa: N802 (reportlab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.setFont(font, 8)
                self.setFillColor(colors.HexColor("#555555"))
                self.drawString(18 * mm, 10 * mm, footer)
                self.drawRightString(A4[0] - 18 * mm, 10 * mm, page_label.format(page=self._pageNumber, pages=total))
                super().showPage()
            super().save()

    return NumberedCanvas


def _signed_at(view: ReportView) -> datetime | None:
    signature = view.version.signature
    if signature is None or not signature.signed_at:
        return None
    moment = datetime.fromisoformat(signature.signed_at)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def natural_name(person_name: str) -> str:
    """A DICOM PN as people write it: "Nguyễn^Văn An" -> "Nguyễn Văn An".

    PN components are family^given^middle^prefix^suffix (PS3.5 6.2); a
    Vietnamese name reads family, middle, given, so "Nguyễn^An^Văn" gives the
    same. Only the first (alphabetic) component group is used.
    """
    parts = (person_name.split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (p.strip() for p in parts)
    return " ".join(p for p in (prefix, family, middle, given, suffix) if p)


def _date(yyyymmdd: str, hhmmss: str = "") -> str:
    """DICOM DA (and TM) as dd/mm/yyyy [HH:MM]; anything else as given."""
    da = yyyymmdd.strip()
    if len(da) != 8 or not da.isdigit():
        return da
    text = f"{da[6:8]}/{da[4:6]}/{da[0:4]}"
    tm = hhmmss.strip()
    if len(tm) >= 4 and tm[:4].isdigit():
        text += f" {tm[0:2]}:{tm[2:4]}"
    return text


__all__ = ["FONT_DIR", "FontMissing", "LABELS", "LOCAL_TZ", "natural_name", "render_pdf"]
