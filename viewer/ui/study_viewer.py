"""The study viewer at /studies/<uid> (issue 6) and the data its script loads.

The page and everything it loads live under ``/studies/<uid>/``, so both a
logged-in person whose role reads results and the holder of an IID link's
cookie (scoped ``Path=/studies/<uid>``, viewer/iid.py) can load them, and
nothing else: every request is checked the same way (`_enter`).

* ``GET /studies/<uid>``: the page (static/ui/viewer.js draws the images);
* ``GET /studies/<uid>/manifest``: the study as the viewer needs it, small for
  slow links: patient, study, series with their images in display order, each
  with its size, frames, pixel spacing (``spacing.kind`` says whether it is
  Pixel Spacing in the patient, Imager Pixel Spacing at the detector, or an
  ultrasound region's calibration), the header's windows, slice position and
  cine timing. Values every image of a series shares are given once in the
  series' ``common``;
* ``GET /studies/<uid>/instances/<sop>[/frames/<n>]/rendered`` and
  ``.../thumbnail``: images through viewer/rendered.py (ETag, ``Cache-Control:
  private``, the disk cache); ``window=``, ``viewport=`` and ``quality=`` as in
  PS3.18;
* ``GET /studies/<uid>/instances/<sop>/tags``: the header for the tag browser
  (no pixel data; long and binary values shortened);
* ``GET /studies/<uid>/priors``: the patient's other studies, newest first
  (a logged-in person only: an IID link opens one study).

Errors of the page are HTML pages; of the data, JSON ``{status, message}``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, cast

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_babel import gettext as _
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from sqlalchemy import Table, select
from werkzeug.wrappers import Response as BaseResponse

from archive import Archive, InstanceRef, NotFound, Origin
from archive.errors import ArchiveError, InvalidArgument
from archive.models import Instance, Series, Study
from reports.study_pages import find_studies, has_pixels, study_summary
from viewer import iid, render
from viewer.access import Forbidden
from viewer.auth import Principal
from viewer.errors import json_error
from viewer.pages import secure
from viewer.render_cache import RenderCache, cache_key
from viewer.rendered import image_response
from viewer.ui import base
from viewer.urls import path_uid

log = logging.getLogger(__name__)

blueprint = Blueprint("ui_study_viewer", __name__)

_ST = cast(Table, Study.__table__)
_SE = cast(Table, Series.__table__)
_I = cast(Table, Instance.__table__)

#: Bumped when the manifest's shape changes, so cached manifests of the old shape are not served.
_MANIFEST_VERSION = "viewer-manifest-2"
#: The tag browser shortens text values to this many characters and lists at most this many elements.
_TAG_TEXT = 160
_TAG_LIMIT = 3000
_TAG_DEPTH = 4
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_RENDER_PARAMETERS = frozenset({"window", "viewport", "quality"})
#: Ultrasound region units (PS3.3 C.8.5.5.1.15): 3 = cm.
_CM = 3


class NotLoggedIn(ArchiveError):
    """401 without a Basic challenge: an image of the page must not pop up the browser's login dialog."""

    http_status = 401


# --- who may look ---------------------------------------------------------------------------------


def _archive() -> Archive:
    archive: Archive = current_app.config["ARCHIVE"]
    return archive


def _enter(study: str) -> tuple[str, Principal]:
    """The study's UID and who is looking (a person, or an IID cookie of this study), or 401/403."""
    uid = path_uid(study, "study")
    visitor = iid.study_visitor(uid)
    if visitor is None:
        raise (base.LoginNeeded() if request.endpoint == "ui_study_viewer.viewer" else
               NotLoggedIn("log in, or open the study from the EMR again"))  # fmt: skip
    g.principal = visitor
    if visitor.kind != "iid":
        user = _archive().accounts.user(visitor.name)
        g.ui_language = user.ui_language if user else ""
        g.low_bandwidth = bool(user and user.low_bandwidth)
        g.display_name = (user.display_name if user else "") or visitor.name
    return uid, visitor


@blueprint.errorhandler(ArchiveError)
def refused(exc: ArchiveError) -> BaseResponse:
    if request.endpoint == "ui_study_viewer.viewer":
        return base.refused(exc)
    return secure(json_error(exc.http_status, exc.message))


@blueprint.errorhandler(base.LoginNeeded)
def login_needed(exc: base.LoginNeeded) -> BaseResponse:
    return base.login_needed(exc)


