"""PAdES signatures on report PDFs: a radiologist's PKCS#12 in, a signed PDF out, and the check.

A signed report must carry a real electronic signature (TT 13/2025/TT-BYT on
electronic medical records), not a picture of one. pyHanko does the work: it
signs as PAdES baseline B-B (ETSI EN 319 142-1; /SubFilter ETSI.CAdES.detached)
with the certificate chain embedded, and validates with its own validator.
Nothing here touches key material by hand; the PKCS#12 is only read apart far
enough to tell a wrong PIN from a file that is not a PKCS#12 at all.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509 as pyca_x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from archive.errors import ArchiveError

with warnings.catch_warnings():
    # pyHanko touches cryptography's DSA types on import (never used here); cryptography 47+ warns
    # about that on every start. Silence that one warning so production logs stay clean.
    warnings.filterwarnings("ignore", message="DSA is deprecated", category=UserWarning)
    from pyhanko.keys import load_certs_from_pemder_data
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign import fields, signers
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext
    from pyhanko_certvalidator.registry import SimpleCertificateStore

log = logging.getLogger(__name__)

#: What pyHanko and asn1crypto raise on damaged input: a PDF or a signature from outside is untrusted data.
_DAMAGE = (PdfError, ValueError, KeyError, TypeError, IndexError, AttributeError)


class SigningError(ArchiveError):
    """A signing identity or a PDF that cannot be used; nothing was signed or changed."""

    http_status = 400


class WrongSigningPin(SigningError):
    """The passphrase does not open the PKCS#12: the radiologist typed a wrong PIN."""

    http_status = 403

    def __init__(self, message: str = "the signing PIN is wrong") -> None:
        super().__init__(message)


class InvalidSigningIdentity(SigningError):
    """The file is not a PKCS#12 with a key and a certificate that may sign documents."""


class CertificateNotValid(SigningError):
    """The certificate has expired or is not valid yet: a signature made now would not hold."""


class InvalidPdf(SigningError):
    """The bytes are not a PDF pyHanko can read."""


class UnsignedPdf(SigningError):
    """The PDF carries no signature to check."""


@dataclass(frozen=True)
class SigningKey:
    """An unlocked signing identity: pyHanko's signer and what the report records of its certificate."""

    signer: Any  # pyhanko.sign.signers.SimpleSigner
    certificate: pyca_x509.Certificate
    #: The certificate's serial number, lower-case hex without leading zeros.
    x509_serial: str
    #: The subject as an RFC 4514 string, e.g. "CN=Tran Thi Lan,O=Benh vien ...".
    x509_subject: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class Verification:
    """What pyHanko's validator says about the last signature of a PDF."""

    #: The signed bytes hash to what the signature says (nothing changed in the signed range).
    intact: bool
    #: The cryptographic signature checks out against the signer's certificate.
    valid: bool
    #: The signer's certificate chains to one of the trust roots given (and is valid now).
    trusted: bool
    #: Nothing was appended to the file after the signature.
    covers_whole_document: bool
    signer_subject: str
    x509_serial: str
    #: The signing time the signer put in the signature (not a trusted timestamp).
    signing_time: datetime | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.intact and self.valid and self.trusted and self.covers_whole_document


def load_identity(pkcs12_data: bytes, passphrase: bytes, *, now: datetime | None = None) -> SigningKey:
    """Open a PKCS#12 (RFC 7292) with its passphrase, refusing what could not sign now.

    Raises InvalidSigningIdentity (not a PKCS#12, no key, a certificate not
    meant for signing), WrongSigningPin, or CertificateNotValid.
    """
    _check_pkcs12_structure(pkcs12_data)
    secret = passphrase or None
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(pkcs12_data, secret)
    except ValueError:
        # The structure parsed above, so what failed is the decryption or the MAC: the passphrase.
        raise WrongSigningPin() from None
    if key is None or cert is None:
        raise InvalidSigningIdentity("the PKCS#12 file must hold a private key and its certificate")
    _check_usable(cert, now or datetime.now(UTC))
    # Hand pyHanko what cryptography decrypted (its own loader would decrypt the file a second time).
    der = serialization.Encoding.DER
    signer = signers.SimpleSigner(
        signing_key=asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(der)),
        cert_registry=_certificate_store([asn1_x509.Certificate.load(c.public_bytes(der)) for c in chain]),
    )  # fmt: skip
    return SigningKey(signer=signer, certificate=cert, x509_serial=format(cert.serial_number, "x"),
                      x509_subject=cert.subject.rfc4514_string(), not_before=cert.not_valid_before_utc,
                      not_after=cert.not_valid_after_utc)  # fmt: skip


def _certificate_store(certs: list[Any]) -> Any:
    store = SimpleCertificateStore()  # type: ignore[no-untyped-call]  # pyhanko-certvalidator: no annotations here
    store.register_multiple(certs)
    return store


def _check_pkcs12_structure(data: bytes) -> None:
    """Parse the outer PFX structure (no decryption): garbage is not a wrong PIN."""
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        if pfx["version"].native != "v3" or pfx["auth_safe"]["content_type"].native not in ("data", "signed_data"):
            raise ValueError("not a PFX")
    except (ValueError, TypeError, KeyError, OverflowError):
        raise InvalidSigningIdentity("the file is not a PKCS#12 (.p12/.pfx) signing certificate") from None


