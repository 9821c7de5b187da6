"""The registry of known application entities (DICOM peers).

Used for C-MOVE destinations and, in registered-only mode, to decide who may
associate at all: a registered AE with a host may only call from that host.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from archive.db import Database
from archive.errors import InvalidArgument, NotFound
from archive.models import ApplicationEntity

# Declarative models type __table__ as a FromClause; it is a Table.
_AE = cast(Table, ApplicationEntity.__table__)
# PS3.5 6.2: AE is at most 16 characters of the default repertoire, no
# backslash, no control characters; leading/trailing spaces are not significant.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class RemoteAE:
    ae_title: str
    #: '' when the AE may call from any address (and cannot be sent to).
    host: str
    #: 0 when the AE only sends and cannot be a C-MOVE destination.
    port: int
    description: str
    last_seen_at: datetime | None = None

    @property
    def can_receive(self) -> bool:
        return bool(self.host) and self.port > 0


def check_ae_title(value: str) -> str:
    """Return the AE title without padding, or raise InvalidArgument saying what is wrong."""
    title = value.strip()
    if not _AE_RE.match(title):
        raise InvalidArgument(
            f"AE title {value!r} is not valid: 1-16 printable ASCII characters, no backslash"
        )
    return title


def check_host(value: str) -> str:
    """Accept an IPv4/IPv6 address or a DNS host name."""
    host = value.strip()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST_RE.match(host):
        raise InvalidArgument(f"host {value!r} is neither an IP address nor a host name")
    return host


def check_port(value: int | str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"port {value!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"port {port} is outside 1-65535")
    return port


class AERegistry:
    """Add, list, remove and look up known AEs."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self, ae_title: str, host: str = "", port: int | str = 0, description: str = ""
    ) -> RemoteAE:
        """Register an AE. Without a host it may call from anywhere; without a
        port it cannot be a C-MOVE destination."""
        ae = RemoteAE(
            check_ae_title(ae_title),
            check_host(host) if host else "",
            check_port(port) if port else 0,
            description.strip(),
        )
        try:
            with self._db.write() as conn:
                conn.execute(insert(_AE), [{
                    "ae_title": ae.ae_title, "host": ae.host, "port": ae.port,
                    "description": ae.description, "created_at": datetime.now(UTC),
                }])  # fmt: skip
        except IntegrityError:
            raise InvalidArgument(
                f"AE {ae.ae_title} is already registered; remove it first to change it"
            ) from None
        return ae

    def remove(self, ae_title: str) -> None:
        title = check_ae_title(ae_title)
        with self._db.write() as conn:
            if conn.execute(delete(_AE).where(_AE.c.ae_title == title)).rowcount == 0:
                raise NotFound(f"AE {title} is not registered")

    def list(self) -> list[RemoteAE]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(_AE.c.ae_title, _AE.c.host, _AE.c.port, _AE.c.description,
                       _AE.c.last_seen_at).order_by(_AE.c.ae_title)
            )  # fmt: skip
            return [_remote(row) for row in rows]

    def get(self, ae_title: str) -> RemoteAE | None:
        title = ae_title.strip()
        with self._db.read() as conn:
            row = conn.execute(
                select(_AE.c.ae_title, _AE.c.host, _AE.c.port, _AE.c.description,
                       _AE.c.last_seen_at).where(_AE.c.ae_title == title)
            ).first()  # fmt: skip
        return _remote(row) if row else None

    def seen(self, ae_title: str) -> None:
        """Note that `ae_title` just associated (shown to the administrator)."""
        with self._db.write() as conn:
            conn.execute(
                update(_AE).where(_AE.c.ae_title == ae_title.strip())
                .values(last_seen_at=datetime.now(UTC))
            )  # fmt: skip

    def is_allowed(self, ae_title: str, address: str) -> tuple[bool, str]:
        """May `ae_title` associate from `address`? Returns (allowed, reason when not)."""
        ae = self.get(ae_title)
        if ae is None:
            return False, f"calling AE {ae_title.strip()!r} is not registered"
        if ae.host and address not in _addresses(ae.host):
            return False, f"calling AE {ae.ae_title} is registered for host {ae.host}, not {address}"
        return True, ""


def _remote(row: Row[Any]) -> RemoteAE:
    last_seen: datetime | None = row.last_seen_at
    # SQLite hands DateTime(timezone=True) back without its zone; the value is UTC.
    if last_seen is not None and last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=UTC)
    return RemoteAE(row.ae_title, row.host, int(row.port), row.description, last_seen)


def _addresses(host: str) -> set[str]:
    """Every address `host` stands for (itself if it is an address)."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()