# --- the page ---------------------------------------------------------------------------------------


@blueprint.get("/studies/<study>")
def viewer(study: str) -> BaseResponse:
    uid, visitor = _enter(study)
    manifest = _manifest(uid)
    _audit(visitor, uid, "viewer")
    token_holder = visitor.kind == "iid"
    if token_holder:
        # The frame's menu and log-out button are a staff member's: a visitor by link has neither.
        g.pop("principal")
    modalities = [s["modality"] for s in manifest["series"] if s["modality"]]
    data = {"study": uid, "accession": manifest["study"]["accession"], "patientName": manifest["patient"]["name"],
            "modality": modalities[0] if modalities else "", "base": f"/studies/{uid}", "manifest": manifest,
            "priors": not token_holder, "preferences": not token_holder}  # fmt: skip
    response = base.render("ui/viewer.html", data=data, strings=_strings(), manifest=manifest,
                           patient=manifest["patient"], study=manifest["study"], token_holder=token_holder)  # fmt: skip
    if token_holder:
        g.principal = visitor
    return response


def _strings() -> dict[str, str]:
    return {
        "image": _("Im"), "frame": _("Frame"), "series": _("Se"), "zoom": _("Zoom"),
        "windowShort": _("W %(w)s L %(c)s", w="{w}", c="{c}"), "thickness": _("Thickness"),
        "location": _("Location"), "images": _("%(n)s images", n="{n}"), "frames": _("%(n)s frames", n="{n}"),
        "preview": _("preview"), "fullQuality": _("Full quality"), "noPriors": _("No prior studies."),
        "priorsFailed": _("The prior studies could not be loaded."), "failed": _("The image could not be loaded."),
        "mm": _("mm"), "mmDetector": _("mm (at detector)"), "mmRegion": _("mm (ultrasound region)"),
        "px": _("px (no pixel spacing)"), "clickSecond": _("Click the second point."),
        "clickAngle": _("Click three points: the vertex is the second."), "headerWindow": _("Header"),
        "noTags": _("No tag matches."),
        "tagsFor": _("Tags of image %(n)s", n="{n}"), "lowBandwidthOn": _("Low bandwidth: previews only."),
        "lowBandwidthOff": _("Full-quality images."), "born": _("Born"),
        "current": _("Current"), "prior": _("Prior"), "delete": _("Delete"),
        "play": _("Play"), "pause": _("Pause"), "inverted": _("inverted"),
    }  # fmt: skip


# --- the manifest -----------------------------------------------------------------------------------


@blueprint.get("/studies/<study>/manifest")
def manifest(study: str) -> Response:
    uid, visitor = _enter(study)
    body = _manifest(uid)
    _audit(visitor, uid, "viewer manifest")
    response = Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                        content_type="application/json; charset=utf-8")  # fmt: skip
    response.headers["Cache-Control"] = "private, no-cache"
    response.add_etag()
    return cast(Response, response.make_conditional(request))


def _manifest(uid: str) -> dict[str, Any]:
    summary = study_summary(_archive().db, uid)
    if summary is None:
        raise NotFound(_("No study %(uid)s in the archive.", uid=uid))
    patient, item = summary.patient, summary.study
    refs = _refs(uid)
    series = []
    for s in summary.series:
        images = _series_images(refs.get(s.series_instance_uid, []))
        if not images:
            continue
        series.append({"uid": s.series_instance_uid, "number": s.series_number, "modality": s.modality,
                       "description": s.description, **_common(images)})  # fmt: skip
    return {
        "patient": {"id": patient.patient_id, "issuer": patient.issuer, "name": patient.name,
                    "birthDate": patient.birth_date, "sex": patient.sex},
        "study": {"uid": uid, "accession": item.accession_number, "date": item.study_date, "time": item.study_time,
                  "description": item.description, "modalities": item.modalities},
        "series": series,
    }  # fmt: skip


