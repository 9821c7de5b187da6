"""Ingest: one received object in, one durable object and index row out.

The order follows Orthanc's ``StoreAfterTranscoding``: write the object
(durable when ``put`` returns), then index it in one transaction (durable at
commit), and undo the object if indexing fails. Success is returned only
after both, so an acknowledged instance survives a power cut.

Every object is stored as a Part 10 file whose dataset bytes are exactly the
ones received, behind a File Meta Information group we write ourselves
(``part10.file_meta_bytes``): the same dataset therefore always has the same
SHA-256, which is how a resend is recognised.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import BinaryIO

from pydicom.dataset import Dataset
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from archive import part10
from archive.attributes import IndexRecord, index_record, text
from archive.db import Database
from archive.errors import (
    ArchiveError,
    InvalidInstance,
    SOPClassMismatch,
    StorageFull,
    StorageUnavailable,
)
from archive.index_writer import (
    StoredInstance,
    StudyHook,
    add_conflict,
    add_instance,
    conflict_known,
    find_existing,
)
from archive.origin import Origin
from archive.uids import uid_problem
from storage import ObjectStore, StorageError, StorageFullError

log = logging.getLogger(__name__)


class StoreStatus(Enum):
    STORED = "stored"
    #: The same bytes were already stored: a success, and nothing was written.
    ALREADY_STORED = "already stored"
    #: A different object with this SOP Instance UID was stored first. It stays
    #: the indexed copy; this one is kept aside (duplicate_conflict) and reported.
    CONFLICT = "conflict: kept the first copy"


@dataclass(frozen=True)
class Expected:
    """What the protocol request announced the dataset to be (C-STORE command, STOW URL)."""

    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None


@dataclass(frozen=True)
class StoreResult:
    status: StoreStatus
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    size: int
    warnings: list[str] = field(default_factory=list)

    @property
    def comment(self) -> str:
        """A short text for the client when the result carries a warning."""
        parts = list(self.warnings)
        if self.status is StoreStatus.CONFLICT:
            parts.insert(0, "SOP Instance UID already stored with different content; "
                            "the first copy was kept and this one set aside")  # fmt: skip
        return "; ".join(parts)[:64 * 16]


class _Concat:
    """A read-only stream of `prefix` followed by `stream` from its current position."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        # Short reads are allowed, so the prefix is handed out on its own
        # rather than copied in front of a megabyte of pixel data.
        if self._prefix:
            if 0 <= size < len(self._prefix):
                data, self._prefix = self._prefix[:size], self._prefix[size:]
            else:
                data, self._prefix = self._prefix, b""
            return data
        return self._stream.read(size)


