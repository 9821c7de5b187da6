"""The technologist's pages (/ui/worklist): today's worklist, unmatched studies, walk-in registration.

- ``GET /ui/worklist?date=&modality=&station=&status=``: the day's scheduled procedure
  steps (STAT first, then by time) with counts per modality and station, the images
  received for each, and buttons for the status changes the step's state allows
  (``POST /ui/worklist/<accession>/status``).
- ``GET /ui/worklist/unmatched``: studies that matched no order, each with a form to
  file it under an order by hand (``POST /ui/worklist/unmatched/match``). A study of
  another patient than the order's is only matched when the technologist confirms it.
- ``GET|POST /ui/worklist/walk-in``: register a patient the HIS has not ordered
  (HIS down, emergency); the new accession number is shown afterwards.

Everything goes through worklist.service.Worklist, as the JSON API
(viewer/worklist_api.py) does; forms carry the session's CSRF token and
every request checks the role (family "worklist").
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

from flask import Blueprint, flash, get_flashed_messages, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import Table, func, select
from werkzeug.wrappers import Response as BaseResponse

from archive.errors import ArchiveError, InvalidArgument, NotFound
from archive.models import Patient, Study
from archive.patients import OtherId, PatientDemographics, find_patient
from archive.registry import check_ae_title
from archive.uids import uid_problem
from viewer import i18n
from viewer.pages import person_name, secure
from viewer.ui import base
from viewer.worklist_api import _STATUSES
from viewer.worklist_http import audit, origin, record_request, worklist
from worklist.errors import InvalidOrder, InvalidTransition, OrderConflict, UnknownOrder
from worklist.models import ProcedureStep, StudyMatch
from worklist.service import TRANSITIONS
from worklist.types import PRIORITIES, OrderRequest, StepStatus, StepView

blueprint = Blueprint("ui_technologist", __name__)
blueprint.register_error_handler(ArchiveError, base.refused)
blueprint.register_error_handler(base.LoginNeeded, base.login_needed)
# One audit event per page read or refused change, as /api/worklist (the service audits the changes it makes).
blueprint.after_request(lambda response: record_request(response, _VIA))

base.menu_item("ui_technologist.today", lazy_gettext("Worklist"), "worklist")

_VIA = "WEB"
_STEP = cast(Table, ProcedureStep.__table__)
_MATCH = cast(Table, StudyMatch.__table__)
_S = cast(Table, Study.__table__)
_P = cast(Table, Patient.__table__)

STATUS_LABELS = {
    StepStatus.SCHEDULED.value: lazy_gettext("Scheduled"),
    StepStatus.IN_PROGRESS.value: lazy_gettext("In progress"),
    StepStatus.COMPLETED.value: lazy_gettext("Completed"),
    StepStatus.DISCONTINUED.value: lazy_gettext("Discontinued"),
    StepStatus.CANCELLED.value: lazy_gettext("Cancelled"),
}
PRIORITY_LABELS = {"STAT": lazy_gettext("STAT"), "HIGH": lazy_gettext("High"), "ROUTINE": lazy_gettext("Routine"),
                   "MEDIUM": lazy_gettext("Medium"), "LOW": lazy_gettext("Low")}  # fmt: skip
SEX_LABELS = {"M": lazy_gettext("Male"), "F": lazy_gettext("Female"), "O": lazy_gettext("Other")}
#: The buttons of a step: the form's word (worklist_api._STATUSES) -> its label.
ACTIONS = (("started", StepStatus.IN_PROGRESS, lazy_gettext("Start")),
           ("completed", StepStatus.COMPLETED, lazy_gettext("Complete")),
           ("discontinued", StepStatus.DISCONTINUED, lazy_gettext("Discontinue")))  # fmt: skip
#: Modalities offered on the walk-in form besides the catalogue's.
MODALITIES = ("CT", "DX", "CR", "US", "MR", "MG", "XA", "RF", "ES")
_PRINTABLE_MAX = {"reason": 500, "referring_physician": 64}
_CCCD = re.compile(r"^\d{12}$")
#: BHYT card number: 2 letters (group), 1 digit (benefit level), 2 digits (province), 10 digits.
_BHYT = re.compile(r"^[A-Z]{2}\d{13}$")
_PAGE = 50
#: How many days back the unmatched page suggests orders to match with.
_SUGGEST_DAYS = 7


# --- today's worklist ------------------------------------------------------------------------------


@blueprint.get("")
@base.ui_page("worklist")
def today() -> BaseResponse:
    return _today_page()


def _today_page(error: str = "", status: int = 200) -> BaseResponse:
    service = worklist()
    problems: list[str] = []
    day = _day(request.args.get("date", ""), problems)
    modality = request.args.get("modality", "").strip().upper()
    station = request.args.get("station", "").strip()
    wanted = request.args.get("status", "").strip().upper()
    if modality and not re.fullmatch(r"[A-Z0-9_]{1,16}", modality):
        problems.append(_("The modality must be a DICOM modality code such as CT or DX."))
        modality = ""
    if len(station) > 16 or not station.isprintable():
        problems.append(_("The station must be an AE title of at most 16 characters."))
        station = ""
    if wanted and wanted != "OPEN" and wanted not in STATUS_LABELS:
        problems.append(_("Unknown status filter."))
        wanted = ""
    everything = service.steps(start_date=day.strftime("%Y%m%d"), limit=1000)
    modalities = _counts(s.modality for s in everything)
    stations = _counts(s.station_ae_title for s in everything if s.station_ae_title)
    shown = [s for s in everything if (not modality or s.modality == modality)
             and (not station or s.station_ae_title == station) and _status_matches(s.status, wanted)]  # fmt: skip
    images = _images(s.accession_number for s in shown)
    rows = [{"step": s, "images": images.get(s.accession_number, (0, "")),
             "actions": [(word, label) for word, target, label in ACTIONS
                         if target in TRANSITIONS[StepStatus(s.status)]]} for s in shown]  # fmt: skip
    filters = {"date": day.isoformat(), "modality": modality, "station": station, "status": wanted}
    if request.method == "GET":
        audit("WORKLIST_QUERY", "ORDER", "", f"date={day:%Y%m%d} modality={modality} station={station} status={wanted}")
    if problems and not error:
        error, status = " ".join(problems), 400
    return base.render(
        "ui/worklist.html", status, rows=rows, day=day, today=_today(),
        day_before=(day - timedelta(days=1)).isoformat(), day_after=(day + timedelta(days=1)).isoformat(),
        filters=filters, modalities=modalities, stations=stations, total=len(everything), error=error,
        messages=get_flashed_messages(with_categories=True), status_labels=STATUS_LABELS,
        priority_labels=PRIORITY_LABELS, sex_labels=SEX_LABELS, link=_link(filters),
        query=urlencode({k: v for k, v in filters.items() if v and not (k == "date" and day == _today())}),
        unmatched_count=_unmatched_count(),
    )  # fmt: skip


@blueprint.post("/<accession>/status")
@base.ui_page("worklist")
def set_status(accession: str) -> BaseResponse:
    accession = accession.strip()
    word = request.form.get("status", "").strip().lower()
    audit("WORKLIST_STATUS", "ORDER", accession[:64], word[:20])
    reason = request.form.get("reason", "").strip()
    if not 1 <= len(accession) <= 16 or not accession.isprintable():
        return _today_page(_("The accession number must be 1 to 16 characters."), 400)
    if word not in {w for w, _t, _l in ACTIONS}:
        return _today_page(_("Unknown status change."), 400)
    if len(reason) > _PRINTABLE_MAX["reason"] or not reason.isprintable():
        return _today_page(_("The reason must be printable text of at most %(n)d characters.",
                             n=_PRINTABLE_MAX["reason"]), 400)  # fmt: skip
    target = _STATUSES[word]
    try:
        step = worklist().set_status(accession, target, origin(_VIA), reason)
    except UnknownOrder:
        return _today_page(_("No order has accession number %(accession)s.", accession=accession), 404)
    except InvalidTransition:
        current = worklist().get(accession)
        return _today_page(_("Order %(accession)s is %(status)s: it cannot become %(wanted)s.",
                             accession=accession, status=STATUS_LABELS[current.status],
                             wanted=STATUS_LABELS[target.value]), 409)  # fmt: skip
    flash(_("Order %(accession)s (%(patient)s) is now %(status)s.", accession=step.accession_number,
            patient=_person(step.patient.name), status=STATUS_LABELS[step.status]), "ok")  # fmt: skip
    return _back(".today")


# --- unmatched studies -----------------------------------------------------------------------------


@blueprint.get("/unmatched")
@base.ui_page("worklist")
def unmatched() -> BaseResponse:
    return _unmatched_page()


def _unmatched_page(error: str = "", status: int = 200, entered: dict[str, str] | None = None) -> BaseResponse:
    service = worklist()
    if request.method == "GET":
        audit("WORKLIST_UNMATCHED", "STUDY")
    page = request.args.get("page", "1").strip()
    number = int(page) if page.isdigit() and 1 <= int(page) <= 100_000 else 1
    studies = service.unmatched_studies(_PAGE + 1, (number - 1) * _PAGE)
    more = len(studies) > _PAGE
    studies = studies[:_PAGE]
    details = _patients(s["study_instance_uid"] for s in studies)
    for study in studies:
        study.update(details.get(study["study_instance_uid"], {}))
    # Orders of the last week (and tomorrow) a study may still be filed under: not finished and without
    # images of their own. Older orders are typed in by their accession number.
    days = [(_today() + timedelta(days=n)).strftime("%Y%m%d") for n in range(-_SUGGEST_DAYS, 2)]
    candidates = [s for day in days for s in service.steps(start_date=day, limit=500)
                  if not StepStatus(s.status).is_final]  # fmt: skip
    with_images = _images(s.accession_number for s in candidates)
    candidates = [s for s in candidates if s.accession_number not in with_images]
    candidates.sort(key=lambda s: (s.start_date, s.start_time), reverse=True)
    return base.render(
        "ui/worklist_unmatched.html", status, studies=studies, page=number, more=more,
        candidates=candidates[:300], error=error, entered=entered or {}, unmatched_count=_unmatched_count(),
        messages=get_flashed_messages(with_categories=True), sex_labels=SEX_LABELS, status_labels=STATUS_LABELS,
    )  # fmt: skip


@blueprint.post("/unmatched/match")
@base.ui_page("worklist")
def match() -> BaseResponse:
    study_uid = request.form.get("study_instance_uid", "").strip()
    accession = request.form.get("accession_number", "").strip()
    confirmed = base.form_bool("confirm_patient")
    entered = {"study_instance_uid": study_uid, "accession_number": accession}
    audit("WORKLIST_MATCH", "STUDY", study_uid[:64], f"to {accession[:16]}")
    if not study_uid or uid_problem(study_uid):
        return _unmatched_page(_("The study to match is not a valid Study Instance UID."), 400, entered)
    if not accession:
        return _unmatched_page(_("Enter the accession number of the order."), 400, entered)
    if len(accession) > 16 or not accession.isprintable():
        return _unmatched_page(_("The accession number must be 1 to 16 characters."), 400, entered)
    service = worklist()
    try:
        step = service.get(accession)
    except UnknownOrder:
        return _unmatched_page(_("No order has accession number %(accession)s.", accession=accession), 404, entered)
    study = _patients([study_uid]).get(study_uid)
    if study is None:
        return _unmatched_page(_("The study is no longer in the archive."), 404, entered)
    if study["patient_id"] != step.patient.patient_id and not confirmed:
        entered["confirm"] = "1"
        return _unmatched_page(_(
            "The study is of patient %(study_patient)s (ID %(study_id)s) but order %(accession)s is for "
            "%(order_patient)s (ID %(order_id)s). If you are sure the images are of the order's patient, "
            "tick \"File under the order's patient\" and match again.",
            study_patient=_person(study["patient_name"]) or "?", study_id=study["patient_id"] or "?",
            accession=accession, order_patient=_person(step.patient.name) or "?",
            order_id=step.patient.patient_id), 409, entered)  # fmt: skip
    try:
        result = service.match_study(study_uid, accession, origin(_VIA))
    except NotFound:
        return _unmatched_page(_("The study is no longer in the archive."), 404, entered)
    except UnknownOrder:
        return _unmatched_page(_("No order has accession number %(accession)s.", accession=accession), 404, entered)
    except OrderConflict:
        return _unmatched_page(_("Order %(accession)s already has a study of its own. Choose another order, or "
                                 "match that study elsewhere first.", accession=accession), 409, entered)  # fmt: skip
    flash(_("The study was matched to order %(accession)s (%(patient)s, ID %(patient_id)s).",
            accession=result["accession_number"], patient=_person(step.patient.name),
            patient_id=result["patient_id"]), "ok")  # fmt: skip
    if result["corrections"]:
        flash(_("Corrected from the order: %(changes)s", changes="; ".join(result["corrections"])), "notice")
    return _back(".unmatched")


# --- walk-in registration --------------------------------------------------------------------------


@dataclass
class WalkIn:
    """The walk-in form as entered (kept when it is refused) and what is wrong with it."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    FIELDS = ("form_id", "patient_name", "patient_id", "birth_date", "sex", "cccd", "bhyt", "modality",
              "procedure_code", "station_ae_title", "priority", "referring_physician", "reason")  # fmt: skip

    @classmethod
    def from_form(cls) -> WalkIn:
        return cls({name: request.form.get(name, "").strip() for name in cls.FIELDS})


