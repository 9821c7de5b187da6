"""Every error the HTTP edge answers is JSON with a message a person can act on.

Never a stack trace, never an HTML page: clients are EMRs, scripts and viewers.
The status comes from the error itself (archive.errors carries its HTTP status).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from archive import ArchiveError

log = logging.getLogger(__name__)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"status": status, "message": message})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        response = json_error(code, exc.description or exc.name)
        if exc.response is not None:  # e.g. 401 with WWW-Authenticate, 405 with Allow
            for name in ("WWW-Authenticate", "Allow", "Retry-After"):
                if name in exc.response.headers:
                    response.headers[name] = exc.response.headers[name]
        for name, value in exc.get_headers():
            if name.lower() in ("allow", "www-authenticate", "retry-after"):
                response.headers[name] = value
        return response

    @app.errorhandler(ArchiveError)
    def archive_error(exc: ArchiveError) -> Response:
        return json_error(exc.http_status, exc.message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error answering an HTTP request")
        return json_error(500, "internal error; the server log has the details")
