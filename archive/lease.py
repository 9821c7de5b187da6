"""One runner per job across every node: a lease held through the database.

Background jobs that must run once per archive, not once per node (the
outbox sender, later retention and cache warming), take a `Lease` before each
round. On PostgreSQL it is a session-level advisory lock held on a connection
of its own (``pg_try_advisory_lock``): the first node to ask gets it and keeps
it while its connection lives; the others stand by and one of them takes over
within a round when that node stops, crashes or loses the database (the server
drops a dead session's locks). On SQLite, which is one box, an flock on a
file beside the database does the same for the processes of that box.

Holding the lease is a promise about who works, not about exactly-once
delivery: a node that loses its connection mid-round may finish the message
it was sending while the next node starts. The outbox's receivers already
deal with that (the same MSH-10 control ID is sent again).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from archive.db import Database

log = logging.getLogger(__name__)


def _key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name`."""
    return int.from_bytes(hashlib.sha256(f"minipacs lease {name}".encode()).digest()[:8], "big", signed=True)


class Lease:
    """``held()`` is True while this process may run job `name`; it tries to take the lease when free."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self.name = name
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._fd: int | None = None

    def held(self) -> bool:
        with self._lock:
            if self._db.is_sqlite:
                return self._held_file()
            return self._held_pg()

    def release(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(self.name)})
                    self._conn.commit()
                except SQLAlchemyError:
                    pass
                self._close_conn()
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor drops the flock
                self._fd = None

    def _held_pg(self) -> bool:
        if self._conn is not None:
            try:  # still ours while the session that took it is alive
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except SQLAlchemyError as exc:
                log.warning("lease %s: lost with the database connection (%s)", self.name, _first_line(exc))
                self._close_conn()
        try:
            conn = self._db.engine.connect()
        except SQLAlchemyError as exc:
            log.warning("lease %s: the database is unavailable (%s)", self.name, _first_line(exc))
            return False
        try:
            taken = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(self.name)}).scalar())
            conn.commit()
        except SQLAlchemyError as exc:
            log.warning("lease %s: could not ask the database (%s)", self.name, _first_line(exc))
            conn.close()
            return False
        if not taken:
            conn.close()
            return False
        self._conn = conn
        log.info("lease %s: taken; this node runs it", self.name)
        return True

    def _held_file(self) -> bool:
        if self._fd is not None:
            return True
        database: Any = self._db.engine.url.database
        if not database or database == ":memory:":
            return True  # a private in-memory database: nobody else to share with
        fd = os.open(f"{database}.lease-{self.name}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        log.info("lease %s: taken; this process runs it", self.name)
        return True

    def _close_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()  # never back to the pool: the lock must die with it
            except SQLAlchemyError:
                pass
            self._conn = None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0] if str(orig or exc) else type(exc).__name__
