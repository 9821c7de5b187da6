"""The administrator's pages: disk space and its projection, modalities, queues, users and tokens, the audit log.

``/ui/admin`` is the dashboard; ``/outbox``, ``/users`` and ``/audit`` the
pages behind it. Everything is for the "admin" family (viewer/access.py),
checked on the server for every request. Changes go through the services
that audit them (archive.accounts, worklist.outbox); forms post the session's
CSRF token, bad input is answered with the page again, a clear message and
nothing changed. The figures come from archive/usage.py and worklist/queues.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, g, redirect, request
from flask_babel import format_decimal, lazy_gettext, to_utc
from flask_babel import gettext as _
from werkzeug.wrappers import Response as BaseResponse

from archive import Origin, usage
from archive.accounts import MIN_PASSWORD, TOKEN_ROLES, USER_ROLES, check_password, check_role, check_token_name
from archive.accounts import check_username
from archive.audit import search
from archive.errors import ArchiveError, InvalidArgument, NotFound
from reports.devices import DeviceRegistry
from reports.identities import SigningIdentities
from storage import StorageError
from viewer.pages import secure
from viewer.ui import base
from worklist.outbox import FAILED, PENDING, SENT, Outbox
from worklist.queues import queue_status

blueprint = Blueprint("ui_admin", __name__)
blueprint.register_error_handler(ArchiveError, base.refused)
blueprint.register_error_handler(base.LoginNeeded, base.login_needed)
base.menu_item("ui_admin.dashboard", lazy_gettext("Administration"), "admin")

#: Fewer days than this until the disk is full is a warning on the dashboard.
WARN_DAYS = 30
AUDIT_PAGE = 50
_AUDIT_MAX = 10_000
_TEXT_MAX = 200


def _origin() -> Origin:
    return Origin(g.principal.name, request.remote_addr or "", "HTTP")


def _back(path: str, **args: str) -> BaseResponse:
    """After a change: back to the page, which says what was done (POST, redirect, GET)."""
    return secure(redirect(path + ("?" + urlencode(args) if args else ""), 303))


# --- formatting -------------------------------------------------------------------------------


def size(value: float | None) -> str:
    """Bytes in decimal units (as disks are sold), in the page's language: "1,5 GB" in Vietnamese."""
    if value is None:
        return "–"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(amount) < 1000 or unit == "TB":
            break
        amount /= 1000
    return f"{format_decimal(amount, format='#,##0' if unit == 'B' else '#,##0.0')} {unit}"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return str(_("never"))
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 60:
        return str(_("just now"))
    if seconds < 3600:
        return str(_("%(n)d min ago", n=seconds // 60))
    if seconds < 86400:
        return str(_("%(n)d h ago", n=seconds // 3600))
    return str(_("%(n)d days ago", n=seconds // 86400))


def _helpers() -> dict[str, Any]:
    return {"size": size, "ago": ago, "now": datetime.now(UTC)}


# --- the dashboard ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    #: "ok", "warn" or "error"
    state: str
    text: str


@dataclass(frozen=True)
class Modality:
    sender: usage.Sender
    device_code: str
    modality: str
    description: str
    serial: str


@blueprint.get("")
@base.ui_page("admin")
def dashboard() -> BaseResponse:
    archive = base.archive()
    now = datetime.now(UTC)
    started = time.monotonic()
    report = usage.storage(archive, now)
    database_ms = (time.monotonic() - started) * 1000
    devices = {d.ae_title: d for d in DeviceRegistry(archive.db).list()}
    people = [u.username for u in archive.accounts.users()] + [t.name for t in archive.accounts.tokens()]
    modalities = []
    for sender in usage.senders(archive, now, also=devices, people=[*people, "import"]):
        device = devices.get(sender.ae_title)
        modalities.append(Modality(sender, device.device_code if device else "", device.modality if device else "",
                                   (device.description if device else "") or sender.description,
                                   device.serial_number if device else ""))  # fmt: skip
    queues = queue_status(archive.db)
    return base.render("ui/admin.html", report=report, modalities=modalities, queues=queues, warn_days=WARN_DAYS,
                       checks=_health(report, queues, database_ms), day=timedelta(days=1), **_helpers())  # fmt: skip


def _health(report: usage.StorageReport, queues: list[Any], database_ms: float) -> list[Check]:
    archive = base.archive()
    checks = [Check(_("Index database"), "ok" if database_ms < 2000 else "warn",
                    _("answers (%(ms)s ms for the figures on this page)", ms=format_decimal(round(database_ms))))]
    try:
        started = time.monotonic()
        archive.objects.exists("minipacs-health-probe")
        checks.append(Check(_("Object store"), "ok", _("answers (%(ms)s ms)", ms=format_decimal(
            round((time.monotonic() - started) * 1000)))))  # fmt: skip
    except (StorageError, OSError) as exc:
        checks.append(Check(_("Object store"), "error", _("does not answer: %(error)s", error=str(exc)[:200])))
    days = report.projection.days_until_full
    if report.capacity is None:
        checks.append(Check(_("Disk space"), "ok", _("an S3 store: its capacity is managed there")))
    elif report.capacity.usable_bytes <= 0:
        checks.append(Check(_("Disk space"), "error", _("full: new images are refused")))
    elif days is not None and days < WARN_DAYS:
        checks.append(Check(_("Disk space"), "warn", _("full in about %(days)s days", days=format_decimal(int(days)))))
    else:
        checks.append(Check(_("Disk space"), "ok", _("%(free)s free", free=size(report.capacity.usable_bytes))))
    failed = sum(q.failed for q in queues)
    checks.append(Check(_("Outbox"), "warn" if failed else "ok",
                        _("%(n)d messages failed", n=failed) if failed else _("no failed messages")))
    return checks


# --- the outbox -------------------------------------------------------------------------------

_STATES = {"": lazy_gettext("all"), PENDING: lazy_gettext("pending"), FAILED: lazy_gettext("failed"),
           SENT: lazy_gettext("sent")}  # fmt: skip


@blueprint.get("/outbox")
@base.ui_page("admin")
def outbox() -> BaseResponse:
    state = request.args.get("state", "")
    subject = request.args.get("subject", "").strip()
    if state not in _STATES:
        raise InvalidArgument(_("Unknown state: choose pending, failed or sent."))
    if len(subject) > _TEXT_MAX or not subject.isprintable():
        raise InvalidArgument(_("The subject must be printable text of at most 200 characters."))
    entries = Outbox(base.archive().db).entries(state, 200, subject)
    done = request.args.get("retried", "")
    notice = _("Message %(n)s is back in line: it is sent at the next round.", n=done) if done.isdigit() else ""
    return base.render("ui/admin_outbox.html", entries=entries, state=state, subject=subject, states=_STATES,
                       notice=notice, **_helpers())  # fmt: skip


@blueprint.post("/outbox/<int:number>/retry")
@base.ui_page("admin")
def outbox_retry(number: int) -> BaseResponse:
    archive = base.archive()
    try:
        entry = Outbox(archive.db).retry(number)
    except NotFound:
        raise NotFound(_("There is no outbox message %(n)d.", n=number)) from None
    except InvalidArgument:
        raise InvalidArgument(_("Message %(n)d was already sent and acknowledged; it is not sent twice.",
                                n=number)) from None  # fmt: skip
    archive.audit.record(_origin(), "OUTBOX_RETRY", "", entry.subject, "done",
                         f"message {number} to {entry.destination}")  # fmt: skip
    return _back("/ui/admin/outbox", retried=str(number))


# --- users and tokens -------------------------------------------------------------------------

_DONE = {
    "added": lazy_gettext("User %(name)s added."),
    "disabled": lazy_gettext("User %(name)s is disabled: they can no longer log in."),
    "enabled": lazy_gettext("User %(name)s is enabled again."),
    "password": lazy_gettext("The password of %(name)s is changed."),
    "certificate": lazy_gettext("The practising-certificate number of %(name)s is saved."),
    "revoked": lazy_gettext("Token %(name)s is revoked: it is refused from now on."),
}


@blueprint.get("/users")
@base.ui_page("admin")
def users() -> BaseResponse:
    done, name = request.args.get("done", ""), request.args.get("name", "")[:64]
    accounts = base.archive().accounts
    known = accounts.user(name) is not None or any(t.name == name for t in accounts.tokens())
    notice = str(_DONE[done]) % {"name": name} if done in _DONE and name and known else ""
    return _users_page(notice=notice)


def _users_page(status: int = 200, error: str = "", notice: str = "", form: dict[str, str] | None = None,
                error_for: str = "") -> BaseResponse:  # fmt: skip
    archive = base.archive()
    identities = SigningIdentities(archive.db)
    people = [(user, identities.info(user.username)) for user in archive.accounts.users()]
    return base.render("ui/admin_users.html", status, people=people, tokens=archive.accounts.tokens(),
                       user_roles=USER_ROLES, token_roles=TOKEN_ROLES, error=error, notice=notice, form=form or {},
                       error_for=error_for, min_password=MIN_PASSWORD, **_helpers())  # fmt: skip


def _field(name: str, limit: int = 1024) -> str:
    value = request.form.get(name, "")
    return value[:limit + 1]


def _password_problem(password: str, confirm: str, username: str) -> str:
    if password != confirm:
        return str(_("The two passwords differ."))
    try:
        check_password(password, username)
    except InvalidArgument:
        if len(password) < MIN_PASSWORD:
            return str(_("The password is too short: at least %(n)d characters.", n=MIN_PASSWORD))
        if password.strip().lower() == username:
            return str(_("The password must not be the user name."))
        return str(_("The password is too long."))
    return ""


@blueprint.post("/users")
@base.ui_page("admin")
def add_user() -> BaseResponse:
    username, display = _field("username", 64).strip().lower(), _field("display_name", 200)
    role, password, confirm = _field("role", 16), _field("password"), _field("confirm")
    form = {"username": username, "display_name": display, "role": role}
    try:
        check_username(username)
    except InvalidArgument:
        return _users_page(400, _("The user name must be 1–64 characters: a–z, 0–9, '.', '_' or '-', starting with "
                                  "a letter or digit."), form=form, error_for="add")  # fmt: skip
    if role not in USER_ROLES:
        return _users_page(400, _("Choose a role."), form=form, error_for="add")
    problem = _password_problem(password, confirm, username)
    if problem:
        return _users_page(400, problem, form=form, error_for="add")
    accounts = base.archive().accounts
    if accounts.user(username) is not None:
        return _users_page(400, _("User %(name)s already exists.", name=username), form=form, error_for="add")
    try:
        accounts.add_user(username, role, password, _origin(), display_name=display)
    except InvalidArgument as exc:
        return _users_page(400, exc.message, form=form, error_for="add")
    return _back("/ui/admin/users", done="added", name=username)


def _existing_user(username: str) -> str:
    try:
        name = check_username(username)
    except InvalidArgument:
        raise NotFound(_("There is no such user.")) from None
    if base.archive().accounts.user(name) is None:
        raise NotFound(_("There is no user %(name)s.", name=name))
    return name


@blueprint.post("/users/<username>/disabled")
@base.ui_page("admin")
def set_disabled(username: str) -> BaseResponse:
    name = _existing_user(username)
    disabled = base.form_bool("disabled")
    if disabled and name == g.principal.name:
        return _users_page(400, _("You cannot disable your own account."), error_for=name)
    base.archive().accounts.set_disabled(name, disabled, _origin())
    return _back("/ui/admin/users", done="disabled" if disabled else "enabled", name=name)


@blueprint.post("/users/<username>/password")
@base.ui_page("admin")
def set_password(username: str) -> BaseResponse:
    name = _existing_user(username)
    problem = _password_problem(_field("password"), _field("confirm"), name)
    if problem:
        return _users_page(400, problem, error_for=name)
    base.archive().accounts.set_password(name, _field("password"), _origin())
    return _back("/ui/admin/users", done="password", name=name)


@blueprint.post("/users/<username>/certificate")
@base.ui_page("admin")
def set_certificate(username: str) -> BaseResponse:
    name = _existing_user(username)
    try:
        base.archive().accounts.set_practising_certificate(name, _field("number", 200), _origin())
    except InvalidArgument:
        return _users_page(400, _("A practising-certificate number is at most 64 printable characters."),
                           error_for=name)  # fmt: skip
    return _back("/ui/admin/users", done="certificate", name=name)


@blueprint.post("/tokens")
@base.ui_page("admin")
def create_token() -> BaseResponse:
    name, role = _field("name", 64).strip(), _field("role", 16)
    form = {"token_name": name, "token_role": role}
    try:
        check_token_name(name)
        check_role(role, TOKEN_ROLES)
    except InvalidArgument:
        return _users_page(400, _("A token needs a name of 1–64 characters A–Z, a–z, 0–9, '.', '_' or '-', and a "
                                  "role."), form=form, error_for="token")  # fmt: skip
    accounts = base.archive().accounts
    if any(t.name == name for t in accounts.tokens()):
        return _users_page(400, _("A token named %(name)s already exists.", name=name), form=form, error_for="token")
    created = accounts.create_token(name, _origin(), role)
    # Shown on this page once; no-store so no cache keeps it.
    return base.render("ui/admin_token.html", created=created, **_helpers(),
                       strings={"copied": _("Copied."),
                                "copyByHand": _("The token is selected: press Ctrl+C to copy it.")})


@blueprint.post("/tokens/<name>/revoke")
@base.ui_page("admin")
def revoke_token(name: str) -> BaseResponse:
    try:
        token_name = check_token_name(name)
        base.archive().accounts.revoke_token(token_name, _origin())
    except (InvalidArgument, NotFound):
        raise NotFound(_("There is no such token.")) from None
    return _back("/ui/admin/users", done="revoked", name=token_name)


# --- the audit log ----------------------------------------------------------------------------

_AUDIT_FILTERS = ("user", "action", "patient", "contains", "since", "until")
#: Actions offered in the search form (any other can be typed).
ACTIONS = ("LOGIN", "LOGOUT", "QUERY", "RETRIEVE", "STORE", "VIEW", "MPPS", "RECONCILE", "MERGE", "PATIENT UPDATE",
           "USER_ADD", "USER_PASSWORD", "USER_DISABLE", "USER_ENABLE", "TOKEN_CREATE", "TOKEN_REVOKE",
           "AUDIT_SEARCH", "OUTBOX_RETRY")  # fmt: skip


@blueprint.get("/audit")
@base.ui_page("admin")
def audit() -> BaseResponse:
    asked = {name: request.args.get(name, "").strip() for name in _AUDIT_FILTERS}
    page_text = request.args.get("page", "1").strip() or "1"
    problem = ""
    for name, value in asked.items():
        if len(value) > _TEXT_MAX or not value.isprintable():
            problem = _("Each search field takes printable text of at most 200 characters.")
    since, until = _day(asked["since"]), _day(asked["until"])
    if (asked["since"] and since is None) or (asked["until"] and until is None):
        problem = _("Dates are written like 2026-11-23.")
    elif since and until and until < since:
        problem = _("The end date is before the start date.")
    if not page_text.isdigit() or not 1 <= int(page_text) <= _AUDIT_MAX // AUDIT_PAGE:
        problem = _("There is no such page.")
    if problem:
        return base.render("ui/admin_audit.html", 400, asked=asked, error=problem, events=[], page=1, more=False,
                           actions=ACTIONS, **_helpers())  # fmt: skip
    page = int(page_text)
    archive = base.archive()
    found = search(archive.db, actor=asked["user"] or None, action=asked["action"] or None,
                   patient=asked["patient"] or None, contains=asked["contains"] or None, since=since,
                   until=until + timedelta(days=1) if until else None, limit=page * AUDIT_PAGE + 1)  # fmt: skip
    events = found[(page - 1) * AUDIT_PAGE:page * AUDIT_PAGE]
    what = "; ".join(f"{k}={v}" for k, v in asked.items() if v)
    archive.audit.record(_origin(), "AUDIT_SEARCH", "", "", f"{len(events)} events",
                         (what or "everything") + (f"; page {page}" if page > 1 else ""))  # fmt: skip
    pages = {"previous": _audit_url(asked, page - 1) if page > 1 else "",
             "next": _audit_url(asked, page + 1) if len(found) > page * AUDIT_PAGE else ""}  # fmt: skip
    return base.render("ui/admin_audit.html", asked=asked, error="", events=events, page=page, pages=pages,
                       actions=ACTIONS, **_helpers())  # fmt: skip


def _audit_url(asked: dict[str, str], page: int) -> str:
    return "/ui/admin/audit?" + urlencode({**{k: v for k, v in asked.items() if v}, "page": str(page)})


def _day(value: str) -> datetime | None:
    """The start of a day of the hospital's calendar (the UI's time zone), in UTC."""
    if not value:
        return None
    try:
        moment: datetime = to_utc(datetime.strptime(value, "%Y-%m-%d"))
        return moment.replace(tzinfo=UTC)
    except ValueError:
        return None

