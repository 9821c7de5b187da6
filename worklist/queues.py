"""The outbox at a glance, per destination: what waits, what failed, and since when.

For the administrator's dashboard (viewer/ui/admin.py); the messages
themselves are listed by worklist.outbox.Outbox.entries. Reads only the rows
that are not sent yet (the state column is indexed), never the sent history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from archive.db import Database
from worklist.outbox import FAILED, OUTBOX, PENDING


@dataclass(frozen=True)
class QueueStatus:
    """One destination's messages that have not gone out."""

    destination: str
    pending: int
    failed: int
    #: When the oldest pending message was written; None when nothing is pending.
    oldest_pending: datetime | None

    def oldest_age_seconds(self, now: datetime | None = None) -> float | None:
        if self.oldest_pending is None:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - self.oldest_pending).total_seconds())


def queue_status(db: Database) -> list[QueueStatus]:
    """Pending and failed messages per destination, destinations by name."""
    t = OUTBOX.c
    stmt = (select(t.destination, t.state, func.count(), func.min(t.created_at))
            .where(t.state.in_((PENDING, FAILED))).group_by(t.destination, t.state))  # fmt: skip
    found: dict[str, dict[str, tuple[int, datetime | None]]] = {}
    with db.read() as conn:
        rows: Any = conn.execute(stmt)
        for destination, state, count, oldest in rows:
            found.setdefault(str(destination), {})[str(state)] = (int(count), _utc(oldest))
    result = []
    for destination in sorted(found):
        states = found[destination]
        pending, oldest = states.get(PENDING, (0, None))
        result.append(QueueStatus(destination, pending, states.get(FAILED, (0, None))[0], oldest))
    return result


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
