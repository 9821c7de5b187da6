"""A durable outbox: HL7 messages to the HIS, sent over MLLP until acknowledged.

A message is written (`enqueue`) in the same transaction as the change it
reports, so it exists exactly when the change was committed; a sender thread
in `minipacs serve` (`OutboxSender`) delivers the due rows in order.

Delivery is at least once. A row is marked sent in the step right after its
ACK (MSA-1 AA or CA, HL7 v2.5 2.9.2) is read, and never sent again. The
window: a crash after the HIS acknowledged but before that commit resends the
message after the restart, with the same MSH-10 control ID, so the HIS can
recognise the duplicate (HL7 2.10.2 "accept acknowledgment" sequence).
AE, AR, an unreadable answer, a refused connection or a timeout are retried
with exponential backoff (capped); after `max_attempts` the row is marked
failed and waits for an operator (`minipacs outbox retry N`).

Messages about the same subject (one order) go out in the order they were
written: a row waits while an older one for the same subject is pending, so
the HIS never sees COMPLETED before IN PROGRESS. Other orders are not held up
by one the HIS keeps refusing.

Some destinations are not MLLP peers but work done here, durably queued with
the change that asked for it (a signed report's DICOM SR stored into its
study): `handlers` maps such a destination to a function that does the work
and raises DeliveryError (or anything else) to be retried the same way.

One sender per archive: every `minipacs serve` starts one, and the one that
holds the database lease "outbox" (archive/lease.py) sends while the others
stand by; when that node stops or loses the database another takes over
within a poll. Order per subject thus holds across nodes too.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, and_, exists, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import aliased

from archive.db import Database
from archive.lease import Lease
from archive.errors import InvalidArgument, NotFound
from worklist.models import OutboxMessage

log = logging.getLogger(__name__)

OUTBOX = cast(Table, OutboxMessage.__table__)

START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"
#: An ACK longer than this is not an ACK.
MAX_ACK_BYTES = 64 * 1024

PENDING, SENT, FAILED = "pending", "sent", "failed"


def enqueue(conn: Connection, destination: str, kind: str, subject: str, payload: bytes,
            now: datetime | None = None) -> int:  # fmt: skip
    """Add a message to the outbox inside the caller's transaction; returns its number."""
    now = now or datetime.now(UTC)
    pk: int = conn.execute(insert(OUTBOX).returning(OUTBOX.c.pk), {
        "destination": destination, "kind": kind, "subject": subject, "payload": payload,
        "state": PENDING, "attempts": 0, "next_attempt_at": now, "last_error": "",
        "created_at": now, "sent_at": None, "size_bytes": len(payload),
    }).scalar_one()  # fmt: skip
    return pk


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as `minipacs outbox list` shows it (the payload left out)."""

    pk: int
    destination: str
    kind: str
    subject: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    sent_at: datetime | None
    size_bytes: int


class Outbox:
    """Reading the outbox and putting failed messages back in line."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def entries(self, state: str = "", limit: int = 100, subject: str = "") -> list[OutboxEntry]:
        """Messages, newest first; `state` pending, sent or failed and `subject` (an accession number) narrow it."""
        if state and state not in (PENDING, SENT, FAILED):
            raise InvalidArgument(f"state {state!r} is not pending, sent or failed")
        stmt = select(*[c for c in OUTBOX.c if c.name != "payload"])
        if state:
            stmt = stmt.where(OUTBOX.c.state == state)
        if subject:
            stmt = stmt.where(OUTBOX.c.subject == subject)
        with self.db.read() as conn:
            rows = conn.execute(stmt.order_by(OUTBOX.c.pk.desc()).limit(limit)).all()
        return [_entry(r) for r in rows]

    def get(self, pk: int) -> tuple[OutboxEntry, bytes]:
        with self.db.read() as conn:
            row = conn.execute(select(OUTBOX).where(OUTBOX.c.pk == pk)).first()
        if row is None:
            raise NotFound(f"no outbox message {pk}")
        return _entry(row), bytes(row.payload)

    def retry(self, pk: int) -> OutboxEntry:
        """Send a failed (or waiting) message at the next round, with a fresh count of attempts."""
        now = datetime.now(UTC)
        with self.db.write() as conn:
            row = conn.execute(select(OUTBOX.c.state).where(OUTBOX.c.pk == pk)).first()
            if row is None:
                raise NotFound(f"no outbox message {pk}")
            if row.state == SENT:
                raise InvalidArgument(f"outbox message {pk} was already sent and acknowledged; "
                                      "it is not sent twice")  # fmt: skip
            conn.execute(update(OUTBOX).where(OUTBOX.c.pk == pk).values(
                state=PENDING, attempts=0, next_attempt_at=now))  # fmt: skip
            entry = conn.execute(select(OUTBOX).where(OUTBOX.c.pk == pk)).one()
        log.info("outbox message %d (%s) put back in line", pk, entry.subject)
        return _entry(entry)


