"""Hand-written HL7 v2 messages, an MLLP client on a real socket, and an in-process listener.

Messages are built field by field ({field number: value}) so a test reads
like the mapping table in docs/hl7.md and no one counts pipes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from archive import Archive
from worklist.message_log import Receiver
from worklist.mllp import MllpConfig, MllpServer
from worklist.service import Worklist

START, END = b"\x0b", b"\x1c\x0d"


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment with the given fields (1-based); the rest empty."""
    values = [""] * (max(fields) if fields else 0)
    for n, value in fields.items():
        values[n - 1] = value
    return "|".join([name, *values])


def msh(message_type: str, control_id: str, *, charset: str = "UNICODE UTF-8", version: str = "2.5",
        app: str = "HIS", facility: str = "BVHUYEN") -> str:  # fmt: skip
    """MSH with fields numbered as in the standard (MSH-1 is the "|" itself, MSH-2 "^~\\&")."""
    fields = {3: app, 4: facility, 5: "MINIPACS", 6: "RAD", 7: "20261205101010", 9: message_type,
              10: control_id, 11: "P", 12: version, 18: charset}  # fmt: skip
    last = max(n for n, v in fields.items() if v)
    return "MSH|^~\\&|" + "|".join(fields.get(n, "") for n in range(3, last + 1))


def pid(patient_id: str = "BN001", name: str = "Nguyễn^Văn An", birth: str = "19680315", sex: str = "M",
        others: str = "") -> str:  # fmt: skip
    ids = patient_id + (f"~{others}" if others else "")
    return segment("PID", {1: "1", 3: ids, 5: name, 7: birth, 8: sex})


def orm(control_id: str, order: str = "ORD1", *, control: str = "NW", accession: str = "ACC1",
        procedure: str = "CT-SONAO^CT sọ não không tiêm thuốc^LOCAL", start: str = "20261205143000",
        patient: str | None = None, charset: str = "UNICODE UTF-8", version: str = "2.5",
        orc: dict[int, str] | None = None, obr: dict[int, str] | None = None, extra: str = "",
        referring: str = "BS01^Trần^Thị^Bình") -> str:  # fmt: skip
    """ORM^O01 with one order; `orc`/`obr` add or override fields."""
    orc_fields = {1: control, 2: order, 7: f"^^^{start}^^R" if start else ""} | (orc or {})
    obr_fields = {1: "1", 2: order, 4: procedure, 18: accession} | (obr or {})
    segments = [msh("ORM^O01", control_id, charset=charset, version=version),
                patient if patient is not None else pid(),
                segment("PV1", {1: "1", 2: "O", 8: referring, 19: "VV123"}),
                segment("ORC", orc_fields), segment("OBR", obr_fields)]  # fmt: skip
    if extra:
        segments.append(extra)
    return "\r".join(segments) + "\r"


def latin1_orm(control_id: str, **kwargs: object) -> bytes:
    """An ORM^O01 in ISO 8859-1 (MSH-18 8859/1): no Vietnamese letters outside the name."""
    kwargs.setdefault("patient", pid(name="Dupont^Marie"))
    text = orm(control_id, charset="8859/1", procedure="CT-SONAO^CT head^LOCAL", referring="D1^Dupont^Jean",
               **kwargs)  # type: ignore[arg-type]
    return text.encode("latin-1")


def adt(event: str, control_id: str, patient: str, mrg: str = "") -> str:
    segments = [msh(f"ADT^{event}", control_id), segment("EVN", {1: event}), patient]
    if mrg:
        segments.append(segment("MRG", {1: mrg}))
    return "\r".join(segments) + "\r"


@dataclass
class Ack:
    raw: bytes
    segments: dict[str, list[str]]

    @property
    def code(self) -> str:
        return self.segments["MSA"][1]

    @property
    def error_code(self) -> str:
        return self.segments["ERR"][3].split("^")[0] if "ERR" in self.segments else ""

    @property
    def text(self) -> str:
        return self.segments["ERR"][8] if "ERR" in self.segments else self.segments["MSA"][3]


def parse_ack(raw: bytes, encoding: str = "utf-8") -> Ack:
    text = raw.decode(encoding)
    assert text.startswith("MSH|^~\\&|MINIPACS|"), text
    segments = {line.split("|")[0]: line.split("|") for line in text.split("\r") if line}
    return Ack(raw, segments)


class Client:
    """An HIS on a real MLLP connection."""

    def __init__(self, address: tuple[str, int], timeout: float = 30) -> None:
        self.sock = socket.create_connection(("127.0.0.1", address[1]), timeout=timeout)

    def send(self, message: str | bytes, encoding: str = "utf-8") -> Ack:
        data = message.encode(encoding) if isinstance(message, str) else message
        self.sock.sendall(START + data + END)
        return parse_ack(self.read_frame(), "latin-1" if encoding == "latin-1" else "utf-8")

    def read_frame(self) -> bytes:
        data = b""
        while not data.endswith(END):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the listener after {data!r}")
            data += chunk
        assert data.startswith(START), data
        return data[1:-2]

    def closed_by_peer(self, timeout: float = 10) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send(address: tuple[str, int], message: str | bytes, encoding: str = "utf-8") -> Ack:
    with Client(address) as client:
        return client.send(message, encoding)


@dataclass
class Listener:
    server: MllpServer
    worklist: Worklist
    archive: Archive

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def logged(self) -> list[dict[str, object]]:
        with self.archive.db.read() as conn:
            rows = conn.exec_driver_sql("SELECT control_id, message_type, ack_code, raw, ack, detail "
                                        "FROM hl7_message ORDER BY pk").all()  # fmt: skip
        return [dict(r._mapping) for r in rows]

    def step_count(self) -> int:
        with self.archive.db.read() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM procedure_step").scalar_one())


def start_listener(archive: Archive, **config: object) -> Iterator[Listener]:
    worklist = Worklist(archive)
    server = MllpServer(MllpConfig(**{"host": "127.0.0.1", "port": 0, **config}), Receiver(worklist))  # type: ignore[arg-type]
    server.start()
    try:
        yield Listener(server, worklist, archive)
    finally:
        server.stop()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    arc = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    try:
        yield from start_listener(arc, idle_timeout=5.0)
    finally:
        arc.close()


def run_threads(count: int, target: object) -> list[BaseException]:
    """Run target(n) in `count` threads at once; returns what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(n: int) -> None:
        try:
            barrier.wait(10)
            target(n)  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors
