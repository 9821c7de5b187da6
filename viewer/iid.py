"""IHE Invoke Image Display (IID, IHE RAD TF-2 4.106 "Invoke Image Display" [RAD-106]): the EMR's "view images" link.

``GET /iid?requestType=STUDY&accessionNumber=A1[,A2]`` (or ``studyUID=``)
and ``GET /iid?requestType=PATIENT&patientID=ID^^^&OID&ISO`` (HL7 CX, the
assigning authority optional) answer a page a browser follows: one study
redirects (303) to its page ``/studies/<uid>``, several or a patient's list
them, nothing matching is a 404 page that says so, and bad parameters a 400
page. A patientID given with a STUDY request must match too; PATIENT takes
the filters mostRecentResults, lowerDateTime, upperDateTime (compared with
the study's own date and time) and modalitiesInStudy. The display hints
(viewerType, diagnosticQuality, keyImagesOnly) are accepted and not acted on:
there is one page for now.

Who may look: a logged-in person whose role reads results (a browser session,
or HTTP Basic); a browser without a session is sent to ``/login-page`` and
back. An EMR that cannot share its users' logins asks ``POST /api/iid-tokens``
(emr or admin role) for a URL with a signed token valid five minutes for one
study only; following it sets a signed cookie scoped to that study's page
(``Path=/studies/<uid>``) for half an hour, so the page and its thumbnails
load in that browser and nothing else does.

``/studies/<uid>`` is the study viewer (viewer/ui/study_viewer.py): it asks
`study_visitor` who may look, for the page and for every image it loads.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, jsonify, redirect, request
from flask_babel import gettext as _
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from archive import Archive, NotFound, Origin
from archive.errors import ArchiveError, InvalidArgument
from archive.uids import uid_problem
from reports.share import derive_key
from reports.study_pages import StudyItem, find_studies
from viewer.access import ROLES, Forbidden, allow
from viewer.auth import Authenticator, Principal, Throttled, Unauthorized
from viewer.pages import page, secure
from viewer.session import SessionRefused, principal_from_session
from viewer.session import login as session_login
from viewer.ui import base as ui_base

log = logging.getLogger(__name__)

blueprint = Blueprint("iid", __name__, template_folder="templates")
api = Blueprint("iid_api", __name__)
api.before_request(allow("results"))

#: Paths of these pages: they find out who is asking themselves (viewer/app.py lets them through).
PREFIXES = ("/iid", "/login-page", "/studies/")
TOKEN_SECONDS = 300
VIEW_COOKIE = "minipacs_iid"
VIEW_SECONDS = 1800
LOGIN_CSRF_COOKIE = "minipacs_login_csrf"
#: Roles that may mint IID tokens: the EMR's own, and an administrator testing it.
TOKEN_ROLES = frozenset({"emr", "admin"})
_MAX_VALUES = 20
_ACCESSION = re.compile(r"^[^\\\x00-\x1f]{1,16}$")


class BadRequest(ArchiveError):
    http_status = 400


def _archive() -> Archive:
    archive: Archive = current_app.config["ARCHIVE"]
    return archive


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    secret = current_app.secret_key
    assert isinstance(secret, bytes)
    return URLSafeTimedSerializer(derive_key(secret), salt=f"minipacs iid {purpose}")


def _visitor() -> Principal | None:
    """The logged-in person (session cookie, or Basic/Bearer credentials), or None."""
    if request.headers.get("Authorization"):
        authenticator: Authenticator = current_app.config["AUTHENTICATOR"]
        return authenticator.principal(request)  # wrong credentials: the JSON 401 a client expects
    try:
        return principal_from_session(_archive())
    except SessionRefused:
        return None


def _to_login() -> BaseResponse:
    return secure(redirect("/login-page?" + urlencode({"next": request.full_path.rstrip("?")}), 303))


def _audit(principal: Principal, action: str, level: str, uid: str, outcome: str, detail: str = "") -> None:
    _archive().audit.record(Origin(principal.name, request.remote_addr or "", "IID"), action, level, uid, outcome,
                            detail)  # fmt: skip


@blueprint.errorhandler(ArchiveError)
def refused(exc: ArchiveError) -> BaseResponse:
    titles = {400: ("Yêu cầu không hợp lệ", "Bad request"), 403: ("Không được phép", "Not allowed"),
              404: ("Không tìm thấy", "Not found")}  # fmt: skip
    title_vi, title_en = titles.get(exc.http_status, ("Lỗi", "Error"))
    return page("message.html", exc.http_status, title_vi=title_vi, title_en=title_en, message=exc.message)


# --- /iid ------------------------------------------------------------------------------------


def _values(name: str) -> list[str]:
    values = [v.strip() for v in ",".join(request.args.getlist(name)).split(",") if v.strip()]
    if len(values) > _MAX_VALUES:
        raise BadRequest(f"{name}: at most {_MAX_VALUES} values")
    return values


def _patient(cx: str) -> tuple[str, str | None]:
    """Patient ID and issuer from HL7 CX ``ID^^^NAMESPACE&OID&ISO`` (None: any issuer)."""
    parts = cx.split("^")
    patient_id = parts[0].strip()
    if not patient_id or len(patient_id) > 64 or not patient_id.isprintable():
        raise BadRequest("patientID: give the patient's ID, e.g. BN0012345 or BN0012345^^^BVHUYEN")
    authority = parts[3] if len(parts) > 3 else ""
    namespace, _, rest = authority.partition("&")
    oid = rest.partition("&")[0]
    issuer = namespace.strip() or oid.strip()
    return patient_id, (issuer or None)


def _matches() -> tuple[str, list[StudyItem], str]:
    """(request type, matching studies, what was asked) for the IID request, or BadRequest.

    STUDY: studyUID and/or accessionNumber (comma-separated lists), narrowed
    by patientID when one is given too. PATIENT: patientID, with the optional
    filters mostRecentResults, lowerDateTime, upperDateTime and modalitiesInStudy.
    """
    request_type = request.args.get("requestType", "")
    patient_id, issuer = _patient(request.args["patientID"]) if "patientID" in request.args else ("", None)
    db = _archive().db
    if request_type == "STUDY":
        uids, accessions = _values("studyUID"), _values("accessionNumber")
        if not uids and not accessions:
            raise BadRequest("requestType=STUDY needs studyUID or accessionNumber / cần studyUID hoặc accessionNumber")
        for uid in uids:
            if uid_problem(uid):
                raise BadRequest(f"studyUID {uid[:64]!r} is not a UID")
        for accession in accessions:
            if not _ACCESSION.match(accession):
                raise BadRequest(f"accessionNumber {accession[:20]!r}: at most 16 characters")
        found = find_studies(db, study_uids=uids, accession_numbers=accessions, patient_id=patient_id, issuer=issuer)
        return "STUDY", found, ", ".join(accessions or uids)
    if request_type == "PATIENT":
        if not patient_id:
            raise BadRequest("requestType=PATIENT needs patientID, e.g. BN0012345^^^BVHUYEN")
        return "PATIENT", _patient_filters(find_studies(db, patient_id=patient_id, issuer=issuer)), patient_id
    raise BadRequest("requestType must be STUDY or PATIENT (IHE IID) / requestType phải là STUDY hoặc PATIENT")


def _patient_filters(studies: list[StudyItem]) -> list[StudyItem]:
    """RAD-106's PATIENT filters, on studies already sorted newest first."""
    lower, upper = _date_time("lowerDateTime"), _date_time("upperDateTime")
    modalities = set(_values("modalitiesInStudy"))
    kept = [s for s in studies
            if (not lower or f"{s.study_date}{s.study_time[:6]}" >= lower)
            and (not upper or f"{s.study_date}{s.study_time[:6]}" <= upper)
            and (not modalities or modalities & set(s.modalities.split("\\")))]  # fmt: skip
    most_recent = request.args.get("mostRecentResults")
    if most_recent is not None:
        if not most_recent.isdigit() or not 1 <= int(most_recent) <= 1000:
            raise BadRequest("mostRecentResults must be a whole number from 1")
        kept = kept[: int(most_recent)]
    return kept


