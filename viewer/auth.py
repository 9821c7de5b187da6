"""Who is asking: HTTP Basic for people, Bearer tokens for systems.

Nobody sees patient data without credentials; only /healthz is anonymous.
Checking an Argon2 hash costs tens of milliseconds and 64 MiB on purpose, so a
successful Basic login is remembered for a minute (by a hash of the
credentials, in this process only); tokens are one index lookup. Repeated
failures from one address are slowed down with 429 before any hash is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass

from flask import Request

from archive.accounts import Accounts

CHALLENGE = 'Basic realm="minipacs", charset="UTF-8", Bearer realm="minipacs"'
_CACHE_SECONDS = 60.0
_FAILURE_WINDOW = 300.0
_MAX_FAILURES = 10


@dataclass(frozen=True)
class Principal:
    """Who is asking: ``kind`` is how they proved it: ``"user"`` (HTTP Basic), ``"session"``
    (a browser's login cookie), ``"token"`` (Bearer) or ``"anonymous"`` (http.anonymous_read)."""

    name: str
    role: str
    kind: str


class Unauthorized(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class Authenticator:
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts
        self._lock = threading.Lock()
        self._remembered: dict[str, tuple[float, Principal]] = {}
        self._failures: dict[str, deque[float]] = {}

    def principal(self, request: Request) -> Principal:
        """The caller, or raise Unauthorized / Throttled."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        address = request.remote_addr or ""
        if not header:
            raise Unauthorized("log in: HTTP Basic (user name and password) or a Bearer token")
        if scheme.lower() == "bearer":
            self._check_throttle(address)
            token = self._accounts.verify_token(value.strip())
            if token is None:
                self._failed(address)
                raise Unauthorized("the token is not valid (wrong, or revoked)")
            return Principal(token.name, token.role, "token")
        if scheme.lower() == "basic":
            return self._basic(value.strip(), address)
        raise Unauthorized(f"authorization scheme {scheme!r} is not supported: use Basic or Bearer")

    def login(self, username: str, password: str, address: str) -> Principal:
        """A person logging in with a form (a browser session): throttled like Basic, never cached."""
        self._check_throttle(address)
        user = self._accounts.authenticate(username, password)
        if user is None:
            self._failed(address)
            raise Unauthorized("wrong user name or password, or the account is disabled")
        return Principal(user.username, user.role, "session")

    def _basic(self, value: str, address: str) -> Principal:
        try:
            username, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        if not sep:
            raise Unauthorized("malformed Basic credentials")
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            remembered = self._remembered.get(key)
        if remembered and now - remembered[0] < _CACHE_SECONDS:
            return remembered[1]
        principal = self.login(username, password, address)
        principal = Principal(principal.name, principal.role, "user")
        with self._lock:
            self._remembered[key] = (now, principal)
        return principal

    def _check_throttle(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(address)
            while failures and now - failures[0] > _FAILURE_WINDOW:
                failures.popleft()
            if failures and len(failures) >= _MAX_FAILURES:
                raise Throttled(int(_FAILURE_WINDOW - (now - failures[0])) + 1)

    def _failed(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, deque()).append(time.monotonic())
