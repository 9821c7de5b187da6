"""The outbox sender as one of `minipacs serve`'s listeners (appliance.supervisor.Listener).

It runs in the supervisor process only (never in the DICOM or HTTP workers),
so each message has one sender. Workers write to the outbox; the sender
polls it every second.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.services import ServiceError
from appliance.settings import Settings

if TYPE_CHECKING:
    from archive.db import Database
    from worklist.outbox import OutboxSender

log = logging.getLogger(__name__)


class OutboxListener:
    """Sends HL7 status updates to the HIS (hl7.status_updates) from the durable outbox."""

    name = "HL7 status updates"

    def __init__(self, settings: Settings) -> None:
        from worklist.status_updates import parse_address

        self.settings = settings
        try:
            self.address = parse_address(settings["hl7.status_updates"])
        except ValueError as exc:
            raise ServiceError(f"{exc} (setting hl7.status_updates, MINIPACS_HL7_STATUS_UPDATES)") from exc
        self._db: Database | None = None
        self._sender: OutboxSender | None = None

    def describe(self) -> str:
        return f"HL7 status updates to {self.address[0]}:{self.address[1]}"

    def start(self) -> None:
        from archive.db import Database
        from worklist.outbox import OutboxSender

        self._db = Database.open(self.settings.database_url, upgrade=False)
        self._sender = OutboxSender(self._db, {"his": self.address})
        self._sender.start()
        log.info("started: %s", self.describe())

    def stop(self) -> None:
        if self._sender is not None:
            self._sender.stop()
            self._sender = None
        if self._db is not None:
            self._db.dispose()
            self._db = None
        log.info("HL7 status updates stopped")


def outbox_listeners(settings: Settings) -> list[OutboxListener]:
    """The sender when hl7.status_updates is set, else nothing (off by default)."""
    return [OutboxListener(settings)] if settings["hl7.status_updates"] else []