def _date_time(name: str) -> str:
    """An ISO 8601 date-time parameter (2026-12-05T08:00:00, time optional) as YYYYMMDDHHMMSS, or ""."""
    value = request.args.get(name)
    if value is None:
        return ""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} {value[:40]!r} is not a date-time like 2026-12-05T08:00:00") from None
    return moment.strftime("%Y%m%d%H%M%S")


@blueprint.get("/iid")
def invoke() -> BaseResponse:
    """RAD-106 Invoke Image Display."""
    token = request.args.get("token")
    if token is not None:
        return _with_token(token)
    request_type, studies, asked = _matches()  # bad parameters are a 400 whoever asks
    visitor = _visitor()
    if visitor is None:
        return _to_login()
    g.principal = visitor
    if visitor.role not in ROLES["results"]:
        raise Forbidden(f"the {visitor.role} role may not view studies / vai trò này không được xem ca chụp")
    if not studies:
        _audit(visitor, "IID_OPEN", request_type, asked[:64], "not found")
        raise NotFound(f"Không tìm thấy ca chụp nào cho {asked}. / No study matches {asked}.")
    for study in studies:
        _audit(visitor, "IID_OPEN", "STUDY", study.study_instance_uid, "ok", f"{request_type} {asked[:100]}")
    log.info("IID %s %s by %s: %d studies", request_type, asked[:64], visitor.name, len(studies))
    if request_type == "STUDY" and len(studies) == 1:
        return secure(redirect(f"/studies/{studies[0].study_instance_uid}", 303))
    return page("iid/studies.html", studies=studies, asked=asked, request_type=request_type)


