"""What the administrator watches: disk space and when it runs out, and which DICOM senders are alive.

Storage: the bytes of the studies first received in each of the last 30 days
(the study's size as the index holds it now, so images added later to a study
count on the day it arrived), their average, and the days until the space the
object store may still fill (its filesystem's free space less the reserve it
keeps, ``storage.reserve_bytes``) is used up at that rate. An S3 store has no
"free space" to ask for: its capacity is unknown and no projection is made.

Senders: each calling AE title that sent images recently or is known (the AE
registry, or titles the caller names, e.g. the device registry), when it last
did anything we audited (a store, a query, an MPPS) or associated (registered
AEs), and how many instances it sent in the last 24 hours.

Everything here reads the index through its indexes or a bounded range: the
dashboard must stay fast on an archive of millions of instances. The instance
table has no index on its arrival time, but its primary key grows with it, so
the first instance of the last day is found by bisecting the key.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, func, select

from archive.models import AuditEvent, Instance, Patient, Series, Study
from archive.registry import RemoteAE
from storage import FilesystemStore, ObjectStore

if TYPE_CHECKING:
    from archive.service import Archive

DAY = timedelta(days=1)
#: How many days of arrivals the average looks at.
WINDOW_DAYS = 30
#: Fewer days of history than this give no projection (a new install's first study is no trend).
MIN_DAYS = 3

_AUDIT = cast(Table, AuditEvent.__table__)
_INSTANCE = cast(Table, Instance.__table__)


@dataclass(frozen=True)
class Capacity:
    """The object store's filesystem: its size and what new objects may still use."""

    total_bytes: int
    #: Free space less the reserve the store keeps (it refuses new objects below it).
    usable_bytes: int
    reserve_bytes: int

    @property
    def used_fraction(self) -> float:
        return 0.0 if self.total_bytes <= 0 else min(1.0, max(0.0, 1 - self.usable_bytes / self.total_bytes))


@dataclass(frozen=True)
class Projection:
    """The average growth and when the space runs out at that rate."""

    #: Days of history the average covers (at most WINDOW_DAYS).
    days_of_data: int
    #: Average bytes received per day; None when there is not enough history yet.
    bytes_per_day: float | None
    #: Days until the usable space is used up; None when unknown (no capacity figure, no growth, too little data).
    days_until_full: float | None

    @property
    def enough_data(self) -> bool:
        return self.bytes_per_day is not None


@dataclass(frozen=True)
class StorageReport:
    patients: int
    studies: int
    instances: int
    #: Bytes of every stored instance, as the index counts them.
    used_bytes: int
    #: None for a store whose capacity cannot be asked (S3).
    capacity: Capacity | None
    #: Bytes received on each of the last WINDOW_DAYS days, oldest first; the last is the 24 h before `at`.
    daily_bytes: list[int]
    projection: Projection
    at: datetime


@dataclass(frozen=True)
class Sender:
    """A calling AE title as the administrator sees it."""

    ae_title: str
    #: The last audited request (store, query, MPPS...) or association (registered AEs); None if never.
    last_seen: datetime | None
    #: The last instance it sent within the last 24 hours, else None.
    last_store: datetime | None
    instances_24h: int
    #: Known to the AE registry (a C-MOVE destination or an allowed caller).
    registered: bool
    description: str = ""


def project(daily_bytes: Sequence[int], usable_bytes: int | None, days_of_history: int,
            min_days: int = MIN_DAYS) -> Projection:  # fmt: skip
    """The average of the last `days_of_history` days (at most the window) and the days until full.

    `daily_bytes` are the window's days, oldest first. An archive younger than
    the window is averaged over the days it existed, so a new install is not
    diluted by empty days before it was set up; one younger than `min_days`
    (or that received nothing) gives no projection. Growth of zero never fills
    the disk (None); no usable space left gives 0.
    """
    days = max(0, min(int(days_of_history), len(daily_bytes)))
    recent = daily_bytes[len(daily_bytes) - days:] if days else []
    total = sum(max(0, b) for b in recent)
    if days < min_days or total <= 0:
        return Projection(days, None, None)
    rate = total / days
    if usable_bytes is None:
        return Projection(days, rate, None)
    return Projection(days, rate, max(0.0, usable_bytes) / rate)


def capacity(objects: ObjectStore) -> Capacity | None:
    """The filesystem store's size and usable space; None for stores that have no such figure (S3)."""
    if not isinstance(objects, FilesystemStore):
        return None
    disk = shutil.disk_usage(objects.root)
    reserve = max(0, objects.reserve_bytes)
    return Capacity(disk.total, max(0, disk.free - reserve), reserve)


def daily_bytes(conn: Connection, now: datetime, days: int = WINDOW_DAYS) -> list[int]:
    """Bytes of the studies first received in each 24 h period before `now`, oldest first.

    A study received in the window was updated in it too, so the indexed
    updated_at narrows the rows read to the window's studies (plus older ones
    changed since).
    """
    start = now - days * DAY
    rows = conn.execute(select(Study.created_at, Study.size_bytes).where(Study.updated_at >= start))
    totals = [0] * days
    for created, size in rows:
        moment = _utc(created)
        if start <= moment < now:
            totals[min(days - 1, int((moment - start) / DAY))] += int(size or 0)
    return totals


