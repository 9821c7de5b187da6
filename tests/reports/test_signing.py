"""PAdES signatures on report PDFs, checked by pyHanko's own validator and by OpenSSL's CMS verifier."""

from __future__ import annotations

import io
import random
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from reports.pdf import render_pdf
from reports.signing import (
    CertificateNotValid,
    InvalidPdf,
    InvalidSigningIdentity,
    SigningError,
    UnsignedPdf,
    WrongSigningPin,
    load_identity,
    sign_pdf,
    verify_pdf,
)
from reports.types import Hospital
from tests.reports import ca
from tests.reports.factory import CONCLUSION_VI, report_view

HOSPITAL = Hospital(name="Bệnh viện Đa khoa Huyện Củ Chi")


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return render_pdf(report_view(), HOSPITAL)


@pytest.fixture(scope="module")
def signed(pdf: bytes) -> bytes:
    identity = ca.radiologist()
    key = load_identity(identity.pkcs12, identity.passphrase.encode())
    return sign_pdf(pdf, key, reason="Ký kết quả chẩn đoán hình ảnh", location="Bệnh viện Đa khoa Huyện Củ Chi",
                    name="BS. Trần Thị Lan")  # fmt: skip


def signature_parts(signed: bytes) -> tuple[bytes, bytes]:
    """The signed bytes (the /ByteRange) and the CMS SignedData (/Contents) of the only signature."""
    ranges = re.findall(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", signed)
    assert len(ranges) == 1
    a, b, c, d = map(int, ranges[0])
    assert a == 0 and c + d == len(signed)  # the signature covers the whole file but its own hole
    hole = signed[b:c]
    assert hole.startswith(b"<") and hole.endswith(b">")
    return signed[a:a + b] + signed[c:c + d], bytes.fromhex(hole[1:-1].decode()).rstrip(b"\0")


def test_signed_report_is_valid_and_trusted(signed: bytes, tmp_path: Path) -> None:
    result = verify_pdf(signed, [ca.test_ca().pem])
    assert result.ok and result.intact and result.valid and result.trusted and result.covers_whole_document
    assert result.x509_serial == ca.radiologist().serial
    assert result.signer_subject == "CN=Tran Thi Lan,O=Benh vien Da khoa Huyen,C=VN"
    assert result.signing_time is not None and abs(result.signing_time - datetime.now(UTC)) < timedelta(minutes=10)
    # Still the same report to a reader.
    (tmp_path / "signed.pdf").write_bytes(signed)
    text = subprocess.run(["pdftotext", tmp_path / "signed.pdf", "-"], capture_output=True, text=True, check=True).stdout
    assert CONCLUSION_VI in text
    # DER trust roots work as well as PEM.
    assert verify_pdf(signed, [ca.test_ca().cert.public_bytes(serialization.Encoding.DER)]).ok


def test_signature_is_pades_with_the_chain_embedded(signed: bytes) -> None:
    assert b"/SubFilter /ETSI.CAdES.detached" in signed
    embedded = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    assert len(embedded) == 1
    assert embedded[0].sig_object["/Name"] == "BS. Trần Thị Lan"
    assert embedded[0].sig_object["/Reason"] == "Ký kết quả chẩn đoán hình ảnh"
    assert embedded[0].sig_object["/Location"] == "Bệnh viện Đa khoa Huyện Củ Chi"
    _, der = signature_parts(signed)
    signed_data = cms.ContentInfo.load(der)["content"]
    subjects = {c.chosen.subject.human_friendly for c in signed_data["certificates"]}
    assert any("Tran Thi Lan" in s for s in subjects) and any("minipacs Test Root CA" in s for s in subjects)
    attributes = {a["type"].native for a in signed_data["signer_infos"][0]["signed_attrs"]}
    # PAdES baseline (ETSI EN 319 142-1 6.3): ESS signing-certificate-v2, no CMS signing-time attribute.
    assert "signing_certificate_v2" in attributes and "signing_time" not in attributes


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_verifies_the_cms_signature(signed: bytes, tmp_path: Path) -> None:
    """A second, independent verifier: OpenSSL's CMS over the /ByteRange content."""
    content, der = signature_parts(signed)
    (tmp_path / "content.bin").write_bytes(content)
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "ca.pem").write_bytes(ca.test_ca().pem)
    (tmp_path / "other.pem").write_bytes(ca.other_ca().pem)
    command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.der", "-content", "content.bin",
               "-purpose", "any", "-out", "/dev/null"]  # fmt: skip
    ok = subprocess.run([*command, "-CAfile", "ca.pem"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "Verification successful" in ok.stderr, ok.stderr
    untrusted = subprocess.run([*command, "-CAfile", "other.pem"], cwd=tmp_path, capture_output=True, timeout=30)
    assert untrusted.returncode != 0
    (tmp_path / "content.bin").write_bytes(content.replace(b"ReportLab", b"ReportLaB", 1))
    changed = subprocess.run([*command, "-CAfile", "ca.pem"], cwd=tmp_path, capture_output=True, timeout=30)
    assert changed.returncode != 0


def test_a_changed_byte_is_detected(signed: bytes) -> None:
    stream = signed.index(b"stream\n", signed.index(b"/Filter")) + 7 + 20  # inside the first compressed stream
    flipped = signed[:stream] + bytes([signed[stream] ^ 0x01]) + signed[stream + 1:]
    tampered = [flipped, signed.replace(b"ReportLab PDF Library", b"ReportLab PDF Librarz", 1),
                signed.replace(b"XQ2612050001", b"XQ2612050002", 1)]  # fmt: skip
    for pdf in tampered:
        assert len(pdf) == len(signed) and pdf != signed
        result = verify_pdf(pdf, [ca.test_ca().pem])
        assert not result.intact and not result.ok
        assert "the signed content was changed" in result.detail


def test_no_byte_outside_the_signature_changes_unnoticed(signed: bytes) -> None:
    """Damage anywhere gives a verdict or a clear error, never a crash; only the signature's own hole may vary."""
    match = re.search(rb"/ByteRange\s*\[\s*0\s+(\d+)\s+(\d+)", signed)
    assert match
    hole = range(int(match.group(1)), int(match.group(2)))
    rnd = random.Random(130)
    positions = sorted({*range(len(signed) - 600, len(signed)), *range(hole.start, hole.start + 100),
                        *(rnd.randrange(len(signed)) for _ in range(150))})  # fmt: skip
    verdicts = 0
    for pos in positions:
        damaged = signed[:pos] + bytes([signed[pos] ^ 0x55]) + signed[pos + 1:]
        try:
            result = verify_pdf(damaged, [ca.test_ca().pem])
        except SigningError:  # InvalidPdf / UnsignedPdf: the damage broke the file's structure
            continue
        verdicts += 1
        assert pos in hole or not result.ok, pos
    assert verdicts > 100


def test_content_appended_after_signing_is_reported(signed: bytes) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    writer.root["/Lang"] = generic.TextStringObject("en")  # a change to the document catalog
    writer.update_root()
    out = io.BytesIO()
    writer.write(out)
    result = verify_pdf(out.getvalue(), [ca.test_ca().pem])
    assert result.intact and not result.covers_whole_document and not result.ok
    assert "changed after it was signed" in result.detail


def test_another_ca_is_not_trusted(signed: bytes) -> None:
    for roots in ([ca.other_ca().pem], []):
        result = verify_pdf(signed, roots)
        assert result.intact and result.valid and not result.trusted and not result.ok
        assert "does not chain to a trusted root" in result.detail
    # A certificate from the other CA: trusted only by that CA.
    stranger = ca.stranger()
    pdf = sign_pdf(render_pdf(report_view(), HOSPITAL), load_identity(stranger.pkcs12, stranger.passphrase.encode()),
                   reason="r", location="l", name="n")  # fmt: skip
    assert not verify_pdf(pdf, [ca.test_ca().pem]).trusted
    assert verify_pdf(pdf, [ca.test_ca().pem, ca.other_ca().pem]).ok


def test_an_intermediate_ca_in_the_pkcs12_is_embedded_so_the_root_suffices(pdf: bytes) -> None:
    identity = ca.issued_by_intermediate()
    signed = sign_pdf(pdf, load_identity(identity.pkcs12, identity.passphrase.encode()), reason="r", location="l",
                      name="n")  # fmt: skip
    result = verify_pdf(signed, [ca.test_ca().pem])
    assert result.ok and result.signer_subject.startswith("CN=Pham Thu Ha")
    assert not verify_pdf(signed, [ca.other_ca().pem]).trusted


def test_identity_exposes_its_certificate() -> None:
    identity = ca.radiologist()
    key = load_identity(identity.pkcs12, identity.passphrase.encode())
    assert key.x509_serial == identity.serial and re.fullmatch(r"[0-9a-f]+", key.x509_serial)
    assert key.x509_subject == "CN=Tran Thi Lan,O=Benh vien Da khoa Huyen,C=VN"
    assert key.not_after == identity.cert.not_valid_after_utc


def test_wrong_passphrase_is_a_wrong_pin() -> None:
    identity = ca.radiologist()
    for wrong in (b"654321", b"", "123456 ".encode()):
        with pytest.raises(WrongSigningPin) as caught:
            load_identity(identity.pkcs12, wrong)
        assert caught.value.http_status == 403 and caught.value.message == "the signing PIN is wrong"


@pytest.mark.parametrize("data", [b"", b"%PDF-1.7\n", b"\x30\x03\x02\x01\x03", b"\x00" * 100, b"hello world"])
def test_not_a_pkcs12_is_not_a_wrong_pin(data: bytes) -> None:
    with pytest.raises(InvalidSigningIdentity, match="not a PKCS#12") as caught:
        load_identity(data, b"123456")
    assert caught.value.http_status == 400


def test_a_pkcs12_without_the_key_is_refused() -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    only_cert = pkcs12.serialize_key_and_certificates(b"x", None, None, [ca.radiologist().cert],
                                                      serialization.BestAvailableEncryption(b"123456"))  # fmt: skip
    with pytest.raises(InvalidSigningIdentity, match="private key and its certificate"):
        load_identity(only_cert, b"123456")


def test_certificates_that_cannot_sign_now_are_refused_at_load() -> None:
    with pytest.raises(CertificateNotValid, match="expired on") as caught:
        load_identity(ca.expired().pkcs12, ca.PASSPHRASE.encode())
    assert caught.value.http_status == 400
    with pytest.raises(CertificateNotValid, match="not valid before"):
        load_identity(ca.not_yet_valid().pkcs12, ca.PASSPHRASE.encode())
    with pytest.raises(InvalidSigningIdentity, match="not meant for signing"):
        load_identity(ca.encryption_only().pkcs12, ca.PASSPHRASE.encode())
    # The wrong PIN is still a wrong PIN for an expired certificate (nothing is said about it first).
    with pytest.raises(WrongSigningPin):
        load_identity(ca.expired().pkcs12, b"nope")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_pkcs12_made_by_openssl_loads_and_signs(tmp_path: Path, pdf: bytes) -> None:
    identity = ca.radiologist()
    key = load_identity(identity.pkcs12, identity.passphrase.encode())
    (tmp_path / "cert.pem").write_bytes(identity.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.pem").write_bytes(ca.test_ca().pem)
    (tmp_path / "key.pem").write_bytes(ca._key("ee:Tran Thi Lan").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    subprocess.run(["openssl", "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-certfile", "ca.pem",
                    "-name", "Tran Thi Lan", "-passout", "pass:mã PIN 2026", "-out", "lan.p12"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=30)  # fmt: skip
    from_openssl = load_identity((tmp_path / "lan.p12").read_bytes(), "mã PIN 2026".encode())
    assert from_openssl.x509_serial == key.x509_serial
    assert verify_pdf(sign_pdf(pdf, from_openssl, reason="r", location="l", name="n"), [ca.test_ca().pem]).ok


def test_verify_refuses_what_is_not_a_signed_pdf(pdf: bytes) -> None:
    with pytest.raises(UnsignedPdf, match="no electronic signature") as caught:
        verify_pdf(pdf, [ca.test_ca().pem])
    assert caught.value.http_status == 400
    for junk in (b"", b"hello", b"%PDF-1.4\ngarbage", pdf[: len(pdf) // 2]):
        with pytest.raises(InvalidPdf, match="not a readable PDF"):
            verify_pdf(junk, [ca.test_ca().pem])
    with pytest.raises(SigningError, match="trust root 1 is not a PEM or DER certificate"):
        verify_pdf(pdf, [b"not a certificate"])


def test_sign_refuses_what_is_not_a_pdf() -> None:
    identity = ca.radiologist()
    key = load_identity(identity.pkcs12, identity.passphrase.encode())
    for junk in (b"", b"not a pdf"):
        with pytest.raises(InvalidPdf, match="not a PDF that can be signed"):
            sign_pdf(junk, key, reason="r", location="l", name="n")
