"""The audit trail: every read or change of patient data, by whom, from where."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Connection, Table, insert

from archive.db import Database
from archive.models import AuditEvent
from archive.origin import Origin

log = logging.getLogger(__name__)

# Declarative models type __table__ as a FromClause; it is a Table.
_AUDIT = cast(Table, AuditEvent.__table__)


def audit_row(
    origin: Origin, action: str, level: str, uid: str, outcome: str, detail: str = ""
) -> dict[str, object]:
    """One audit row, for callers that insert it inside their own transaction."""
    return {
        "at": datetime.now(UTC),
        "actor": origin.actor,
        "address": origin.address,
        "action": action,
        "level": level,
        "uid": uid,
        "outcome": outcome,
        "detail": detail[:2000],
    }


class AuditLog:
    """Writes audit events in their own short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(
        self, origin: Origin, action: str, level: str, uid: str, outcome: str, detail: str = ""
    ) -> None:
        """Record one event. An audit failure is logged, never raised into the caller's answer."""
        try:
            with self._db.write() as conn:
                self.record_in(conn, origin, action, level, uid, outcome, detail)
        except Exception:
            log.exception("could not write audit event %s %s by %s", action, uid, origin)

    @staticmethod
    def record_in(
        conn: Connection, origin: Origin, action: str, level: str, uid: str, outcome: str,
        detail: str = "",
    ) -> None:
        conn.execute(insert(_AUDIT), [audit_row(origin, action, level, uid, outcome, detail)])