def _with_token(token: str) -> BaseResponse:
    """The EMR's signed link: one study, no login, five minutes to follow it."""
    try:
        claims = _serializer("token").loads(token, max_age=TOKEN_SECONDS)
    except BadSignature:
        _archive().audit.record(Origin("iid-token", request.remote_addr or "", "IID"), "IID_OPEN", "STUDY", "",
                                "refused", "expired or tampered token")  # fmt: skip
        raise Forbidden("this link has expired or is not valid: open the study again from the EMR / "
                        "liên kết đã hết hạn hoặc không hợp lệ, hãy mở lại từ hồ sơ bệnh án") from None
    request_type, studies, _ = _matches()
    uid, by = str(claims.get("s", "")), str(claims.get("by", ""))
    holder = Principal(f"iid-token:{by}", "emr", "iid")
    if request_type != "STUDY" or [s.study_instance_uid for s in studies] != [uid]:
        _audit(holder, "IID_OPEN", "STUDY", uid, "refused", "the token is for another study")
        raise Forbidden("this link is for another study / liên kết này dành cho ca chụp khác")
    _audit(holder, "IID_OPEN", "STUDY", uid, "ok", "token")
    log.info("IID token of %s opened study %s", by, uid)
    response = redirect(f"/studies/{uid}", 303)
    response.set_cookie(VIEW_COOKIE, _serializer("view").dumps({"s": uid, "by": by}), max_age=VIEW_SECONDS,
                        path=f"/studies/{uid}", httponly=True, samesite="Lax", secure=request.is_secure)  # fmt: skip
    return secure(response)


# --- who may see a study ---------------------------------------------------------------------------


