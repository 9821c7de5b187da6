"""STOW-RS (PS3.18 10.5): new instances over HTTP, each stored the way a C-STORE is.

The request is ``multipart/related; type="application/dicom"``, one DICOM
Part 10 file per part (metadata plus bulk data, ``application/dicom+json`` or
``+xml`` parts, is not supported: 415). The body is read as it arrives, a
megabyte at a time, and never held whole: each part is spooled (in memory up to
8 MB, beyond that in an unnamed temporary file in the data directory) and handed
to ``archive.ingest`` as soon as the boundary after it has arrived. Memory stays
bounded for a 2 GB upload, and the disk holds one part at a time besides the
archive itself. Like the C-STOREs of one association, every part has its own
outcome: instances that arrived whole before a failure later in the request
(a part refused, a body cut off or over the size limit) stay stored, and
sending the request again finds them already stored.

The answer (PS3.18 10.5.3) is a DICOM JSON dataset, ``application/dicom+json``:

- stored, or already stored with the same bytes: an item of the Referenced SOP
  Sequence (0008,1199) with the instance's RetrieveURL;
- stored with a warning: the same item with WarningReason (0008,1196) 0xB000,
  the status a C-STORE gets in the same case. That is a conflicting resend (this
  SOP Instance UID is already stored with other content: the first copy stays
  the one indexed and retrieved, this one is kept aside, never lost) or an
  instance filed with the study or series already indexed under another
  patient or study. The reason is in a ``Warning: 299`` header too;
- refused: an item of the Failed SOP Sequence (0008,1198) with the archive
  error's FailureReason (0008,1197): 0xC000 for anything that is not a whole
  DICOM instance, 0xA700 for a full archive, 0x0110 for other failures, and
  0xA900 for an instance of another study than the one in the URL
  (``/studies/{study}``). The reason is in a ``Warning: 299`` header.

The status is 200 when every instance was stored without a warning, 202 when
some were refused or carry a warning, 409 when none was stored. Problems with
the request itself are JSON errors: 400 (no boundary, a malformed, truncated
or empty body), 406 (an Accept that excludes DICOM JSON), 408 (a client that
stops sending for a minute), 413 (over ``http.max_upload_mb``, refused from
Content-Length before the body is read, or as soon as a chunked body passes
the limit), 415 (not multipart/related of application/dicom).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import IO, BinaryIO

from flask import Blueprint, Response, current_app, g, request
from pydicom import dcmread
from werkzeug.datastructures import Headers
from werkzeug.exceptions import ClientDisconnected
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData, State

from archive import Archive, ArchiveError, Expected, InvalidInstance, Origin, StoreStatus
from archive.uids import uid_problem
from viewer.access import allow
from viewer.config import web_config
from viewer.urls import base_url, path_uid

log = logging.getLogger(__name__)

blueprint = Blueprint("stow", __name__)
blueprint.before_request(allow("store"))

MEDIA_TYPE = "application/dicom+json"

#: How much of the body is read at a time.
_READ_SIZE = 1 << 20
#: A part up to this size waits for ingest in memory; a bigger one in a temporary file.
_IN_MEMORY = 8 << 20
#: Longest preamble or part header block accepted (they are held in memory until complete).
_MAX_HEADER_BYTES = 64 << 10
#: A client that sends nothing for this long has gone away; its thread is freed.
_IDLE_SECONDS = 60
#: Warning headers at most, one per refused or warned instance.
_MAX_WARNING_HEADERS = 20

# FailureReason and WarningReason values (PS3.18 table 10.5.3-3, PS3.4 B.2.3).
_CANNOT_UNDERSTAND = 0xC000
_DOES_NOT_MATCH = 0xA900
_OUT_OF_RESOURCES = 0xA700
_PROCESSING_FAILURE = 0x0110
_COERCION = 0xB000


class MalformedRequest(ArchiveError):
    http_status = 400


class NotAcceptable(ArchiveError):
    http_status = 406


class RequestTimeout(ArchiveError):
    http_status = 408


class TooLarge(ArchiveError):
    http_status = 413


class UnsupportedMediaType(ArchiveError):
    http_status = 415


@blueprint.post("/studies")
def store() -> Response:
    """Store Instances (PS3.18 10.5.1): instances of any studies."""
    return _store(None)


@blueprint.post("/studies/<study>")
def store_in_study(study: str) -> Response:
    """Store Instances of one study: an instance of another study is refused with 0xA900."""
    return _store(path_uid(study, "study"))


@dataclass(frozen=True)
class _Outcome:
    """What became of one part."""

    number: int
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    #: FailureReason (0008,1197) when refused.
    failure: int | None = None
    #: WarningReason (0008,1196) when stored with a warning.
    warning: int | None = None
    #: Why it was refused, or what the warning is about.
    message: str = ""


def _store(study: str | None) -> Response:
    archive: Archive = current_app.config["ARCHIVE"]
    boundary = _boundary(request.headers.get("Content-Type", ""))
    if request.headers.get("Accept", "").strip() and not request.accept_mimetypes.best_match(
        [MEDIA_TYPE, "application/json"]
    ):
        raise NotAcceptable(
            f"STOW-RS answers in {MEDIA_TYPE} only (DICOM XML is not supported): "
            f"accept {MEDIA_TYPE} or application/json"
        )
    limit = web_config().max_upload_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"the request is {length} bytes; this archive takes at most {_mib(limit)} per "
                       "request (http.max_upload_mb): send the instances in several requests")  # fmt: skip
    origin = Origin(g.principal.name, request.remote_addr or "", "STOW", secrets.token_hex(4))
    expected = Expected(study_instance_uid=study) if study else None
    outcomes = _Receiver(archive, origin, expected, boundary, limit).run()
    return _answer(outcomes)


_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _boundary(content_type: str) -> str:
    """The boundary of a multipart/related body of application/dicom parts, or raise 415/400."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    parameters: dict[str, str] = {name.lower(): value.strip().removeprefix('"').removesuffix('"').replace('\\"', '"')
                  for name, value in _PARAMETER.findall(content_type)}  # fmt: skip
    part_type = parameters.get("type", "application/dicom").strip().lower()
    if part_type in ("application/dicom+json", "application/dicom+xml"):
        raise UnsupportedMediaType(
            f"STOW-RS of metadata and bulk data ({part_type}) is not supported: send DICOM Part 10 "
            'files as multipart/related; type="application/dicom"'
        )
    if media_type != "multipart/related" or part_type != "application/dicom":
        raise UnsupportedMediaType(
            f"cannot store {content_type[:120]!r}: send DICOM Part 10 files as "
            'multipart/related; type="application/dicom"; boundary=...'
        )
    boundary = parameters.get("boundary", "")
    if not boundary:
        raise MalformedRequest("the Content-Type has no boundary parameter: multipart/related needs one")
    if len(boundary) > 70 or not boundary.isascii() or not boundary.isprintable():
        raise MalformedRequest("the boundary must be 1 to 70 printable ASCII characters (RFC 2046)")
    return boundary