def history_days(conn: Connection, now: datetime) -> int:
    """Whole days since the first study still in the index arrived (0 for an empty archive)."""
    first = conn.execute(select(Study.created_at).order_by(Study.pk).limit(1)).scalar_one_or_none()
    if first is None:
        return 0
    return max(0, math.ceil((now - _utc(first)) / DAY))


def storage(archive: Archive, now: datetime | None = None) -> StorageReport:
    """Counts, the space left and the projection of the days until it runs out."""
    now = now or datetime.now(UTC)
    room = capacity(archive.objects)
    with archive.db.read() as conn:
        patients = int(conn.execute(select(func.count()).select_from(Patient)).scalar_one())
        # The studies' running totals (the index writer keeps them with each instance): the
        # study table is a few percent of the instance table, which a sum would read whole.
        totals: Any = conn.execute(select(func.count(), func.coalesce(func.sum(Study.num_instances), 0),
                                          func.coalesce(func.sum(Study.size_bytes), 0))).one()  # fmt: skip
        daily = daily_bytes(conn, now)
        age = history_days(conn, now)
    studies, instances, used = (int(value) for value in totals)
    projection = project(daily, room.usable_bytes if room else None, age)
    return StorageReport(patients, studies, instances, used, room, daily, projection, now)


def first_instance_since(conn: Connection, since: datetime) -> int | None:
    """The primary key of the first instance received at or after `since`, None when none was.

    Bisects the primary key (it grows with the arrival time; concurrent
    arrivals may differ by the length of one store, which does not matter
    here): about 2·log2(n) indexed look-ups instead of a scan.
    """
    bounds: Any = conn.execute(select(func.min(_INSTANCE.c.pk), func.max(_INSTANCE.c.pk))).one()
    low, high = bounds
    if low is None:
        return None

    def at_or_after(key: int) -> tuple[int, datetime]:
        row = conn.execute(select(_INSTANCE.c.pk, _INSTANCE.c.received_at).where(_INSTANCE.c.pk >= key)
                           .order_by(_INSTANCE.c.pk).limit(1)).one()  # fmt: skip
        return int(row.pk), _utc(row.received_at)

    lo, hi = int(low), int(high)
    while lo < hi:
        key, received = at_or_after((lo + hi) // 2)
        if received >= since:
            hi = key
        else:
            lo = key + 1
    key, received = at_or_after(lo)
    return key if received >= since else None


def senders(archive: Archive, now: datetime | None = None, also: Iterable[str] = (),
            people: Iterable[str] = ()) -> list[Sender]:  # fmt: skip
    """Calling AE titles that sent images in the last WINDOW_DAYS days, are registered, or are in `also`.

    `people` are names that are not modalities (user and token names: STOW
    and imports record the person as the sender); they are left out unless
    registered or in `also`. Sorted by AE title.
    """
    now = now or datetime.now(UTC)
    day_ago = now - DAY
    registered = {ae.ae_title: ae for ae in archive.registry.list()}
    named = {title.strip() for title in also if title.strip()}
    with archive.db.read() as conn:
        recent: dict[str, tuple[int, datetime]] = {}
        first = first_instance_since(conn, day_ago)
        if first is not None:
            rows = conn.execute(
                select(_INSTANCE.c.calling_ae, func.count(), func.max(_INSTANCE.c.received_at))
                .where(_INSTANCE.c.pk >= first, _INSTANCE.c.received_at >= day_ago)
                .group_by(_INSTANCE.c.calling_ae)
            )  # fmt: skip
            recent = {str(ae): (int(count), _utc(last)) for ae, count, last in cast(Any, rows)}
        # One instance per series of the window's studies: who sent each (indexed look-ups only).
        first_sender = (select(Instance.calling_ae).where(Instance.series_pk == Series.pk)
                        .order_by(Instance.pk).limit(1).scalar_subquery())  # fmt: skip
        window = select(Study.pk).where(Study.updated_at >= now - WINDOW_DAYS * DAY)
        found: Any = conn.execute(select(first_sender).where(Series.study_pk.in_(window)).distinct()).scalars()
        earlier = {str(sender) for sender in found if sender}
        skip = set(people) - named - set(registered)
        titles = sorted(({*recent, *earlier} - skip) | named | set(registered))
        result = []
        for title in titles:
            count, last_store = recent.get(title, (0, None))
            audited = conn.execute(select(_AUDIT.c.at).where(_AUDIT.c.actor == title)
                                   .order_by(_AUDIT.c.pk.desc()).limit(1)).scalar_one_or_none()  # fmt: skip
            ae: RemoteAE | None = registered.get(title)
            seen = [m for m in (_utc(audited) if audited else None, last_store, ae.last_seen_at if ae else None) if m]
            result.append(Sender(title, max(seen) if seen else None, last_store, count, ae is not None,
                                 ae.description if ae else ""))  # fmt: skip
    return result


def _utc(moment: datetime) -> datetime:
    # SQLite hands DateTime(timezone=True) back without its zone; the value is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = ["Capacity", "Projection", "Sender", "StorageReport", "capacity", "daily_bytes", "first_instance_since",
           "project", "senders", "storage"]  # fmt: skip
