"""Patient share links: a signed, expiring, revocable URL (and QR code) to one study, instead of a film.

The URL carries a random token id (``secrets.token_urlsafe(24)``, 192 bits)
and an HMAC-SHA256 over the token id, the study's UID and the expiry time,
keyed by a secret every node shares (derived from the HTTP session key). The
row holds the study and the expiry; the signature ties the URL to them, so a
changed token, a row pointed at another study or a stretched expiry all fail
the check. A tampered or unknown link gets the same 404, so a guesser learns
nothing about which tokens exist.

An optional PIN (say the patient's birth year) is stored as an Argon2id hash,
like passwords (archive/accounts.py). Five wrong PINs lock the link for 15
minutes; the count and the lock are in the row, so every node and a restart
see them. Every use and every refusal goes to the audit log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Table, insert, select, update

from archive.audit import AuditLog
from archive.db import Database
from archive.errors import ArchiveError, InvalidArgument, NotFound
from archive.models import Study
from archive.origin import Origin
from reports.models import ShareLink

log = logging.getLogger(__name__)

_LINKS = cast(Table, ShareLink.__table__)
_STUDIES = cast(Table, Study.__table__)

#: Wrong PINs in a row before the link locks, and for how long.
MAX_PIN_ATTEMPTS = 5
LOCK_MINUTES = 15
#: A PIN is short text a patient can type on a phone (a birth year, 4-6 digits).
PIN_LENGTH = (4, 32)
MAX_DAYS = 3650
#: The signature is HMAC-SHA256 cut to 128 bits (RFC 2104 section 5): a shorter URL, a denser QR code.
_SIGNATURE_BYTES = 16
_KEY_LABEL = b"minipacs share-link signature v1"


def derive_key(session_key: bytes) -> bytes:
    """The share links' HMAC key, derived from the HTTP session key (viewer/session.py).

    Every node reads the same session key file, so every node checks the same
    signatures; a separate derived key keeps a share signature from ever being
    a valid session-cookie signature or the other way round.
    """
    return hmac.new(session_key, _KEY_LABEL, hashlib.sha256).digest()


# --- errors: each carries its HTTP answer (archive.errors) --------------------------------


class ShareLinkError(ArchiveError):
    """A share link refused; `reason` is what the audit log records."""

    reason = "refused"


class LinkNotFound(ShareLinkError):
    """Unknown or tampered: the same answer for both, on purpose."""

    http_status = 404
    reason = "unknown or tampered"

    def __init__(self) -> None:
        super().__init__("this link is not valid: check that it was copied completely")


class LinkGone(ShareLinkError):
    http_status = 410

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PinRequired(ShareLinkError):
    http_status = 401
    reason = "PIN asked"


class WrongPin(ShareLinkError):
    http_status = 403
    reason = "wrong PIN"


class LinkLocked(ShareLinkError):
    http_status = 429
    reason = "locked"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShareLinkInfo:
    """A link as staff see it (the API, the list of a study's links)."""

    token_id: str
    signature: str
    study_instance_uid: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str
    has_pin: bool
    use_count: int
    last_used_at: datetime | None
    locked_until: datetime | None

    @property
    def path(self) -> str:
        """The link's path: ``/s/<token>.<signature>``."""
        return f"/s/{self.token_id}.{self.signature}"

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now


@dataclass(frozen=True)
class SharedStudy:
    """What a valid link opens: one study of one patient, nothing else."""

    token_id: str
    signature: str
    study_pk: int
    patient_pk: int
    study_instance_uid: str
    expires_at: datetime
    has_pin: bool

    @property
    def path(self) -> str:
        return f"/s/{self.token_id}.{self.signature}"


def url(info: ShareLinkInfo | SharedStudy, base_url: str) -> str:
    """The full URL of a link, e.g. ``https://pacs.benhvien.vn/s/<token>.<sig>``."""
    return base_url.rstrip("/") + info.path


def split_link(link: str) -> tuple[str, str]:
    """``<token>.<signature>`` from a URL into its two parts ("" for a malformed one)."""
    token_id, sep, signature = link.partition(".")
    if not sep or not token_id or not signature or len(link) > 200:
        return "", ""
    return token_id, signature


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _expiry_text(at: datetime) -> str:
    """The expiry as signed: UTC, to the second (PostgreSQL and SQLite give back the same text)."""
    moment = at if at.tzinfo else at.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ShareLinks:
    """Create, open, revoke and list patient share links over the index database.

    `clock` gives "now" (tests pass one to make links that are already expired).
    """

    def __init__(self, db: Database, audit: AuditLog, secret: bytes, *, default_days: int = 30,
                 clock: Callable[[], datetime] | None = None, hasher: PasswordHasher | None = None) -> None:  # fmt: skip
        if len(secret) < 16:
            raise ValueError("secret: give at least 16 bytes (derive_key of the session key)")
        self._db = db
        self._audit = audit
        self._secret = secret
        self.default_days = default_days
        self._clock = clock or (lambda: datetime.now(UTC))
        self._hasher = hasher or PasswordHasher()

    # --- signing ------------------------------------------------------------------------

    @staticmethod
    def url(info: ShareLinkInfo | SharedStudy, base_url: str) -> str:
        """The full URL of a link (the module's `url`)."""
        return url(info, base_url)

    def sign(self, token_id: str, study_uid: str, expires_at: datetime) -> str:
        message = f"{token_id}\n{study_uid}\n{_expiry_text(expires_at)}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    # --- staff side ---------------------------------------------------------------------

    def create(self, study_instance_uid: str, actor: str, *, days: int | None = None, pin: str = "",
               address: str = "", conn: Connection | None = None) -> ShareLinkInfo:  # fmt: skip
        """A new link to the study, valid `days` (default: reports.share_link_days).

        `conn`: write inside the caller's transaction (the sign flow's); else one of our own.
        """
        days = self.default_days if days is None else days
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise InvalidArgument(f"days must be a whole number from 1 to {MAX_DAYS}")
        pin = _check_pin(pin)
        now = self._clock()
        row = {
            "token_id": secrets.token_urlsafe(24), "created_by": actor[:64], "created_at": now,
            "expires_at": now + timedelta(days=days), "revoked_at": None, "revoked_by": "",
            "pin_hash": self._hasher.hash(pin) if pin else "", "failed_attempts": 0, "locked_until": None,
            "last_used_at": None, "use_count": 0,
        }  # fmt: skip
        if conn is not None:
            info = self._insert(conn, study_instance_uid, row)
        else:
            with self._db.write() as own:
                info = self._insert(own, study_instance_uid, row)
        self._audit.record(Origin(actor, address, "HTTP"), "SHARE_CREATE", "STUDY", study_instance_uid, "done",
                           f"link {info.token_id[:8]}, {days} days{', PIN' if pin else ''}")  # fmt: skip
        log.info("share link %s made for study %s by %s, %d days", info.token_id[:8], study_instance_uid, actor, days)
        return info

    def _insert(self, conn: Connection, study_uid: str, row: dict[str, Any]) -> ShareLinkInfo:
        study = conn.execute(select(_STUDIES.c.pk, _STUDIES.c.patient_pk)
                             .where(_STUDIES.c.study_instance_uid == study_uid)).first()  # fmt: skip
        if study is None:
            raise NotFound(f"no study {study_uid[:64]} in the archive")
        row = {**row, "study_pk": study.pk, "patient_pk": study.patient_pk}
        conn.execute(insert(_LINKS).values(**row))
        return self._info(row, study_uid)

    def ensure_for_study(self, conn: Connection | None, study_uid: str, actor: str) -> ShareLinkInfo:
        """The study's live link, or a new one: what a report becoming final calls (reports.share_on_final).

        A link that has less than a day left is not reused: the patient would
        leave with a QR code about to stop working.
        """
        now = self._clock()
        if conn is not None:
            existing = self._live(conn, study_uid, now)
        else:
            with self._db.read() as own:
                existing = self._live(own, study_uid, now)
        if existing is not None:
            return existing
        return self.create(study_uid, actor, conn=conn)

    def _live(self, conn: Connection, study_uid: str, now: datetime) -> ShareLinkInfo | None:
        for info in self._for_study(conn, study_uid):
            if info.live(now + timedelta(days=1)):
                return info
        return None

    def revoke(self, token_id: str, actor: str, address: str = "") -> ShareLinkInfo:
        """Stop a link working at once (410 from then on). Revoking twice is harmless."""
        now = self._clock()
        with self._db.write() as conn:
            found = self._row(conn, token_id)
            if found is None:
                raise NotFound(f"no share link {token_id[:64]}")
            if found.revoked_at is None:
                conn.execute(update(_LINKS).where(_LINKS.c.pk == found.pk).values(revoked_at=now, revoked_by=actor[:64]))
            row = self._row(conn, token_id)
        assert row is not None
        info = self._info(row._asdict(), row.study_instance_uid)
        self._audit.record(Origin(actor, address, "HTTP"), "SHARE_REVOKE", "STUDY", info.study_instance_uid, "done",
                           f"link {token_id[:8]}")  # fmt: skip
        log.info("share link %s of study %s revoked by %s", token_id[:8], info.study_instance_uid, actor)
        return info

    def get(self, token_id: str) -> ShareLinkInfo:
        with self._db.read() as conn:
            row = self._row(conn, token_id)
        if row is None:
            raise NotFound(f"no share link {token_id[:64]}")
        return self._info(row._asdict(), row.study_instance_uid)

    def list_for_study(self, study_uid: str) -> list[ShareLinkInfo]:
        """The study's links, newest first, revoked and expired ones included."""
        with self._db.read() as conn:
            return self._for_study(conn, study_uid)

    def _for_study(self, conn: Connection, study_uid: str) -> list[ShareLinkInfo]:
        rows = conn.execute(self._select().where(_STUDIES.c.study_instance_uid == study_uid)
                            .order_by(_LINKS.c.created_at.desc(), _LINKS.c.pk.desc())).all()  # fmt: skip
        return [self._info(r._asdict(), r.study_instance_uid) for r in rows]

    # --- patient side -------------------------------------------------------------------

    def check(self, token_id: str, signature: str, address: str = "") -> SharedStudy:
        """The study a link opens, without asking for its PIN or counting a use.

        For the images of a page already opened (the page checked the PIN and
        gave the browser a cookie for it). Raises LinkNotFound or LinkGone.
        """
        row = self._verified(token_id, signature, address)
        self._refuse_if_gone(row, address)
        return self._shared(row)

    def open(self, token_id: str, signature: str, pin: str = "", address: str = "", *,
             pin_verified: bool = False, count_use: bool = True) -> SharedStudy:  # fmt: skip
        """Open a link: every check, the PIN when it has one ("": none offered), one use counted.

        `pin_verified`: the caller already saw the right PIN from this browser
        (the share page's short-lived cookie). Raises LinkNotFound (404),
        LinkGone (410), PinRequired (401), WrongPin (403) or LinkLocked (429,
        also with the right PIN while locked).
        """
        row = self._verified(token_id, signature, address)
        self._refuse_if_gone(row, address)
        now = self._clock()
        if row.pin_hash and not pin_verified:
            locked_until = _utc(row.locked_until)
            if locked_until is not None and locked_until > now:
                raise self._refused(row, address, LinkLocked(
                    "too many wrong PINs: this link is locked for a while / nhập sai mã PIN quá nhiều lần, "
                    "vui lòng thử lại sau", int((locked_until - now).total_seconds()) + 1))  # fmt: skip
            if not pin.strip():  # an empty form costs no attempt
                raise self._refused(row, address, PinRequired("this link needs its PIN / cần nhập mã PIN"))
            if not self._pin_matches(row.pin_hash, pin):
                raise self._refused(row, address, self._wrong_pin(row.pk, now))
        changes: dict[str, Any] = {"use_count": _LINKS.c.use_count + 1, "last_used_at": now} if count_use else {}
        if row.pin_hash and not pin_verified:
            changes.update(failed_attempts=0, locked_until=None)  # the right PIN starts the count again
        if changes:
            with self._db.write() as conn:
                conn.execute(update(_LINKS).where(_LINKS.c.pk == row.pk).values(**changes))
        self._audit.record(self._origin(row, address), "SHARE_OPEN", "STUDY", row.study_instance_uid,
                           "ok", "PIN right" if row.pin_hash and not pin_verified else "")  # fmt: skip
        log.info("share link %s of study %s opened", row.token_id[:8], row.study_instance_uid)
        return self._shared(row)

    def _wrong_pin(self, pk: int, now: datetime) -> ShareLinkError:
        with self._db.write() as conn:
            conn.execute(update(_LINKS).where(_LINKS.c.pk == pk).values(failed_attempts=_LINKS.c.failed_attempts + 1))
            failed = int(conn.execute(select(_LINKS.c.failed_attempts).where(_LINKS.c.pk == pk)).scalar_one())
            if failed >= MAX_PIN_ATTEMPTS:
                until = now + timedelta(minutes=LOCK_MINUTES)
                conn.execute(update(_LINKS).where(_LINKS.c.pk == pk).values(locked_until=until, failed_attempts=0))
                return LinkLocked(f"{MAX_PIN_ATTEMPTS} wrong PINs: this link is locked for {LOCK_MINUTES} minutes / "
                                  f"nhập sai mã PIN {MAX_PIN_ATTEMPTS} lần: liên kết bị khóa {LOCK_MINUTES} phút",
                                  LOCK_MINUTES * 60)  # fmt: skip
        left = MAX_PIN_ATTEMPTS - failed
        return WrongPin(f"wrong PIN, {left} tries left / sai mã PIN, còn {left} lần thử")

    def _pin_matches(self, pin_hash: str, pin: str) -> bool:
        try:
            return bool(self._hasher.verify(pin_hash, pin.strip()))
        except (VerificationError, InvalidHashError):
            return False

    def _verified(self, token_id: str, signature: str, address: str) -> Any:
        """The link's row when the token exists and the signature matches; else LinkNotFound."""
        row = None
        if 0 < len(token_id) <= 64 and 0 < len(signature) <= 64:
            with self._db.read() as conn:
                row = self._row(conn, token_id)
        expected = self.sign(token_id, row.study_instance_uid, row.expires_at) if row is not None else ""
        # compare_digest even when the row is missing: the same work either way.
        if row is None or not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            self._audit.record(Origin("share-link", address, "HTTP"), "SHARE_OPEN", "STUDY",
                               row.study_instance_uid if row is not None else "", "refused",
                               f"unknown or tampered link {token_id[:8]!r}")  # fmt: skip
            log.info("share link %r refused: unknown or tampered", token_id[:8])
            raise LinkNotFound()
        return row

    def _refuse_if_gone(self, row: Any, address: str) -> None:
        if row.revoked_at is not None:
            raise self._refused(row, address, LinkGone("this link was withdrawn by the hospital / "
                                                       "liên kết đã bị thu hồi", "revoked"))  # fmt: skip
        if _utc(row.expires_at) <= self._clock():  # type: ignore[operator]
            raise self._refused(row, address, LinkGone("this link has expired / liên kết đã hết hạn", "expired"))

    def _refused(self, row: Any, address: str, error: ShareLinkError) -> ShareLinkError:
        self._audit.record(self._origin(row, address), "SHARE_OPEN", "STUDY", row.study_instance_uid, "refused",
                           error.reason)
        log.info("share link %s of study %s refused: %s", row.token_id[:8], row.study_instance_uid, error.reason)
        return error

    @staticmethod
    def _origin(row: Any, address: str) -> Origin:
        """Who is looking: the holder of the link, named after the link's first characters."""
        return Origin(f"share:{row.token_id[:8]}", address, "HTTP")

    # --- rows ---------------------------------------------------------------------------

    @staticmethod
    def _select() -> Any:
        return select(_LINKS, _STUDIES.c.study_instance_uid).join(_STUDIES, _STUDIES.c.pk == _LINKS.c.study_pk)

    def _row(self, conn: Connection, token_id: str) -> Any:
        return conn.execute(self._select().where(_LINKS.c.token_id == token_id)).first()

    def _info(self, row: dict[str, Any], study_uid: str) -> ShareLinkInfo:
        expires_at, created_at = _utc(row["expires_at"]), _utc(row["created_at"])
        assert expires_at is not None and created_at is not None
        return ShareLinkInfo(
            token_id=row["token_id"], signature=self.sign(row["token_id"], study_uid, expires_at),
            study_instance_uid=study_uid, created_by=row["created_by"], created_at=created_at,
            expires_at=expires_at, revoked_at=_utc(row["revoked_at"]), revoked_by=row["revoked_by"],
            has_pin=bool(row["pin_hash"]), use_count=int(row["use_count"]), last_used_at=_utc(row["last_used_at"]),
            locked_until=_utc(row["locked_until"]),
        )  # fmt: skip

    def _shared(self, row: Any) -> SharedStudy:
        expires_at = _utc(row.expires_at)
        assert expires_at is not None
        return SharedStudy(token_id=row.token_id, signature=self.sign(row.token_id, row.study_instance_uid, expires_at),
                           study_pk=int(row.study_pk), patient_pk=int(row.patient_pk),
                           study_instance_uid=row.study_instance_uid, expires_at=expires_at,
                           has_pin=bool(row.pin_hash))  # fmt: skip


def _check_pin(pin: object) -> str:
    if not isinstance(pin, str):
        raise InvalidArgument("pin must be text, e.g. the patient's birth year")
    pin = pin.strip()
    if pin and not (PIN_LENGTH[0] <= len(pin) <= PIN_LENGTH[1] and pin.isprintable()):
        raise InvalidArgument(f"pin: give {PIN_LENGTH[0]} to {PIN_LENGTH[1]} printable characters, or none")
    return pin


__all__ = [
    "LinkGone", "LinkLocked", "LinkNotFound", "PinRequired", "ShareLinkError", "ShareLinkInfo", "ShareLinks",
    "SharedStudy", "WrongPin", "derive_key", "split_link", "url",
]  # fmt: skip
