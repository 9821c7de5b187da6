"""Administration over HTTP, for administrators only: the audit log and the outbox.

``GET /api/audit`` answers the questions `minipacs audit` answers (who saw
this patient, what did this user do last week) for an admin screen or a
hospital's compliance script, as JSON. ``GET /api/outbox?state=&subject=``
shows what waits to go out (HL7 to the HIS and EMR, report objects) and why
it failed; ``POST /api/outbox/<n>/retry`` puts a failed message back in line,
like `minipacs outbox list|retry`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, current_app, g, jsonify, request

from archive import Archive, InvalidQuery, Origin
from archive.audit import search
from viewer.access import allow
from worklist.outbox import Outbox, OutboxEntry

blueprint = Blueprint("admin_api", __name__)
blueprint.before_request(allow("admin"))

_MAX_LIMIT = 10_000
_FILTERS = ("user", "action", "uid", "patient", "contains", "since", "until", "limit")


@blueprint.get("/audit")
def audit() -> Response:
    """Audit events newest first; filters: user, action, uid, patient, contains, since, until (YYYY-MM-DD, UTC), limit."""
    archive: Archive = current_app.config["ARCHIVE"]
    unknown = sorted(set(request.args) - set(_FILTERS))
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0][:40]!r}: use {', '.join(_FILTERS)}")
    args = {name: request.args.get(name, "").strip() or None for name in _FILTERS}
    for name, value in args.items():
        if value is not None and (len(value) > 200 or not value.isprintable()):
            raise InvalidQuery(f"{name} must be printable text of at most 200 characters")
    limit = args["limit"] or "100"
    if not limit.isdigit() or not 1 <= int(limit) <= _MAX_LIMIT:
        raise InvalidQuery(f"limit must be a number from 1 to {_MAX_LIMIT}")
    since = _day(args["since"], "since")
    until = _day(args["until"], "until")
    records = search(archive.db, actor=args["user"], action=args["action"], uid=args["uid"], patient=args["patient"],
                     contains=args["contains"], since=since, until=until + timedelta(days=1) if until else None,
                     limit=int(limit))  # fmt: skip
    asked = "; ".join(f"{k}={v}" for k, v in args.items() if v)
    archive.audit.record(Origin(g.principal.name, request.remote_addr or "", "HTTP"), "AUDIT_SEARCH", "", "",
                         f"{len(records)} events", asked or "everything")  # fmt: skip
    return jsonify({"events": [
        {"at": r.at.isoformat(), "who": r.actor, "from": r.address, "action": r.action, "level": r.level,
         "uid": r.uid, "outcome": r.outcome, "detail": r.detail}
        for r in records
    ]})  # fmt: skip


@blueprint.get("/outbox")
def outbox() -> Response:
    archive: Archive = current_app.config["ARCHIVE"]
    unknown = sorted(set(request.args) - {"state", "subject", "limit"})
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0][:40]!r}: use state, subject, limit")
    limit = request.args.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise InvalidQuery("limit must be a number from 1 to 1000")
    entries = Outbox(archive.db).entries(request.args.get("state", ""), int(limit),
                                         request.args.get("subject", "")[:200])  # fmt: skip
    return jsonify({"messages": [outbox_json(e) for e in entries]})


@blueprint.post("/outbox/<int:number>/retry")
def outbox_retry(number: int) -> Response:
    archive: Archive = current_app.config["ARCHIVE"]
    entry = Outbox(archive.db).retry(number)
    archive.audit.record(Origin(g.principal.name, request.remote_addr or "", "HTTP"), "OUTBOX_RETRY", "",
                         entry.subject, "done", f"message {number} to {entry.destination}")  # fmt: skip
    return jsonify(outbox_json(entry))


def outbox_json(e: OutboxEntry) -> dict[str, object]:
    return {"number": e.pk, "destination": e.destination, "kind": e.kind, "subject": e.subject, "state": e.state,
            "attempts": e.attempts, "next_attempt_at": e.next_attempt_at.isoformat(), "last_error": e.last_error,
            "created_at": e.created_at.isoformat(), "sent_at": e.sent_at.isoformat() if e.sent_at else None}  # fmt: skip


def _day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidQuery(f"{name}={value[:40]!r} is not a date like 2026-11-23") from None
