"""The Archive: the one object every edge talks to."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from archive.accounts import Accounts
from archive.audit import AuditLog
from archive.db import Database
from archive.errors import ArchiveError, NotFound, StorageUnavailable
from archive.index_writer import StudyHook
from archive.ingest import Expected, IngestService, StoreResult
from archive.metrics import observe_ingest
from archive.models import Instance, Patient, Series, Study
from archive.origin import Origin
from archive.query import InstanceRef, Query, QueryService
from archive.registry import AERegistry
from storage import ObjectStore, StorageError, open_store


@dataclass(frozen=True)
class Statistics:
    patients: int
    studies: int
    series: int
    instances: int
    size_bytes: int


class Archive:
    """Ingest, query, retrieve and the AE registry over one index and one object store."""

    def __init__(self, db: Database, objects: ObjectStore) -> None:
        self.db = db
        self.objects = objects
        self.registry = AERegistry(db)
        self.audit = AuditLog(db)
        self.accounts = Accounts(db, self.audit)
        self._ingest = IngestService(db, objects)
        self._query = QueryService(db)

    @classmethod
    def open(
        cls,
        database_url: str,
        storage_url: str,
        reserve_bytes: int = 0,
        upgrade: bool = True,
        **store_options: Any,
    ) -> Archive:
        """Open the index (bringing its schema up to date unless `upgrade` is False) and the store.

        `store_options` go to storage.open_store (the S3 key pair, create_bucket).
        """
        objects = open_store(storage_url, reserve_bytes, **store_options)
        try:
            return cls(Database.open(database_url, upgrade), objects)
        except BaseException:
            _close_store(objects)
            raise

    def close(self) -> None:
        """Write what is still queued (audit events) and close the database."""
        self.audit.close()
        self.db.dispose()
        _close_store(self.objects)

    def ingest(self, stream: BinaryIO, origin: Origin, expected: Expected | None = None) -> StoreResult:
        """Store one DICOM object; see IngestService.ingest. Counted in archive.metrics."""
        started = time.perf_counter()
        try:
            result = self._ingest.ingest(stream, origin, expected)
        except ArchiveError:
            observe_ingest(origin.via, "refused", 0, 0.0)
            raise
        observe_ingest(origin.via, result.status.name.lower(), result.size, time.perf_counter() - started)
        return result

    def add_study_hook(self, hook: StudyHook) -> None:
        """Call `hook(connection, NewStudy)` inside the ingest transaction of every new study.

        How the worklist reconciles arriving studies with orders without the
        archive importing it. The hook runs in a savepoint: if it raises, its
        changes are undone and logged and the instance is stored all the same.
        Instances of studies already in the index never reach it.
        """
        self._ingest.study_hooks.append(hook)

    def find(self, query: Query) -> Iterator[Dataset]:
        """Matches for `query`, one dataset each with the requested keys."""
        return self._query.find(query)

    def find_json(self, query: Query) -> Iterator[dict[str, Any]]:
        """Matches for `query` as DICOM JSON objects (PS3.18 F.2), keys sorted."""
        return self._query.find_json(query)

    def count(self, query: Query) -> int:
        return self._query.count(query)

    def instances(self, query: Query) -> list[InstanceRef]:
        """The instances a retrieve of `query` covers, in study/series/instance order."""
        return self._query.instances(query)

    def open_instance(self, ref: InstanceRef) -> BinaryIO:
        """The stored Part 10 bytes of `ref`."""
        try:
            return self.objects.open(ref.storage_key)
        except FileNotFoundError:
            raise NotFound(f"the object of {ref.sop_instance_uid} is missing from storage") from None
        except (StorageError, OSError) as exc:
            raise StorageUnavailable(f"cannot read {ref.sop_instance_uid}: {exc}") from exc

    def read_dataset(self, ref: InstanceRef) -> Dataset:
        """The stored instance as a dataset whose elements are still raw.

        pydicom writes raw elements back byte for byte, so sending this over
        DIMSE in the stored transfer syntax reproduces the received dataset.
        """
        with self.open_instance(ref) as stream:
            return dcmread(stream)

    def statistics(self) -> Statistics:
        with self.db.read() as conn:
            patients = conn.execute(select(func.count()).select_from(Patient)).scalar_one()
            studies = conn.execute(select(func.count()).select_from(Study)).scalar_one()
            series = conn.execute(select(func.count()).select_from(Series)).scalar_one()
            instances, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(Instance.size_bytes), 0))
            ).one()
        return Statistics(patients, studies, series, int(instances), int(size))


__all__ = ["Archive", "Expected", "Origin", "Statistics"]


def _close_store(objects: ObjectStore) -> None:
    """Release the store's connections (the S3 adapter pools HTTP connections)."""
    close = getattr(objects, "close", None)
    if callable(close):
        close()