def _refs(uid: str) -> dict[str, list[InstanceRef]]:
    """The study's instances with pixels, by series."""
    stmt = (select(_I.c.sop_class_uid, _I.c.sop_instance_uid, _I.c.transfer_syntax_uid, _I.c.storage_key,
                   _I.c.size_bytes, _SE.c.series_instance_uid)
            .join(_SE, _SE.c.pk == _I.c.series_pk).join(_ST, _ST.c.pk == _SE.c.study_pk)
            .where(_ST.c.study_instance_uid == uid))  # fmt: skip
    with _archive().db.read() as conn:
        rows = conn.execute(stmt).all()
    by_series: dict[str, list[InstanceRef]] = {}
    for r in rows:
        if has_pixels(r.sop_class_uid):
            by_series.setdefault(r.series_instance_uid, []).append(
                InstanceRef(r.sop_class_uid, r.sop_instance_uid, r.transfer_syntax_uid, r.storage_key,
                            int(r.size_bytes), uid, r.series_instance_uid))  # fmt: skip
    return by_series


def _series_images(refs: list[InstanceRef]) -> list[dict[str, Any]]:
    """The images of one series in display order, read from their headers (cached by their stored objects)."""
    cache: RenderCache | None = current_app.config["RENDER_CACHE"]
    key = cache_key(_MANIFEST_VERSION, *sorted(r.storage_key for r in refs))
    if cache is not None and (hit := cache.get(key)) is not None:
        cached: list[dict[str, Any]] = json.loads(hit)
        return cached
    images = []
    for ref in refs:
        try:
            with _archive().open_instance(ref) as stream:
                header = dcmread(stream, stop_before_pixels=True)
        except ArchiveError:
            raise
        except Exception:  # an unreadable header: the image is left out, the rest of the series shows
            log.warning("viewer: cannot read the header of %s", ref.sop_instance_uid, exc_info=True)
            continue
        images.append(_image(ref, header))
    images.sort(key=_order)
    for image in images:
        image.pop("_order", None)
    if cache is not None:
        cache.put(key, json.dumps(images, separators=(",", ":")).encode())
    return images


def _image(ref: InstanceRef, ds: Dataset) -> dict[str, Any]:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    grayscale = photometric in ("MONOCHROME1", "MONOCHROME2")
    image: dict[str, Any] = {
        "sop": ref.sop_instance_uid, "number": _int(ds.get("InstanceNumber")),
        "rows": _int(ds.get("Rows")) or 0, "columns": _int(ds.get("Columns")) or 0,
        "frames": max(1, _int(ds.get("NumberOfFrames")) or 1), "grayscale": grayscale,
        "monochrome1": photometric == "MONOCHROME1", "spacing": _spacing(ds),
        "windows": _windows(ds) if grayscale else [], "range": _range(ds) if grayscale else None,
        "thickness": _float(ds.get("SliceThickness")), "location": _float(ds.get("SliceLocation")),
        "frameTime": _frame_time(ds), "laterality": str(ds.get("ImageLaterality", "") or ds.get("Laterality", "")),
        "view": str(ds.get("ViewPosition", "")),
    }  # fmt: skip
    image["_order"] = (image["number"] is None, image["number"] or 0, _position(ds), ref.sop_instance_uid)
    return image


def _order(image: dict[str, Any]) -> tuple[Any, ...]:
    order: tuple[Any, ...] = image["_order"]
    return order


def _common(images: list[dict[str, Any]]) -> dict[str, Any]:
    """``common``: the values all `images` share, given once; ``images``: what differs per image."""
    keys = [k for k in images[0] if k != "sop" and all(k in i and i[k] == images[0][k] for i in images)]
    common = {k: images[0][k] for k in keys} if len(images) > 1 else {}
    return {"common": common, "images": [{k: v for k, v in i.items() if k not in common} for i in images]}


def _spacing(ds: Dataset) -> dict[str, Any] | None:
    """Millimetres per pixel (row spacing, column spacing) and what they measure.

    ``patient``: Pixel Spacing (PS3.3 10.7.1.3), in the patient; ``detector``:
    Imager Pixel Spacing, at the detector, so a projection image measures
    larger than the patient; ``region``: the calibration of an ultrasound
    region (Sequence of Ultrasound Regions, in cm), valid inside that region.
    """
    for keyword, kind in (("PixelSpacing", "patient"), ("ImagerPixelSpacing", "detector")):
        values = _floats(ds.get(keyword))
        if len(values) == 2 and all(v > 0 for v in values):
            return {"row": values[0], "column": values[1], "kind": kind}
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        dx, dy = _float(region.get("PhysicalDeltaX")), _float(region.get("PhysicalDeltaY"))
        if (region.get("PhysicalUnitsXDirection") == _CM and region.get("PhysicalUnitsYDirection") == _CM
                and dx and dy and dx > 0 and dy > 0):  # fmt: skip
            box = [_int(region.get(k)) or 0 for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                       "RegionLocationMaxX1", "RegionLocationMaxY1")]  # fmt: skip
            return {"row": abs(dy) * 10, "column": abs(dx) * 10, "kind": "region", "region": box}
    return None