class _RelatedDecoder(MultipartDecoder):
    """werkzeug's streaming (sans-IO) multipart decoder, taught multipart/related.

    It is the one Flask parses forms with, and streams any multipart body, but
    it demands a Content-Disposition header in every part, which is a
    multipart/form-data rule (RFC 7578): the parts of multipart/related (RFC
    2387), the ones STOW-RS clients send, carry none. An empty one is supplied.
    """

    def _parse_headers(self, data: bytes | bytearray) -> Headers:
        if len(data) > _MAX_HEADER_BYTES:  # arrived in one read; slower ones are caught by _Receiver
            raise ValueError(f"more than {_MAX_HEADER_BYTES // 1024} KB in part headers")
        headers = super()._parse_headers(data)
        headers.setdefault("Content-Disposition", "attachment")
        return headers


class _Spool:
    """One part's bytes until ingest: in memory up to _IN_MEMORY, then in an unnamed file.

    ``archive.ingest`` needs a seekable stream (it checks the whole structure,
    then copies from where the dataset starts), so a part cannot be streamed
    straight into it. The file is made with TemporaryFile, which has no name
    on Linux: a crash leaves nothing behind. SpooledTemporaryFile would do
    the same, but ingest asks every stream for its fileno(), which makes it
    write even a 2 KB part to disk.
    """

    def __init__(self, directory: str | None) -> None:
        self._directory = directory
        self._file: IO[bytes] = BytesIO()
        self.size = 0
        #: Set when the part could not be spooled (no space left): the rest of it is dropped.
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            if isinstance(self._file, BytesIO) and self.size + len(data) > _IN_MEMORY:
                disk = tempfile.TemporaryFile(dir=self._directory)
                disk.write(self._file.getbuffer())
                self._file = disk
            self._file.write(data)
            self.size += len(data)
        except OSError as exc:
            self.error = exc
            self._file.close()

    def stream(self) -> BinaryIO:
        """The spooled bytes from the start (flushed: ingest reads the size off the file)."""
        self._file.flush()
        self._file.seek(0)
        return self._file  # type: ignore[return-value]

    def close(self) -> None:
        self._file.close()


