"""Socket tuning on a real TCP connection: Nagle off, and ACKs sent at once
after every read (the latency figures are in bench/find and bench/README.md)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

from dicom_scp.sockets import tune_socket


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


def option(sock: socket.socket, name: int) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, name)


def test_tuned_socket_has_no_nagle_and_acks_after_every_read(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    server, client = connection
    assoc = Association(AE(), "acceptor")
    transport = AssociationSocket(assoc, client_socket=server)
    assoc.set_socket(transport)
    event = SimpleNamespace(assoc=assoc)
    assert option(server, socket.TCP_NODELAY) == 0
    tune_socket(event)  # type: ignore[arg-type]
    assert option(server, socket.TCP_NODELAY) != 0
    for payload in (b"\x01\x00", b"abcdef"):
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        client.sendall(payload)
        assert bytes(transport.recv(len(payload))) == payload
        assert option(server, socket.TCP_QUICKACK) == 1


def test_a_socket_that_is_not_tcp_is_left_alone() -> None:
    left, right = socket.socketpair()
    with left, right:
        transport = SimpleNamespace(socket=left, recv=lambda n: b"")
        tune_socket(SimpleNamespace(assoc=SimpleNamespace(dul=SimpleNamespace(socket=transport))))  # type: ignore[arg-type]
        assert transport.recv(1) == b""  # not wrapped