def _windows(ds: Dataset) -> list[dict[str, Any]]:
    centers, widths = _floats(ds.get("WindowCenter")), _floats(ds.get("WindowWidth"))
    explanation = ds.get("WindowCenterWidthExplanation") or []
    names = [str(n) for n in (explanation if isinstance(explanation, (MultiValue, list)) else [explanation])]
    return [{"center": c, "width": w, "name": names[i] if i < len(names) else ""}
            for i, (c, w) in enumerate(zip(centers, widths)) if w > 0][:8]  # fmt: skip


def _range(ds: Dataset) -> list[float] | None:
    """The range of values the stored bits can hold after the rescale (the window of last resort)."""
    bits = _int(ds.get("BitsStored"))
    if not bits or not 1 <= bits <= 32:
        return None
    signed = ds.get("PixelRepresentation") == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    slope, intercept = _float(ds.get("RescaleSlope")) or 1.0, _float(ds.get("RescaleIntercept")) or 0.0
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return [round(ends[0], 3), round(ends[1], 3)]


def _frame_time(ds: Dataset) -> float | None:
    """Milliseconds per frame: Frame Time, else from Cine Rate or Recommended Display Frame Rate."""
    frame_time = _float(ds.get("FrameTime"))
    if frame_time and frame_time > 0:
        return frame_time
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _float(ds.get(keyword))
        if rate and rate > 0:
            return round(1000 / rate, 3)
    return None


def _position(ds: Dataset) -> float:
    """Where the slice lies along its normal (Image Position and Orientation), for ordering."""
    position, orientation = _floats(ds.get("ImagePositionPatient")), _floats(ds.get("ImageOrientationPatient"))
    if len(position) != 3:
        return 0.0
    if len(orientation) != 6:
        return position[2]
    r, c = orientation[:3], orientation[3:]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    return sum(p * n for p, n in zip(position, normal))


def _floats(value: Any) -> list[float]:
    values = value if isinstance(value, (MultiValue, list, tuple)) else [] if value in (None, "") else [value]
    out = []
    for v in values:
        number = _float(v)
        if number is None:
            return []
        out.append(number)
    return out


def _float(value: Any) -> float | None:
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 6) if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


# --- images -----------------------------------------------------------------------------------------


@blueprint.get("/studies/<study>/instances/<instance>/rendered")
def rendered(study: str, instance: str) -> Response:
    return _rendered(study, instance, 1)


@blueprint.get("/studies/<study>/instances/<instance>/frames/<int:frame>/rendered")
def frame_rendered(study: str, instance: str, frame: int) -> Response:
    return _rendered(study, instance, frame)


@blueprint.get("/studies/<study>/instances/<instance>/thumbnail")
def thumbnail(study: str, instance: str) -> Response:
    uid, _visitor = _enter(study)
    if set(request.args):
        raise InvalidArgument("a thumbnail takes no parameters")
    size = render.THUMBNAIL_SIZE
    return image_response(_ref(uid, instance), None, render.RenderRequest(viewport=render.Viewport(size, size),
                                                                          quality=80), "viewer thumbnail")  # fmt: skip


def _rendered(study: str, instance: str, frame: int) -> Response:
    uid, _visitor = _enter(study)
    unknown = sorted(set(request.args) - _RENDER_PARAMETERS)
    if unknown:
        raise InvalidArgument(f"unknown parameter {unknown[0][:40]!r}: use window, viewport or quality")
    if not 1 <= frame <= 100_000:
        raise InvalidArgument("frames are numbered from 1")
    try:
        window, viewport, quality = (request.args.get(k) for k in ("window", "viewport", "quality"))
        wanted = render.RenderRequest(window=render.parse_window(window) if window else None,
                                      viewport=render.parse_viewport(viewport) if viewport else None,
                                      quality=render.parse_quality(quality) if quality else 90)  # fmt: skip
    except render.RenderError as exc:
        raise InvalidArgument(exc.message) from None
    return image_response(_ref(uid, instance), frame - 1, wanted, f"viewer frame {frame}")