def _spool_directory() -> str | None:
    """Where parts bigger than _IN_MEMORY wait: the spool folder, on the archive's disk.

    The default temporary directory is often a tmpfs, which would hold a 2 GB
    upload in memory after all. The files are unnamed, so a crash leaves nothing.
    """
    spool = web_config().spool_dir
    if spool is None:
        return None
    spool.mkdir(parents=True, exist_ok=True)
    return str(spool)


class _Receiver:
    """Reads one STOW-RS body and stores its parts as they complete."""

    def __init__(self, archive: Archive, origin: Origin, expected: Expected | None,
                 boundary: str, limit: int) -> None:  # fmt: skip
        self.archive = archive
        self.origin = origin
        self.expected = expected
        self.boundary = boundary
        self.limit = limit
        self.outcomes: list[_Outcome] = []
        self._decoder = _RelatedDecoder(boundary.encode("ascii"))
        self._directory = _spool_directory()
        self._part: tuple[str, _Spool] | None = None  # media type and bytes of the part being received
        self._received = 0

    def run(self) -> list[_Outcome]:
        try:
            with _idle_timeout(request.environ.get("gunicorn.socket")):
                self._receive()
        finally:
            if self._part is not None:
                self._part[1].close()  # cut off: never ingested
        if not self.outcomes:
            raise MalformedRequest("the multipart body has no parts: send one DICOM file per part")
        return self.outcomes

    def _receive(self) -> None:
        stream = request.stream
        # Reading stops at the closing delimiter: the epilogue is never needed,
        # and a client that announced more than it sends is not waited for.
        while self._decoder.state not in (State.EPILOGUE, State.COMPLETE):
            chunk = self._read(stream)
            if chunk:
                self._received += len(chunk)
                if self._received > self.limit:
                    raise TooLarge(f"the request body is over the limit of {_mib(self.limit)} per request "
                                   f"(http.max_upload_mb){self._so_far()}: send the instances in several "
                                   "requests")  # fmt: skip
                self._decoder.receive_data(chunk)
            else:
                self._ended_early()
            self._handle_events()
            if (self._decoder.state in (State.PREAMBLE, State.PART)
                    and len(self._decoder.buffer) > _MAX_HEADER_BYTES):  # fmt: skip
                where = "before the first boundary" if self._decoder.state is State.PREAMBLE else "in part headers"
                raise MalformedRequest(f"more than {_MAX_HEADER_BYTES // 1024} KB {where}: is the boundary "
                                       f"parameter the one the body uses?{self._so_far()}")  # fmt: skip

    def _read(self, stream: IO[bytes]) -> bytes:
        try:
            return stream.read(_READ_SIZE)
        except TimeoutError as exc:
            raise RequestTimeout(f"the client sent nothing for {_IDLE_SECONDS} s{self._so_far()}") from exc
        except (OSError, ClientDisconnected) as exc:
            # gunicorn raises OSError subclasses for a connection lost inside a
            # chunked body and for broken chunked encoding.
            raise MalformedRequest(f"the request body could not be read to its end (the client went away or "
                                   f"sent a broken chunked encoding){self._so_far()}") from exc  # fmt: skip

    def _ended_early(self) -> None:
        announced = request.content_length
        if announced is not None and self._received < announced:
            what = f"the body ended after {self._received} of the {announced} bytes announced"
        elif self._decoder.state is State.PREAMBLE:
            what = f"the body has no --{self.boundary} delimiter line: is the boundary parameter right?"
        else:
            what = f"the body ended before the closing delimiter --{self.boundary}--"
        raise MalformedRequest(what + self._so_far())

    def _handle_events(self) -> None:
        while True:
            try:
                event = self._decoder.next_event()
            except ValueError as exc:
                raise MalformedRequest(f"malformed multipart body: {exc}{self._so_far()}") from exc
            if isinstance(event, (NeedData, Epilogue)):
                return
            if isinstance(event, (Field, File)):
                media_type = event.headers.get("Content-Type", "application/dicom").split(";")[0].strip()
                self._part = (media_type, _Spool(self._directory))
            elif isinstance(event, Data) and self._part is not None:
                if self._part[0].lower() == "application/dicom":  # others are refused unread
                    self._part[1].write(event.data)
                if not event.more_data:
                    media_type, spool = self._part
                    self._part = None
                    self.outcomes.append(self._store(len(self.outcomes) + 1, media_type, spool))

    def _so_far(self) -> str:
        stored = sum(1 for o in self.outcomes if o.failure is None)
        if not stored:
            return ""
        return (f"; the {stored} instance(s) that arrived whole before that were stored, "
                "and sending them again is safe")  # fmt: skip

    def _store(self, number: int, media_type: str, spool: _Spool) -> _Outcome:
        """Ingest one complete part; every outcome ingest does not audit itself is audited here."""
        started = time.perf_counter()
        try:
            if media_type.lower() != "application/dicom":
                return self._refused(number, _CANNOT_UNDERSTAND, f"part {number} is {media_type[:60]!r}, "
                                     "not application/dicom")  # fmt: skip
            if spool.error is not None:
                return self._refused(number, _OUT_OF_RESOURCES,
                                     f"part {number} could not be received: {spool.error.strerror or spool.error}")
            stream = spool.stream()
            try:
                result = self.archive.ingest(stream, self.origin, self.expected)
            except ArchiveError as exc:
                return self._refused(number, exc.stow_reason, exc.message, stream,
                                     mismatch_possible=isinstance(exc, InvalidInstance))  # fmt: skip
            except Exception:
                log.exception("STOW %s from %s: part %d failed", self.origin.session, self.origin, number)
                return self._refused(number, _PROCESSING_FAILURE, "internal error; the server log has the details",
                                     stream)  # fmt: skip
        finally:
            spool.close()
        uid = result.sop_instance_uid
        if result.status is StoreStatus.ALREADY_STORED:
            self.archive.audit.record(self.origin, "STORE", "IMAGE", uid, "already stored",
                                      f"study {result.study_instance_uid}")  # fmt: skip
        elif result.status is StoreStatus.CONFLICT and not result.size:
            # Ingest audits a conflicting copy it keeps; this very copy was kept before.
            self.archive.audit.record(self.origin, "STORE", "IMAGE", uid, "conflict",
                                      "the same differing copy was set aside before")  # fmt: skip
        log.info("STOW %s from %s: %s %s, %d KB in %.0f ms", self.origin.session, self.origin, uid,
                 result.status.value, result.size // 1024, (time.perf_counter() - started) * 1000)  # fmt: skip
        warned = result.status is StoreStatus.CONFLICT or bool(result.warnings)
        return _Outcome(number, result.sop_class_uid, uid, result.study_instance_uid, result.series_instance_uid,
                        warning=_COERCION if warned else None, message=result.comment if warned else "")  # fmt: skip

    def _refused(self, number: int, reason: int, message: str, stream: BinaryIO | None = None,
                 mismatch_possible: bool = False) -> _Outcome:  # fmt: skip
        sop_class, sop_instance, study = _uids_in(stream) if stream is not None else ("", "", "")
        wanted = self.expected.study_instance_uid if self.expected else None
        if mismatch_possible and wanted and study and study != wanted:
            # PS3.18 10.5: an instance of another study than the target resource's.
            reason = _DOES_NOT_MATCH
        log.warning("STOW %s from %s: part %d (%s) refused (0x%04X): %s", self.origin.session, self.origin,
                    number, sop_instance or "no SOP Instance UID", reason, message)  # fmt: skip
        self.archive.audit.record(self.origin, "STORE", "IMAGE", sop_instance, f"refused 0x{reason:04X}",
                                  f"part {number}: {message}")  # fmt: skip
        return _Outcome(number, sop_class, sop_instance, study, failure=reason, message=message)


def _uids_in(stream: BinaryIO) -> tuple[str, str, str]:
    """SOP Class, SOP Instance and Study Instance UIDs of a refused part, where it has readable ones.

    Only read when ingest refused the part, for the Failed SOP Sequence item,
    whose UIDs the standard asks for whenever they are known.
    """
    try:
        stream.seek(0)
        header = dcmread(stream, stop_before_pixels=True, defer_size=1024,
                         specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])  # fmt: skip
        values = [str(header.get(k, "") or "").strip("\0 ") for k in ("SOPClassUID", "SOPInstanceUID",
                                                                        "StudyInstanceUID")]  # fmt: skip
    except Exception:
        return "", "", ""
    sop_class, sop_instance, study = (v if v and not uid_problem(v) else "" for v in values)
    return sop_class, sop_instance, study


