"""Real validators for the report's DICOM objects: dicom3tools `dciodvfy` and dcmtk `dsrdump`."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from reportlab.pdfgen import canvas

from reports.dicom_sr import to_part10
from reports.types import Hospital

HOSPITAL = Hospital(name="Bệnh viện Đa khoa Huyện", department="Khoa Chẩn đoán hình ảnh",
                    facility_code="79123")  # fmt: skip

#: dciodvfy warnings the objects are known to raise, and why they stay.
#: The HIS's procedure catalogue ("DVKT", as the order and MWL carry it) is not
#: a coding scheme dciodvfy knows; the SR declares it in the Coding Scheme
#: Identification Sequence (PS3.3 C.12.1.1.2), which dciodvfy does not consult.
KNOWN_WARNINGS = frozenset({
    "Warning - Unrecognized defined term <DVKT> for value 1 of attribute <Coding Scheme Designator>",
})  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    returncode: int
    errors: list[str]
    warnings: list[str]
    output: str


def dciodvfy(path: Path) -> Verdict:
    """Run dicom3tools' IOD verifier on a Part 10 file."""
    assert shutil.which("dciodvfy"), "dciodvfy is not installed (Debian package dicom3tools)"
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return Verdict(done.returncode, [line for line in lines if line.startswith("Error")],
                   [line for line in lines if line.startswith("Warning")], done.stdout + done.stderr)  # fmt: skip


def write(ds: Dataset, path: Path) -> Path:
    path.write_bytes(to_part10(ds))
    return path


def small_pdf(text: str = "Kết quả chẩn đoán", pad_to_odd: bool = True) -> bytes:
    """A one-page PDF (reportlab, invariant so it is the same every run), odd-sized by default.

    An odd length is the harder case: DICOM pads values to even lengths.
    """
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, invariant=True)
    pdf.drawString(72, 720, text)
    pdf.save()
    data = buffer.getvalue()
    if pad_to_odd and len(data) % 2 == 0:
        data += b"\n"  # whitespace after %%EOF is allowed (ISO 32000-1 7.5.5)
    return data
