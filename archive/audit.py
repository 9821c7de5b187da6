"""The audit trail: every read or change of patient data, by whom, from where."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, insert, or_, select, union_all
from sqlalchemy.exc import OperationalError

from archive.db import Database
from archive.models import AuditEvent, Instance, Patient, Series, Study
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
    """Writes audit events from a background thread, in batches.

    A query or retrieve must not wait for an fsynced commit of its own audit
    row (about 5 ms each, more than the query); events are queued and a writer
    thread commits whatever has accumulated in one transaction. `flush` waits
    for everything queued so far; `close` flushes and stops the thread. Events
    still queued when the process is killed outright are lost; stores are not
    affected, their audit row is written in the same transaction as the index.
    """

    _BATCH = 500

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: queue.SimpleQueue[dict[str, object] | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def record(
        self, origin: Origin, action: str, level: str, uid: str, outcome: str, detail: str = ""
    ) -> None:
        """Queue one event. Never raises into the caller's answer."""
        self._queue.put(audit_row(origin, action, level, uid, outcome, detail))
        self._ensure_thread()

    def flush(self, timeout: float = 30) -> None:
        """Wait until every event queued before this call is committed."""
        done = threading.Event()
        self._queue.put(done)
        self._ensure_thread()
        done.wait(timeout)

    def close(self) -> None:
        """Flush and stop the writer thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[dict[str, object]] = []
            waiting: list[threading.Event] = []
            item = self._queue.get()
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiting.append(item)
                else:
                    batch.append(item)
                if stop or len(batch) >= self._BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for event in waiting:
                event.set()

    def _write(self, batch: list[dict[str, object]]) -> None:
        # A database restarting (PostgreSQL failover, a restart during an
        # upgrade) is waited out for up to a minute rather than losing events.
        delay = 0.5
        for _ in range(8):
            try:
                with self._db.write() as conn:
                    conn.execute(insert(_AUDIT), batch)
                return
            except OperationalError as exc:
                log.warning("audit: the index database is unavailable (%s); retrying %d events in %.0f s",
                            str(exc.orig or exc).splitlines()[0], len(batch), delay)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 15)
            except Exception:
                log.exception("could not write %d audit events (first: %s %s by %s)", len(batch),
                              batch[0]["action"], batch[0]["uid"], batch[0]["actor"])  # fmt: skip
                return
        log.error("could not write %d audit events (first: %s %s by %s)", len(batch),
                  batch[0]["action"], batch[0]["uid"], batch[0]["actor"])  # fmt: skip


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    address: str
    action: str
    level: str
    uid: str
    outcome: str
    detail: str


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search(db: Database, *, actor: str | None = None, action: str | None = None, uid: str | None = None,
           patient: str | None = None, contains: str | None = None, since: datetime | None = None,
           until: datetime | None = None, limit: int = 100) -> list[AuditRecord]:  # fmt: skip
    """Audit events, newest first: who looked at what, for the administrator.

    `contains` looks in the UID and the detail (which holds, for a query,
    the keys and values asked, e.g. ``PatientID=BN26001001``). `patient`
    finds what touched one patient's data: events on any of their studies,
    series or instances as the index holds them now, and queries that asked
    for their Patient ID.
    """
    t = _AUDIT.c
    stmt = select(t.at, t.actor, t.address, t.action, t.level, t.uid, t.outcome, t.detail)
    if patient:
        studies = select(Study.pk).join(Patient, Study.patient_pk == Patient.pk).where(Patient.patient_id == patient)
        series = select(Series.pk).where(Series.study_pk.in_(studies))
        uids = union_all(
            select(Study.study_instance_uid).where(Study.pk.in_(studies)),
            select(Series.series_instance_uid).where(Series.pk.in_(series)),
            select(Instance.sop_instance_uid).where(Instance.series_pk.in_(series)),
        )
        stmt = stmt.where(or_(t.uid.in_(uids), t.detail.like(_like(f"PatientID={patient}"), escape="\\")))
    if actor:
        stmt = stmt.where(t.actor == actor)
    if action:
        stmt = stmt.where(t.action == action.upper())
    if uid:
        stmt = stmt.where(t.uid == uid)
    if contains:
        pattern = _like(contains)
        stmt = stmt.where(or_(t.uid.like(pattern, escape="\\"), t.detail.like(pattern, escape="\\")))
    if since:
        stmt = stmt.where(t.at >= since)
    if until:
        stmt = stmt.where(t.at < until)
    stmt = stmt.order_by(t.at.desc(), t.pk.desc()).limit(limit)
    with db.read() as conn:
        rows = conn.execute(stmt).all()
    return [AuditRecord(r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC), r.actor, r.address, r.action,
                        r.level, r.uid, r.outcome, r.detail) for r in rows]  # fmt: skip