class IngestService:
    """Validates, stores and indexes received objects."""

    def __init__(self, db: Database, objects: ObjectStore) -> None:
        self._db = db
        self._objects = objects
        #: Run inside the write transaction of an instance that creates a study (Archive.add_study_hook).
        self.study_hooks: list[StudyHook] = []

    def ingest(self, stream: BinaryIO, origin: Origin, expected: Expected | None = None) -> StoreResult:
        """Store the DICOM object in the seekable `stream` (Part 10 or a bare dataset).

        Raises an ArchiveError subclass when the object is refused; nothing is
        left behind in that case.
        """
        started = time.perf_counter()
        parsed = part10.parse(stream)
        header = parsed.header
        uids = _checked_uids(header, expected)
        try:
            record = index_record(header)
        except Exception as exc:
            raise InvalidInstance(f"cannot read the instance's attributes: {exc}") from exc
        meta = part10.file_meta_bytes(uids.sop_class, uids.sop_instance, parsed.transfer_syntax)

        def result(status: StoreStatus, size: int, warnings: list[str] | None = None) -> StoreResult:
            return StoreResult(status, uids.sop_class, uids.sop_instance, uids.study, uids.series,
                               str(parsed.transfer_syntax), size, warnings or [])  # fmt: skip

        # The object is written before the index is consulted: a resend costs
        # one wasted write, a new instance (the common case) one read less.
        stored = self._put(uids, parsed, meta, stream)
        now = datetime.now(UTC)
        try:
            status, keep, warnings = self._index(uids, record, stored, origin, now)
        except BaseException as exc:
            self._discard(stored.storage_key)
            if isinstance(exc, (SQLAlchemyError, OSError)):
                raise _index_error(exc) from exc
            raise
        if not keep:
            self._discard(stored.storage_key)
        if status is StoreStatus.CONFLICT:
            log.warning("%s from %s differs from the stored copy; kept the first, %s",
                        uids.sop_instance, origin,
                        f"set this one aside as {stored.storage_key}" if keep
                        else "this same copy was set aside before")  # fmt: skip
        if status is not StoreStatus.STORED:
            return result(status, stored.size if keep else 0)
        for warning in warnings:
            log.warning("%s from %s: %s", uids.sop_instance, origin, warning)
        log.debug("indexed %s in %.1f ms", uids.sop_instance, (time.perf_counter() - started) * 1000)
        return result(StoreStatus.STORED, stored.size, warnings)

    def _index(self, uids: _Uids, record: IndexRecord, stored: StoredInstance, origin: Origin,
               now: datetime) -> tuple[StoreStatus, bool, list[str]]:  # fmt: skip
        """Index the stored object in one transaction: (status, keep the object?, warnings).

        On PostgreSQL several writers run at once: two that both see no row
        for a new patient, study, series or SOP Instance both insert it, and
        the unique constraint refuses the later one. Its transaction is then
        run again, now finding the winner's rows (READ COMMITTED). SQLite
        serialises writers (Database.write), so the race cannot happen there.
        """
        for attempt in range(1, _RACE_RETRIES + 1):
            try:
                return self._index_once(uids, record, stored, origin, now)
            except IntegrityError as exc:
                if self._db.is_sqlite or not _lost_insert_race(exc) or attempt == _RACE_RETRIES:
                    raise
                log.info("%s: another writer created the same row first; indexing again (%d)",
                         uids.sop_instance, attempt)  # fmt: skip
        raise AssertionError("unreachable")

    def _index_once(self, uids: _Uids, record: IndexRecord, stored: StoredInstance, origin: Origin,
                    now: datetime) -> tuple[StoreStatus, bool, list[str]]:  # fmt: skip
        warnings: list[str] = []
        keep = True  # does the object just written stay?
        with self._db.write() as conn:
            existing = find_existing(conn, uids.sop_instance)
            if existing is None:
                status = StoreStatus.STORED
                warnings = add_instance(conn, record, stored, origin, now, self.study_hooks)
            elif existing.sha256 == stored.sha256:
                status, keep = StoreStatus.ALREADY_STORED, False
            else:
                status = StoreStatus.CONFLICT
                # The same differing copy resent must not fill the disk: keep it once.
                keep = not conflict_known(conn, uids.sop_instance, stored.sha256)
                if keep:
                    add_conflict(conn, uids.sop_instance, stored, origin, now)
        return status, keep, warnings

    def _put(self, uids: _Uids, parsed: part10.ParsedObject, meta: bytes, stream: BinaryIO) -> StoredInstance:
        key = f"{uids.study}/{uids.series}/{uids.sop_instance}.{secrets.token_hex(4)}.dcm"
        stream.seek(parsed.dataset_offset)
        try:
            put = self._objects.put(key, _Concat(meta, stream))
        except StorageFullError as exc:
            raise StorageFull(f"the archive is full: {exc}") from exc
        except StorageError as exc:
            raise StorageUnavailable(f"the object store failed: {exc}") from exc
        return StoredInstance(put.key, put.size, put.sha256, str(parsed.transfer_syntax))

    def _discard(self, key: str) -> None:
        try:
            self._objects.delete(key)
        except Exception:
            log.exception("could not remove the unindexed object %s; fsck will report it", key)


@dataclass(frozen=True)
class _Uids:
    sop_class: str
    sop_instance: str
    study: str
    series: str


def _checked_uids(header: Dataset, expected: Expected | None) -> _Uids:
    values = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = text(header, keyword)
        problem = uid_problem(value)
        if problem:
            raise InvalidInstance(f"{keyword} {problem}")
        values[keyword] = value
    uids = _Uids(values["SOPClassUID"], values["SOPInstanceUID"],
                 values["StudyInstanceUID"], values["SeriesInstanceUID"])  # fmt: skip
    if expected:
        if expected.sop_class_uid and expected.sop_class_uid != uids.sop_class:
            raise SOPClassMismatch(
                f"the dataset's SOP Class UID {uids.sop_class} is not the announced "
                f"{expected.sop_class_uid}"
            )
        if expected.sop_instance_uid and expected.sop_instance_uid != uids.sop_instance:
            raise SOPClassMismatch(
                f"the dataset's SOP Instance UID {uids.sop_instance} is not the announced "
                f"{expected.sop_instance_uid}"
            )
        if expected.study_instance_uid and expected.study_instance_uid != uids.study:
            raise InvalidInstance(
                f"the instance belongs to study {uids.study}, not {expected.study_instance_uid}"
            )
    return uids


#: How often an ingest that lost an insert race is run again (each retry finds
#: at least one more row, and an instance creates at most four).
_RACE_RETRIES = 5


def _lost_insert_race(exc: IntegrityError) -> bool:
    """True for a unique violation (SQLSTATE 23505): another writer inserted the same key first."""
    return getattr(exc.orig, "sqlstate", None) == "23505"


def _index_error(exc: BaseException) -> ArchiveError:
    text_ = str(exc).lower()
    if "full" in text_ or "no space" in text_:
        return StorageFull("the index database is full: no space left on its disk")
    if isinstance(exc, IntegrityError):
        return StorageUnavailable("the index refused the instance (constraint violated)")
    if isinstance(exc, OperationalError):
        return StorageUnavailable("the index database is unavailable or busy")
    return StorageUnavailable(f"the index failed: {type(exc).__name__}")
