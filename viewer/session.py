"""Browser sessions: log in once with a form, then a signed cookie, with CSRF protection.

People in a browser (the viewer pages of a later version, an admin screen)
should not type a password per request nor have it cached by the browser's
Basic-auth dialog. POST /login checks the password (Argon2, throttled like
Basic) and sets a cookie signed with the site's key, kept in the index
(archive/site_keys.py; Flask's session, itsdangerous), so every gunicorn
worker, every node and a restart accept it.

The cookie is HttpOnly and SameSite=Lax, and it is never honoured for
cross-origin calls (CORS never allows credentials). A request that changes
anything (not GET/HEAD/OPTIONS) made with the cookie must also carry the
session's CSRF token in ``X-CSRF-Token`` (or a ``csrf_token`` form field):
another site can make the browser send the cookie, but cannot read the token.

Each request re-reads the account: a disabled user, a changed role or a
changed password ends the session at once, as does `session_minutes` without
a request.
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import UTC
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, session

from archive import Archive, Origin
from archive.site_keys import shared_key
from viewer.auth import Authenticator, Principal, Unauthorized
from viewer.config import web_config

blueprint = Blueprint("session", __name__)

#: Methods that change nothing, so need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
_TOUCH_EVERY = 60  # seconds: the cookie is re-issued at most once a minute to move its idle clock
_MAX_FIELD = 1024


class SessionRefused(Exception):
    """A session cookie that no longer lets its holder in; the message says why."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def configure(app: Flask, archive: Archive, legacy_key_file: Path | None) -> None:
    """Sign sessions with the site's key from the index (every node the same), or, given no
    `legacy_key_file`, with a key of this process only (tests, one-off tools)."""
    if legacy_key_file is None:
        app.secret_key = secrets.token_bytes(32)
    else:
        app.secret_key = shared_key(archive.db, "http-session", legacy_key_file)
    app.config.update(
        SESSION_COOKIE_NAME="minipacs_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_REFRESH_EACH_REQUEST=False,
    )


def principal_from_session(archive: Archive) -> Principal | None:
    """The person this request's session cookie belongs to; None without one.

    Raises SessionRefused when the cookie is stale, or when a state-changing
    request lacks the CSRF token.
    """
    name = session.get("user")
    if not isinstance(name, str):
        return None
    now = time.time()
    last = float(session.get("seen", 0))
    if now - last > web_config().session_minutes * 60:
        session.clear()
        raise SessionRefused("the session expired: log in again")
    user = archive.accounts.user(name)
    if user is None or user.disabled or user.password_changed_at.astimezone(UTC).timestamp() > session["since"]:
        session.clear()
        raise SessionRefused("the session ended (account disabled or password changed): log in again")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER) or (request.form.get("csrf_token") if request.form else None) or ""
        if not hmac.compare_digest(sent.encode(), str(session.get("csrf", "")).encode()):
            raise SessionRefused(f"missing or wrong CSRF token: send the session's token in {CSRF_HEADER}", 403)
    if now - last > _TOUCH_EVERY:
        session["seen"] = now
    return Principal(user.username, user.role, "session")


@blueprint.post("/login")
def login() -> Response:
    """Log in with a form or JSON {"username", "password"}; answers the CSRF token to send later."""
    archive: Archive = current_app.config["ARCHIVE"]
    authenticator: Authenticator = current_app.config["AUTHENTICATOR"]
    fields = request.get_json(silent=True) if request.is_json else request.form
    if fields is None or not hasattr(fields, "get"):
        raise Unauthorized("send username and password as a form or a JSON object")
    username, password = fields.get("username"), fields.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise Unauthorized("send username and password as a form or a JSON object")
    if len(username) > _MAX_FIELD or len(password) > _MAX_FIELD:
        raise Unauthorized("wrong user name or password, or the account is disabled")
    address = request.remote_addr or ""
    try:
        principal = authenticator.login(username, password, address)
    except Unauthorized:
        archive.audit.record(Origin(username[:64], address, "HTTP"), "LOGIN", "", "", "refused")
        raise
    session.clear()
    now = time.time()
    session.update(user=principal.name, since=now, seen=now, csrf=secrets.token_urlsafe(32))
    archive.audit.record(Origin(principal.name, address, "HTTP"), "LOGIN", "", "", "ok")
    return jsonify({"username": principal.name, "role": principal.role, "csrf_token": session["csrf"],
                    "expires_after_idle_minutes": web_config().session_minutes})  # fmt: skip


@blueprint.post("/logout")
def logout() -> Response:
    principal = g.principal
    session.clear()
    archive: Archive = current_app.config["ARCHIVE"]
    archive.audit.record(Origin(principal.name, request.remote_addr or "", "HTTP"), "LOGOUT", "", "", "ok")
    return jsonify({"status": "logged out"})


@blueprint.get("/session")
def whoami() -> Response:
    """Who is logged in, and (for a browser session) the CSRF token its pages must send."""
    principal = g.principal
    body = {"username": principal.name, "role": principal.role, "via": principal.kind}
    if principal.kind == "session":
        body["csrf_token"] = session["csrf"]
    return jsonify(body)
