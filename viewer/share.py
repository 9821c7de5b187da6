"""The patient's share page (no login: the signed link is the key) and the staff API that makes links.

``GET /s/<token>.<sig>`` is a page for a phone: the patient, the study, the
final report with its PDF, and each series as small JPEG pages loaded lazily
(``loading="lazy"``) from ``/s/<token>.<sig>/instances/<sop>/rendered``,
rendered by the same code and cache as DICOMweb's /rendered. Every image
request checks the link again and that the instance belongs to the link's
study. A link with a PIN shows a form first (POST with a per-page CSRF token
tied to the link); the right PIN gives the browser a signed cookie for an
hour, scoped to the link's path, so its images load.

Staff (the "share" access family) use ``/api/share-links``: POST makes a
link for a study, GET ?study= lists them, DELETE revokes, and
``/<token_id>/qr.png`` is the QR code to print.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import qrcode
from flask import Blueprint, Flask, Response, current_app, g, has_request_context, jsonify, redirect, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from qrcode.constants import ERROR_CORRECT_M
from werkzeug.wrappers import Response as BaseResponse

from archive import Archive, InvalidQuery, NotFound, Origin
from archive.errors import ArchiveError, InvalidArgument
from archive.uids import uid_problem
from reports.share import (
    LinkGone,
    LinkLocked,
    PinRequired,
    SharedStudy,
    ShareLinkInfo,
    ShareLinks,
    derive_key,
    split_link,
)
from reports.share import url as link_url
from reports.study_pages import instance_ref, study_summary
from reports.types import SECTION_TITLES, SECTIONS, ReportView
from viewer import render
from viewer.access import allow
from viewer.auth import Principal
from viewer.config import WebConfig
from viewer.errors import json_error
from viewer.pages import page, secure
from viewer.rendered import image_response
from viewer.urls import path_uid

if TYPE_CHECKING:
    from reports.service import Reports

log = logging.getLogger(__name__)

blueprint = Blueprint("share", __name__, template_folder="templates")
api = Blueprint("share_api", __name__)
api.before_request(allow("share"))

#: Where the patient's pages live; the app lets these through without credentials.
PREFIX = "/s/"
PIN_COOKIE = "minipacs_share"
PIN_COOKIE_SECONDS = 3600
_FORM_SECONDS = 3600
#: Image sizes on the page: thumbnails for a slow phone network, a larger one on a tap.
SMALL, LARGE = 320, 1024
_MAX_SIDE = 2048
#: At most this many images of one series on the page (evenly spread through it).
MAX_PER_SERIES = 100

_TITLES = {
    400: ("Yêu cầu không hợp lệ", "Bad request"),
    401: ("Cần mã PIN", "PIN needed"),
    403: ("Không được phép", "Not allowed"),
    404: ("Không tìm thấy", "Not found"),
    410: ("Liên kết không còn hiệu lực", "This link no longer works"),
    429: ("Tạm khóa", "Locked for now"),
}
_HINT = ("Vui lòng liên hệ khoa Chẩn đoán hình ảnh của bệnh viện. / "
         "Please contact the hospital's imaging department.")  # fmt: skip


def configure(app: Flask, config: WebConfig, reports: Reports | None = None) -> None:
    """Put the app's ShareLinks service in ``app.config["SHARE_LINKS"]`` (keyed from the session key).

    With reports.share_on_final, signing a report through this app makes (or
    reuses) the study's link for the QR code on its PDF.
    """
    archive: Archive = app.config["ARCHIVE"]
    secret = app.secret_key
    assert isinstance(secret, bytes), "session.configure runs first"
    links = ShareLinks(archive.db, archive.audit, derive_key(secret), default_days=config.share_link_days)
    app.config["SHARE_LINKS"] = links
    if reports is not None and config.share_on_final and reports.share_url is None:
        reports.share_url = report_share_url(links, config.public_url)


def report_share_url(links: ShareLinks, public_url: str = "") -> Callable[[ReportView, str], str]:
    """The Reports service's `share_url`: the study's live link (made if none), as this request reached us.

    `public_url` (reports.public_url) is where patients' phones reach us; without it, the
    address the signer's browser used. Outside an HTTP request and without it there is no
    address to print, so no link.
    """

    def share_url(view: ReportView, actor: str) -> str:
        if not has_request_context() and not public_url:
            return ""
        info = links.ensure_for_study(None, view.study_instance_uid, actor)
        return link_url(info, public_url or request.host_url)

    return share_url


def _links() -> ShareLinks:
    links: ShareLinks = current_app.config["SHARE_LINKS"]
    return links


def _archive() -> Archive:
    archive: Archive = current_app.config["ARCHIVE"]
    return archive


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    secret = current_app.secret_key
    assert isinstance(secret, bytes)
    return URLSafeTimedSerializer(derive_key(secret), salt=f"minipacs share {purpose}")


def _signed_for(purpose: str, value: str, token_id: str, max_age: int) -> bool:
    try:
        return bool(_serializer(purpose).loads(value, max_age=max_age) == token_id)
    except (BadSignature, UnicodeError):
        return False


def _address() -> str:
    return request.remote_addr or ""


# --- the patient's pages -----------------------------------------------------------------


@blueprint.before_request
def as_link_holder() -> None:
    """Who is asking, for the audit log of the images: the holder of the link."""
    token_id, _ = split_link(request.view_args.get("link", "") if request.view_args else "")
    g.principal = Principal(f"share:{token_id[:8]}", "patient", "share")


@blueprint.errorhandler(ArchiveError)
def refused(exc: ArchiveError) -> BaseResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, LinkLocked) else {}
    if request.endpoint in ("share.image",):
        return secure(json_error(exc.http_status, exc.message, headers))
    title_vi, title_en = _TITLES.get(exc.http_status, ("Lỗi", "Error"))
    return page("message.html", exc.http_status, headers, title_vi=title_vi, title_en=title_en,
                message=exc.message, hint=_HINT)  # fmt: skip


@blueprint.get("/<link>")
def study_page(link: str) -> BaseResponse:
    token_id, signature = split_link(link)
    verified = _signed_for("pin", request.cookies.get(PIN_COOKIE, ""), token_id, PIN_COOKIE_SECONDS)
    try:
        shared = _links().open(token_id, signature, "", _address(), pin_verified=verified)
    except PinRequired:
        return _pin_form(token_id, f"{PREFIX}{link}", "", 200)
    return _render_study(shared)


@blueprint.post("/<link>")
def pin_entered(link: str) -> BaseResponse:
    """The PIN form: checked like a password (throttled in the link's row), then a cookie for the images."""
    token_id, signature = split_link(link)
    links = _links()
    links.check(token_id, signature, _address())  # unknown, tampered, expired, revoked: nothing more to do
    if not _signed_for("form", request.form.get("csrf_token", ""), token_id, _FORM_SECONDS):
        return _pin_form(token_id, f"{PREFIX}{link}", "Trang đã hết hạn, vui lòng nhập lại. / "
                         "The form expired: please enter the PIN again.", 403)  # fmt: skip
    pin = request.form.get("pin", "")
    try:
        shared = links.open(token_id, signature, pin[:64], _address(), count_use=False)
    except ArchiveError as exc:
        if exc.http_status in (401, 403):
            return _pin_form(token_id, f"{PREFIX}{link}", exc.message, exc.http_status)
        raise
    response = redirect(shared.path, 303)
    response.set_cookie(PIN_COOKIE, _serializer("pin").dumps(token_id), max_age=PIN_COOKIE_SECONDS, path=shared.path,
                        httponly=True, samesite="Lax", secure=request.is_secure)  # fmt: skip
    return secure(response)


@blueprint.get("/<link>/instances/<instance>/rendered")
def image(link: str, instance: str) -> BaseResponse:
    """One image of the link's study as a JPEG; an instance of any other study is 404."""
    shared = _holder(link)
    ref = instance_ref(_archive().db, shared.study_pk, path_uid(instance, "instance"))
    if ref is None:
        raise NotFound("no such image in this study")
    return image_response(ref, 0, _render_request(), "rendered via share link")


@blueprint.get("/<link>/report.pdf")
def report_pdf(link: str) -> BaseResponse:
    shared = _holder(link)
    report = final_report(shared.study_instance_uid)
    reports = current_app.config.get("REPORTS")
    if report is None or reports is None:
        raise NotFound("there is no final report for this study yet / chưa có kết quả chính thức")
    data: bytes = reports.pdf(report.accession_number, report.version.number)
    _archive().audit.record(_origin(shared), "VIEW", "REPORT", report.accession_number, "PDF via share link")
    response = Response(data, content_type="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="{report.accession_number or "report"}.pdf"'
    return secure(response)


def _holder(link: str) -> SharedStudy:
    """The link of an image or PDF request: valid, and its PIN (if any) already given by this browser."""
    token_id, signature = split_link(link)
    shared = _links().check(token_id, signature, _address())
    if shared.has_pin and not _signed_for("pin", request.cookies.get(PIN_COOKIE, ""), token_id, PIN_COOKIE_SECONDS):
        raise PinRequired("open the link and enter its PIN first / hãy mở liên kết và nhập mã PIN trước")
    return shared


def _origin(shared: SharedStudy) -> Origin:
    return Origin(f"share:{shared.token_id[:8]}", _address(), "HTTP")


def _render_request() -> render.RenderRequest:
    unknown = sorted(set(request.args) - {"viewport", "quality"})
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0][:40]!r}: use viewport and quality")
    try:
        viewport = render.parse_viewport(request.args.get("viewport") or f"{LARGE},{LARGE}")
        quality = render.parse_quality(request.args.get("quality") or "80")
    except render.RenderError as exc:
        raise InvalidQuery(exc.message) from None
    if viewport.width > _MAX_SIDE or viewport.height > _MAX_SIDE or viewport.region is not None:
        raise InvalidQuery(f"viewport: give width,height up to {_MAX_SIDE} pixels")
    return render.RenderRequest(viewport=viewport, quality=quality)


