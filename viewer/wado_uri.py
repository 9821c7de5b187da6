"""WADO-URI (PS3.18 chapter 9): ``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

The older single-URL retrieve many EMRs and HIS "view image" buttons still use.
``contentType`` is image/jpeg (the default for images), image/png or
application/dicom (the default for objects without pixels: reports, KOS).
Images honour windowCenter/windowWidth, frameNumber, rows/columns (a box the
image is fitted into), region (x1,y1,x2,y2 as fractions) and imageQuality;
application/dicom honours transferSyntax (Explicit VR Little Endian by default,
as the standard says; ``*`` or the stored syntax to get the file as stored).
Anonymization and presentation states are not offered: asking for them is a 400,
not an image silently different from what was asked.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from pydicom.uid import ExplicitVRLittleEndian, UID

from archive import Archive, InstanceRef, InvalidQuery
from viewer import render
from viewer.access import allow
from viewer.rendered import RenderFailed, has_pixels, image_response
from viewer.urls import path_uid
from viewer.wado import NotAcceptable, audit_access, converted, convertible, refs_for

blueprint = Blueprint("wado_uri", __name__)
blueprint.before_request(allow("retrieve"))

_PARAMETERS = frozenset({
    "requestType", "studyUID", "seriesUID", "objectUID", "contentType", "charset", "anonymize", "annotation",
    "rows", "columns", "region", "windowCenter", "windowWidth", "frameNumber", "imageQuality",
    "presentationUID", "presentationSeriesUID", "transferSyntax",
})  # fmt: skip
_CHUNK = 1 << 20


@blueprint.get("/wado")
def wado() -> Response:
    args = request.args
    unknown = sorted(set(args) - _PARAMETERS)
    if unknown:
        raise InvalidQuery(f"unknown WADO-URI parameter {unknown[0][:40]!r}")
    if args.get("requestType") != "WADO":
        raise InvalidQuery("requestType=WADO is required")
    for name in ("anonymize", "presentationUID", "presentationSeriesUID"):
        if args.get(name):
            raise InvalidQuery(f"{name} is not supported by this server")
    missing = [name for name in ("studyUID", "seriesUID", "objectUID") if not args.get(name)]
    if missing:
        raise InvalidQuery(f"{', '.join(missing)} missing: WADO-URI needs studyUID, seriesUID and objectUID")
    archive: Archive = current_app.config["ARCHIVE"]
    [ref] = refs_for(archive, "IMAGE", StudyInstanceUID=path_uid(args["studyUID"], "study"),
                     SeriesInstanceUID=path_uid(args["seriesUID"], "series"),
                     SOPInstanceUID=path_uid(args["objectUID"], "object"))  # fmt: skip
    content_type = _content_type(args.get("contentType", ""), has_pixels(ref))
    if content_type == "application/dicom":
        return _dicom(archive, ref, args.get("transferSyntax", ExplicitVRLittleEndian))
    for name in ("transferSyntax",):
        if name in args:
            raise InvalidQuery(f"{name} applies to contentType=application/dicom only")
    return image_response(ref, _frame(args.get("frameNumber")), _render_request(content_type), "WADO-URI image")


def _content_type(asked: str, is_image: bool) -> str:
    """The first type of the list we produce; the default depends on whether there are pixels."""
    offered = (*render.MEDIA_TYPES, "application/dicom") if is_image else ("application/dicom",)
    if not asked:
        return offered[0]
    for item in asked.split(","):
        kind = item.split(";")[0].strip().lower()
        if kind in ("*/*", "image/*") and is_image:
            return "image/jpeg"
        if kind in offered:
            return kind
    raise NotAcceptable(f"contentType {asked[:100]!r}: this object is available as {', '.join(offered)}")


def _frame(text: str | None) -> int:
    if text is None:
        return 0
    if not text.isdigit() or not 1 <= int(text) <= 10**9:
        raise InvalidQuery(f"frameNumber {text[:20]!r}: give a frame number from 1")
    return int(text) - 1


def _render_request(media_type: str) -> render.RenderRequest:
    args = request.args
    try:
        center, width = args.get("windowCenter"), args.get("windowWidth")
        if (center is None) != (width is None):
            raise render.RenderError("give both windowCenter and windowWidth, or neither")
        window = render.parse_window(f"{center},{width}") if center is not None else None
        rows, columns = args.get("rows"), args.get("columns")
        viewport = None
        if rows or columns or args.get("region"):
            viewport = _viewport(rows, columns, args.get("region"))
        quality = args.get("imageQuality")
        return render.RenderRequest(media_type=media_type, window=window, viewport=viewport,
                                    quality=render.parse_quality(quality) if quality else 90)  # fmt: skip
    except render.RenderError as exc:
        raise RenderFailed(exc) from None


def _viewport(rows: str | None, columns: str | None, region: str | None) -> render.Viewport:
    """rows/columns bound the output (either may be absent); region is x1,y1,x2,y2 in 0.0-1.0.

    The region is a fraction of the image, which is not known here; it is given to
    render as a PS3.18 viewport region once the size is known (see image_response).
    """
    height = int(rows) if rows and rows.isdigit() else None
    width = int(columns) if columns and columns.isdigit() else None
    if (rows and height is None) or (columns and width is None):
        raise render.RenderError("rows and columns must be whole numbers of pixels")
    if region:
        raise render.RenderError("region is not supported; use rows and columns, or DICOMweb /rendered "
                                 "with viewport=vw,vh,sx,sy,sw,sh")  # fmt: skip
    side = render.MAX_VIEWPORT
    return render.Viewport(width or side, height or side)


def _dicom(archive: Archive, ref: InstanceRef, syntax: str) -> Response:
    stored = ref.transfer_syntax_uid
    if syntax not in ("*", stored):
        if not UID(syntax).is_transfer_syntax:
            raise InvalidQuery(f"transferSyntax={syntax[:64]} is not a transfer syntax UID")
        if not convertible(ref, syntax):
            raise NotAcceptable(f"{ref.sop_instance_uid} is stored as {UID(stored).name} and cannot be sent as "
                                f"{UID(syntax).name}: ask with transferSyntax={stored}")  # fmt: skip
    audit_access(archive, "RETRIEVE", "IMAGE", ref.sop_instance_uid, "WADO-URI object")
    headers = {"Content-Disposition": f'attachment; filename="{ref.sop_instance_uid}.dcm"'}
    if syntax in ("*", stored):

        def chunks() -> Iterator[bytes]:
            with archive.open_instance(ref) as stream:
                while chunk := stream.read(_CHUNK):
                    yield chunk

        return Response(chunks(), content_type="application/dicom", headers=headers, direct_passthrough=True)
    return Response(converted(archive, ref), content_type="application/dicom", headers=headers)
