"""Socket tuning for DIMSE connections."""

from __future__ import annotations

import logging
import socket

from pynetdicom.events import Event

log = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN: switch Nagle's algorithm off on the association's socket.

    DIMSE is request/response with small messages (C-FIND matches, C-STORE
    responses); with Nagle on, each small write can wait up to 40 ms for the
    peer's delayed ACK. pynetdicom leaves it on.
    """
    transport = getattr(event.assoc.dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not TCP (a test socket pair), or already closed
        log.debug("cannot set TCP_NODELAY: %s", exc)
