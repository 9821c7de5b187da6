"""The outbox per destination for the dashboard: pending, failed, the oldest pending; sent messages are history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from archive import Archive
from worklist.outbox import FAILED, OUTBOX, SENT, enqueue
from worklist.queues import queue_status


def test_queue_status_per_destination(archive: Archive) -> None:
    assert queue_status(archive.db) == []
    now = datetime.now(UTC)
    with archive.db.write() as conn:
        enqueue(conn, "his", "ORM", "A1", b"x", now=now - timedelta(hours=3))
        enqueue(conn, "his", "ORM", "A2", b"x", now=now - timedelta(minutes=5))
        failed = enqueue(conn, "his", "ORM", "A3", b"x", now=now - timedelta(days=2))
        sent = enqueue(conn, "emr", "ORU", "A4", b"x", now=now - timedelta(days=9))
        conn.execute(OUTBOX.update().where(OUTBOX.c.pk == failed).values(state=FAILED))
        conn.execute(OUTBOX.update().where(OUTBOX.c.pk == sent).values(state=SENT, sent_at=now))
        enqueue(conn, "dicom-sr", "SR", "A5", b"x", now=now - timedelta(minutes=1))
    status = {q.destination: q for q in queue_status(archive.db)}
    assert list(status) == ["dicom-sr", "his"]  # emr has only sent messages: nothing to show
    his = status["his"]
    assert (his.pending, his.failed) == (2, 1)
    assert his.oldest_pending is not None
    assert abs(his.oldest_pending - (now - timedelta(hours=3))) < timedelta(seconds=1)
    age = his.oldest_age_seconds(now)
    assert age is not None and 3 * 3600 - 1 <= age <= 3 * 3600 + 1
    assert status["dicom-sr"].failed == 0 and status["dicom-sr"].pending == 1
