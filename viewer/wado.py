"""WADO-RS retrieve (PS3.18 10.4): studies, series and instances as DICOM files.

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

import secrets
from collections.abc import Iterator
from io import BytesIO

from flask import Blueprint, Response, current_app, g, request
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID

from archive import Archive, InstanceRef, NotFound, Origin, query_from_identifier, require_unique_key
from archive.errors import ArchiveError
from viewer.qido import path_uid

blueprint = Blueprint("wado", __name__)

_CHUNK = 1 << 20
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


def _retrieve(level: str, **keys: str) -> Response:
    archive: Archive = current_app.config["ARCHIVE"]
    wanted = accepted_transfer_syntax(request.headers.get("Accept", ""))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    query = query_from_identifier(identifier, patient_root=False)
    require_unique_key(query)
    refs = archive.instances(query)
    if not refs:
        raise NotFound(f"no {level.lower().replace('image', 'instance')} {list(keys.values())[-1]} in the archive")
    for ref in refs:
        if wanted != _ANY and ref.transfer_syntax_uid != wanted and not _convertible(ref, wanted):
            raise NotAcceptable(
                f"{ref.sop_instance_uid} is stored as {UID(ref.transfer_syntax_uid).name} and cannot be "
                f"sent as {UID(wanted).name}: ask with transfer-syntax=* to get it as stored"
            )
    principal = g.principal
    archive.audit.record(Origin(principal.name, request.remote_addr or "", "WADO"), "RETRIEVE", level,
                         list(keys.values())[-1], f"{len(refs)} instances")  # fmt: skip
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


def _convertible(ref: InstanceRef, wanted: str) -> bool:
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
            yield _converted(archive, ref)
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _converted(archive: Archive, ref: InstanceRef) -> bytes:
    """`ref` in Explicit VR Little Endian: decompressed (lossless, same UID) or re-encoded."""
    ds = archive.read_dataset(ref)
    if UID(ref.transfer_syntax_uid).is_compressed:
        ds.decompress(generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()
