"""User accounts and API tokens: who may use the HTTP edge, and as what.

People log in with a user name and password (Argon2id through argon2-cffi,
RFC 9106 parameters; no home-made crypto). Systems (the EMR, a script) carry a
bearer token: 256 random bits, shown once when created, stored only as its
SHA-256. Every change is written to the audit log.

Roles decide what each may do; the HTTP edge maps them to endpoints.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from archive.audit import AuditLog
from archive.db import Database
from archive.errors import InvalidArgument, NotFound
from archive.models import ApiToken, UserAccount
from archive.origin import Origin

#: Roles of people, most powerful first.
USER_ROLES = ("admin", "radiologist", "technologist", "referrer")
#: Roles a token may carry: a system's own role (``emr`` reads images, ``his`` places orders),
#: or a person's for scripts.
TOKEN_ROLES = ("emr", "his", *USER_ROLES)
#: Languages of the web UI.
UI_LANGUAGES = ("vi", "en")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # Argon2 takes any length; this bounds the work a login can cause.
TOKEN_PREFIX = "mpt_"

_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN_RE = re.compile(r"^mpt_[A-Za-z0-9_-]{43}$")
# Writing last_used_at on every request would make each read a write.
_USE_GRANULARITY = timedelta(minutes=1)

_USERS = cast(Table, UserAccount.__table__)
_TOKENS = cast(Table, ApiToken.__table__)


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    role: str
    disabled: bool
    created_at: datetime
    password_changed_at: datetime
    #: Practising-certificate number (số chứng chỉ hành nghề); a signer's MA_BS_DOC_KQ.
    practising_certificate: str = ""
    #: The web UI language this person chose ("vi", "en"), "" before they chose.
    ui_language: str = ""
    #: The viewer loads small previews only until asked (a slow provincial link).
    low_bandwidth: bool = False


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewToken:
    """A token just created: `secret` is shown once and never stored."""

    token: Token
    secret: str


class Accounts:
    """Users and tokens over the index database."""

    def __init__(self, db: Database, audit: AuditLog, hasher: PasswordHasher | None = None) -> None:
        self._db = db
        self._audit = audit
        self._hasher = hasher or PasswordHasher()

    @functools.cached_property
    def _dummy_hash(self) -> str:
        # Checking a password against this when the user does not exist takes
        # as long as a real check, so timing does not tell which names exist.
        return self._hasher.hash(secrets.token_hex(16))

    # --- users -------------------------------------------------------------------------

    def add_user(self, username: str, role: str, password: str, by: Origin, display_name: str = "") -> User:
        name = check_username(username)
        check_role(role, USER_ROLES)
        check_password(password, name)
        now = datetime.now(UTC)
        row = {"username": name, "display_name": _display_name(display_name), "role": role,
               "password_hash": self._hasher.hash(password), "disabled": False,
               "created_at": now, "password_changed_at": now}  # fmt: skip
        self._insert(_USERS, row, f"user {name} already exists")
        self._audit.record(by, "USER_ADD", "USER", name, "done", f"role {role}")
        return _user(row)

    def set_password(self, username: str, password: str, by: Origin) -> None:
        name = check_username(username)
        check_password(password, name)
        self._update_user(name, {"password_hash": self._hasher.hash(password),
                                 "password_changed_at": datetime.now(UTC)})  # fmt: skip
        self._audit.record(by, "USER_PASSWORD", "USER", name, "done")

    def set_disabled(self, username: str, disabled: bool, by: Origin) -> None:
        name = check_username(username)
        self._update_user(name, {"disabled": disabled})
        self._audit.record(by, "USER_DISABLE" if disabled else "USER_ENABLE", "USER", name, "done")

    def set_practising_certificate(self, username: str, number: str, by: Origin) -> None:
        """The number the claim's MA_BS_DOC_KQ takes from this user's signatures ("" clears it)."""
        name = check_username(username)
        number = unicodedata.normalize("NFC", number.strip())
        if len(number) > 64 or any(unicodedata.category(c).startswith("C") for c in number):
            raise InvalidArgument("a practising-certificate number is at most 64 printable characters")
        self._update_user(name, {"practising_certificate": number})
        self._audit.record(by, "USER_CERTIFICATE_NUMBER", "USER", name, "done", number)

    def set_preferences(self, username: str, *, ui_language: str | None = None,
                        low_bandwidth: bool | None = None) -> None:  # fmt: skip
        """The person's own UI settings; not audited (they change no one's data)."""
        name = check_username(username)
        values: dict[str, Any] = {}
        if ui_language is not None:
            if ui_language not in UI_LANGUAGES:
                raise InvalidArgument(f"language must be one of {', '.join(UI_LANGUAGES)}")
            values["ui_language"] = ui_language
        if low_bandwidth is not None:
            values["low_bandwidth"] = bool(low_bandwidth)
        if values:
            self._update_user(name, values)

    def users(self) -> list[User]:
        with self._db.read() as conn:
            return [_user(r._mapping) for r in conn.execute(select(_USERS).order_by(_USERS.c.username))]

    def user(self, username: str) -> User | None:
        with self._db.read() as conn:
            row = conn.execute(select(_USERS).where(_USERS.c.username == username.strip().lower())).first()
        return _user(row._mapping) if row else None

    def count_users(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(_USERS)).scalar_one())

    def authenticate(self, username: str, password: str) -> User | None:
        """The enabled user with this password, else None (never says which part was wrong)."""
        name = username.strip().lower()
        with self._db.read() as conn:
            row = conn.execute(select(_USERS).where(_USERS.c.username == name)).first()
        if row is None or len(password) > MAX_PASSWORD:
            self._verify(self._dummy_hash, password[:MAX_PASSWORD])
            return None
        if not self._verify(row.password_hash, password) or row.disabled:
            return None
        if self._hasher.check_needs_rehash(row.password_hash):
            # Parameters raised since this hash was made: upgrade it now that we know the password.
            with self._db.write() as conn:
                conn.execute(update(_USERS).where(_USERS.c.pk == row.pk)
                             .values(password_hash=self._hasher.hash(password)))  # fmt: skip
        return _user(row._mapping)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False

    def _insert(self, table: Table, row: dict[str, Any], taken: str) -> None:
        """Insert `row`; a unique name already taken (here or by another node) is `taken`."""
        try:
            with self._db.write() as conn:
                conn.execute(insert(table), [row])
        except IntegrityError:
            raise InvalidArgument(taken) from None

    def _update_user(self, name: str, values: dict[str, Any]) -> None:
        with self._db.write() as conn:
            if conn.execute(update(_USERS).where(_USERS.c.username == name).values(**values)).rowcount == 0:
                raise NotFound(f"there is no user {name}")

    # --- tokens ------------------------------------------------------------------------

    def create_token(self, name: str, by: Origin, role: str = "emr") -> NewToken:
        token_name = check_token_name(name)
        check_role(role, TOKEN_ROLES)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {"name": token_name, "role": role, "token_sha256": _sha256(secret),
               "prefix": secret[:12], "created_at": datetime.now(UTC),
               "revoked_at": None, "last_used_at": None}  # fmt: skip
        self._insert(_TOKENS, row, f"a token named {token_name} already exists")
        self._audit.record(by, "TOKEN_CREATE", "TOKEN", token_name, "done", f"role {role}")
        return NewToken(_token(row), secret)

    def revoke_token(self, name: str, by: Origin) -> None:
        token_name = check_token_name(name)
        with self._db.write() as conn:
            changed = conn.execute(
                update(_TOKENS).where(_TOKENS.c.name == token_name, _TOKENS.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            ).rowcount  # fmt: skip
        if changed == 0:
            existing = [t for t in self.tokens() if t.name == token_name]
            if not existing:
                raise NotFound(f"there is no token named {token_name}")
            return  # already revoked: nothing to do
        self._audit.record(by, "TOKEN_REVOKE", "TOKEN", token_name, "done")

    def tokens(self) -> list[Token]:
        with self._db.read() as conn:
            return [_token(r._mapping) for r in conn.execute(select(_TOKENS).order_by(_TOKENS.c.name))]

    def verify_token(self, secret: str) -> Token | None:
        """The active token with this secret, else None."""
        if not _TOKEN_RE.match(secret):
            return None
        with self._db.read() as conn:
            row = conn.execute(select(_TOKENS).where(_TOKENS.c.token_sha256 == _sha256(secret))).first()
        if row is None or row.revoked_at is not None:
            return None
        token = _token(row._mapping)
        now = datetime.now(UTC)
        if token.last_used_at is None or now - token.last_used_at > _USE_GRANULARITY:
            with self._db.write() as conn:
                conn.execute(update(_TOKENS).where(_TOKENS.c.pk == row.pk).values(last_used_at=now))
        return token


def check_username(value: str) -> str:
    name = value.strip().lower()
    if not _USERNAME_RE.match(name):
        raise InvalidArgument(
            f"user name {value!r} is not valid: 1-64 characters a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_token_name(value: str) -> str:
    name = value.strip()
    if not _TOKEN_NAME_RE.match(name):
        raise InvalidArgument(
            f"token name {value!r} is not valid: 1-64 characters A-Z, a-z, 0-9, '.', '_' or '-'"
        )
    return name


def check_role(role: str, allowed: tuple[str, ...]) -> None:
    if role not in allowed:
        raise InvalidArgument(f"role {role!r} is not one of: {', '.join(allowed)}")


def check_password(password: str, username: str) -> None:
    """Length is what makes a password strong (NIST SP 800-63B): no composition rules."""
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_PASSWORD:
        raise InvalidArgument(f"the password is too short: at least {MIN_PASSWORD} characters")
    if length > MAX_PASSWORD:
        raise InvalidArgument(f"the password is too long: at most {MAX_PASSWORD} characters")
    if password.strip().lower() == username:
        raise InvalidArgument("the password must not be the user name")


def _display_name(value: str) -> str:
    name = unicodedata.normalize("NFC", value.strip())
    if len(name) > 200 or any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidArgument("the display name must be at most 200 characters, without control characters")
    return name


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands DateTime(timezone=True) back without its zone; the value is UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _user(row: Any) -> User:
    return User(row["username"], row["display_name"], row["role"], bool(row["disabled"]),
                cast(datetime, _utc(row["created_at"])), cast(datetime, _utc(row["password_changed_at"])),
                row.get("practising_certificate") or "", row.get("ui_language") or "",
                bool(row.get("low_bandwidth")))  # fmt: skip


def _token(row: Any) -> Token:
    return Token(row["name"], row["role"], row["prefix"], cast(datetime, _utc(row["created_at"])),
                 _utc(row["revoked_at"]), _utc(row["last_used_at"]))  # fmt: skip
