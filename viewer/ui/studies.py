"""The study list (reading list): the radiologist's start page at /ui/studies.

A GET form (it works without JavaScript; its URL can be bookmarked and sent):
report status, study date range with quick links (today, 7 and 30 days),
modality, patient name (the archive's matching: without diacritics, in any
order), patient ID (also the CCCD or BHYT number), accession number; paging
and sorting by column header. The default order is the reading order: STAT
and urgent studies not yet signed first, then the newest. The query is
reports/reading_list.py (one SQL statement a page); this module turns the
URL into that query and the answer into HTML.

A referring doctor sees only whether a signed report exists; a draft and its
author stay inside the radiology department. Bad filter values get the page
back with what is wrong and a 400, never a stack trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, g, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext, to_user_timezone
from werkzeug.wrappers import Response as BaseResponse

from archive import Origin
from archive.errors import ArchiveError, InvalidArgument
from archive.matching import is_date
from reports import reading_list
from reports.reading_list import ReadingListPage, ReadingListQuery
from viewer import i18n
from viewer.access import Forbidden
from viewer.ui import base

blueprint = Blueprint("ui_studies", __name__)
blueprint.register_error_handler(ArchiveError, base.refused)
blueprint.register_error_handler(base.LoginNeeded, base.login_needed)

base.menu_item("ui_studies.index", lazy_gettext("Studies"), "results")

#: People who read the list. The "results" family also admits the EMR's token, which has its own doors.
ROLES = frozenset({"admin", "radiologist", "technologist", "referrer"})
#: Where each role's list starts: a radiologist's work still to do; everyone else sees every study.
DEFAULT_STATUS = {"radiologist": "todo"}
PAGE_SIZE = 50
#: The days the list covers unless asked otherwise: the work of the last month, one click from every date.
#: A window keeps the start page an index range: over 54,000 studies the whole archive costs 0.25-0.5 s
#: a page on SQLite, the last 30 days 30 ms (bench/reading_list.py).
DEFAULT_DAYS = 30
#: NUL and other control characters: no name or number has them (and PostgreSQL text cannot hold NUL).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MODALITY = re.compile(r"[A-Za-z0-9_]{1,16}")
_DAY_FIRST = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")
#: The URL's parameters, in the order links carry them.
PARAMS = ("status", "from", "to", "modality", "name", "pid", "accession", "sort", "size", "page")


@dataclass(frozen=True)
class Filters:
    """The filters as typed (shown back in the form) and the query they make."""

    values: dict[str, str]
    query: ReadingListQuery
    problems: list[str]


@blueprint.get("", strict_slashes=False)
@base.ui_page("results")
def index() -> BaseResponse:
    principal = g.principal
    if principal.role not in ROLES:
        raise Forbidden(_("Your role (%(role)s) may not open this page.", role=principal.role))
    final_only = principal.role == "referrer"
    today = local_today()
    filters = parse_filters(request.args, final_only, DEFAULT_STATUS.get(principal.role, "all"), today)
    archive = base.archive()
    found: ReadingListPage | None = None
    if not filters.problems:
        try:
            found = reading_list.reading_list(archive.db, filters.query)
        except InvalidArgument as exc:  # what the form's checks let through, in the query's words
            filters.problems.append(exc.message)
    asked = "; ".join(f"{k}={v}" for k, v in filters.values.items() if v)[:1000]  # control characters gone
    archive.audit.record(Origin(principal.name, request.remote_addr or "", "HTTP"), "QUERY", "STUDY", "",
                         f"{found.total} matches" if found else "refused", f"study list: {asked or 'everything'}")  # fmt: skip
    return base.render(
        "ui/studies.html", 400 if filters.problems else 200, filters=filters, found=found,
        statuses=status_choices(final_only), modalities=reading_list.modalities(archive.db),
        final_only=final_only, link=_linker(filters.values), quick_dates=quick_dates(today),
        columns=_columns(filters.values), date_field=date_field, same_day=same_day, sex_name=sex_name, clock=study_time,
        priority_label=priority_label, status_label=status_label,
    )  # fmt: skip


def parse_filters(args: Any, final_only: bool, default_status: str, today: date) -> Filters:
    """The URL's filters, each checked; what is wrong is said in the user's language.

    Without dates in the URL the list covers the last DEFAULT_DAYS days; empty
    dates in the URL (the form's, the "All dates" link's) mean every date.
    """
    values = {name: str(args.get(name, "")).strip() for name in PARAMS}
    if "from" not in args and "to" not in args:
        values["from"] = (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    problems: list[str] = []
    if any(_CONTROL.search(value) for value in values.values()):
        problems.append(_("A filter holds characters that are not text (control characters)."))
        values = {name: _CONTROL.sub("", value) for name, value in values.items()}
    allowed = reading_list.FINAL_ONLY_STATUSES if final_only else reading_list.STATUSES
    if "status" not in args:
        values["status"] = default_status if default_status in allowed else "all"
    elif values["status"] not in allowed:
        problems.append(_("Unknown report status “%(value)s”.", value=values["status"][:40]))
    days = {}
    for name in ("from", "to"):
        day = parse_date(values[name])
        if day is None:
            problems.append(_("“%(value)s” is not a date (dd/mm/yyyy).", value=values[name][:40]))
        days[name] = day or ""
    if days["from"] and days["to"] and days["from"] > days["to"]:
        problems.append(_("The date range ends before it starts."))
    if values["modality"] and not _MODALITY.fullmatch(values["modality"]):
        problems.append(_("“%(value)s” is not a modality (CT, DX, US...).", value=values["modality"][:40]))
    for name, limit in (("name", reading_list.MAX_NAME_CHARS), ("pid", reading_list.MAX_ID_CHARS),
                        ("accession", reading_list.MAX_ACCESSION_CHARS)):  # fmt: skip
        if len(values[name]) > limit:
            problems.append(_("%(field)s: at most %(n)d characters.", field=str(FIELD_NAMES[name]), n=limit))
    sort = values["sort"]
    if sort and (sort.removeprefix("-") not in reading_list.SORTS or sort == "-"):
        problems.append(_("Unknown sort order “%(value)s”.", value=sort[:40]))
    page = _number(values["page"], 1, 1, 10**6, _("Page"), problems)
    size = _number(values["size"], PAGE_SIZE, 1, reading_list.MAX_PAGE_SIZE, _("Page size"), problems)
    query = ReadingListQuery(
        status=values["status"] if values["status"] in allowed else "all", date_from=days["from"], date_to=days["to"],
        modality=values["modality"].upper() if _MODALITY.fullmatch(values["modality"]) else "",
        patient_name=values["name"][: reading_list.MAX_NAME_CHARS], patient_id=values["pid"][: reading_list.MAX_ID_CHARS],
        accession=values["accession"][: reading_list.MAX_ACCESSION_CHARS],
        sort=sort if not problems else "", page=page, page_size=size, final_only=final_only,
    )  # fmt: skip
    return Filters(values, query, problems)


FIELD_NAMES = {"name": lazy_gettext("Patient name"), "pid": lazy_gettext("Patient ID"),
               "accession": lazy_gettext("Accession number")}  # fmt: skip


def _number(text: str, default: int, low: int, high: int, what: str, problems: list[str]) -> int:
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        problems.append(_("%(field)s must be a whole number from %(low)d to %(high)d.", field=what, low=low, high=high))
        return default
    return int(text)


def parse_date(text: str) -> str | None:
    """YYYYMMDD from what a date field sends (YYYY-MM-DD) or a person types (dd/mm/yyyy); "" for none."""
    if not text:
        return ""
    compact = text.replace("-", "") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else text
    if is_date(compact):
        return compact
    match = _DAY_FIRST.fullmatch(text)
    if match:
        day = f"{match[3]}{int(match[2]):02d}{int(match[1]):02d}"
        if is_date(day):
            return day
    return None


def date_field(text: str) -> str:
    """A filter date as its field shows it: dd/mm/yyyy in Vietnamese (a text field: a browser set up in
    English would show a date field as mm/dd/yyyy), YYYY-MM-DD in a date field; as typed when it is no date."""
    day = parse_date(text)
    if not day:
        return text
    return f"{day[6:]}/{day[4:6]}/{day[:4]}" if i18n.language() == "vi" else f"{day[:4]}-{day[4:6]}-{day[6:]}"


def same_day(a: str, b: str) -> bool:
    return parse_date(a) == parse_date(b)


def local_today() -> date:
    """Today where the hospital is (the UI's time zone), not in UTC."""
    moment: datetime = to_user_timezone(datetime.now(UTC))
    return moment.date()


def quick_dates(today: date) -> list[tuple[str, str, str]]:
    """(label, from, to) for the quick links, as the date fields send them (YYYY-MM-DD)."""
    iso = today.isoformat()
    return [(_("Today"), iso, iso),
            (_("Yesterday"), (today - timedelta(days=1)).isoformat(), (today - timedelta(days=1)).isoformat()),
            (_("Last 7 days"), (today - timedelta(days=6)).isoformat(), ""),
            (_("Last 30 days"), (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(), ""),
            (_("All dates"), "", "")]  # fmt: skip


def status_choices(final_only: bool) -> list[tuple[str, str]]:
    if final_only:
        return [("all", _("All")), ("final", _("Signed")), ("notfinal", _("Not signed yet"))]
    return [("todo", _("To read (unread or draft)")), ("unread", _("Unread")), ("draft", _("Draft")),
            ("final", _("Signed (final or amended)")), ("all", _("All"))]  # fmt: skip


def status_label(status: str) -> str:
    labels = {"unread": _("Unread"), "draft": _("Draft"), "preliminary": _("Preliminary"), "final": _("Final"),
              "amended": _("Amended"), "notfinal": _("Not signed yet")}  # fmt: skip
    return str(labels.get(status, status))


def priority_label(priority: str) -> str:
    return str({"STAT": _("STAT"), "HIGH": _("Urgent")}.get(priority, ""))


def sex_name(sex: str) -> str:
    return str({"M": _("Male"), "F": _("Female"), "O": _("Other")}.get(sex.upper(), sex))


def study_time(value: str) -> str:
    return f"{value[:2]}:{value[2:4]}" if len(value) >= 4 and value[:4].isdigit() else ""


def _linker(values: dict[str, str]) -> Any:
    """``link(page=2)``: this list's URL with some parameters changed (empty ones left out, but for the
    dates: an empty date in the URL means "every date", a missing one the default window)."""

    def link(**changes: Any) -> str:
        merged = {**values, **{k: "" if v is None else str(v) for k, v in changes.items()}}
        if "page" not in changes:
            merged["page"] = ""  # a new filter or order starts at the first page
        args = {k: merged[k] for k in PARAMS if merged.get(k) or k in ("from", "to")}
        path: str = url_for("ui_studies.index")
        return f"{path}?{urlencode(args)}" if args else path

    return link


@dataclass(frozen=True)
class Column:
    label: str
    sort: str  # "" when the column does not sort
    #: "ascending", "descending" or "" (aria-sort).
    current: str = ""
    css: str = ""


def _columns(values: dict[str, str]) -> list[Column]:
    """The table's headers; the ones that sort link to their order (newest / most urgent first)."""
    sort = values.get("sort", "")
    first = {"date": "-date", "patient": "patient", "modality": "modality", "priority": "priority"}
    columns = [Column(_("Priority"), "priority"), Column(_("Patient"), "patient"), Column(_("Patient ID"), ""),
               Column(_("Born"), ""), Column(_("Sex"), ""), Column(_("Study date"), "date"),
               Column(_("Modality"), "modality"), Column(_("Description"), ""), Column(_("Accession"), ""),
               Column(_("Images"), "", css="num"), Column(_("Report"), ""), Column(_("Signed by"), "")]  # fmt: skip
    shown = []
    for column in columns:
        if not column.sort:
            shown.append(column)
            continue
        key = column.sort
        if sort.removeprefix("-") == key:
            descending = sort.startswith("-")
            # Clicking the current order's header turns it round.
            shown.append(replace(column, sort=key if descending else f"-{key}",
                                 current="descending" if descending else "ascending"))  # fmt: skip
        else:
            shown.append(replace(column, sort=first[key]))
    return shown
