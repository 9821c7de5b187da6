"""Radiologists' signing identities: their PKCS#12 kept in the index, opened with their signing PIN.

The PKCS#12 stays encrypted by its own passphrase, which is the PIN the
radiologist types at each signature and is never stored; the database holds
only the file and what its certificate says (serial, subject, expiry) so the
administrator can list them without the PIN. Kept in the database rather than
a node's disk so every node of a cluster can sign. Every change is audited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update

from archive.accounts import check_username
from archive.audit import AuditLog
from archive.db import Database
from archive.errors import NotFound
from archive.models import UserAccount
from archive.origin import Origin
from reports.models import SigningIdentity
from reports.signing import SigningKey, WrongSigningPin, load_identity

log = logging.getLogger(__name__)

_IDS = cast(Table, SigningIdentity.__table__)
_USERS = cast(Table, UserAccount.__table__)


class NoSigningIdentity(NotFound):
    """The user has no signing certificate installed: they cannot sign until an administrator adds one."""

    http_status = 409


@dataclass(frozen=True)
class IdentityInfo:
    """What an installed signing certificate says; the key stays locked."""

    username: str
    x509_serial: str
    x509_subject: str
    not_after: datetime
    updated_at: datetime

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) > self.not_after


class SigningIdentities:
    """Users' signing certificates over the index database."""

    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self._db = db
        self._audit = audit

    def install(self, username: str, pkcs12: bytes, passphrase: str | bytes, actor: Origin) -> IdentityInfo:
        """Install (or replace) `username`'s PKCS#12, after opening it once with `passphrase`.

        Raises NotFound for an unknown user and the errors of
        reports.signing.load_identity for a file that could not sign.
        """
        name = check_username(username)
        key = load_identity(pkcs12, _secret(passphrase))
        now = datetime.now(UTC)
        values = {"pkcs12": pkcs12, "x509_serial": key.x509_serial, "x509_subject": key.x509_subject,
                  "not_after": key.not_after, "updated_at": now}  # fmt: skip
        with self._db.write() as conn:
            if conn.execute(select(_USERS.c.pk).where(_USERS.c.username == name)).first() is None:
                raise NotFound(f"there is no user {name}")
            replaced = conn.execute(update(_IDS).where(_IDS.c.username == name).values(**values)).rowcount > 0
            if not replaced:
                conn.execute(insert(_IDS), [{"username": name, **values}])
        detail = f"serial {key.x509_serial}, subject {key.x509_subject}, valid until {key.not_after:%Y-%m-%d}"
        self._record(actor, "SIGNING_KEY_INSTALL", name, "done", ("replaced: " if replaced else "") + detail)
        log.info("signing certificate %s installed for %s by %s", key.x509_serial, name, actor)
        return IdentityInfo(name, key.x509_serial, key.x509_subject, key.not_after, now)

    def info(self, username: str) -> IdentityInfo | None:
        """The user's installed certificate, or None."""
        with self._db.read() as conn:
            row = conn.execute(select(_IDS).where(_IDS.c.username == username.strip().lower())).first()
        return None if row is None else _info(row._mapping)

    def unlock(self, username: str, pin: str, origin: Origin | None = None) -> SigningKey:
        """The user's signing key, opened with their PIN. A wrong PIN is audited (and raises WrongSigningPin)."""
        name = username.strip().lower()
        with self._db.read() as conn:
            pkcs12 = conn.execute(select(_IDS.c.pkcs12).where(_IDS.c.username == name)).scalar_one_or_none()
        if pkcs12 is None:
            raise NoSigningIdentity(
                f"{name} has no signing certificate: ask an administrator to install one with "
                f"`minipacs user signing-key {name} FILE.p12`"
            )
        try:
            return load_identity(bytes(pkcs12), _secret(pin))
        except WrongSigningPin:
            self._record(origin or Origin(name, "", "REPORTS"), "SIGNING_KEY_UNLOCK", name, "wrong PIN")
            log.warning("signing PIN of %s refused", name)
            raise

    def remove(self, username: str, actor: Origin) -> None:
        name = check_username(username)
        with self._db.write() as conn:
            gone = conn.execute(delete(_IDS).where(_IDS.c.username == name)).rowcount
        if gone == 0:
            raise NotFound(f"{name} has no signing certificate")
        self._record(actor, "SIGNING_KEY_REMOVE", name, "done")
        log.info("signing certificate of %s removed by %s", name, actor)

    def _record(self, origin: Origin, action: str, username: str, outcome: str, detail: str = "") -> None:
        if self._audit is not None:
            self._audit.record(origin, action, "USER", username, outcome, detail)


def _secret(passphrase: str | bytes) -> bytes:
    return passphrase if isinstance(passphrase, bytes) else passphrase.encode("utf-8")


def _utc(moment: datetime) -> datetime:
    # SQLite hands DateTime(timezone=True) back without its zone; the value is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _info(row: Any) -> IdentityInfo:
    return IdentityInfo(row["username"], row["x509_serial"], row["x509_subject"], _utc(row["not_after"]),
                        _utc(row["updated_at"]))  # fmt: skip


__all__ = ["IdentityInfo", "NoSigningIdentity", "SigningIdentities"]
