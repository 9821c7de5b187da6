"""Exam status back to the HIS: HL7 v2.5 ORM^O01 with ORC-1 SC, through the outbox.

A Worklist status listener: every status change of a step (MPPS, images
arriving, the technologist, the HIS itself) is written to the outbox in the
change's own transaction, as an order status message (HL7 v2.5 4.5.1,
ORC-1 "SC" status changed, ORC-5 order status from HL7 table 0038):

=============== ======
step status     ORC-5
=============== ======
SCHEDULED       SC
IN PROGRESS     IP
COMPLETED       CM
DISCONTINUED    DC
CANCELLED       CA
=============== ======

ORC-2/OBR-2 carry the HIS's order number (placer) and ORC-3/OBR-3 ours
(filler); OBR-18 the accession number, as the HIS sent it (the usual place in
Vietnamese HIS integrations; OBR-19 the requested procedure ID). UTF-8,
MSH-18 ``UNICODE UTF-8``. Off unless ``hl7.status_updates`` names the HIS's
MLLP listener. Changes that came through one of the HIS's own doors (HL7, the
JSON order API, FHIR: a cancel, a discontinue, a status it reported) are not
echoed back: the HIS made them and knows.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection

from archive import Origin
from worklist.hl7_encoding import components, encode, escape, msh, timestamp, xpn
from worklist.outbox import enqueue
from worklist.types import StepStatus, StepView

#: Order status (ORC-5, HL7 table 0038) of each step status.
ORDER_STATUS = {
    StepStatus.SCHEDULED.value: "SC",
    StepStatus.IN_PROGRESS.value: "IP",
    StepStatus.COMPLETED.value: "CM",
    StepStatus.DISCONTINUED.value: "DC",
    StepStatus.CANCELLED.value: "CA",
}

KIND = "ORM^O01 SC"

#: Origin.via of the doors the HIS itself uses (worklist.message_log, viewer.orders_api, viewer.fhir).
HIS_DOORS = frozenset({"HL7", "ORDERS", "FHIR"})


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' of an MLLP listener; ValueError says what is wrong."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (e.g. 192.168.1.20:2575)")
    return host, int(port)


@dataclass(frozen=True)
class StatusUpdates:
    """The status listener: ORM^O01 SC messages into the outbox, for the destination `destination`."""

    sender: str = "MINIPACS"
    destination: str = "his"

    @classmethod
    def from_setting(cls, address: str, sender: str = "MINIPACS") -> StatusUpdates:
        parse_address(address)  # refuse a bad setting at start, not at the first status change
        return cls(sender=sender)

    def on_status(self, conn: Connection, step: StepView, previous: str, origin: Origin) -> None:
        """worklist.service.StatusListener: queue the update in the change's transaction."""
        if origin.via in HIS_DOORS:
            return
        now = datetime.now(UTC)
        payload = order_status_message(step, self.sender, new_control_id(now), now)
        enqueue(conn, self.destination, KIND, step.accession_number, payload, now)


def new_control_id(now: datetime) -> str:
    """A unique MSH-10 (20 characters): kept in the stored message, so a resend carries the same one."""
    return f"{now:%Y%m%d%H%M%S}{secrets.token_hex(3)}"


def order_status_message(step: StepView, sender: str, control: str, now: datetime) -> bytes:
    """The ORM^O01 (ORC-1 SC) reporting `step`'s status, UTF-8 with segments ended by CR."""
    stamp = timestamp(now)
    p = step.patient
    placer = components(step.placer_order_number, step.placer_issuer)
    filler = components(step.filler_order_number, sender)
    procedure = components(step.procedure_code, step.procedure_description, step.procedure_scheme)
    return encode([
        msh(sender, "", step.placer_issuer, "", "ORM^O01^ORM_O01", control, now),
        ["PID", "1", "", components(p.patient_id, "", "", p.issuer), "", xpn(p.name), "", p.birth_date, p.sex],
        ["ORC", "SC", placer, filler, "", ORDER_STATUS.get(step.status, ""), "", "", "", stamp],
        ["OBR", "1", placer, filler, procedure, "", "", "", "", "", "", "", "", "", "", "", "", "",
         escape(step.accession_number), escape(step.requested_procedure_id), "", "", "", "", escape(step.modality)],
    ])  # fmt: skip


__all__ = ["KIND", "ORDER_STATUS", "StatusUpdates", "new_control_id", "order_status_message", "parse_address"]
