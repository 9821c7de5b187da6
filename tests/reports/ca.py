"""A test certificate authority, made with `cryptography` when the tests run.

A root CA issues a radiologist's signing certificate (key usage
digitalSignature + nonRepudiation, as Vietnamese CAs issue them for
documents), packed as a PKCS#12 with a passphrase the way a CA hands it out.
There is also an expired certificate, one not valid yet, one without a
signing key usage, and one from another CA that our roots do not trust.
Keys are made once per test process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSPHRASE = "123456"
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class CA:
    name: str
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    parent: CA | None = None

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Identity:
    """A signing certificate with its key, and the PKCS#12 that carries both (and the CA)."""

    cert: x509.Certificate
    pkcs12: bytes
    passphrase: str
    ca: CA

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


@functools.cache
def _key(label: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(name: str, parent: CA | None = None) -> CA:
    """A root CA, or an intermediate CA under `parent` (as the national root signs a provider's CA)."""
    key = _key(f"ca:{name}")
    subject = _name(name, "minipacs test PKI")
    issuer_name, issuer_key = (parent.cert.subject, parent.key) if parent else (subject, key)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=3650)).not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if parent is None else 0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )  # fmt: skip
    return CA(name, key, cert, parent)


def issue(ca: CA, common_name: str, *, not_before: datetime, not_after: datetime, signing: bool = True,
          passphrase: str = PASSPHRASE) -> Identity:  # fmt: skip
    """A certificate for `common_name` from `ca`, as a PKCS#12 encrypted with `passphrase`."""
    key = _key(f"ee:{common_name}")
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name, "Benh vien Da khoa Huyen"))
        .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=signing, content_commitment=signing,
                                     key_encipherment=not signing, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )  # fmt: skip
    chain, issuer = [], ca
    while issuer is not None:  # the CA's certificates up to the root, as CAs hand them out
        chain.append(issuer.cert)
        issuer = issuer.parent
    data = pkcs12.serialize_key_and_certificates(
        common_name.encode(), key, cert, chain,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    return Identity(cert, data, passphrase, ca)


@functools.cache
def test_ca() -> CA:
    return make_ca("minipacs Test Root CA")


@functools.cache
def other_ca() -> CA:
    return make_ca("Some Other Root CA")


@functools.cache
def intermediate_ca() -> CA:
    return make_ca("minipacs Test Issuing CA", parent=test_ca())


@functools.cache
def radiologist() -> Identity:
    """BS. Trần Thị Lan's signing certificate, valid for a year around now."""
    return issue(test_ca(), "Tran Thi Lan", not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=335))


@functools.cache
def second_radiologist() -> Identity:
    return issue(test_ca(), "Le Van Binh", not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=335),
                 passphrase="khac-9876")  # fmt: skip


@functools.cache
def issued_by_intermediate() -> Identity:
    """Issued by an intermediate CA; the PKCS#12 carries the intermediate and the root."""
    return issue(intermediate_ca(), "Pham Thu Ha", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30))


@functools.cache
def expired() -> Identity:
    return issue(test_ca(), "Expired Doctor", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=35))


@functools.cache
def not_yet_valid() -> Identity:
    return issue(test_ca(), "Future Doctor", not_before=NOW + timedelta(days=2), not_after=NOW + timedelta(days=400))


@functools.cache
def encryption_only() -> Identity:
    """A certificate whose key usage does not allow signing."""
    return issue(test_ca(), "Encryption Only", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30),
                 signing=False)  # fmt: skip


@functools.cache
def stranger() -> Identity:
    """A valid signing certificate from a CA the hospital does not trust."""
    return issue(other_ca(), "Stranger Doctor", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30))