@blueprint.get("/walk-in")
@base.ui_page("worklist")
def walk_in_form() -> BaseResponse:
    done = request.args.get("done", "").strip()
    registered = None
    if done:
        if len(done) > 16 or not done.isprintable():
            raise InvalidArgument(_("The accession number must be 1 to 16 characters."))
        registered = worklist().get(done)
    form = WalkIn({"form_id": secrets.token_hex(8), "priority": "ROUTINE"})
    return _walk_in_page(form, registered=registered)


@blueprint.post("/walk-in")
@base.ui_page("worklist")
def walk_in() -> BaseResponse:
    form = WalkIn.from_form()
    audit("WORKLIST_WALK_IN", "ORDER", form.values["patient_id"][:64])
    order = _walk_in_order(form)
    if order is None:
        return _walk_in_page(form, 400)
    try:
        result = worklist().walk_in(order, origin(_VIA))
    except OrderConflict:
        form.errors["form"] = _("This form was already registered with other values. Open a new walk-in form.")
        return _walk_in_page(form, 409)
    except InvalidOrder as exc:
        form.errors["form"] = _("The order was refused: %(detail)s", detail=exc.message)
        return _walk_in_page(form, 400)
    return secure(redirect(url_for(".walk_in_form", done=result.step.accession_number), 303))


