"""The HL7 listener of `minipacs serve`: worklist.mllp serving worklist.message_log, built from the settings.

With DICOM worker processes the supervisor process has no archive open; the
HL7 listener then opens its own (and closes it on stop). Orders are small and
few (hundreds a day), so one process with a thread per connection is plenty.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.services import open_archive, open_worklist
from appliance.settings import Settings

if TYPE_CHECKING:
    from archive import Archive
    from worklist.mllp import MllpServer

log = logging.getLogger(__name__)


class Hl7PortError(OSError):
    """The HL7 port could not be opened (so `minipacs serve` names the right setting)."""


class Hl7Listener:
    """The Listener protocol of appliance.supervisor."""

    name = "HL7"

    def __init__(self, settings: Settings, archive: Archive | None = None) -> None:
        self.settings = settings
        self._archive = archive
        self._owned: Archive | None = None
        self._server: MllpServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.settings["hl7.host"], self.settings["hl7.port"]
        return self._server.address

    def describe(self) -> str:
        host, port = self.address
        return f"HL7 MLLP on {host}:{port}"

    def start(self) -> None:
        from worklist.message_log import Receiver
        from worklist.mllp import MllpConfig, MllpServer

        archive = self._archive
        if archive is None:
            archive = self._owned = open_archive(self.settings, upgrade=False)
        s = self.settings
        config = MllpConfig(host=s["hl7.host"], port=s["hl7.port"], max_message_bytes=s["hl7.max_message_kb"] * 1024,
                            idle_timeout=s["hl7.idle_timeout"], max_connections=s["hl7.max_connections"])  # fmt: skip
        try:
            self._server = MllpServer(config, Receiver(open_worklist(archive, s)))
            try:
                self._server.start()
            except OSError as exc:
                raise Hl7PortError(exc.errno, exc.strerror or str(exc)) from exc
        except BaseException:
            self._close()
            raise

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._close()

    def _close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None


__all__ = ["Hl7Listener"]
