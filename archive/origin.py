"""Where a request came from: recorded with every stored instance and audit event."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """The calling system or person, and how it reached us."""

    #: Calling AE title for DIMSE, user name for HTTP, ``"import"`` for the CLI.
    actor: str
    #: Peer IP address (or host name), '' when local.
    address: str = ""
    #: ``"DIMSE"``, ``"STOW"``, ``"IMPORT"``, ...
    via: str = "DIMSE"
    #: Association or request id, to tie log lines together.
    session: str = ""

    def __str__(self) -> str:
        where = f"@{self.address}" if self.address else ""
        return f"{self.actor}{where}"