def _entry(r: object) -> OutboxEntry:
    m = r._mapping  # type: ignore[attr-defined]
    return OutboxEntry(int(m["pk"]), m["destination"], m["kind"], m["subject"], m["state"], int(m["attempts"]),
                       _utc(m["next_attempt_at"]), m["last_error"], _utc(m["created_at"]),
                       _utc(m["sent_at"]) if m["sent_at"] else None, int(m["size_bytes"]))  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- MLLP, client side ---------------------------------------------------------


class DeliveryError(Exception):
    """The message was not acknowledged (no connection, timeout, AE/AR, garbage); try again later."""


def send_mllp(host: str, port: int, payload: bytes, connect_timeout: float = 5.0,
              read_timeout: float = 15.0) -> bytes:  # fmt: skip
    """Send one framed message (0x0B payload 0x1C 0x0D) and return the framed answer's content."""
    try:
        with socket.create_connection((host, port), timeout=connect_timeout) as sock:
            sock.settimeout(read_timeout)
            sock.sendall(START_BLOCK + payload + END_BLOCK)
            answer = b""
            while END_BLOCK not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    raise DeliveryError("the HIS closed the connection without an ACK")
                answer += chunk
                if len(answer) > MAX_ACK_BYTES:
                    raise DeliveryError("the HIS answered with more than 64 KiB and no end of message")
    except TimeoutError:
        raise DeliveryError(f"no ACK from {host}:{port} within the timeout") from None
    except OSError as exc:
        raise DeliveryError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    start = answer.find(START_BLOCK)
    return answer[start + 1 if start >= 0 else 0: answer.index(END_BLOCK)]


