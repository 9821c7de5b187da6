"""The plain JSON order API, ``/api/orders``, for HIS products that post their own JSON.

The posted document is read through the hospital's field mapping
(worklist.order_mapping, see worklist/order_mapping.py), so each HIS keeps its
own field names. Orders are identified by the HIS's order number with the
mapping's ``issuer`` (or, when the mapping names none, the token's name).

- ``POST /api/orders``: place an order. 201 with the step when new; the same
  order again is a resend: 200 with the stored step, nothing written; the same
  number with other values: 409 (send it as a change).
- ``PUT /api/orders/<number>``: change a not yet started order (the body is the
  whole order in the same shape; its order number, if given, must match).
- ``POST /api/orders/<number>/cancel``: the HIS withdrew the order (body
  optional: ``{"reason": "..."}``). A POST, not DELETE: the order is kept with
  its history, only its status changes, and some HIS HTTP clients cannot send
  DELETE with a body.
- ``GET /api/orders/<number>``: the order's step.
- ``GET /api/orders?date=YYYYMMDD&modality=&status=&patient_id=&limit=&offset=``:
  this issuer's orders, STAT first, then by scheduled time.

Errors are the project's JSON error body; messages name the HIS's own field.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, current_app, g, jsonify, request

from archive import ArchiveError, InvalidQuery
from viewer.access import allow
from viewer.config import web_config
from viewer.worklist_http import Unavailable, audit, int_arg, json_body, origin, record_request, worklist
from worklist.order_mapping import OrderMapping
from worklist.service import Outcome
from worklist.types import StepStatus

log = logging.getLogger(__name__)

blueprint = Blueprint("orders_api", __name__)
blueprint.before_request(allow("orders"))
blueprint.after_request(lambda response: record_request(response, "ORDERS"))

_VIA = "ORDERS"
_FILTERS = ("date", "modality", "status", "patient_id", "limit", "offset")
_MAX_LIMIT = 1000
_NUMBER = re.compile(r"^[^\x00-\x1f]{1,64}$")


def mapping() -> OrderMapping:
    """The mapping file, loaded once per worker; 503 (and an error in the log) while it is broken."""
    loaded: OrderMapping | None = current_app.config.get("ORDER_MAPPING")
    if loaded is None:
        path = web_config().order_mapping
        try:
            loaded = OrderMapping.load(path)
        except ArchiveError as exc:
            log.error("%s (setting worklist.order_mapping)", exc.message)
            raise Unavailable(f"the order mapping file is broken; the server log says why ({exc.message})") from None
        current_app.config["ORDER_MAPPING"] = loaded
    return loaded


def _issuer() -> str:
    return mapping().issuer or g.principal.name


@blueprint.post("")
def create() -> tuple[Response, int]:
    order = mapping().order(json_body(), g.principal.name)
    audit("ORDER_CREATE", "ORDER", order.placer_order_number)
    result = worklist().create(order, origin(_VIA))
    status = 201 if result.outcome is Outcome.CREATED else 200
    log.info("POST /api/orders %s from %s: %s %s", order.placer_order_number, origin(_VIA),
             result.outcome.value, result.step.accession_number)  # fmt: skip
    response = jsonify({"outcome": result.outcome.value, "order": result.step.as_json()})
    if status == 201:
        response.headers["Location"] = f"/api/orders/{order.placer_order_number}"
    return response, status


@blueprint.put("/<path:number>")
def change(number: str) -> Response:
    number = _checked_number(number)
    body = json_body()
    audit("ORDER_CHANGE", "ORDER", number)
    order = mapping().order(_with_number(body, number), g.principal.name)
    if order.placer_order_number != number:
        raise InvalidQuery(f"the body's order number {order.placer_order_number!r} is not {number!r} of the URL")
    result = worklist().change(order, origin(_VIA))
    log.info("PUT /api/orders/%s from %s: %s", number, origin(_VIA), result.outcome.value)
    return jsonify({"outcome": result.outcome.value, "changes": list(result.changes), "order": result.step.as_json()})


@blueprint.post("/<path:number>/cancel")
def cancel(number: str) -> Response:
    number = _checked_number(number)
    audit("ORDER_CANCEL", "ORDER", number)
    reason = ""
    if request.content_length or request.mimetype:
        body = json_body()
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            raise InvalidQuery('the body must be a JSON object like {"reason": "..."}')
        reason = body.get("reason", "")[:500]
    step = worklist().cancel(_issuer(), number, origin(_VIA), reason)
    log.info("POST /api/orders/%s/cancel from %s: %s", number, origin(_VIA), step.status)
    return jsonify({"order": step.as_json()})


@blueprint.get("/<path:number>")
def read(number: str) -> Response:
    number = _checked_number(number)
    audit("ORDER_READ", "ORDER", number)
    return jsonify({"order": worklist().get_order(_issuer(), number).as_json()})


@blueprint.get("")
def list_orders() -> Response:
    unknown = sorted(set(request.args) - set(_FILTERS))
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0][:40]!r}: use {', '.join(_FILTERS)}")
    date = request.args.get("date", "").strip()
    if date and not re.fullmatch(r"\d{8}", date):
        raise InvalidQuery(f"date={date[:20]!r} is not a date YYYYMMDD")
    status = request.args.get("status", "").strip().upper()
    if status and status not in {s.value for s in StepStatus}:
        raise InvalidQuery(f"status={status[:20]!r} is not one of {', '.join(s.value for s in StepStatus)}")
    limit, offset = int_arg("limit", 100, 1, _MAX_LIMIT), int_arg("offset", 0, 0, 10**9)
    modality = request.args.get("modality", "").strip()[:16]
    patient_id = request.args.get("patient_id", "").strip()[:64]
    audit("ORDER_LIST", "ORDER", "", "; ".join(f"{k}={v[:64]}" for k, v in request.args.items()))
    steps = worklist().steps(start_date=date, modality=modality, status=status, patient_id=patient_id,
                             placer_issuer=_issuer(), limit=limit, offset=offset)  # fmt: skip
    return jsonify({"orders": [s.as_json() for s in steps], "limit": limit, "offset": offset})


def _checked_number(number: str) -> str:
    if not _NUMBER.match(number):
        raise InvalidQuery("the order number in the URL must be 1 to 64 printable characters")
    return number


def _with_number(body: object, number: str) -> object:
    """A PUT body may leave the order number out: the URL names it."""
    if not isinstance(body, dict):
        return body
    path = mapping().fields["order_number"].split(".")
    node = body
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            return body
        node = child
    node.setdefault(path[-1], number)
    return body
