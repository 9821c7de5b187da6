"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

The query parameters become the same identifier a C-FIND carries and go to
the archive's one matching engine, so a search over HTTP finds exactly what
a workstation finds over DIMSE (names folded for case, diacritics, Đ and
component order; fuzzymatching=true is accepted and is what the engine always
does for names). Answers are the index's DICOM JSON as it is.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from archive import Archive, InvalidQuery, Level, Origin, query_from_identifier
from archive.metrics import observe_query
from archive.uids import uid_problem
from viewer.access import allow
from viewer.urls import base_url, path_uid

MEDIA_TYPE = "application/dicom+json"
MAX_LIMIT = 1000

blueprint = Blueprint("qido", __name__)
blueprint.before_request(allow("search"))

# PS3.18 table 10.6.3-3: what every answer carries at each level.
_DEFAULT_KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                  "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                  "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    Level.SERIES: ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
                   "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime"),
    Level.IMAGE: ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
                  "NumberOfFrames"),
}  # fmt: skip
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


@blueprint.get("/studies")
def studies() -> Response:
    return _search(Level.STUDY)


@blueprint.get("/series")
def all_series() -> Response:
    return _search(Level.SERIES, extra_levels=(Level.STUDY,))


@blueprint.get("/studies/<study>/series")
def study_series(study: str) -> Response:
    return _search(Level.SERIES, StudyInstanceUID=path_uid(study, "study"))


@blueprint.get("/instances")
def all_instances() -> Response:
    return _search(Level.IMAGE, extra_levels=(Level.STUDY, Level.SERIES))


@blueprint.get("/studies/<study>/instances")
def study_instances(study: str) -> Response:
    return _search(Level.IMAGE, extra_levels=(Level.SERIES,), StudyInstanceUID=path_uid(study, "study"))


@blueprint.get("/studies/<study>/series/<series>/instances")
def series_instances(study: str, series: str) -> Response:
    return _search(Level.IMAGE, StudyInstanceUID=path_uid(study, "study"), SeriesInstanceUID=path_uid(series, "series"))


def _search(level: Level, extra_levels: tuple[Level, ...] = (), **scope: str) -> Response:
    archive: Archive = current_app.config["ARCHIVE"]
    identifier, limit, offset = _identifier(level, extra_levels, scope)
    query = query_from_identifier(identifier, patient_root=False)
    query.limit, query.offset = limit + 1, offset  # one more tells whether there are more
    base = base_url()
    results = []
    started = time.perf_counter()
    for attrs in archive.find_json(query):
        attrs["00081190"] = {"vr": "UR", "Value": [_retrieve_url(base, level, attrs)]}
        results.append(dict(sorted(attrs.items())))
    observe_query("QIDO", time.perf_counter() - started)
    truncated = len(results) > limit
    del results[limit:]
    asked = "; ".join(f"{k}={v}" for k, v in request.args.items(multi=True))[:1000]
    archive.audit.record(_origin(), "QUERY", level.name, scope.get("StudyInstanceUID", ""),
                         f"{len(results)} matches", asked or "everything")  # fmt: skip
    response = Response(json.dumps(results, ensure_ascii=False), status=200,
                        content_type=f"{MEDIA_TYPE}; charset=utf-8")  # fmt: skip
    if truncated:
        response.headers["Warning"] = (
            '299 minipacs "There are more results than returned: '
            f'ask again with offset={offset + limit}"'
        )
    return response


def _identifier(level: Level, extra_levels: tuple[Level, ...],
                scope: dict[str, str]) -> tuple[Dataset, int, int]:  # fmt: skip
    ds = Dataset()
    ds.QueryRetrieveLevel = level.name
    for lvl in (*extra_levels, level):
        for keyword in _DEFAULT_KEYS.get(lvl, ()):
            setattr(ds, keyword, None)
    limit, offset = MAX_LIMIT, 0
    for key, value in request.args.items(multi=True):
        if key == "limit":
            limit = _number(key, value, 1, MAX_LIMIT)
        elif key == "offset":
            offset = _number(key, value, 0, 10**9)
        elif key == "fuzzymatching":
            if value not in ("true", "false"):
                raise InvalidQuery(f"fuzzymatching={value!r}: use true or false")
        elif key == "includefield":
            for field in value.split(","):
                if field.strip() == "all":
                    for lvl in Level:
                        if Level.PATIENT <= lvl <= level:
                            for keyword in _DEFAULT_KEYS.get(lvl, ()):
                                setattr(ds, keyword, None)
                    continue
                tag = _tag(field.strip())
                if tag not in ds:
                    ds.add_new(tag, dictionary_VR(tag), None)
        else:
            tag = _tag(key)
            if tag in (0x0020000D, 0x0020000E) and keyword_for_tag(tag) in scope:
                raise InvalidQuery(f"{key} is already given in the URL")
            vr = dictionary_VR(tag)
            if vr == "SQ":
                raise InvalidQuery(f"{key}: matching on sequences is not supported over QIDO-RS yet")
            if vr in ("UI",) and any(uid_problem(v) for v in value.split(",") if v):
                raise InvalidQuery(f"{key}={value!r} is not a UID or a comma-separated list of UIDs")
            ds.add_new(tag, vr, value.replace(",", "\\") if vr == "UI" else value)
    for keyword, value in scope.items():
        setattr(ds, keyword, value)
    return ds, limit, offset


def _tag(key: str) -> int:
    """A keyword (PatientName) or an eight-digit tag (00100010)."""
    if key in _CONTROL:
        raise InvalidQuery(f"{key} is given more than once or in the wrong place")
    tag = tag_for_keyword(key)
    if tag is None and len(key) == 8:
        try:
            tag = int(key, 16)
        except ValueError:
            tag = None
    if tag is None or not keyword_for_tag(tag):
        shown = key if len(key) <= 64 else key[:64] + "..."
        raise InvalidQuery(f"{shown!r} is not a DICOM attribute keyword or tag (e.g. PatientName or 00100010)")
    return tag


def _number(key: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidQuery(f"{key}={value[:20]!r}: give a whole number from {low} to {high}")
    return int(value)


def _retrieve_url(base: str, level: Level, attrs: dict[str, Any]) -> str:
    def uid(tag: str) -> str:
        return str(attrs.get(tag, {}).get("Value", [""])[0])

    url = f"{base}/studies/{uid('0020000D')}"
    if level >= Level.SERIES:
        url += f"/series/{uid('0020000E')}"
    if level is Level.IMAGE:
        url += f"/instances/{uid('00080018')}"
    return url


def _origin() -> Origin:
    principal = g.principal
    return Origin(principal.name, request.remote_addr or "", "QIDO", request.headers.get("X-Request-Id", ""))
