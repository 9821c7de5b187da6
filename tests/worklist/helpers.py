"""Orders and MLLP peers for the worklist tests (real sockets on 127.0.0.1, real SQLite)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from archive import Origin
from archive.patients import PatientDemographics
from worklist.types import OrderRequest

HIS = Origin("HIS", "127.0.0.1", "HL7", "msg-1")
TECH = Origin("ktv.hoa", "127.0.0.1", "HTTP", "req-1")


def order(number: str = "O1", accession: str = "ACC001", patient_id: str = "PID001",
          name: str = "Nguyễn^Văn An", **extra: Any) -> OrderRequest:  # fmt: skip
    values: dict[str, Any] = {"modality": "CT", "procedure_description": "CT sọ não không tiêm thuốc"}
    values.update(extra)
    return OrderRequest(
        placer_issuer="HIS", placer_order_number=number, accession_number=accession,
        patient=PatientDemographics(patient_id, name=name, birth_date="19680315", sex="M"), **values,
    )  # fmt: skip


@dataclass
class MllpPeer:
    """A tiny HIS MLLP listener: answers each framed message from `answers` (then the last one forever).

    An answer is "AA", "AE", "AR", "garbage", "silent" (reads and never answers)
    or "close" (closes without answering). Every message received is kept.
    """

    answers: list[str] = field(default_factory=lambda: ["AA"])
    received: list[bytes] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))  # 0: any free port
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while not self._stop.is_set():
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                    while b"\x1c\x0d" in data:
                        frame, data = data.split(b"\x1c\x0d", 1)
                        message = frame[frame.index(b"\x0b") + 1:]
                        with self._lock:
                            self.received.append(message)
                            answer = self.answers[min(len(self.received) - 1, len(self.answers) - 1)]
                        if answer == "silent":
                            self._stop.wait(30)
                            return
                        if answer == "close":
                            return
                        conn.sendall(b"\x0b" + ack(message, answer) + b"\x1c\x0d")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def ack(message: bytes, code: str) -> bytes:
    """An HL7 ACK for `message` with MSA-1 `code` ("garbage": not HL7 at all)."""
    if code == "garbage":
        return b"\x00\xffnot an ack"
    msh = message.split(b"\r", 1)[0].decode()
    control = msh.split("|")[9]
    err = "\rERR|||207^Application internal error^HL70357|E" if code in ("AE", "AR") else ""
    return (f"MSH|^~\\&|HIS||MINIPACS||20261205120000||ACK^O01^ACK|A{control}|P|2.5\r"
            f"MSA|{code}|{control}{'|unknown order' if err else ''}{err}\r").encode()
