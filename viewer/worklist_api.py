"""The technologist's worklist over HTTP, ``/api/worklist``: JSON for the pages a later version draws.

- ``GET /api/worklist?date=today|YYYYMMDD&modality=&station=&status=&limit=&offset=``:
  the day's steps (today by default, the server's local date), STAT first, then by time.
- ``GET /api/worklist/<accession>``: the step, its history and the patient's prior studies.
- ``POST /api/worklist/<accession>/status`` ``{"status": "started"|"completed"|"discontinued",
  "reason": ""}``: the technologist moves the step (409 when its state does not allow it).
- ``POST /api/worklist/walk-in``: register a patient while the HIS is down; the step
  gets a generated accession number (worklist.accession_pattern).
- ``GET /api/worklist/unmatched`` and ``POST /api/worklist/match``
  ``{"study_instance_uid", "accession_number"}``: studies that matched no order, and
  filing one under an order by hand.

Roles: admin, radiologist, technologist (family "worklist"). Browser sessions
send the CSRF token with every POST, as everywhere in the app.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from archive import InvalidQuery
from archive.patients import OtherId, PatientDemographics
from viewer.access import allow
from viewer.worklist_http import audit, int_arg, json_body, origin, record_request, worklist
from worklist.types import OrderRequest, StepStatus

log = logging.getLogger(__name__)

blueprint = Blueprint("worklist_api", __name__)
blueprint.before_request(allow("worklist"))
blueprint.after_request(lambda response: record_request(response, "WORKLIST"))

_VIA = "WORKLIST"
_FILTERS = ("date", "modality", "station", "status", "limit", "offset")
_MAX_LIMIT = 1000
#: What the technologist's buttons say -> the step status (PS3.4 F.7.2.1 states, plus DICOM's own spelling).
_STATUSES = {
    "started": StepStatus.IN_PROGRESS, "in progress": StepStatus.IN_PROGRESS,
    "completed": StepStatus.COMPLETED, "discontinued": StepStatus.DISCONTINUED,
}  # fmt: skip
_WALK_IN_FIELDS = ("patient", "procedure_code", "procedure_description", "modality", "station_ae_title",
                   "start_date", "start_time", "priority", "referring_physician", "performing_physician",
                   "reason", "pregnancy_status")  # fmt: skip
_PATIENT_FIELDS = ("patient_id", "issuer", "name", "birth_date", "sex", "other_ids")


@blueprint.get("")
def today() -> Response:
    unknown = sorted(set(request.args) - set(_FILTERS))
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0][:40]!r}: use {', '.join(_FILTERS)}")
    day = request.args.get("date", "today").strip() or "today"
    if day == "today":
        day = datetime.now().astimezone().strftime("%Y%m%d")
    elif not re.fullmatch(r"\d{8}", day):
        raise InvalidQuery(f"date={day[:20]!r} is not 'today' nor a date YYYYMMDD")
    status = request.args.get("status", "").strip().upper()
    if status and status not in {s.value for s in StepStatus}:
        raise InvalidQuery(f"status={status[:20]!r} is not one of {', '.join(s.value for s in StepStatus)}")
    limit, offset = int_arg("limit", 200, 1, _MAX_LIMIT), int_arg("offset", 0, 0, 10**9)
    modality = request.args.get("modality", "").strip()[:16]
    station = request.args.get("station", "").strip()[:16]
    audit("WORKLIST_QUERY", "ORDER", "", f"date={day} modality={modality} station={station} status={status}")
    steps = worklist().steps(start_date=day, modality=modality, station_ae_title=station, status=status,
                             limit=limit, offset=offset)  # fmt: skip
    return jsonify({"date": day, "steps": [s.as_json() for s in steps], "limit": limit, "offset": offset})


@blueprint.get("/unmatched")
def unmatched() -> Response:
    limit, offset = int_arg("limit", 100, 1, _MAX_LIMIT), int_arg("offset", 0, 0, 10**9)
    audit("WORKLIST_UNMATCHED", "STUDY")
    studies = worklist().unmatched_studies(limit, offset)
    return jsonify({"studies": [_plain(s) for s in studies], "limit": limit, "offset": offset})


@blueprint.post("/match")
def match() -> Response:
    body = _object(json_body(), ("study_instance_uid", "accession_number"))
    study, accession = _text(body, "study_instance_uid", 64), _text(body, "accession_number", 16)
    if not study or not accession:
        raise InvalidQuery("send study_instance_uid and accession_number")
    audit("WORKLIST_MATCH", "STUDY", study, f"to {accession}")
    result = worklist().match_study(study, accession, origin(_VIA))
    log.info("POST /api/worklist/match %s -> %s by %s", study, accession, origin(_VIA))
    return jsonify({"match": _plain(result)})


@blueprint.post("/walk-in")
def walk_in() -> tuple[Response, int]:
    body = _object(json_body(), _WALK_IN_FIELDS)
    order = _walk_in_order(body)
    audit("WORKLIST_WALK_IN", "ORDER", order.patient.patient_id)
    result = worklist().walk_in(order, origin(_VIA))
    log.info("POST /api/worklist/walk-in by %s: step %s", origin(_VIA), result.step.accession_number)
    return jsonify({"step": result.step.as_json()}), 201


@blueprint.get("/<accession>")
def detail(accession: str) -> Response:
    accession = _accession(accession)
    audit("WORKLIST_READ", "ORDER", accession)
    service = worklist()
    return jsonify({"step": service.get(accession).as_json(), "history": service.history(accession),
                    "priors": [_plain(p) for p in service.priors(accession)]})  # fmt: skip


@blueprint.post("/<accession>/status")
def set_status(accession: str) -> Response:
    accession = _accession(accession)
    body = _object(json_body(), ("status", "reason"))
    wanted = _text(body, "status", 20).lower()
    if wanted not in _STATUSES:
        raise InvalidQuery(f"status {wanted!r} is not one of started, completed, discontinued")
    audit("WORKLIST_STATUS", "ORDER", accession, wanted)
    step = worklist().set_status(accession, _STATUSES[wanted], origin(_VIA), _text(body, "reason", 500))
    return jsonify({"step": step.as_json()})


def _walk_in_order(body: dict[str, Any]) -> OrderRequest:
    patient = body.get("patient")
    if not isinstance(patient, dict):
        raise InvalidQuery('patient must be an object like {"patient_id": "...", "name": "Nguyễn^Văn An"}')
    patient = _object(patient, _PATIENT_FIELDS, "patient.")
    other_ids = patient.get("other_ids") or []
    if not isinstance(other_ids, list) or not all(isinstance(o, dict) and isinstance(o.get("value"), str)
                                                  for o in other_ids):  # fmt: skip
        raise InvalidQuery('patient.other_ids must be a list like [{"value": "001080012345", "issuer": "CCCD"}]')
    pregnancy = body.get("pregnancy_status")
    if pregnancy is not None and (isinstance(pregnancy, bool) or not isinstance(pregnancy, int)):
        raise InvalidQuery("pregnancy_status must be 1, 2, 3 or 4")
    demographics = PatientDemographics(
        patient_id=_text(patient, "patient_id", 64), issuer=_text(patient, "issuer", 64),
        name=_text(patient, "name", 320), birth_date=_text(patient, "birth_date", 8), sex=_text(patient, "sex", 1),
        other_ids=tuple(OtherId(str(o["value"])[:64], str(o.get("issuer", ""))[:64]) for o in other_ids[:10]),
    )  # fmt: skip
    return OrderRequest(
        placer_issuer="", placer_order_number="", patient=demographics,
        procedure_code=_text(body, "procedure_code", 64),
        procedure_description=_text(body, "procedure_description", 200),
        modality=_text(body, "modality", 16), station_ae_title=_text(body, "station_ae_title", 16),
        start_date=_text(body, "start_date", 8), start_time=_text(body, "start_time", 13),
        priority=_text(body, "priority", 10) or "ROUTINE",
        referring_physician=_text(body, "referring_physician", 320),
        performing_physician=_text(body, "performing_physician", 320), reason=_text(body, "reason", 500),
        pregnancy_status=pregnancy,
    )  # fmt: skip


def _object(body: Any, known: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidQuery(f"the {prefix.rstrip('.') or 'body'} must be a JSON object")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise InvalidQuery(f"unknown field {prefix}{unknown[0][:40]!r}: use {', '.join(known)}")
    return body


def _text(body: dict[str, Any], name: str, longest: int) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidQuery(f"{name} must be text")
    value = value.strip()
    if len(value) > longest or not value.isprintable():
        raise InvalidQuery(f"{name} must be printable text of at most {longest} characters")
    return value


def _accession(value: str) -> str:
    if not 1 <= len(value) <= 16 or not value.isprintable():
        raise InvalidQuery("the accession number in the URL must be 1 to 16 printable characters")
    return value


def _plain(value: Any) -> Any:
    """A dict or dataclass of the worklist as JSON (dates as ISO text)."""
    if hasattr(value, "as_json"):
        return value.as_json()
    if hasattr(value, "__dataclass_fields__"):
        value = {k: getattr(value, k) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
