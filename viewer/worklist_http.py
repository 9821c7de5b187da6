"""What the worklist's HTTP doors share: the service, the caller's Origin, JSON bodies, the audit line.

The order API, FHIR and the technologist endpoints each translate their
protocol into Worklist calls; these helpers keep that translation the same
in all three. Changes the worklist accepts are audited by the worklist itself,
in the same transaction as the change; reads and refused requests are
audited here, one event per request, like the DICOMweb endpoints.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import Response, current_app, g, request

from archive import Archive, ArchiveError, InvalidQuery, Origin
from worklist.service import Worklist

#: Largest order, FHIR resource or form accepted, in bytes (413 above it): an order is a few KB.
MAX_BODY = 256 << 10


class Unavailable(ArchiveError):
    http_status = 503


class BodyTooLarge(ArchiveError):
    http_status = 413


class BadBody(ArchiveError):
    http_status = 400


class WrongContentType(ArchiveError):
    http_status = 415


def worklist() -> Worklist:
    service: Worklist | None = current_app.config.get("WORKLIST")
    if service is None:
        raise Unavailable("the worklist is not running in this server")
    return service


def origin(via: str) -> Origin:
    """The caller as the worklist and the audit log record it, with a request id for the log lines."""
    if "origin" not in g:
        g.origin = Origin(g.principal.name, request.remote_addr or "", via,
                          request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(4))  # fmt: skip
    result: Origin = g.origin
    return result


def json_body(media_types: tuple[str, ...] = ("application/json",)) -> Any:
    """The request's JSON document; 415 for another content type, 413 when too large, 400 when not JSON."""
    mimetype = request.mimetype or ""
    if mimetype not in media_types:
        raise WrongContentType(f"send the body as {' or '.join(media_types)}, not {mimetype or 'no content type'!r}")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BodyTooLarge(f"the body is larger than {MAX_BODY >> 10} KiB")
    data = request.stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise BodyTooLarge(f"the body is larger than {MAX_BODY >> 10} KiB")
    try:
        return json.loads(data.decode(request.mimetype_params.get("charset", "utf-8")))
    except (UnicodeDecodeError, LookupError):
        raise BadBody("the body is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadBody(f"the body is not valid JSON: {str(exc)[:120]}") from None


def audit(action: str, level: str, uid: str = "", detail: str = "") -> None:
    """Remember what this request was about; `record_request` writes it once the answer is known."""
    g.audit = (action, level, uid, detail)


def record_request(response: Response, via: str) -> Response:
    """A blueprint's after_request: one audit event for a read, or for a refused change."""
    if not hasattr(g, "principal"):
        return response
    changed = request.method not in ("GET", "HEAD")
    if changed and response.status_code < 400:
        return response  # the worklist audited the change in its own transaction
    action, level, uid, detail = g.get("audit", (f"{via}_{'CHANGE' if changed else 'READ'}", "ORDER", "", ""))
    outcome = "ok" if response.status_code < 400 else f"refused {response.status_code}"
    archive: Archive = current_app.config["ARCHIVE"]
    archive.audit.record(origin(via), action, level, uid, outcome, detail or f"{request.method} {request.path}")
    return response


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; 400 names the parameter otherwise."""
    value = request.args.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidQuery(f"{name} must be a number from {low} to {high}")
    return int(value)
