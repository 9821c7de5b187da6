"""Server-rendered HTML pages (the patient's share page, IID's study and login pages): common parts.

Pages are Jinja templates in viewer/templates (autoescaped: a patient named
``<script>`` is shown as text) with one stylesheet from /assets/ and no
inline script or style, under a strict Content-Security-Policy. They never
send a Referer: a share link's URL is its secret.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from flask import Blueprint, Response, render_template, request
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as BaseResponse

#: Any response (Flask's, or a werkzeug redirect).
R = TypeVar("R", bound=BaseResponse)

blueprint = Blueprint("pages", __name__)

#: Paths of the stylesheet and scripts: not patient data, served to anyone.
ASSETS_PREFIX = "/assets/"
STATIC = Path(__file__).with_name("static")
#: A versioned asset (``?v=<hash of its content>``) never changes: browsers keep it a year.
_IMMUTABLE = 365 * 86400

CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")  # fmt: skip


@functools.lru_cache(maxsize=256)
def _content_hash(name: str, mtime_ns: int) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:16]


def asset_url(name: str) -> str:
    """``/assets/<name>?v=<content hash>``: cached for good, and a new release changes the URL."""
    path = STATIC / name
    return f"{ASSETS_PREFIX}{name}?v={_content_hash(name, path.stat().st_mtime_ns)}"


@blueprint.get("/assets/<path:name>")
def asset(name: str) -> BaseResponse:
    try:
        path = (STATIC / name).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFound("no such file") from None
    if STATIC.resolve() not in path.parents or not path.is_file():
        raise NotFound("no such file")
    digest = _content_hash(name, path.stat().st_mtime_ns)
    versioned = request.args.get("v") == digest
    # Read whole (small files): the response can then be compressed on the way out (viewer/app.py).
    response = Response(path.read_bytes(), mimetype=mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    response.set_etag(digest)
    response.headers["Cache-Control"] = (f"public, max-age={_IMMUTABLE}, immutable" if versioned
                                         else "no-cache")  # fmt: skip
    return response.make_conditional(request)


def page(template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> Response:
    """A rendered page with the security headers every page carries."""
    response = Response(render_template(template, **context), status=status, content_type="text/html; charset=utf-8")
    secure(response)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def secure(response: R) -> R:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@blueprint.app_template_filter("person")
def person_name(value: str) -> str:
    """A DICOM PN as people write it: "Nguyễn^Văn An" -> "Nguyễn Văn An" (family name first, as in Vietnamese)."""
    alphabetic = (value or "").split("=")[0]
    family, given, middle, prefix, suffix = (alphabetic.split("^") + [""] * 5)[:5]
    return " ".join(p for p in (prefix, family, middle, given, suffix) if p.strip())


@blueprint.app_template_filter("dicom_date")
def dicom_date(value: str) -> str:
    """YYYYMMDD -> DD/MM/YYYY, the way dates are written in Vietnam; anything else as it is."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[6:8]}/{text[4:6]}/{text[:4]}"
    return text


@blueprint.app_template_filter("dicom_time")
def dicom_time(value: str) -> str:
    text = (value or "").strip()
    return f"{text[:2]}:{text[2:4]}" if len(text) >= 4 and text[:4].isdigit() else ""


@blueprint.app_template_filter("when")
def when(value: datetime | str | None) -> str:
    """A UTC time (datetime or ISO 8601 text) as DD/MM/YYYY HH:MM UTC."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    return moment.strftime("%d/%m/%Y %H:%M UTC")


@blueprint.app_template_filter("sex")
def sex(value: str) -> str:
    return {"M": "Nam / Male", "F": "Nữ / Female", "O": "Khác / Other"}.get((value or "").upper(), "")
