"""Signing identities in a real archive index: install, unlock with the PIN, replace, remove; all audited."""

from __future__ import annotations

from typing import Any

import pytest

from archive import Archive, InvalidArgument, NotFound, Origin
from archive.audit import search
from reports.identities import NoSigningIdentity, SigningIdentities
from reports.signing import CertificateNotValid, InvalidSigningIdentity, WrongSigningPin, sign_pdf, verify_pdf
from tests.archive.helpers import table_rows
from tests.reports import ca
from tests.reports.factory import report_view

ADMIN = Origin("cli:root", "", "CLI")


@pytest.fixture
def identities(archive: Archive) -> SigningIdentities:
    archive.accounts.add_user("bs.lan", "radiologist", "đọc phim buổi sáng", ADMIN, display_name="BS. Trần Thị Lan")
    archive.accounts.add_user("bs.binh", "radiologist", "đọc phim buổi chiều", ADMIN)
    return SigningIdentities(archive.db, archive.audit)


def audit(archive: Archive, action: str) -> list[Any]:
    archive.audit.flush()
    return search(archive.db, action=action)


def test_install_then_unlock_and_sign(archive: Archive, identities: SigningIdentities) -> None:
    lan = ca.radiologist()
    info = identities.install("BS.Lan", lan.pkcs12, lan.passphrase, ADMIN)
    assert (info.username, info.x509_serial) == ("bs.lan", lan.serial)
    assert info.x509_subject == "CN=Tran Thi Lan,O=Benh vien Da khoa Huyen,C=VN"
    assert info.not_after == lan.cert.not_valid_after_utc and not info.expired()
    assert identities.info("bs.lan") == info
    assert identities.info("bs.binh") is None

    key = identities.unlock("bs.lan", lan.passphrase)
    assert key.x509_serial == lan.serial
    from reports.pdf import render_pdf
    from reports.types import Hospital

    signed = sign_pdf(render_pdf(report_view(), Hospital()), key, reason="r", location="l", name="BS. Trần Thị Lan")
    assert verify_pdf(signed, [ca.test_ca().pem]).ok

    [row] = table_rows(archive, "signing_identity")
    assert bytes(row["pkcs12"]) == lan.pkcs12 and lan.passphrase.encode() not in bytes(row["pkcs12"])
    [event] = audit(archive, "SIGNING_KEY_INSTALL")
    assert (event.actor, event.level, event.uid, event.outcome) == ("cli:root", "USER", "bs.lan", "done")
    assert lan.serial in event.detail and lan.passphrase not in event.detail


def test_installing_again_replaces(archive: Archive, identities: SigningIdentities) -> None:
    identities.install("bs.lan", ca.radiologist().pkcs12, ca.PASSPHRASE, ADMIN)
    other = ca.second_radiologist()
    info = identities.install("bs.lan", other.pkcs12, other.passphrase.encode(), ADMIN)
    assert info.x509_serial == other.serial and identities.info("bs.lan") == info
    assert len(table_rows(archive, "signing_identity")) == 1
    with pytest.raises(WrongSigningPin):
        identities.unlock("bs.lan", ca.PASSPHRASE)  # the old PIN no longer opens it
    assert identities.unlock("bs.lan", other.passphrase).x509_serial == other.serial
    details = [e.detail for e in audit(archive, "SIGNING_KEY_INSTALL")]
    assert details[0].startswith("replaced: serial " + other.serial) and not details[1].startswith("replaced")


def test_wrong_pin_is_refused_and_audited(archive: Archive, identities: SigningIdentities) -> None:
    identities.install("bs.lan", ca.radiologist().pkcs12, ca.PASSPHRASE, ADMIN)
    with pytest.raises(WrongSigningPin) as caught:
        identities.unlock("bs.lan", "000000", Origin("bs.lan", "10.0.0.7", "HTTP"))
    assert caught.value.http_status == 403 and caught.value.message == "the signing PIN is wrong"
    [event] = audit(archive, "SIGNING_KEY_UNLOCK")
    assert (event.actor, event.address, event.uid, event.outcome) == ("bs.lan", "10.0.0.7", "bs.lan", "wrong PIN")


def test_a_user_without_a_certificate_is_told_how_to_get_one(identities: SigningIdentities) -> None:
    with pytest.raises(NoSigningIdentity) as caught:
        identities.unlock("bs.binh", "123456")
    assert isinstance(caught.value, NotFound)
    assert "bs.binh has no signing certificate" in caught.value.message
    assert "`minipacs user signing-key bs.binh FILE.p12`" in caught.value.message


def test_bad_installs_change_nothing(archive: Archive, identities: SigningIdentities) -> None:
    lan = ca.radiologist()
    with pytest.raises(NotFound, match="there is no user nobody"):
        identities.install("nobody", lan.pkcs12, lan.passphrase, ADMIN)
    with pytest.raises(WrongSigningPin):
        identities.install("bs.lan", lan.pkcs12, "wrong", ADMIN)
    with pytest.raises(InvalidSigningIdentity):
        identities.install("bs.lan", b"%PDF-1.4 not a p12", lan.passphrase, ADMIN)
    with pytest.raises(CertificateNotValid):
        identities.install("bs.lan", ca.expired().pkcs12, ca.PASSPHRASE, ADMIN)
    with pytest.raises(InvalidArgument, match="user name"):
        identities.install("../etc", lan.pkcs12, lan.passphrase, ADMIN)
    assert table_rows(archive, "signing_identity") == []
    assert audit(archive, "SIGNING_KEY_INSTALL") == []


def test_remove(archive: Archive, identities: SigningIdentities) -> None:
    identities.install("bs.lan", ca.radiologist().pkcs12, ca.PASSPHRASE, ADMIN)
    identities.remove("bs.lan", ADMIN)
    assert identities.info("bs.lan") is None
    with pytest.raises(NoSigningIdentity):
        identities.unlock("bs.lan", ca.PASSPHRASE)
    with pytest.raises(NotFound, match="bs.lan has no signing certificate"):
        identities.remove("bs.lan", ADMIN)
    [event] = audit(archive, "SIGNING_KEY_REMOVE")
    assert (event.actor, event.uid, event.outcome) == ("cli:root", "bs.lan", "done")


def test_works_without_an_audit_log(archive: Archive, identities: SigningIdentities) -> None:
    quiet = SigningIdentities(archive.db)
    quiet.install("bs.lan", ca.radiologist().pkcs12, ca.PASSPHRASE, ADMIN)
    with pytest.raises(WrongSigningPin):
        quiet.unlock("bs.lan", "nope")
    quiet.remove("bs.lan", ADMIN)
    assert audit(archive, "SIGNING_KEY_INSTALL") == [] and audit(archive, "SIGNING_KEY_UNLOCK") == []
