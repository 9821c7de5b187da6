"""CORS: which other web pages (OHIF, an EMR) may call DICOMweb from a browser.

Only origins listed in ``http.cors_origins`` get CORS headers ("*" lets any
page in). Credentials are never allowed cross-origin: the page must send its
own ``Authorization`` header (a token, or Basic), so our session cookie is
useless to another site. Headers a viewer needs to read (Warning on truncated
QIDO results, Content-Type with the multipart boundary) are exposed.
"""

from __future__ import annotations

from flask import Response, request

from viewer.errors import json_error

_METHODS = "GET, HEAD, POST, OPTIONS"
_HEADERS = frozenset({"authorization", "accept", "content-type", "cache-control", "x-requested-with"})
_EXPOSED = "Warning, Content-Type, Content-Length, Content-Location, ETag, Last-Modified, Location"


def _allowed(origins: tuple[str, ...]) -> str | None:
    origin = request.headers.get("Origin", "")
    if origin and ("*" in origins or origin in origins):
        return origin
    return None


def preflight(origins: tuple[str, ...]) -> Response | None:
    """The answer to a browser's preflight (OPTIONS with Access-Control-Request-Method), else None."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = _allowed(origins)
    if origin is None:
        return json_error(403, f"cross-origin calls from {request.headers.get('Origin', '')[:200]!r} are not "
                               "allowed: an administrator can add the origin to http.cors_origins")  # fmt: skip
    asked = {h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")}
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = _METHODS
    response.headers["Access-Control-Allow-Headers"] = ", ".join(sorted((asked & _HEADERS) or {"authorization"}))
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def add_headers(response: Response, origins: tuple[str, ...]) -> None:
    """CORS headers on any answer to an allowed origin (errors too, so a page can read them)."""
    response.vary.add("Origin")
    origin = _allowed(origins)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED
