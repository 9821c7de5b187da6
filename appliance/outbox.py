"""The outbox sender as one of `minipacs serve`'s listeners (appliance.supervisor.Listener).

It runs in the supervisor process only (never in the DICOM or HTTP workers),
so each message has one sender. Workers write to the outbox; the sender
polls it every second and delivers: HL7 status updates to the HIS
(hl7.status_updates), signed reports as ORU^R01 to the EMR (reports.emr),
and the reports' DICOM SR and PDF into their studies (reports.dicom).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.services import ServiceError
from appliance.settings import Settings

if TYPE_CHECKING:
    from archive import Archive
    from worklist.outbox import OutboxSender

log = logging.getLogger(__name__)


class OutboxListener:
    """Delivers the durable outbox: HL7 to the HIS and the EMR, report objects into the archive."""

    name = "outbox"

    def __init__(self, settings: Settings) -> None:
        from worklist.status_updates import parse_address

        self.settings = settings
        self.addresses: dict[str, tuple[str, int]] = {}
        for destination, key, env in (("his", "hl7.status_updates", "MINIPACS_HL7_STATUS_UPDATES"),
                                      ("emr", "reports.emr", "MINIPACS_REPORTS_EMR")):  # fmt: skip
            if settings[key]:
                try:
                    self.addresses[destination] = parse_address(settings[key])
                except ValueError as exc:
                    raise ServiceError(f"{exc} (setting {key}, {env})") from exc
        self.local = bool(settings["reports.dicom"].strip())
        self._archive: Archive | None = None
        self._sender: OutboxSender | None = None

    def describe(self) -> str:
        parts = [f"{'HL7 status updates' if d == 'his' else 'reports (ORU)'} to {h}:{p}"
                 for d, (h, p) in self.addresses.items()]  # fmt: skip
        if self.local:
            parts.append("report SR/PDF into the archive")
        return "outbox: " + ", ".join(parts)

    def start(self) -> None:
        from appliance.report_services import open_reports, report_outputs
        from appliance.services import open_archive
        from reports.outputs import ARCHIVE
        from worklist.outbox import OutboxSender

        self._archive = open_archive(self.settings, upgrade=False)
        handlers = {}
        if self.local:
            handlers[ARCHIVE] = report_outputs(open_reports(self._archive, self.settings), self.settings).store_dicom
        self._sender = OutboxSender(self._archive.db, self.addresses, handlers=handlers)
        self._sender.start()
        log.info("started: %s", self.describe())

    def stop(self) -> None:
        if self._sender is not None:
            self._sender.stop()
            self._sender = None
        if self._archive is not None:
            self._archive.close()
            self._archive = None
        log.info("outbox stopped")


def outbox_listeners(settings: Settings) -> list[OutboxListener]:
    """The sender when anything goes out (HL7 to the HIS or EMR, report objects), else nothing."""
    listener = OutboxListener(settings)
    return [listener] if listener.addresses or listener.local else []