def _walk_in_page(form: WalkIn, status: int = 200, registered: StepView | None = None) -> BaseResponse:
    catalogue = worklist().config.catalogue.all()
    vietnamese = i18n.language() == "vi"
    procedures = sorted(({"code": p.code, "modality": p.modality,
                          "name": (p.name if vietnamese else p.name_en) or p.name} for p in catalogue),
                        key=lambda p: (p["modality"], p["name"]))  # fmt: skip
    modalities = sorted(set(MODALITIES) | {p.modality for p in catalogue})
    return base.render(
        "ui/worklist_walk_in.html", status, form=form.values, errors=form.errors, procedures=procedures,
        modalities=modalities, stations=_stations(), priorities=PRIORITIES, priority_labels=PRIORITY_LABELS,
        sex_labels=SEX_LABELS, registered=registered, status_labels=STATUS_LABELS,
        unmatched_count=_unmatched_count(),
    )  # fmt: skip


def _walk_in_order(form: WalkIn) -> OrderRequest | None:
    """The order the form asks for, or None with form.errors saying what to fix (nothing is written)."""
    v, errors = form.values, form.errors
    for key, value in v.items():
        if not value.isprintable() and key != "reason":
            errors[key] = _("Use printable characters only.")
    if not "".join(v["reason"].split()).isprintable():  # a textarea: line breaks are fine
        errors["reason"] = _("Use printable characters only.")
    if not re.fullmatch(r"[0-9a-f]{16}", v["form_id"]):
        errors["form"] = _("This form has expired. Open a new walk-in form.")
    name = v["patient_name"]
    if not name:
        errors["patient_name"] = _("Enter the patient's full name.")
    elif len(name) > 64 or "^" in name or "\\" in name or "=" in name:
        errors["patient_name"] = _("Write the name as on the ID card, at most 64 characters, without ^ \\ =.")
    patient_id = v["patient_id"]
    if len(patient_id) > 64 or "\\" in patient_id:
        errors["patient_id"] = _("The patient ID is at most 64 characters, without \\.")
    birth = _birth_date(v["birth_date"])
    if v["birth_date"] and birth is None:
        errors["birth_date"] = _("Enter a real birth date, not in the future.")
    if v["sex"] not in ("", "M", "F", "O"):
        errors["sex"] = _("Choose male, female or other.")
    cccd, bhyt = v["cccd"].replace(" ", ""), v["bhyt"].replace(" ", "").upper()
    if cccd and not _CCCD.match(cccd):
        errors["cccd"] = _("A citizen ID (CCCD) has 12 digits.")
    if bhyt and not _BHYT.match(bhyt):
        errors["bhyt"] = _("A health insurance card number has 2 letters and 13 digits, e.g. DN4797912345678.")
    catalogue = worklist().config.catalogue
    procedure = catalogue.get(v["procedure_code"]) if v["procedure_code"] else None
    if v["procedure_code"] and procedure is None:
        errors["procedure_code"] = _("Choose a procedure of the list.")
    modality = v["modality"].upper()
    if modality and not re.fullmatch(r"[A-Z0-9_]{1,16}", modality):
        errors["modality"] = _("The modality must be a DICOM modality code such as CT or DX.")
    elif procedure is not None and modality and procedure.modality != modality:
        errors["procedure_code"] = _("This procedure is done on %(modality)s.", modality=procedure.modality)
    elif not modality and procedure is None:
        errors["modality"] = _("Choose the modality or a procedure.")
    station = v["station_ae_title"]
    if station:
        try:
            station = check_ae_title(station)
        except InvalidArgument:
            errors["station_ae_title"] = _("The station must be an AE title of at most 16 characters.")
    if v["priority"] not in PRIORITIES:
        errors["priority"] = _("Choose a priority.")
    for key, longest in _PRINTABLE_MAX.items():
        if len(v[key]) > longest:
            errors[key] = _("At most %(n)d characters.", n=longest)
    if errors:
        return None
    if not patient_id:  # no HIS number yet: one of ours, shown with the accession number afterwards
        patient_id = f"WI{datetime.now().astimezone():%y%m%d}{v['form_id'][:6].upper()}"
        v["patient_id"] = patient_id
    existing = _existing_patient(patient_id)
    if existing is not None and _same_text(_person(existing.name)) != _same_text(name):
        errors["patient_id"] = _("Patient ID %(id)s already belongs to %(name)s. Check the ID, or leave it "
                                 "empty to give the patient a new one.", id=patient_id,
                                 name=_person(existing.name))  # fmt: skip
        return None
    other_ids = tuple(OtherId(value, issuer) for value, issuer in ((cccd, "CCCD"), (bhyt, "BHYT")) if value)
    return OrderRequest(
        placer_issuer="WALKIN", placer_order_number=f"WALKIN-{v['form_id']}",
        patient=PatientDemographics(patient_id, name=_pn(name), birth_date=birth or "", sex=v["sex"],
                                    other_ids=other_ids),
        procedure_code=procedure.code if procedure else "",
        modality=modality or (procedure.modality if procedure else ""),
        station_ae_title=station, priority=v["priority"], referring_physician=v["referring_physician"],
        reason=v["reason"],
    )  # fmt: skip


