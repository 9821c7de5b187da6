"""Socket tuning for DIMSE connections."""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom.events import Event

log = logging.getLogger(__name__)


def tune_socket(event: Event) -> None:
    """EVT_CONN_OPEN: no Nagle on our side, no delayed ACKs towards the peer.

    DIMSE is request/response with small messages (C-ECHO, C-FIND requests
    and matches, C-STORE responses). pynetdicom leaves Nagle's algorithm on:
    with it, each small write can wait up to 40 ms for the peer's delayed ACK.

    Many peers leave it on too (Debian's dcmtk tools unless TCP_NODELAY is
    set in their environment): a peer that writes a PDU in two parts then
    waits for our ACK of the first, and Linux delays that ACK by 40 ms. A
    stock echoscu took 45 ms for a C-ECHO. TCP_QUICKACK makes the kernel ACK
    at once, but only until it decides otherwise, so it is set again after
    every read (one setsockopt, about a microsecond).
    """
    transport = getattr(event.assoc.dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if transport is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError as exc:  # not TCP (a test socket pair), or already closed
        log.debug("cannot tune the socket: %s", exc)
        return
    receive = transport.recv

    def recv_and_ack(nr_bytes: int) -> Any:
        data = receive(nr_bytes)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass  # closed meanwhile: the next read reports it
        return data

    transport.recv = recv_and_ack
