"""Time to make one signed report PDF: render (reportlab), unlock the PKCS#12, sign (pyHanko PAdES), verify.

Sign-off does render + unlock + sign while the radiologist waits, so their sum
is the figure that matters. The key is a throwaway RSA-2048 certificate made
here (the size Vietnamese CAs issue).

    .venv/bin/python bench/report_pdf.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archive.patients import OtherId, PatientDemographics  # noqa: E402
from reports.pdf import render_pdf  # noqa: E402
from reports.signing import load_identity, sign_pdf, verify_pdf  # noqa: E402
from reports.types import Hospital, Performed, ReportStatus, ReportVersion, ReportView, Signature  # noqa: E402

PIN = b"123456"


def identity() -> tuple[bytes, bytes]:
    """A self-signed signing certificate in a PKCS#12, and the certificate (PEM) as the trust root."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Radiologist")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))  # fmt: skip
    p12 = pkcs12.serialize_key_and_certificates(b"bench", key, cert, None, serialization.BestAvailableEncryption(PIN))
    return p12, cert.public_bytes(serialization.Encoding.PEM)


def view() -> ReportView:
    version = ReportVersion(
        number=1, status=ReportStatus.FINAL, language="vi", template_id="xq-nguc-thang-vi",
        sections={"clinical_information": "Ho kéo dài 3 tuần.", "technique": "Chụp X-quang ngực thẳng.",
                  "findings": "Không thấy tổn thương khu trú nhu mô phổi hai bên.\nBóng tim không to.",
                  "conclusion": "Hình ảnh X-quang ngực thẳng trong giới hạn bình thường.", "recommendation": ""},
        structured={}, author="bs.lan", author_name="BS. Trần Thị Lan", created_at="2026-12-05T02:10:00+00:00",
        updated_at="2026-12-05T02:14:00+00:00",
        signature=Signature("bs.lan", "BS. Trần Thị Lan", "003421/HCM-CCHN", "2026-12-05T02:15:30+00:00"),
    )  # fmt: skip
    return ReportView(
        id=1, accession_number="XQ2612050001", status=version.status, revision=1,
        patient=PatientDemographics("BN0012345", "", "Nguyễn^Văn An", "19800315", "M",
                                    (OtherId("DN4797912345678", "BHYT"),)),
        study_instance_uid="1.2.3", study_date="20261205", study_time="085512", study_description="X-quang ngực",
        modality="DX", placer_issuer="", placer_order_number="", filler_order_number="", procedure_code="",
        procedure_scheme="", procedure_description="Chụp X-quang ngực thẳng", service_code="", indicator_code="",
        referring_physician="Lê^Minh Tuấn", priority="", performed=Performed(), version=version, versions=(version,),
    )  # fmt: skip


def median_ms(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    p12, root = identity()
    report, hospital = view(), Hospital(name="Bệnh viện Đa khoa Huyện")
    url = "https://pacs.example/s/Xk3vQ9zR2mT8pL5wXk3vQ9zR2mT8pL5w"
    render_pdf(report, hospital, share_url=url)  # font registration and imports, once per process
    key = load_identity(p12, PIN)
    pdf = render_pdf(report, hospital, share_url=url)
    signed = sign_pdf(pdf, key, reason="bench", location="bench", name="bench")
    assert verify_pdf(signed, [root]).ok

    def sign_off() -> None:
        sign_pdf(render_pdf(report, hospital, share_url=url), load_identity(p12, PIN), reason="bench",
                 location="bench", name="bench")  # fmt: skip

    long = replace(report, version=replace(report.version, sections={
        **report.version.sections, "findings": "\n".join(["Nhu mô gan đồng nhất, bờ đều, không thấy khối khu trú. " * 4] * 60)}))  # fmt: skip
    figures = [
        ("render (1 page, QR code)", median_ms(lambda: render_pdf(report, hospital, share_url=url), args.runs)),
        ("render (long findings, 3+ pages)", median_ms(lambda: render_pdf(long, hospital, share_url=url), args.runs)),
        ("unlock PKCS#12", median_ms(lambda: load_identity(p12, PIN), args.runs)),
        ("sign (PAdES B-B)", median_ms(lambda: sign_pdf(pdf, key, reason="b", location="b", name="b"), args.runs)),
        ("verify", median_ms(lambda: verify_pdf(signed, [root]), args.runs)),
        ("render + unlock + sign (one sign-off)", median_ms(sign_off, args.runs)),
    ]
    print(f"report PDF, median of {args.runs} runs ({len(pdf)} bytes unsigned, {len(signed)} signed):")
    for label, ms in figures:
        print(f"  {label:<40} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
