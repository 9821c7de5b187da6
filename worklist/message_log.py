"""The inbound HL7 message log, and the one place a message is applied and acknowledged.

Every message with a readable MSH is stored raw in ``hl7_message`` together
with the ACK it got, in the same write transaction that applies it to the
worklist (Worklist.transaction): the commit comes before the ACK is sent, so
an acknowledged message is never lost, and a crash before the commit leaves
neither the log row nor the order (the HIS resends, having no ACK). The log is
keyed on (MSH-3, MSH-4, MSH-10): a replay gets the stored ACK again and is not
applied twice (HL7 v2.5 2.10.2, original acknowledgment mode). Refused
messages are logged with their AE/AR ACK too: the log is the audit trail of
what the HIS sent. Input without an MSH is not stored (a log line only).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from archive import ArchiveError, Origin
from worklist import hl7
from worklist.models import Hl7Message
from worklist.service import Worklist

log = logging.getLogger(__name__)

LOG = cast(Table, Hl7Message.__table__)


class Receiver:
    """Turns one framed message into its ACK: log, apply, commit, answer."""

    def __init__(self, worklist: Worklist) -> None:
        self.worklist = worklist

    def receive(self, raw: bytes, peer: str) -> bytes:
        """The ACK for `raw` from `peer` (an address). Never raises for anything the peer sent."""
        try:
            header = hl7.read_header_loosely(raw)
        except hl7.NoHeader as exc:
            log.warning("HL7 from %s: %s (%d bytes): answered AR, not stored", peer, exc, len(raw))
            return hl7.ack(None, "AR", str(exc), "100", ("MSH", 0))
        origin = Origin(header.sending_application or "HL7", peer, "HL7", header.control_id)
        try:
            return self._receive(raw, header, origin)
        except Exception:
            # The database itself failed (disk full, locked too long): nothing was
            # stored or applied, and AE tells the HIS to send again later.
            log.exception("HL7 %s %s from %s: could not be stored", header.message_type, header.control_id, origin)
            return hl7.ack(header, "AE", "the message could not be stored; send it again later", "207")

    def too_large(self, head: bytes, peer: str, limit: int) -> bytes | None:
        """The AR for a message over the size limit (not stored), or None without a readable MSH."""
        try:
            header = hl7.read_header_loosely(head)
        except hl7.NoHeader:
            log.warning("HL7 from %s: more than %d bytes and no MSH: connection closed", peer, limit)
            return None
        log.warning("HL7 %s %s from %s: more than %d bytes: answered AR, not stored", header.message_type,
                    header.control_id, peer, limit)  # fmt: skip
        return hl7.ack(header, "AR", f"the message is larger than {limit // 1024} KiB (hl7.max_message_kb)",
                       "207")  # fmt: skip

    def _receive(self, raw: bytes, header: hl7.Header, origin: Origin) -> bytes:
        with self.worklist.transaction() as conn:
            stored = find(conn, header)
            if stored is not None:
                log.info("HL7 %s %s from %s: a replay, answered with the stored ACK", header.message_type,
                         header.control_id, origin)  # fmt: skip
                return stored
            code, text, error, location = "AA", "", "0", ("", 0)
            try:
                todo = hl7.actions(hl7.parse(raw))
                with conn.begin_nested():  # all of the message's orders, or none
                    text = hl7.apply(self.worklist, todo, origin)
            except hl7.Hl7Error as exc:
                code, text, error, location = exc.ack, exc.message, exc.code, exc.location
            except ArchiveError as exc:  # OrderError and kin carry their HL7 codes
                code, text = getattr(exc, "hl7_ack", "AE"), exc.message
                error = getattr(exc, "hl7_code", "207")
            except hl7.NoHeader as exc:  # the loose reading found MSH, the strict one did not
                code, text, error = "AR", str(exc), "100"
            except SQLAlchemyError:
                raise  # the database, not the message: nothing is stored, AE below
            except Exception:
                log.exception("HL7 %s %s from %s: failed", header.message_type, header.control_id, origin)
                code, text, error = "AE", "internal error while applying the message", "207"
            answer = hl7.ack(header, code, text, error, location)
            if header.control_id:
                try:
                    with conn.begin_nested():
                        record(conn, header, raw, origin, code, answer, text)
                except IntegrityError:  # another connection logged the same message first
                    stored = find(conn, header)
                    if stored is not None:
                        return stored
                    raise
        level = logging.INFO if code == "AA" else logging.WARNING
        log.log(level, "HL7 %s %s from %s: %s%s", header.message_type, header.control_id or "(no MSH-10)",
                origin, code, f" ({text})" if text else "")  # fmt: skip
        return answer


def find(conn: Connection, header: hl7.Header) -> bytes | None:
    """The ACK stored for this message, if it was received before."""
    row = conn.execute(select(LOG.c.ack).where(
        LOG.c.sending_application == header.sending_application[:180],
        LOG.c.sending_facility == header.sending_facility[:180],
        LOG.c.control_id == header.control_id[:199],
    )).first()  # fmt: skip
    return None if row is None else bytes(row.ack)


def record(conn: Connection, header: hl7.Header, raw: bytes, origin: Origin, code: str, answer: bytes,
           detail: str) -> None:  # fmt: skip
    conn.execute(insert(LOG), {
        "sending_application": header.sending_application[:180], "sending_facility": header.sending_facility[:180],
        "control_id": header.control_id[:199], "message_type": header.message_type[:32],
        "received_at": datetime.now(UTC), "peer_address": origin.address, "raw": raw,
        "ack_code": code, "ack": answer, "detail": detail[:2000],
    })  # fmt: skip


__all__ = ["Receiver", "find", "record"]
