"""The MLLP listener: HL7 v2 messages from the HIS over TCP (HL7 v2.5 Appendix C, MLLP release 1).

A frame is 0x0B, the message, 0x1C 0x0D; the ACK goes back the same way on
the same connection, and a connection may carry any number of messages.

Hand-written on ``socketserver.ThreadingTCPServer`` rather than python-hl7's
MLLP helper (``hl7.mllp``): that one is asyncio, while the worklist service
is synchronous SQLAlchemy -- a thread per connection (bounded by
``hl7.max_connections``) calls it directly, as the DICOM edge does.
Hostile peers are bounded too: a silent or stalled connection is closed after
``hl7.idle_timeout`` seconds (also in the middle of a message), a message that
trickles in is cut off after ``MESSAGE_TIMEOUTS`` idle timeouts in all, a message over
``hl7.max_message_kb`` is read to its end block without being kept and
answered AR (or the connection closed when not even its MSH is readable), and
bytes outside a frame close the connection. No error reaches the peer as a
traceback; the server keeps serving.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

START, END, CR = b"\x0b", b"\x1c", b"\x0d"
#: Bytes of an oversized message kept to read its MSH.
HEAD = 64 * 1024
#: A whole message must arrive within this many idle timeouts (4 x 60 s by default:
#: 1 MiB over a 64 kbit/s link fits), so a peer sending a byte now and then cannot
#: hold a connection and its thread for ever.
MESSAGE_TIMEOUTS = 4


class Handler(Protocol):
    def receive(self, raw: bytes, peer: str) -> bytes: ...

    def too_large(self, head: bytes, peer: str, limit: int) -> bytes | None: ...


@dataclass(frozen=True)
class MllpConfig:
    host: str = "0.0.0.0"
    port: int = 2575
    max_message_bytes: int = 1024 * 1024
    idle_timeout: float = 60.0
    max_connections: int = 32


class FramingError(Exception):
    """The peer does not speak MLLP (bytes outside a frame): the connection is closed."""


class _Closed(Exception):
    """The peer closed the connection or went silent."""


class _Connection:
    """Reads MLLP frames from one socket."""

    def __init__(self, sock: socket.socket, config: MllpConfig) -> None:
        self.sock = sock
        self.config = config
        self.buffer = bytearray()
        #: When the message being received must be complete (monotonic clock); None between messages.
        self.deadline: float | None = None

    def _recv(self) -> None:
        timeout = self.config.idle_timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _Closed(f"message not complete within {MESSAGE_TIMEOUTS * timeout:g} s")
            timeout = min(timeout, left)
        try:
            self.sock.settimeout(timeout)
            data = self.sock.recv(65536)
        except TimeoutError as exc:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise _Closed(f"message not complete within {MESSAGE_TIMEOUTS * self.config.idle_timeout:g} s") from exc
            raise _Closed(f"idle for {self.config.idle_timeout:g} s") from exc
        except OSError as exc:
            raise _Closed(str(exc)) from exc
        if not data:
            raise _Closed("closed by the peer")
        self.buffer += data

    def next_frame(self) -> tuple[bytes, bool]:
        """(message, complete): complete False means oversized: the message is only its head, and
        the caller either skips the rest (:meth:`skip_to_end`) or closes the connection."""
        while True:  # between frames: only line ends are tolerated (some senders add one)
            stripped = self.buffer.lstrip(b"\r\n")
            del self.buffer[: len(self.buffer) - len(stripped)]
            if self.buffer:
                break
            self._recv()
        if self.buffer[:1] != START:
            raise FramingError(f"{len(self.buffer)} bytes outside an MLLP frame (expected 0x0B)")
        del self.buffer[:1]
        self.deadline = time.monotonic() + MESSAGE_TIMEOUTS * self.config.idle_timeout
        limit = self.config.max_message_bytes
        searched = 0
        while True:
            end = self.buffer.find(END + CR, max(0, searched - 1))
            if end >= 0:
                if end > limit:  # skip_to_end() finds the end block in the buffer
                    return bytes(self.buffer[:HEAD]), False
                message = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                self.deadline = None
                return message, True
            if START in self.buffer[searched:]:
                raise FramingError("a new frame started before the end of the previous one")
            searched = len(self.buffer)
            if len(self.buffer) > limit:
                return bytes(self.buffer[:HEAD]), False
            self._recv()

    def skip_to_end(self) -> None:
        """Discard the rest of a message over the limit, up to its end block."""
        end = self.buffer.find(END + CR)
        if end >= 0:  # it ended within what was read already
            del self.buffer[: end + 2]
            self.deadline = None
            return
        tail = bytes(self.buffer[-1:])
        self.buffer.clear()
        while True:
            self._recv()
            data = tail + bytes(self.buffer)
            end = data.find(END + CR)
            if end >= 0:
                rest = data[end + 2:]
                self.buffer[:] = rest
                self.deadline = None
                return
            tail = data[-1:]
            self.buffer.clear()


class MllpServer:
    """The Listener protocol of appliance.supervisor: start(), stop(), describe()."""

    name = "HL7"

    def __init__(self, config: MllpConfig, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.config.host, self.config.port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def describe(self) -> str:
        host, port = self.address
        return f"HL7 MLLP on {host}:{port}"

    def start(self) -> None:
        outer = self

        class _Request(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request, f"{self.client_address[0]}")

        class _Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 64

        self._server = _Server((self.config.host, self.config.port), _Request)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hl7-mllp", daemon=True)  # fmt: skip
        self._thread.start()
        log.info("HL7 MLLP listener on %s:%d", *self.address)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        log.info("HL7 MLLP listener stopped")

    def _serve(self, sock: socket.socket, peer: str) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("HL7 connection from %s refused: %d connections open (hl7.max_connections)", peer,
                        self.config.max_connections)  # fmt: skip
            sock.close()
            return
        with self._lock:
            self._open.add(sock)
        count = 0
        try:
            sock.settimeout(self.config.idle_timeout)
            conn = _Connection(sock, self.config)
            while True:
                message, complete = conn.next_frame()
                if complete:
                    answer: bytes | None = self.handler.receive(message, peer)
                else:
                    answer = self.handler.too_large(message, peer, self.config.max_message_bytes)
                    if answer is None:
                        return
                    conn.skip_to_end()
                count += 1
                sock.sendall(START + (answer or b"") + END + CR)
        except _Closed as exc:
            log.debug("HL7 connection from %s ended after %d messages: %s", peer, count, exc)
        except FramingError as exc:
            log.warning("HL7 connection from %s closed: %s", peer, exc)
        except OSError as exc:
            log.info("HL7 connection from %s lost: %s", peer, exc)
        except Exception:
            log.exception("HL7 connection from %s: unexpected error, connection closed", peer)
        finally:
            with self._lock:
                self._open.discard(sock)
            self._slots.release()
            sock.close()  # socketserver would too; closing here frees the peer at once


__all__ = ["FramingError", "Handler", "MllpConfig", "MllpServer"]