# --- helpers ---------------------------------------------------------------------------------------


def _today() -> date:
    """The server's local day (as /api/worklist's "today")."""
    return datetime.now().astimezone().date()


def _day(value: str, problems: list[str]) -> date:
    today_ = _today()
    text = value.strip()
    if not text or text == "today":
        return today_
    try:
        if re.fullmatch(r"\d{8}", text):
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    problems.append(_("The date must be a day like %(example)s.", example=today_.isoformat()))
    return today_


def _birth_date(value: str) -> str | None:
    """YYYY-MM-DD (the date input) or YYYYMMDD as DICOM DA; None when not a real past date."""
    text = value.strip().replace("-", "")
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        born = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return text if date(1880, 1, 1) <= born <= datetime.now().astimezone().date() else None


def _pn(name: str) -> str:
    """"Nguyễn Văn An" as DICOM PN "Nguyễn^Văn An" (Vietnamese names: family name first)."""
    parts = name.split()
    return parts[0] + ("^" + " ".join(parts[1:]) if len(parts) > 1 else "")


def _status_matches(status: str, wanted: str) -> bool:
    """The status filter: "" any, "OPEN" not finished, else that status."""
    if wanted == "OPEN":
        return not StepStatus(status).is_final
    return not wanted or status == wanted


def _same_text(name: str) -> str:
    return " ".join(name.split()).casefold()


