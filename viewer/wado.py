"""WADO-RS (PS3.18 10.4): studies, series and instances as DICOM files, their
metadata as DICOM JSON, bulk data and frames.

The answer is multipart/related; type="application/dicom", one Part 10 file
per part. Objects go out as stored, read from the object store a megabyte
at a time (a 1 GB cine is never held in memory), when the client accepts
their transfer syntax (``transfer-syntax=*``, or the stored one). Without a
transfer-syntax parameter the standard's default, Explicit VR Little Endian,
applies: compressed and implicit-VR objects are then converted (in memory)
or, if one cannot be, the request gets 406 and says to ask with
``transfer-syntax=*``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from io import BytesIO

from flask import Blueprint, Response, current_app, g, request
from pydicom import dcmread, dcmwrite
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID

from archive import (
    Archive,
    InstanceRef,
    InvalidQuery,
    NotFound,
    Origin,
    query_from_identifier,
    require_unique_key,
)
from archive.errors import ArchiveError
from viewer.access import allow
from viewer.urls import base_url, path_uid

blueprint = Blueprint("wado", __name__)
blueprint.before_request(allow("retrieve"))

_CHUNK = 1 << 20
#: Binary values above this go out as BulkDataURIs in metadata (and are not read to make it).
_INLINE_LIMIT = 64 * 1024
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_ANY = "*"


class NotAcceptable(ArchiveError):
    http_status = 406


@blueprint.get("/studies/<study>")
def study(study: str) -> Response:
    return _retrieve("STUDY", StudyInstanceUID=path_uid(study, "study"))


@blueprint.get("/studies/<study>/series/<series>")
def series(study: str, series: str) -> Response:
    return _retrieve("SERIES", StudyInstanceUID=path_uid(study, "study"), SeriesInstanceUID=path_uid(series, "series"))


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>")
def instance(study: str, series: str, instance: str) -> Response:
    return _retrieve("IMAGE", StudyInstanceUID=path_uid(study, "study"), SeriesInstanceUID=path_uid(series, "series"),
                     SOPInstanceUID=path_uid(instance, "instance"))  # fmt: skip


@blueprint.get("/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    return _metadata("STUDY", StudyInstanceUID=path_uid(study, "study"))


@blueprint.get("/studies/<study>/series/<series>/metadata")
def series_metadata(study: str, series: str) -> Response:
    return _metadata("SERIES", StudyInstanceUID=path_uid(study, "study"),
                     SeriesInstanceUID=path_uid(series, "series"))  # fmt: skip


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    return _metadata("IMAGE", StudyInstanceUID=path_uid(study, "study"), SeriesInstanceUID=path_uid(series, "series"),
                     SOPInstanceUID=path_uid(instance, "instance"))  # fmt: skip


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/bulkdata/<tag>")
def bulkdata(study: str, series: str, instance: str, tag: str) -> Response:
    """A top-level bulk data element's value as stored, streamed (PS3.18 10.4.1.1.5)."""
    archive: Archive = current_app.config["ARCHIVE"]
    if len(tag) != 8 or any(c not in "0123456789abcdefABCDEF" for c in tag):
        raise InvalidQuery(f"bulk data tag {tag[:20]!r} is not eight hex digits, e.g. 7FE00010")
    [ref] = refs_for(archive, "IMAGE", StudyInstanceUID=path_uid(study, "study"),
                  SeriesInstanceUID=path_uid(series, "series"), SOPInstanceUID=path_uid(instance, "instance"))  # fmt: skip
    with archive.open_instance(ref) as stream:
        ds = dcmread(stream, defer_size=_INLINE_LIMIT)
        element = ds.get_item(int(tag, 16), keep_deferred=True)
    vr = element.VR or dictionary_VR(int(tag, 16)) if isinstance(element, RawDataElement) else ""
    if not isinstance(element, RawDataElement) or not _BULK_VRS & set(str(vr).split(" or ")):
        raise NotFound(f"{ref.sop_instance_uid} has no bulk data element {tag.upper()}")
    if element.length == 0xFFFFFFFF:
        raise NotAcceptable("this pixel data is compressed (encapsulated): ask for its /frames instead")
    audit_access(archive, "RETRIEVE", "IMAGE", ref.sop_instance_uid, f"bulk data {tag.upper()}")
    boundary = secrets.token_hex(16)
    parts = (_bulk_part(archive, ref, element.value_tell, element.length, boundary) if element.value is None
             else iter([_part_header(boundary), bytes(element.value), _closing(boundary)]))  # fmt: skip
    return Response(parts, content_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
                    direct_passthrough=True)  # fmt: skip