@contextmanager
def _idle_timeout(sock: socket.socket | None) -> Iterator[None]:
    """Give up on a client that stops sending: gunicorn's gthread workers read
    request bodies from a blocking socket without any timeout of their own."""
    if not isinstance(sock, socket.socket):
        yield
        return
    previous = sock.gettimeout()
    sock.settimeout(_IDLE_SECONDS)
    try:
        yield
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass


def _answer(outcomes: list[_Outcome]) -> Response:
    """The Store Instances Response Module (PS3.18 table 10.5.3-2) and its status."""
    base = base_url()
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, object] = {}
    studies = {o.study_instance_uid for o in stored}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{studies.pop()}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {**_references(o), "00081197": {"vr": "US", "Value": [o.failure]}} for o in failed
        ]}  # fmt: skip
    if stored:
        items = []
        for o in stored:
            item = {**_references(o), "00081190": {"vr": "UR", "Value": [
                f"{base}/studies/{o.study_instance_uid}/series/{o.series_instance_uid}/instances/{o.sop_instance_uid}"
            ]}}  # fmt: skip
            if o.warning is not None:
                item["00081196"] = {"vr": "US", "Value": [o.warning]}
            items.append(item)
        body["00081199"] = {"vr": "SQ", "Value": items}
    warned = [o for o in outcomes if o.failure is not None or o.warning is not None]
    status = 409 if not stored else 202 if warned else 200
    # Exactly this media type: dicomweb-client compares the whole header value.
    response = Response(json.dumps(body), status=status, content_type=MEDIA_TYPE)
    for o in warned[:_MAX_WARNING_HEADERS]:
        response.headers.add("Warning", _warning(o))
    return response


def _references(outcome: _Outcome) -> dict[str, object]:
    def ui(value: str) -> dict[str, object]:
        return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}

    return {"00081150": ui(outcome.sop_class_uid), "00081155": ui(outcome.sop_instance_uid)}


def _warning(outcome: _Outcome) -> str:
    """A Warning header (RFC 9111 5.5, code 299) saying what happened to one part, in ASCII."""
    what = f"part {outcome.number}" + (f" ({outcome.sop_instance_uid})" if outcome.sop_instance_uid else "")
    code = outcome.failure if outcome.failure is not None else outcome.warning
    kind = "refused" if outcome.failure is not None else "warning"
    text = f"{what} {kind} 0x{code:04X}: {outcome.message}"[:400]
    text = text.encode("ascii", "replace").decode().replace("\\", "/").replace('"', "'")
    return f'299 minipacs "{text}"'


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"