def study_visitor(uid: str) -> Principal | None:
    """Who may see study `uid`: a person whose role reads results, or the holder of its IID cookie
    (None: neither; the study viewer, viewer/ui/study_viewer.py, asks this for every request)."""
    visitor = _visitor()
    if visitor is not None:
        if visitor.role not in ROLES["results"]:
            raise Forbidden(f"the {visitor.role} role may not view studies")
        return visitor
    try:
        claims = _serializer("view").loads(request.cookies.get(VIEW_COOKIE, ""), max_age=VIEW_SECONDS)
    except BadSignature:
        return None
    if claims.get("s") != uid:
        return None
    return Principal(f"iid-token:{claims.get('by', '')}", "emr", "iid")


# --- logging in from a browser ----------------------------------------------------------------


def _next_path(value: str | None) -> str:
    """Where to go after logging in: a path on this server only (never an open redirect)."""
    value = (value or "").strip()
    if (not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2000
            or not value.isprintable()):  # fmt: skip
        return ""
    return value


def _login_form(next_path: str, message: str = "", status: int = 200) -> BaseResponse:
    token = secrets.token_urlsafe(24)
    response = ui_base.render("ui/login.html", status, next_path=next_path, message=message, login_csrf=token)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/login-page", httponly=True, samesite="Strict",
                        secure=request.is_secure)  # fmt: skip
    return response


@blueprint.get("/login-page")
def login_page() -> BaseResponse:
    return _login_form(_next_path(request.args.get("next")))


@blueprint.post("/login-page")
def login_form_posted() -> BaseResponse:
    """The form's POST: a double-submit CSRF check, then POST /login's own checks (throttle, audit, session)."""
    next_path = _next_path(request.form.get("next"))
    sent, expected = request.form.get("csrf_token", ""), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        return _login_form(next_path, _("The login page expired: please try again."), 403)
    try:
        session_login()
    except Unauthorized:
        return _login_form(next_path, _("Wrong user name or password."), 401)
    except Throttled as exc:
        return _login_form(next_path, _("Too many failed logins: try again in %(seconds)d s.",
                                        seconds=exc.retry_after), 429)  # fmt: skip
    return secure(redirect(next_path or ui_base.PREFIX, 303))


# --- the EMR's token API ------------------------------------------------------------------------


@api.post("")
def make_token() -> tuple[Response, int]:
    """{accessionNumber | studyUID} -> 201 {url}: a link that opens that one study for five minutes."""
    principal: Principal = g.principal
    if principal.role not in TOKEN_ROLES:
        raise Forbidden(f"the {principal.role} role may not make IID links (an emr token does)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not (set(body) <= {"accessionNumber", "studyUID"}) or len(body) != 1:
        raise InvalidArgument("send a JSON object with one of accessionNumber or studyUID, "
                              'e.g. {"accessionNumber": "CT001"}')  # fmt: skip
    value = next(iter(body.values()))
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("accessionNumber or studyUID must be text")
    value = value.strip()
    db = _archive().db
    if "studyUID" in body:
        if uid_problem(value):
            raise InvalidArgument(f"studyUID {value[:64]!r} is not a UID")
        studies = find_studies(db, study_uids=[value])
    else:
        if not _ACCESSION.match(value):
            raise InvalidArgument("accessionNumber: at most 16 characters")
        studies = find_studies(db, accession_numbers=[value])
    if not studies:
        raise NotFound(f"no study with {next(iter(body))} {value}")
    if len(studies) > 1:
        raise InvalidArgument(f"accession number {value} names {len(studies)} studies: ask by studyUID")
    uid = studies[0].study_instance_uid
    token = _serializer("token").dumps({"s": uid, "by": principal.name})
    url = request.host_url + "iid?" + urlencode({"requestType": "STUDY", "studyUID": uid, "token": token})
    _audit(principal, "IID_TOKEN", "STUDY", uid, "done")
    body_out: dict[str, Any] = {"url": url, "study_instance_uid": uid, "expires_in": TOKEN_SECONDS}
    return jsonify(body_out), 201
