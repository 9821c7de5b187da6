"""What every staff page shares: who is looking, the menu their role gets, the page frame.

A page is for one endpoint family of viewer/access.py (``@ui_page("reports")``):
a browser without a session is sent to the login page and back, a role the
family does not admit gets a 403 page, and the check runs on the server for
every request whatever the menu shows. Forms post the session's CSRF token
(``csrf_token``); scripts send it in ``X-CSRF-Token`` (static/ui/ui.js).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlencode

from flask import Blueprint, current_app, g, redirect, request, session
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from werkzeug.wrappers import Response as BaseResponse

from archive import Archive, Origin
from archive.errors import ArchiveError, InvalidArgument
from viewer import i18n
from viewer.access import ROLES, Forbidden
from viewer.auth import Authenticator, Principal
from viewer.pages import asset_url, page, secure
from viewer.session import SessionRefused, principal_from_session

P = ParamSpec("P")
R = TypeVar("R", bound=BaseResponse)

PREFIX = "/ui/"
blueprint = Blueprint("ui", __name__, url_prefix="/ui")


@dataclass(frozen=True)
class MenuItem:
    endpoint: str
    label: Any  # a lazy translation
    family: str


#: The top menu, in order; each item shows only to roles its endpoint family admits.
MENU: list[MenuItem] = []


def menu_item(endpoint: str, label: Any, family: str) -> None:
    """Add a page to the top menu (each page module registers its own)."""
    MENU.append(MenuItem(endpoint, label, family))


class LoginNeeded(Exception):
    """No session: the browser is sent to the login page."""


def archive() -> Archive:
    found: Archive = current_app.config["ARCHIVE"]
    return found


def visitor() -> Principal | None:
    """The logged-in person (session cookie, or HTTP Basic), or None."""
    if request.headers.get("Authorization"):
        authenticator: Authenticator = current_app.config["AUTHENTICATOR"]
        return authenticator.principal(request)
    return principal_from_session(archive())


def enter(family: str) -> Principal:
    """Check who is asking for a page of `family`; sets g.principal and the person's UI settings."""
    try:
        principal = visitor()
    except SessionRefused as exc:
        if exc.status == 403:  # a form without the session's CSRF token
            raise Forbidden(_("This form has expired. Go back, reload the page and try again.")) from None
        raise LoginNeeded() from None
    if principal is None:
        raise LoginNeeded()
    g.principal = principal
    user = archive().accounts.user(principal.name)
    g.ui_language = user.ui_language if user else ""
    g.low_bandwidth = bool(user and user.low_bandwidth)
    g.display_name = (user.display_name if user else "") or principal.name
    if principal.role not in ROLES[family]:
        raise Forbidden(_("Your role (%(role)s) may not open this page.", role=principal.role))
    return principal