def _check_usable(cert: pyca_x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateNotValid(f"the signing certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now > cert.not_valid_after_utc:
        raise CertificateNotValid(
            f"the signing certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}: ask for a new one"
        )
    try:
        usage = cert.extensions.get_extension_for_class(pyca_x509.KeyUsage).value
    except pyca_x509.ExtensionNotFound:
        return
    if not (usage.digital_signature or usage.content_commitment):
        raise InvalidSigningIdentity("the certificate is not meant for signing (key usage has neither "
                                     "digitalSignature nor nonRepudiation)")  # fmt: skip


def sign_pdf(pdf: bytes, key: SigningKey, *, reason: str, location: str, name: str) -> bytes:
    """`pdf` with a PAdES B-B signature by `key` appended as an incremental update.

    The signer's certificate chain from the PKCS#12 is embedded, so a
    verifier needs only the root. `reason`, `location` and `name` go in the
    signature dictionary (/Reason, /Location, /Name: PDF 32000-1 12.8.1).
    """
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        existing = len(writer.prev.embedded_signatures)
    except _DAMAGE as exc:
        raise InvalidPdf(f"not a PDF that can be signed: {_first_line(exc)}") from None
    meta = signers.PdfSignatureMetadata(
        field_name=f"Signature{existing + 1}", md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason, location=location, name=name,
    )  # fmt: skip
    # Room for the CMS: the certificates plus the signature and attributes. Saying so spares
    # pyHanko a dry-run signature to measure it (half the time of a signing).
    reserved = sum(len(c.dump()) for c in [key.signer.signing_cert, *key.signer.cert_registry]) + 8192
    reserved += reserved % 2  # pyHanko takes an even number only
    try:
        out = signers.PdfSigner(meta, signer=key.signer).sign_pdf(writer, bytes_reserved=reserved)
    except _DAMAGE as exc:  # a PDF that reads but whose structure pyHanko cannot update
        raise InvalidPdf(f"not a PDF that can be signed: {_first_line(exc)}") from None
    signed: bytes = out.getvalue()
    log.info("PDF signed by certificate %s (%d bytes)", key.x509_serial, len(signed))
    return signed


def verify_pdf(pdf: bytes, trust_roots: Sequence[bytes]) -> Verification:
    """Check the last signature of `pdf` with pyHanko's validator against `trust_roots` (PEM or DER).

    Nothing is fetched from the network (allow_fetching=False) and revocation
    is not checked: the signatures carry no CRL or OCSP data and an appliance
    may have no route to the CA, so revocation is "soft-fail" (unknown passes).
    There is no trusted timestamp either (B-B, not B-T), so the chain is
    judged at the current time: once the signer's certificate expires the
    signature is still intact and valid but no longer `trusted`.
    """
    roots = []
    for i, data in enumerate(trust_roots):
        try:
            roots += list(load_certs_from_pemder_data(data))
        except (ValueError, TypeError) as exc:
            raise SigningError(f"trust root {i + 1} is not a PEM or DER certificate") from exc
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        signatures = reader.embedded_signatures
    except _DAMAGE as exc:
        raise InvalidPdf(f"not a readable PDF: {_first_line(exc)}") from None
    if not signatures:
        raise UnsignedPdf("the PDF carries no electronic signature")
    embedded = signatures[-1]
    context = ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")
    try:
        status = validate_pdf_signature(embedded, signer_validation_context=context)
    except (SignatureValidationError, *_DAMAGE) as exc:
        # A signature too damaged to evaluate (a changed byte in its CMS, its dictionary, ...).
        return Verification(intact=False, valid=False, trusted=False, covers_whole_document=False,
                            signer_subject="", x509_serial="", signing_time=None,
                            detail=f"the signature cannot be read: {_first_line(exc)}")  # fmt: skip
    cert = status.signing_cert
    trusted = bool(status.trusted)
    problems = []
    if not status.intact:
        problems.append("the signed content was changed")
    elif not status.valid:
        problems.append("the signature does not match the signer's certificate")
    if not trusted:
        indication = status.trust_problem_indic
        why = f" ({indication.standard_name})" if indication is not None else ""
        problems.append(f"the signer's certificate does not chain to a trusted root{why}")
    whole = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    if not whole:
        problems.append("the file was changed after it was signed")
    return Verification(
        intact=bool(status.intact), valid=bool(status.valid), trusted=trusted, covers_whole_document=whole,
        signer_subject=_rfc4514(cert), x509_serial=format(cert.serial_number, "x"),
        signing_time=status.signer_reported_dt, detail="; ".join(problems) or status.summary(),
    )  # fmt: skip


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _rfc4514(cert: Any) -> str:
    """The subject of an asn1crypto certificate as RFC 4514 text, via cryptography."""
    return str(pyca_x509.load_der_x509_certificate(cert.dump()).subject.rfc4514_string())


__all__ = [
    "CertificateNotValid",
    "InvalidPdf",
    "InvalidSigningIdentity",
    "SigningError",
    "SigningKey",
    "UnsignedPdf",
    "Verification",
    "WrongSigningPin",
    "load_identity",
    "sign_pdf",
    "verify_pdf",
]