def _person(pn: str) -> str:
    return person_name(pn)


def _counts(values: Any) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return sorted(counts.items())


def _images(accessions: Any) -> dict[str, tuple[int, str]]:
    """Accession number -> (instances received, the first matched study's UID)."""
    wanted = list(accessions)
    if not wanted:
        return {}
    stmt = (select(_STEP.c.accession_number, func.sum(_S.c.num_instances), func.min(_S.c.study_instance_uid))
            .select_from(_STEP.join(_MATCH, _MATCH.c.step_pk == _STEP.c.pk).join(_S, _S.c.pk == _MATCH.c.study_pk))
            .where(_STEP.c.accession_number.in_(wanted)).group_by(_STEP.c.accession_number))  # fmt: skip
    with worklist().db.read() as conn:
        return {row[0]: (int(row[1] or 0), str(row[2] or "")) for row in conn.execute(stmt)}


def _patients(study_uids: Any) -> dict[str, dict[str, Any]]:
    """Study UID -> the patient it is filed under (ID, name, birth date, sex) and its station."""
    wanted = list(study_uids)
    if not wanted:
        return {}
    stmt = (select(_S.c.study_instance_uid, _P.c.patient_id, _P.c.patient_name, _P.c.patient_birth_date,
                   _P.c.patient_sex).join(_P, _P.c.pk == _S.c.patient_pk)
            .where(_S.c.study_instance_uid.in_(wanted)))  # fmt: skip
    with worklist().db.read() as conn:
        return {row.study_instance_uid: {"patient_id": row.patient_id, "patient_name": row.patient_name,
                                         "birth_date": row.patient_birth_date, "sex": row.patient_sex}
                for row in conn.execute(stmt)}  # fmt: skip