def ui_page(family: str) -> Callable[[Callable[P, R]], Callable[P, R | BaseResponse]]:
    """A page view for roles of `family` (viewer/access.py)."""

    def decorate(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
            enter(family)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def csrf_token() -> str:
    token = session.get("csrf", "")
    return token if isinstance(token, str) else ""


def menu() -> list[MenuItem]:
    principal: Principal | None = getattr(g, "principal", None)
    if principal is None:
        return []
    shown = [item for item in MENU if principal.role in ROLES[item.family]]
    # The order people work in, whatever order the page modules were imported in.
    order = {family: n for n, family in enumerate(("results", "worklist", "reports", "admin"))}
    return sorted(shown, key=lambda item: order.get(item.family, len(order)))


ROLE_NAMES = {"admin": lazy_gettext("administrator"), "radiologist": lazy_gettext("radiologist"),
              "technologist": lazy_gettext("technologist"), "referrer": lazy_gettext("referring doctor"),
              "emr": lazy_gettext("EMR"), "his": lazy_gettext("HIS")}  # fmt: skip


def role_name(role: str) -> str:
    return str(ROLE_NAMES.get(role, role))


def page_data() -> dict[str, Any]:
    """What the page's scripts read from ``<script type="application/json" id="page-data">``."""
    principal: Principal | None = getattr(g, "principal", None)
    return {"csrf": csrf_token() if principal else "", "language": i18n.language(),
            "user": principal.name if principal else "", "role": principal.role if principal else "",
            "lowBandwidth": bool(getattr(g, "low_bandwidth", False)),
            "strings": {**common_strings(), **getattr(g, "page_strings", {})},
            **getattr(g, "page_data", {})}  # fmt: skip


def common_strings() -> dict[str, str]:
    """Strings ui.js itself shows."""
    return {"error": _("Something went wrong"), "network": _("The server cannot be reached. Check the network."),
            "expired": _("Your session has ended. Log in again."), "saved": _("Saved"),
            "loading": _("Loading…")}  # fmt: skip


def render(template: str, status: int = 200, *, data: dict[str, Any] | None = None,
           strings: dict[str, str] | None = None, **context: Any) -> BaseResponse:  # fmt: skip
    """A staff page: the frame (menu, language switch, log out) around `template`.

    `data` and `strings` (already translated) go to the page's scripts in page-data.
    """
    g.page_data = data or {}
    g.page_strings = strings or {}
    return page(template, status, menu=menu(), csrf_token=csrf_token(), asset=asset_url,
                display_name=getattr(g, "display_name", ""), low_bandwidth=getattr(g, "low_bandwidth", False),
                principal=getattr(g, "principal", None), page_data=page_data, role_name=role_name,
                **context)  # fmt: skip


def to_login() -> BaseResponse:
    return secure(redirect("/login-page?" + urlencode({"next": request.full_path.rstrip("?")}), 303))


def form_bool(name: str) -> bool:
    return request.form.get(name, "") in ("1", "on", "true", "yes")


@blueprint.errorhandler(LoginNeeded)
def login_needed(_exc: LoginNeeded) -> BaseResponse:
    return to_login()


@blueprint.errorhandler(ArchiveError)
def refused(exc: ArchiveError) -> BaseResponse:
    titles = {400: lazy_gettext("Bad request"), 403: lazy_gettext("Not allowed"), 404: lazy_gettext("Not found"),
              409: lazy_gettext("Changed by someone else")}  # fmt: skip
    return render("ui/message.html", exc.http_status, title=str(titles.get(exc.http_status, _("Error"))),
                  message=exc.message)  # fmt: skip


# --- pages every role has ---------------------------------------------------------------------

#: Where each role starts.
HOME = {"radiologist": "/ui/studies", "referrer": "/ui/studies", "technologist": "/ui/worklist", "admin": "/ui/admin"}


@blueprint.get("/")
@ui_page("results")
def home() -> BaseResponse:
    return secure(redirect(HOME.get(g.principal.role, "/ui/studies"), 303))


@blueprint.post("/preferences")
def preferences() -> BaseResponse:
    """Language and low-bandwidth mode: remembered in the account, the language also in a cookie
    (which is all a visitor of the login page has)."""
    language = request.form.get("language")
    low = request.form.get("low_bandwidth")
    if language is not None and language not in i18n.LANGUAGES:
        raise InvalidArgument(_("Unknown language."))
    try:
        principal = visitor()
    except SessionRefused:
        principal = None
    if principal is not None:
        archive().accounts.set_preferences(principal.name, ui_language=language,
                                           low_bandwidth=None if low is None else low in ("1", "on", "true"))  # fmt: skip
    back = request.form.get("next", "")
    target = back if back.startswith("/") and not back.startswith("//") and "\\" not in back else PREFIX
    response = secure(redirect(target, 303))
    if language:
        response.set_cookie(i18n.COOKIE, language, max_age=365 * 86400, path="/", samesite="Lax",
                            secure=request.is_secure)
    return response


@blueprint.post("/logout")
def logout() -> BaseResponse:
    """The menu's "Log out" button: ends the session, back to the login page."""
    principal = enter("results")
    session.clear()
    archive().audit.record(Origin(principal.name, request.remote_addr or "", "HTTP"), "LOGOUT", "", "", "ok")
    return secure(redirect("/login-page", 303))