def check_ack(ack: bytes, control_id: str) -> str:
    """The ACK's MSA-1 when it accepts the message `control_id`; DeliveryError otherwise."""
    text = ack.decode("utf-8", errors="replace")
    segments = [s for s in text.replace("\n", "\r").split("\r") if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise DeliveryError(f"the answer is not an HL7 ACK: {text[:80]!r}")
    sep = segments[0][3]
    msa = next((s.split(sep) for s in segments if s.startswith("MSA" + sep)), None)
    if msa is None or len(msa) < 2:
        raise DeliveryError("the ACK has no MSA segment")
    code = msa[1].strip().upper()
    acked = msa[2].strip() if len(msa) > 2 else ""
    if code not in ("AA", "CA"):
        err = next((s for s in segments if s.startswith("ERR" + sep)), "")
        why = (msa[3] if len(msa) > 3 else "") or err
        raise DeliveryError(f"the HIS answered {code or 'no code'}" + (f": {why[:200]}" if why else ""))
    if acked and acked != control_id:
        raise DeliveryError(f"the ACK is for message {acked!r}, not {control_id!r}")
    return code


def control_id(payload: bytes) -> str:
    """MSH-10 of an HL7 message."""
    msh = payload.split(b"\r", 1)[0].decode("utf-8", errors="replace")
    fields = msh.split(msh[3]) if len(msh) > 3 else []
    return fields[9] if len(fields) > 9 else ""


# --- the sender ----------------------------------------------------------------


#: Does the work of a local destination; returns a word for the log ("stored"), raises to retry.
Handler = Callable[[bytes], str]


class OutboxSender:
    """A thread that delivers due outbox messages to their destinations."""

    def __init__(self, db: Database, destinations: Mapping[str, tuple[str, int]], *, poll_seconds: float = 1.0,
                 base_delay: float = 5.0, max_delay: float = 600.0, max_attempts: int = 200,
                 connect_timeout: float = 5.0, read_timeout: float = 15.0, batch: int = 50,
                 handlers: Mapping[str, Handler] | None = None) -> None:  # fmt: skip
        self.db = db
        self.destinations = dict(destinations)
        self.handlers = dict(handlers or {})
        self.poll_seconds = poll_seconds
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lease = Lease(db, "outbox")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the message being sent (bounded by the socket timeouts)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.connect_timeout + self.read_timeout + 5)
            self._thread = None

    def _run(self) -> None:
        standing_by = False
        try:
            while not self._stop.is_set():
                try:
                    if self.lease.held():
                        standing_by = False
                        self.run_once()
                    elif not standing_by:
                        standing_by = True
                        log.info("outbox sender: another node sends; standing by")
                except OperationalError as exc:  # the database restarting or unreachable: expected, not a bug
                    log.warning("outbox sender: the index database is unavailable (%s); trying again shortly",
                                str(exc.orig or exc).splitlines()[0])
                except Exception:
                    log.exception("outbox sender: unexpected error; trying again shortly")
                self._stop.wait(self.poll_seconds)
        finally:
            self.lease.release()

    def run_once(self, now: datetime | None = None) -> int:
        """Send every due message once; returns how many were acknowledged."""
        sent = 0
        held: set[tuple[str, str]] = set()  # (destination, subject) with an earlier message not delivered
        for pk, destination, subject, payload, attempts in self._due(now or datetime.now(UTC)):
            if self._stop.is_set():
                break
            address = self.destinations.get(destination)
            handler = self.handlers.get(destination)
            if (address is None and handler is None) or (destination, subject) in held:
                held.add((destination, subject))
                continue  # a destination no longer configured, or an older message failed: wait
            try:
                if handler is not None:
                    code, where = handler(payload), "here"
                else:
                    assert address is not None
                    code = check_ack(send_mllp(address[0], address[1], payload, self.connect_timeout,
                                               self.read_timeout), control_id(payload))  # fmt: skip
                    where = f"{address[0]}:{address[1]}"
            except Exception as exc:
                if not isinstance(exc, DeliveryError):
                    log.exception("outbox %d to %s: the work failed", pk, destination)
                self._failed(pk, subject, attempts + 1, getattr(exc, "message", None) or str(exc) or type(exc).__name__)
                held.add((destination, subject))
                continue
            self._sent(pk, attempts + 1)
            log.info("outbox %d to %s (%s): %s %s", pk, destination, where, subject,
                     code if handler is not None else f"acknowledged {code}")  # fmt: skip
            sent += 1
        return sent

    def _due(self, now: datetime) -> list[tuple[int, str, str, bytes, int]]:
        # An older pending message of the same subject that is not due yet holds the later ones
        # back; one that is due comes first in this list (and run_once holds the rest if it fails).
        older = aliased(OUTBOX)
        blocked = exists().where(and_(older.c.destination == OUTBOX.c.destination,
                                      older.c.subject == OUTBOX.c.subject, older.c.state == PENDING,
                                      older.c.next_attempt_at > now, older.c.pk < OUTBOX.c.pk))  # fmt: skip
        stmt = (select(OUTBOX.c.pk, OUTBOX.c.destination, OUTBOX.c.subject, OUTBOX.c.payload, OUTBOX.c.attempts)
                .where(OUTBOX.c.state == PENDING, OUTBOX.c.next_attempt_at <= now, ~blocked)
                .order_by(OUTBOX.c.pk).limit(self.batch))  # fmt: skip
        with self.db.read() as conn:
            return [(int(r.pk), r.destination, r.subject, bytes(r.payload), int(r.attempts))
                    for r in conn.execute(stmt)]  # fmt: skip

    def _sent(self, pk: int, attempts: int) -> None:
        with self.db.write() as conn:
            conn.execute(update(OUTBOX).where(OUTBOX.c.pk == pk).values(
                state=SENT, attempts=attempts, sent_at=datetime.now(UTC), last_error=""))  # fmt: skip

    def _failed(self, pk: int, subject: str, attempts: int, error: str) -> None:
        delay = min(self.max_delay, self.base_delay * 2 ** min(attempts - 1, 30))
        give_up = attempts >= self.max_attempts
        with self.db.write() as conn:
            conn.execute(update(OUTBOX).where(OUTBOX.c.pk == pk).values(
                state=FAILED if give_up else PENDING, attempts=attempts, last_error=error[:2000],
                next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay)))  # fmt: skip
        if give_up:
            log.error("outbox %d (%s): gave up after %d attempts: %s; `minipacs outbox retry %d` sends it again",
                      pk, subject, attempts, error, pk)  # fmt: skip
        else:
            log.warning("outbox %d (%s): attempt %d failed: %s; next in %.0f s", pk, subject, attempts, error, delay)


__all__ = ["DeliveryError", "Handler", "Outbox", "OutboxEntry", "OutboxSender", "check_ack", "control_id", "enqueue",
           "send_mllp"]