def _existing_patient(patient_id: str) -> PatientDemographics | None:
    with worklist().db.read() as conn:
        found = find_patient(conn, patient_id)
    return found.demographics if found else None


def _stations() -> list[str]:
    """Station AE titles to offer: the registered AEs, the catalogue's and those of recent orders."""
    service = worklist()
    titles = {ae.ae_title for ae in service.archive.registry.list()}
    titles |= {p.station_ae for p in service.config.catalogue.all() if p.station_ae}
    titles |= {s.station_ae_title for s in service.steps(limit=500) if s.station_ae_title}
    return sorted(titles)


def _link(filters: dict[str, str]) -> Any:
    """A URL of the worklist with `filters` changed (Jinja: link(modality="CT"))."""

    def make(**changed: str) -> str:
        merged = {**filters, **changed}
        return url_for(".today") + "?" + urlencode({k: v for k, v in merged.items() if v})

    return make


def _unmatched_count() -> int:
    service = worklist()
    with service.db.read() as conn:
        return service.reconciler.count_unmatched(conn)


def _back(endpoint: str) -> BaseResponse:
    """303 to the page of `endpoint` with the query the form was posted with (its filters, its page)."""
    query = urlencode({k: v for k, v in request.args.items() if k in ("date", "modality", "station", "status", "page")})
    return secure(redirect(url_for(endpoint) + (f"?{query}" if query else ""), 303))