def _ref(uid: str, instance: str) -> InstanceRef:
    """One image of study `uid`: a SOP Instance UID of another study is not found."""
    sop = path_uid(instance, "instance")
    stmt = (select(_I.c.sop_class_uid, _I.c.transfer_syntax_uid, _I.c.storage_key, _I.c.size_bytes,
                   _SE.c.series_instance_uid)
            .join(_SE, _SE.c.pk == _I.c.series_pk).join(_ST, _ST.c.pk == _SE.c.study_pk)
            .where(_I.c.sop_instance_uid == sop, _ST.c.study_instance_uid == uid))  # fmt: skip
    with _archive().db.read() as conn:
        row = conn.execute(stmt).first()
    if row is None or not has_pixels(row.sop_class_uid):
        raise NotFound(f"no image {sop} in this study")
    return InstanceRef(row.sop_class_uid, sop, row.transfer_syntax_uid, row.storage_key, int(row.size_bytes), uid,
                       row.series_instance_uid)  # fmt: skip


# --- the tag browser --------------------------------------------------------------------------------


@blueprint.get("/studies/<study>/instances/<instance>/tags")
def tags(study: str, instance: str) -> Response:
    uid, visitor = _enter(study)
    ref = _ref(uid, instance)
    with _archive().open_instance(ref) as stream:
        ds = dcmread(stream, stop_before_pixels=True)
    rows: list[dict[str, Any]] = []
    _list_tags(ds.file_meta, 0, rows)
    _list_tags(ds, 0, rows)
    _audit(visitor, ref.sop_instance_uid, "viewer tags", "IMAGE")
    response = jsonify({"sop": ref.sop_instance_uid, "tags": rows[:_TAG_LIMIT], "truncated": len(rows) > _TAG_LIMIT})
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _list_tags(ds: Dataset, depth: int, rows: list[dict[str, Any]]) -> None:
    for element in ds:
        if len(rows) > _TAG_LIMIT:
            return
        if element.tag == 0x7FE00010:
            continue
        row = {"tag": f"({element.tag.group:04X},{element.tag.element:04X})", "name": element.name,
               "keyword": element.keyword, "vr": str(element.VR), "depth": depth, "value": _tag_value(element)}  # fmt: skip
        rows.append(row)
        if element.VR == "SQ" and depth < _TAG_DEPTH:
            for number, item in enumerate(element.value, 1):
                rows.append({"tag": "", "name": f"Item {number}", "keyword": "", "vr": "", "depth": depth + 1,
                             "value": ""})  # fmt: skip
                _list_tags(item, depth + 2, rows)


def _tag_value(element: DataElement) -> str:
    vr = str(element.VR)
    if vr == "SQ":
        return f"{len(element.value)} item(s)"
    value = element.value
    if vr in _BINARY_VRS:
        return f"[binary, {len(value) if isinstance(value, bytes) else '?'} bytes]"
    if isinstance(value, (MultiValue, list)):
        text = "\\".join(str(v) for v in value)
    elif isinstance(value, PersonName):
        text = str(value)
    elif isinstance(value, bytes):
        text = f"[binary, {len(value)} bytes]"
    else:
        text = str(value)
    return text if len(text) <= _TAG_TEXT else text[:_TAG_TEXT] + f"… ({len(text)} characters)"


# --- prior studies ----------------------------------------------------------------------------------


@blueprint.get("/studies/<study>/priors")
def priors(study: str) -> Response:
    uid, visitor = _enter(study)
    if visitor.kind == "iid":
        raise Forbidden("a link from the EMR opens one study only")
    summary = study_summary(_archive().db, uid)
    if summary is None:
        raise NotFound(f"no study {uid} in the archive")
    patient = summary.patient
    found = find_studies(_archive().db, patient_id=patient.patient_id, issuer=patient.issuer) if patient.patient_id else []
    others = [{"uid": s.study_instance_uid, "accession": s.accession_number, "date": s.study_date,
               "time": s.study_time, "description": s.description, "modalities": s.modalities,
               "instances": s.num_instances} for s in found if s.study_instance_uid != uid]  # fmt: skip
    _audit(visitor, uid, f"viewer prior studies ({len(others)})")
    response = jsonify({"priors": others})
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _audit(visitor: Principal, uid: str, what: str, level: str = "STUDY") -> None:
    _archive().audit.record(Origin(visitor.name, request.remote_addr or "", "HTTP"), "VIEW", level, uid, what)