def _pin_form(token_id: str, action: str, message: str, status: int) -> BaseResponse:
    return page("share/pin.html", status, action=action, message=message,
                csrf_token=_serializer("form").dumps(token_id))  # fmt: skip


def _render_study(shared: SharedStudy) -> BaseResponse:
    summary = study_summary(_archive().db, shared.study_instance_uid)
    if summary is None:  # the study was deleted after the link was made
        raise NotFound("the images of this link are no longer in the archive")
    pages = {s.series_instance_uid: _spread(s.images, MAX_PER_SERIES) for s in summary.series}
    report = final_report(shared.study_instance_uid)
    return page("share/study.html", summary=summary, report=report, base=shared.path, pages=pages,
                shown={uid: len(images) for uid, images in pages.items()}, small=SMALL, large=LARGE,
                sections=SECTIONS, titles=SECTION_TITLES, expires_at=shared.expires_at,
                pdf_url=f"{shared.path}/report.pdf" if report is not None else "")  # fmt: skip


def _spread(items: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    """At most `limit` items spread evenly from first to last (a 300-slice CT is not 300 phone downloads)."""
    if len(items) <= limit:
        return items
    step = (len(items) - 1) / (limit - 1)
    return tuple(items[round(i * step)] for i in range(limit))


def final_report(study_uid: str) -> ReportView | None:
    """The study's report at its latest signed version (final or amended), or None.

    While an amendment is being written the patient keeps seeing the last
    signed text; drafts are never shown.
    """
    reports = current_app.config.get("REPORTS")
    if reports is None:
        return None
    view: ReportView | None = reports.for_study(study_uid)
    if view is None:
        return None
    if view.version.status.is_signed:
        return view
    signed = [v for v in view.versions if v.status.is_signed]
    return view.at_version(signed[-1].number) if signed else None



# --- the staff API -----------------------------------------------------------------------


def _public_base() -> str:
    """Where patients reach us: reports.public_url, else the address this request came to."""
    config: WebConfig = current_app.config["WEB"]
    return (config.public_url or request.host_url).rstrip("/")


def _info_json(info: ShareLinkInfo) -> dict[str, Any]:
    base = request.host_url.rstrip("/")
    return {
        "token_id": info.token_id, "study_instance_uid": info.study_instance_uid,
        "url": link_url(info, _public_base()), "qr_png_url": f"{base}/api/share-links/{info.token_id}/qr.png",
        "created_by": info.created_by, "created_at": info.created_at.isoformat(),
        "expires_at": info.expires_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None, "revoked_by": info.revoked_by,
        "has_pin": info.has_pin, "use_count": info.use_count,
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
    }  # fmt: skip


@api.post("")
def create_link() -> tuple[Response, int]:
    """{study_instance_uid, days?, pin?} -> 201 {url, qr_png_url, expires_at, ...}."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidArgument("send a JSON object: {\"study_instance_uid\": \"...\", \"days\": 30, \"pin\": \"1980\"}")
    unknown = sorted(set(body) - {"study_instance_uid", "days", "pin"})
    if unknown:
        raise InvalidArgument(f"unknown field {unknown[0][:40]!r}: use study_instance_uid, days and pin")
    study = body.get("study_instance_uid")
    if not isinstance(study, str) or uid_problem(study):
        raise InvalidArgument("study_instance_uid must be a study's UID, e.g. 1.2.840.113619.2.55.3")
    days = body.get("days")
    pin = body.get("pin", "")
    info = _links().create(study, g.principal.name, days=days, pin=pin, address=_address())  # type: ignore[arg-type]
    return jsonify(_info_json(info)), 201


@api.get("")
def list_links() -> BaseResponse:
    unknown = sorted(set(request.args) - {"study"})
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0][:40]!r}: use study=<Study Instance UID>")
    study = request.args.get("study", "")
    if not study or uid_problem(study):
        raise InvalidQuery("give study=<Study Instance UID>")
    links = _links().list_for_study(study)
    _archive().audit.record(_staff_origin(), "QUERY", "STUDY", study, f"{len(links)} share links")
    return jsonify({"links": [_info_json(i) for i in links]})


@api.delete("/<token_id>")
def revoke_link(token_id: str) -> BaseResponse:
    return jsonify(_info_json(_links().revoke(token_id, g.principal.name, _address())))


@api.get("/<token_id>/qr.png")
def qr_png(token_id: str) -> BaseResponse:
    """The link as a QR code (ISO/IEC 18004, error correction M) for the printed report."""
    links = _links()
    info = links.get(token_id)
    if info.revoked_at is not None:
        raise LinkGone("this link was revoked: make a new one", "revoked")
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=8, border=4)
    code.add_data(link_url(info, _public_base()))
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image().save(buffer)
    _archive().audit.record(_staff_origin(), "SHARE_QR", "STUDY", info.study_instance_uid, "done",
                            f"link {token_id[:8]}")  # fmt: skip
    response = Response(buffer.getvalue(), content_type="image/png")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _staff_origin() -> Origin:
    return Origin(g.principal.name, _address(), "HTTP")