def _part_header(boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()


def _closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


def _bulk_part(archive: Archive, ref: InstanceRef, offset: int, length: int, boundary: str) -> Iterator[bytes]:
    """The value read straight from the stored file: a 1 GB cine is never in memory."""
    yield _part_header(boundary)
    with archive.open_instance(ref) as stream:
        stream.seek(offset)
        left = length
        while left > 0 and (chunk := stream.read(min(_CHUNK, left))):
            left -= len(chunk)
            yield chunk
    yield _closing(boundary)


def _metadata(level: str, **keys: str) -> Response:
    """Every instance's attributes as DICOM JSON; values over 64 KB as BulkDataURIs."""
    archive: Archive = current_app.config["ARCHIVE"]
    refs = refs_for(archive, level, **keys)
    base = base_url()
    results = []
    for ref in refs:
        instance_url = (f"{base}/studies/{ref.study_instance_uid}/series/{ref.series_instance_uid}"
                        f"/instances/{ref.sop_instance_uid}")  # fmt: skip
        with archive.open_instance(ref) as stream:
            ds = dcmread(stream, stop_before_pixels=True)

        def uri(element: DataElement, url: str = instance_url) -> str:
            return f"{url}/bulkdata/{int(element.tag):08X}"

        attrs = ds.to_json_dict(bulk_data_threshold=_INLINE_LIMIT, bulk_data_element_handler=uri)
        if "Rows" in ds:  # the pixel data, never read for this
            compressed = UID(ref.transfer_syntax_uid).is_compressed
            vr = "OB" if compressed or int(ds.get("BitsAllocated", 16)) <= 8 else "OW"
            attrs["7FE00010"] = {"vr": vr, "BulkDataURI": f"{instance_url}/bulkdata/7FE00010"}
        results.append(dict(sorted(attrs.items())))
    audit_access(archive, "VIEW", level, list(keys.values())[-1], f"metadata of {len(refs)} instances")
    return Response(json.dumps(results, ensure_ascii=False), status=200,
                    content_type="application/dicom+json; charset=utf-8")  # fmt: skip


def audit_access(archive: Archive, action: str, level: str, uid: str, outcome: str) -> None:
    principal = g.principal
    archive.audit.record(Origin(principal.name, request.remote_addr or "", "WADO"), action, level, uid, outcome)


def refs_for(archive: Archive, level: str, **keys: str) -> list[InstanceRef]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    query = query_from_identifier(identifier, patient_root=False)
    require_unique_key(query)
    refs = archive.instances(query)
    if not refs:
        raise NotFound(f"no {level.lower().replace('image', 'instance')} {list(keys.values())[-1]} in the archive")
    return refs


def _retrieve(level: str, **keys: str) -> Response:
    archive: Archive = current_app.config["ARCHIVE"]
    wanted = accepted_transfer_syntax(request.headers.get("Accept", ""))
    refs = refs_for(archive, level, **keys)
    for ref in refs:
        if wanted != _ANY and ref.transfer_syntax_uid != wanted and not convertible(ref, wanted):
            raise NotAcceptable(
                f"{ref.sop_instance_uid} is stored as {UID(ref.transfer_syntax_uid).name} and cannot be "
                f"sent as {UID(wanted).name}: ask with transfer-syntax=* to get it as stored"
            )
    audit_access(archive, "RETRIEVE", level, list(keys.values())[-1], f"{len(refs)} instances")
    boundary = secrets.token_hex(16)
    return Response(
        _multipart(archive, refs, wanted, boundary),
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        direct_passthrough=True,
    )


def accepted_transfer_syntax(accept: str) -> str:
    """The transfer syntax the Accept header asks for ('*' for as stored), or raise NotAcceptable."""
    if not accept.strip():
        return ExplicitVRLittleEndian
    for media_range in accept.split(","):
        media_type, *params = [p.strip() for p in media_range.split(";")]
        values = {}
        for param in params:
            name, _, value = param.partition("=")
            values[name.strip().lower()] = value.strip().strip('"')
        if values.get("q") == "0":
            continue
        if media_type.lower() in ("*/*", "multipart/*"):
            return ExplicitVRLittleEndian
        if media_type.lower() == "multipart/related" and values.get("type", "application/dicom") == "application/dicom":
            syntax = values.get("transfer-syntax", ExplicitVRLittleEndian)
            if syntax != _ANY and not UID(syntax).is_transfer_syntax:
                raise NotAcceptable(f"transfer-syntax={syntax[:64]} is not a transfer syntax UID")
            return syntax
    raise NotAcceptable(
        f"cannot answer with {accept[:200]!r}: this resource is "
        'multipart/related; type="application/dicom" (add transfer-syntax=* to get objects as stored)'
    )


def convertible(ref: InstanceRef, wanted: str) -> bool:
    if wanted != ExplicitVRLittleEndian:
        return False
    stored = UID(ref.transfer_syntax_uid)
    return stored == ImplicitVRLittleEndian or (stored.is_compressed and not stored.is_deflated)


def _multipart(archive: Archive, refs: list[InstanceRef], wanted: str, boundary: str) -> Iterator[bytes]:
    for ref in refs:
        syntax = ref.transfer_syntax_uid if wanted in (_ANY, ref.transfer_syntax_uid) else wanted
        yield (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\r\n").encode()
        if syntax == ref.transfer_syntax_uid:
            with archive.open_instance(ref) as stream:
                while chunk := stream.read(_CHUNK):
                    yield chunk
        else:
            yield converted(archive, ref)
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def converted(archive: Archive, ref: InstanceRef) -> bytes:
    """`ref` in Explicit VR Little Endian: decompressed (lossless, same UID) or re-encoded."""
    ds = archive.read_dataset(ref)
    if UID(ref.transfer_syntax_uid).is_compressed:
        ds.decompress(generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


# --- frames ------------------------------------------------------------------------------

#: The media type of each compressed transfer syntax's frames (PS3.18 table 8.7.3-2).
_FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}  # fmt: skip


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame_list>")
def frames(study: str, series: str, instance: str, frame_list: str) -> Response:
    """Frames as application/octet-stream (decoded), or compressed as stored when the Accept
    header names the stored form's media type or transfer-syntax=* (PS3.18 10.4.1.1.4)."""
    archive: Archive = current_app.config["ARCHIVE"]
    [ref] = refs_for(archive, "IMAGE", StudyInstanceUID=path_uid(study, "study"),
                  SeriesInstanceUID=path_uid(series, "series"), SOPInstanceUID=path_uid(instance, "instance"))  # fmt: skip
    with archive.open_instance(ref) as stream:
        header = dcmread(stream, stop_before_pixels=True)
    if "Rows" not in header:
        raise NotFound(f"{ref.sop_instance_uid} has no pixel data")
    count = int(header.get("NumberOfFrames") or 1)
    numbers = _frame_numbers(frame_list, count)
    stored = ref.transfer_syntax_uid
    compressed_type = _FRAME_MEDIA_TYPES.get(stored)
    as_stored = compressed_type is not None and _wants_stored_frames(request.headers.get("Accept", ""), compressed_type)
    audit_access(archive, "RETRIEVE", "IMAGE", ref.sop_instance_uid, f"frames {frame_list[:100]}")
    boundary = secrets.token_hex(16)
    media_type = compressed_type if as_stored and compressed_type else "application/octet-stream"
    part_type = f"{media_type}; transfer-syntax={stored}" if as_stored else media_type
    return Response(_frame_parts(archive, ref, numbers, count, as_stored, part_type, boundary),
                    content_type=f'multipart/related; type="{media_type}"; boundary={boundary}',
                    direct_passthrough=True)  # fmt: skip


def _frame_numbers(frame_list: str, count: int) -> list[int]:
    numbers = []
    for item in frame_list.split(","):
        if not item.isdigit() or len(item) > 9:
            raise InvalidQuery(f"frame list {frame_list[:50]!r}: give frame numbers from 1 to {count}, e.g. 1,2,3")
        if not 1 <= int(item) <= count:
            raise NotFound(f"there is no frame {item}: this instance has {count} frame(s)")
        numbers.append(int(item))
    return numbers


def _wants_stored_frames(accept: str, media_type: str) -> bool:
    for media_range in accept.split(","):
        kind, *params = [p.strip() for p in media_range.split(";")]
        values = {n.strip().lower(): v.strip().strip('"') for n, _, v in (p.partition("=") for p in params)}
        wanted = values.get("type", "") if kind.lower() == "multipart/related" else kind.lower()
        if values.get("transfer-syntax") == _ANY or wanted == media_type:
            return True
    return False


def _frame_parts(archive: Archive, ref: InstanceRef, numbers: list[int], count: int, as_stored: bool,
                 part_type: str, boundary: str) -> Iterator[bytes]:  # fmt: skip
    from pydicom.encaps import get_frame
    from pydicom.pixels.utils import pixel_array

    compressed: bytes | None = None
    for number in numbers:
        yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        if as_stored:
            if compressed is None:
                compressed = archive.read_dataset(ref).PixelData
            yield get_frame(compressed, number - 1, number_of_frames=count)
        else:
            with archive.open_instance(ref) as stream:
                yield pixel_array(stream, index=number - 1, raw=True).tobytes()
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
