"""Rendered images and thumbnails over DICOMweb (PS3.18 10.4.1.1.3 / 8.3.5, Supplement 203).

Viewers and EMR pages ask for JPEG or PNG previews cut to a window:
``.../instances/{i}/rendered``, ``.../frames/{n}/rendered`` and
``/thumbnail`` at study, series, instance and frame level. Study and series
``/rendered`` answer multipart/related, one image per instance (the first
frame of a multi-frame one); a list of frames answers one part per frame.

Query parameters: ``window=center,width[,linear|linear-exact|sigmoid]``,
``viewport=vw,vh[,sx,sy,sw,sh]``, ``quality=1..100``, ``accept=`` (instead of
the Accept header); ``annotation``, ``charset`` and ``iccprofile`` are
accepted and ignored (no burned-in text, no ICC profile). Anything else is a
400, so a typing mistake does not silently give the default image.

Images are cached on disk (viewer/render_cache.py) and carry an ETag and
``Cache-Control: private``: a browser may keep them, a shared proxy may not
(they show a patient).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request, stream_with_context

from archive import Archive, InstanceRef, InvalidQuery
from archive.errors import ArchiveError
from viewer import render
from viewer.access import allow
from viewer.config import web_config
from viewer.render_cache import RenderCache, cache_key
from viewer.urls import path_uid
from viewer.wado import NotAcceptable, audit_access, refs_for

blueprint = Blueprint("rendered", __name__)
blueprint.before_request(allow("retrieve"))

_PARAMETERS = frozenset({"window", "viewport", "quality", "accept", "annotation", "charset", "iccprofile"})
_THUMBNAIL_PARAMETERS = frozenset({"viewport", "accept", "charset"})
#: How long a browser may reuse an image without asking (it revalidates with the ETag after).
_MAX_AGE = 3600


class RenderFailed(ArchiveError):
    """A render.RenderError as an archive error, so the JSON error handler answers it."""

    def __init__(self, exc: render.RenderError) -> None:
        super().__init__(exc.message)
        self.http_status = exc.http_status


# --- routes ------------------------------------------------------------------------------


@blueprint.get("/studies/<study>/rendered")
def study_rendered(study: str) -> Response:
    return _many("STUDY", StudyInstanceUID=path_uid(study, "study"))


@blueprint.get("/studies/<study>/series/<series>/rendered")
def series_rendered(study: str, series: str) -> Response:
    return _many("SERIES", StudyInstanceUID=path_uid(study, "study"), SeriesInstanceUID=path_uid(series, "series"))


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/rendered")
def instance_rendered(study: str, series: str, instance: str) -> Response:
    ref = _one(study, series, instance)
    return image_response(ref, 0, _request(_PARAMETERS), "rendered")


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame_list>/rendered")
def frames_rendered(study: str, series: str, instance: str, frame_list: str) -> Response:
    ref = _one(study, series, instance)
    numbers = _frame_numbers(frame_list)
    wanted = _request(_PARAMETERS)
    if len(numbers) == 1:
        return image_response(ref, numbers[0] - 1, wanted, f"frame {numbers[0]} rendered")
    images = [_image(ref, n - 1, wanted) for n in numbers]  # rendered before answering: errors stay JSON
    audit_access(_archive(), "VIEW", "IMAGE", ref.sop_instance_uid, f"frames {frame_list[:100]} rendered")
    return _multipart(iter(images), wanted.media_type)


@blueprint.get("/studies/<study>/thumbnail")
def study_thumbnail(study: str) -> Response:
    return _thumbnail("STUDY", StudyInstanceUID=path_uid(study, "study"))


@blueprint.get("/studies/<study>/series/<series>/thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    return _thumbnail("SERIES", StudyInstanceUID=path_uid(study, "study"), SeriesInstanceUID=path_uid(series, "series"))


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
def instance_thumbnail(study: str, series: str, instance: str) -> Response:
    return _thumbnail("IMAGE", StudyInstanceUID=path_uid(study, "study"), SeriesInstanceUID=path_uid(series, "series"),
                      SOPInstanceUID=path_uid(instance, "instance"))  # fmt: skip


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame_list>/thumbnail")
def frame_thumbnail(study: str, series: str, instance: str, frame_list: str) -> Response:
    ref = _one(study, series, instance)
    numbers = _frame_numbers(frame_list)
    if len(numbers) != 1:
        raise InvalidQuery("a thumbnail is of one frame: give a single frame number")
    thumb = _thumbnail_request()
    # One frame's thumbnail: that frame, default window, fitted in the viewport like /rendered.
    return image_response(ref, numbers[0] - 1, thumb, f"frame {numbers[0]} thumbnail")


# --- the work ----------------------------------------------------------------------------


def _archive() -> Archive:
    archive: Archive = current_app.config["ARCHIVE"]
    return archive


def _cache() -> RenderCache | None:
    cache: RenderCache | None = current_app.config["RENDER_CACHE"]
    return cache


def _one(study: str, series: str, instance: str) -> InstanceRef:
    [ref] = refs_for(_archive(), "IMAGE", StudyInstanceUID=path_uid(study, "study"),
                     SeriesInstanceUID=path_uid(series, "series"), SOPInstanceUID=path_uid(instance, "instance"))  # fmt: skip
    return ref


def _frame_numbers(frame_list: str) -> list[int]:
    items = frame_list.split(",")
    if len(items) > 100 or not all(i.isdigit() and len(i) <= 9 and int(i) >= 1 for i in items):
        raise InvalidQuery(f"frame list {frame_list[:50]!r}: give up to 100 frame numbers from 1, e.g. 1,2,3")
    return [int(i) for i in items]


def _media_type(default: str = "image/jpeg") -> str:
    """The rendered media type the client accepts (``accept=`` wins over the header), or 406."""
    accept = request.args.get("accept") or request.headers.get("Accept", "") or default
    best: tuple[float, str] | None = None
    for position, media_range in enumerate(accept.split(",")):
        kind, *params = [p.strip() for p in media_range.split(";")]
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = kind.lower()
        candidates = render.MEDIA_TYPES if kind in ("*/*", "image/*") else (kind,)
        for candidate in candidates:
            if candidate in render.MEDIA_TYPES and quality > 0:
                rank = (quality - position * 1e-6, candidate)
                if best is None or rank[0] > best[0]:
                    best = rank
                break
    if best is None:
        raise NotAcceptable(f"cannot render as {accept[:200]!r}: this server renders image/jpeg and image/png")
    return best[1]


def _request(allowed: frozenset[str]) -> render.RenderRequest:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0][:40]!r}: use {', '.join(sorted(allowed))}")
    try:
        window = request.args.get("window")
        viewport = request.args.get("viewport")
        quality = request.args.get("quality")
        return render.RenderRequest(
            media_type=_media_type(),
            window=render.parse_window(window) if window else None,
            viewport=render.parse_viewport(viewport) if viewport else None,
            quality=render.parse_quality(quality) if quality else 90,
        )
    except render.RenderError as exc:
        raise RenderFailed(exc) from None


def _thumbnail_request() -> render.RenderRequest:
    """Thumbnails: JPEG, the default window, fitting a viewport (default 128 x 128).

    Study, series and instance thumbnails are never enlarged (render.thumbnail);
    a frame's thumbnail is that frame fitted like /rendered, so a tiny frame grows.
    """
    base = _request(_THUMBNAIL_PARAMETERS)
    if base.media_type != "image/jpeg":
        raise NotAcceptable("thumbnails are image/jpeg: ask for /rendered with a viewport for a PNG")
    size = render.THUMBNAIL_SIZE
    return render.RenderRequest(viewport=base.viewport or render.Viewport(size, size), quality=80)


def _image(ref: InstanceRef, frame: int | None, wanted: render.RenderRequest) -> tuple[str, bytes]:
    """(ETag, encoded image) of one frame (None: a thumbnail of the middle frame), from the cache if there."""
    cache = _cache()
    key = cache_key(ref.storage_key, frame, wanted)
    if cache is not None and (data := cache.get(key)) is not None:
        return key, data
    try:
        with _archive().open_instance(ref) as stream:
            if frame is None:
                assert wanted.viewport is not None
                data = render.thumbnail(stream, min(wanted.viewport.width, wanted.viewport.height))
            else:
                data = render.render(stream, frame, wanted)
    except render.RenderError as exc:
        raise RenderFailed(exc) from None
    if cache is not None:
        cache.put(key, data)
    return key, data


def image_response(ref: InstanceRef, frame: int | None, wanted: render.RenderRequest, what: str) -> Response:
    etag, data = _image(ref, frame, wanted)
    audit_access(_archive(), "VIEW", "IMAGE", ref.sop_instance_uid, what)
    response = Response(data, content_type=wanted.media_type)
    response.set_etag(etag)
    response.headers["Cache-Control"] = f"private, max-age={_MAX_AGE}"
    response.make_conditional(request)  # 304 when the browser's copy is current
    return response


def _many(level: str, **keys: str) -> Response:
    archive = _archive()
    refs = [ref for ref in refs_for(archive, level, **keys) if has_pixels(ref)]
    if not refs:
        raise InvalidQuery(f"the {level.lower()} has no images to render")
    wanted = _request(_PARAMETERS)
    first = _image(refs[0], 0, wanted)  # a bad window or an undecodable image is a JSON error, not a cut stream
    audit_access(archive, "VIEW", level, list(keys.values())[-1], f"{len(refs)} instances rendered")

    def images() -> Iterator[tuple[str, bytes]]:
        yield first
        for ref in refs[1:]:
            try:
                yield _image(ref, 0, wanted)
            except ArchiveError:
                continue  # one undecodable object does not hide the rest of the series

    return _multipart(images(), wanted.media_type)


def has_pixels(ref: InstanceRef) -> bool:
    # SR, KOS, presentation states and encapsulated documents (a signed report's PDF) have no image.
    return not ref.sop_class_uid.startswith(("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
                                             "1.2.840.10008.5.1.4.1.1.104."))  # fmt: skip


def _thumbnail(level: str, **keys: str) -> Response:
    refs = [ref for ref in refs_for(_archive(), level, **keys) if has_pixels(ref)]
    if not refs:
        raise InvalidQuery(f"the {level.lower()} has no images to make a thumbnail of")
    wanted = _thumbnail_request()
    # A study's thumbnail is its first series' middle image; a series' its middle image.
    if level == "STUDY":
        refs = [r for r in refs if r.series_instance_uid == refs[0].series_instance_uid]
    return image_response(refs[len(refs) // 2], None, wanted, f"{level.lower()} thumbnail")


def _multipart(images: Iterator[tuple[str, bytes]], media_type: str) -> Response:
    boundary = secrets.token_hex(16)

    def parts() -> Iterator[bytes]:
        for _, data in images:
            yield f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    # The images of a series are rendered while the answer streams: keep the request's context.
    return Response(stream_with_context(parts()), content_type=f'multipart/related; type="{media_type}"; boundary={boundary}',
                    direct_passthrough=True)  # fmt: skip
