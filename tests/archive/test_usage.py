"""The administrator's figures: the days-until-full projection, arrivals per day, senders and their last-seen times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from archive import Archive, Origin
from archive.models import Instance, Series, Study
from archive.usage import DAY, capacity, daily_bytes, first_instance_since, history_days, project, senders, storage
from storage import FilesystemStore
from tests.conftest import CT_FILES, DX_FILE, US_FILES, both_index_backends

# The queries must work the same on SQLite and PostgreSQL.
index_backend = both_index_backends

GB = 10**9
NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


# --- the projection maths -----------------------------------------------------------------------


def test_no_data_gives_no_projection() -> None:
    assert not project([], 500 * GB, 0).enough_data
    empty = project([0] * 30, 500 * GB, 30)
    assert empty.bytes_per_day is None and empty.days_until_full is None and not empty.enough_data


def test_too_little_history_gives_no_projection() -> None:
    young = project([0] * 28 + [8 * GB, 9 * GB], 500 * GB, 2)
    assert not young.enough_data and young.days_of_data == 2
    assert project([0] * 27 + [8 * GB] * 3, 500 * GB, 3).enough_data


def test_steady_growth() -> None:
    steady = project([10 * GB] * 30, 300 * GB, 400)
    assert steady.bytes_per_day == pytest.approx(10 * GB)
    assert steady.days_until_full == pytest.approx(30)
    assert steady.days_of_data == 30  # a long history is still a 30-day window


def test_a_young_archive_is_averaged_over_the_days_it_existed() -> None:
    # Ten days old, 6 GB a day: the twenty empty days before the install do not dilute the rate.
    young = project([0] * 20 + [6 * GB] * 10, 60 * GB, 10)
    assert young.bytes_per_day == pytest.approx(6 * GB) and young.days_until_full == pytest.approx(10)


def test_quiet_days_in_the_window_lower_the_rate() -> None:
    weekdays = project(([10 * GB] * 5 + [0, 0]) * 4 + [10 * GB, 10 * GB], 1000 * GB, 365)
    assert weekdays.bytes_per_day == pytest.approx(220 * GB / 30)


def test_disk_almost_full() -> None:
    almost = project([10 * GB] * 30, 5 * GB, 100)
    assert almost.days_until_full == pytest.approx(0.5)
    full = project([10 * GB] * 30, 0, 100)
    assert full.days_until_full == 0
    assert project([10 * GB] * 30, -1, 100).days_until_full == 0  # below the reserve counts as full


def test_unknown_capacity_gives_a_rate_but_no_date() -> None:
    s3 = project([10 * GB] * 30, None, 100)
    assert s3.bytes_per_day == pytest.approx(10 * GB) and s3.days_until_full is None


# --- figures from the index -----------------------------------------------------------------------


def store(archive: Archive, files: list, calling: str, at: datetime) -> None:  # type: ignore[type-arg]
    """Store `files` as if `calling` had sent them at `at`."""
    for path in files:
        with path.open("rb") as f:
            result = archive.ingest(f, Origin(calling, "10.0.0.5", "DIMSE"))
        with archive.db.write() as conn:
            conn.execute(update(Instance).where(Instance.sop_instance_uid == result.sop_instance_uid)
                         .values(received_at=at))  # fmt: skip
            study = result.study_instance_uid
            conn.execute(update(Study).where(Study.study_instance_uid == study).values(created_at=at, updated_at=at))


def test_daily_bytes_and_history_from_the_index(archive: Archive) -> None:
    store(archive, US_FILES[:1], "US_ROOM3", NOW - timedelta(days=45, hours=3))  # before the window
    store(archive, CT_FILES[:2], "CT_ROOM1", NOW - timedelta(days=3, hours=1))
    store(archive, [DX_FILE], "DX_ROOM2", NOW - timedelta(hours=2))
    with archive.db.read() as conn:
        daily = daily_bytes(conn, NOW)
        age = history_days(conn, NOW)
    with archive.db.read() as conn:
        sizes = dict(conn.execute(select(Instance.calling_ae, Study.size_bytes)
                                  .join(Series, Series.pk == Instance.series_pk)
                                  .join(Study, Study.pk == Series.study_pk)).all())  # fmt: skip
    assert len(daily) == 30 and [i for i, b in enumerate(daily) if b] == [26, 29]  # 3 days 1 h ago, 2 h ago
    assert daily[26] == sizes["CT_ROOM1"] and daily[29] == sizes["DX_ROOM2"]  # the US study is before the window
    assert age == 46  # the first study (US) came 45 days and some hours ago


def test_first_instance_since_bisects_the_key(archive: Archive) -> None:
    with archive.db.read() as conn:
        assert first_instance_since(conn, NOW) is None  # empty
    moments = [NOW - timedelta(hours=h) for h in (50, 40, 30, 20, 10, 5)]
    for path, at in zip(CT_FILES[:6], moments, strict=True):
        store(archive, [path], "CT_ROOM1", at)
    with archive.db.read() as conn:
        keys = list(conn.execute(select(Instance.pk).order_by(Instance.pk)).scalars())
        assert first_instance_since(conn, NOW - DAY) == keys[3]  # the 20 h one
        assert first_instance_since(conn, NOW - timedelta(hours=100)) == keys[0]
        assert first_instance_since(conn, NOW - timedelta(hours=10)) == keys[4]
        assert first_instance_since(conn, NOW - timedelta(hours=1)) is None


def test_senders_last_seen_and_the_last_day(archive: Archive) -> None:
    store(archive, CT_FILES[:3], "CT_ROOM1", NOW - timedelta(hours=1))
    store(archive, [DX_FILE], "DX_ROOM2", NOW - timedelta(days=3))
    store(archive, US_FILES[:1], "bs.lan", NOW - timedelta(hours=2))  # a person's STOW upload
    archive.registry.add("WS_READING", "127.0.0.1", 11113, "Reading room workstation")
    archive.audit.flush()
    found = {s.ae_title: s for s in senders(archive, NOW, also=["US_ROOM3"], people=["bs.lan"])}
    assert set(found) == {"CT_ROOM1", "DX_ROOM2", "WS_READING", "US_ROOM3"}
    ct = found["CT_ROOM1"]
    assert ct.instances_24h == 3 and ct.last_store == NOW - timedelta(hours=1) and not ct.registered
    assert ct.last_seen is not None and ct.last_seen >= ct.last_store  # the audit's STORE rows are "now"
    dx = found["DX_ROOM2"]
    assert dx.instances_24h == 0 and dx.last_store is None and dx.last_seen is not None  # seen through the audit
    assert found["US_ROOM3"].last_seen is None and found["US_ROOM3"].instances_24h == 0
    assert found["WS_READING"].registered and found["WS_READING"].description == "Reading room workstation"
    archive.registry.seen("WS_READING")
    assert senders(archive, NOW)[-1].last_seen is not None


def test_storage_report(archive: Archive) -> None:
    store(archive, CT_FILES[:2], "CT_ROOM1", NOW - timedelta(days=1, hours=1))
    report = storage(archive, NOW)
    stats = archive.statistics()
    assert (report.patients, report.studies, report.instances, report.used_bytes) == (
        stats.patients, stats.studies, stats.instances, stats.size_bytes)  # the studies' totals agree
    assert report.instances == 2 and report.studies == 1 and report.used_bytes > 0
    if isinstance(archive.objects, FilesystemStore):
        assert report.capacity is not None and 0 < report.capacity.usable_bytes <= report.capacity.total_bytes
    else:  # a bucket: nothing to ask how much room is left
        assert report.capacity is None and report.projection.days_until_full is None
    assert not report.projection.enough_data  # two days of history


def test_capacity_leaves_out_the_reserve(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plain = capacity(FilesystemStore(tmp_path / "a"))
    reserved = capacity(FilesystemStore(tmp_path / "b", reserve_bytes=10**6))
    assert plain is not None and reserved is not None
    assert reserved.reserve_bytes == 10**6
    assert abs((plain.usable_bytes - reserved.usable_bytes) - 10**6) < 10**6  # the disk may move a little meanwhile
    huge = capacity(FilesystemStore(tmp_path / "c", reserve_bytes=10**18))
    assert huge is not None and huge.usable_bytes == 0 and huge.used_fraction == 1.0

    class Elsewhere:
        pass

    assert capacity(Elsewhere()) is None  # type: ignore[arg-type]
