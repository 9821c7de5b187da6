"""The signed PDF as Encapsulated PDF Storage: dciodvfy-clean, and the PAdES signature survives the trip."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from reports.dicom_sr import build_encapsulated_pdf, build_sr, extract_pdf, pdf_uids, to_part10
from tests.reports.dicom_checks import HOSPITAL, dciodvfy, small_pdf, write
from tests.reports.factory import amended_view, report_view, signed_version


def reread(ds: Dataset) -> Dataset:
    return dcmread(io.BytesIO(to_part10(ds)))


def pades_signed(pdf: bytes) -> tuple[bytes, x509.Certificate]:
    """`pdf` signed as PAdES by a self-signed certificate made here (pyHanko), and that certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tran Thi Lan")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    signer = signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        cert_registry=SimpleCertificateStore(),  # type: ignore[no-untyped-call]
    )  # fmt: skip
    meta = signers.PdfSignatureMetadata(field_name="Signature", subfilter=fields.SigSeedSubFilter.PADES)
    out = signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)), meta, signer=signer)
    return out.getvalue(), cert


def signature_intact(pdf: bytes, cert: x509.Certificate) -> bool:
    root = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    (embedded,) = PdfFileReader(io.BytesIO(pdf)).embedded_signatures
    status = validate_pdf_signature(embedded, ValidationContext(trust_roots=[root]))
    return bool(status.intact and status.valid and status.trusted)


@pytest.mark.parametrize("odd", [True, False], ids=["odd-length", "even-length"])
def test_dciodvfy_finds_nothing(odd: bool, tmp_path: Path) -> None:
    pdf = small_pdf(pad_to_odd=odd)
    assert len(pdf) % 2 == int(odd)
    verdict = dciodvfy(write(build_encapsulated_pdf(report_view(), pdf, HOSPITAL), tmp_path / "pdf.dcm"))
    assert (verdict.returncode, verdict.errors, verdict.warnings) == (0, [], []), verdict.output
    assert "EncapsulatedPDF" in verdict.output


@pytest.mark.parametrize("odd", [True, False], ids=["odd-length", "even-length"])
def test_extracted_pdf_is_byte_identical(odd: bool, tmp_path: Path) -> None:
    pdf = small_pdf(pad_to_odd=odd)
    path = write(build_encapsulated_pdf(report_view(), pdf, HOSPITAL), tmp_path / "pdf.dcm")
    ds = dcmread(path)
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert len(ds.EncapsulatedDocument) % 2 == 0
    assert extract_pdf(ds) == pdf


def test_the_pades_signature_still_verifies_after_extraction(tmp_path: Path) -> None:
    original = small_pdf()
    signed, cert = pades_signed(original)
    assert signature_intact(signed, cert)
    path = write(build_encapsulated_pdf(report_view(), signed, HOSPITAL), tmp_path / "pdf.dcm")
    extracted = extract_pdf(dcmread(path))
    assert extracted == signed
    assert signature_intact(extracted, cert)
    # The check is real: one byte changed inside the signed range is caught.
    at = len(original) // 2  # inside the original revision, which the signature covers
    tampered = signed[:at] + bytes([signed[at] ^ 1]) + signed[at + 1 :]
    assert not signature_intact(tampered, cert)


def test_document_attributes() -> None:
    view = report_view()
    ds = reread(build_encapsulated_pdf(view, small_pdf(), HOSPITAL))
    assert (ds.SOPClassUID, ds.Modality, ds.ConversionType) == (EncapsulatedPDFStorage, "DOC", "WSD")
    assert (ds.MIMETypeOfEncapsulatedDocument, ds.BurnedInAnnotation) == ("application/pdf", "YES")
    assert ds.VerificationFlag == "VERIFIED"
    assert ds.DocumentTitle == "Kết quả chẩn đoán hình ảnh XQ2612050001"
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning) == (
        "18748-4", "LN", "Diagnostic Imaging Report")
    assert ds.SeriesDescription == "Kết quả chẩn đoán (PDF) / Report (PDF)"
    assert (ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime) == ("20261205", "091530", "20261205091530+0700")
    assert (ds.SeriesInstanceUID, ds.SOPInstanceUID) == pdf_uids(view)
    assert ds.InstanceNumber == 1
    english = reread(build_encapsulated_pdf(report_view(signed_version(language="en")), small_pdf(), HOSPITAL))
    assert english.DocumentTitle == "Diagnostic imaging report XQ2612050001"


def test_same_patient_and_study_as_the_sr() -> None:
    view = amended_view()
    pdf = reread(build_encapsulated_pdf(view, small_pdf(), HOSPITAL))
    sr = reread(build_sr(view, HOSPITAL))
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName",
                    "StudyID", "StudyDescription", "SpecificCharacterSet"):  # fmt: skip
        assert pdf[keyword].value == sr[keyword].value, keyword
    assert str(pdf.PatientName) == "Nguyễn^Văn An"
    assert pdf.InstanceNumber == 2


def test_amendment_references_the_previous_pdf(tmp_path: Path) -> None:
    view = amended_view()
    first = reread(build_encapsulated_pdf(view.at_version(1), small_pdf(), HOSPITAL))
    assert "PredecessorDocumentsSequence" not in first
    amended = build_encapsulated_pdf(view, small_pdf(), HOSPITAL)
    (study,) = amended.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (instance,) = series.ReferencedSOPSequence
    assert study.StudyInstanceUID == view.study_instance_uid
    assert (series.SeriesInstanceUID, instance.ReferencedSOPInstanceUID) == (first.SeriesInstanceUID,
                                                                             first.SOPInstanceUID)  # fmt: skip
    assert instance.ReferencedSOPClassUID == EncapsulatedPDFStorage
    verdict = dciodvfy(write(amended, tmp_path / "pdf.dcm"))
    assert (verdict.returncode, verdict.errors, verdict.warnings) == (0, [], []), verdict.output


def test_stable_bytes_and_uids() -> None:
    view = amended_view()
    pdf = small_pdf()
    once, twice = (to_part10(build_encapsulated_pdf(view, pdf, HOSPITAL)) for _ in range(2))
    assert once == twice
    assert pdf_uids(view.at_version(1))[1] != pdf_uids(view)[1]


def test_not_a_pdf_is_refused() -> None:
    with pytest.raises(ValueError, match="%PDF-"):
        build_encapsulated_pdf(report_view(), b"<html>not a pdf</html>", HOSPITAL)
