"""The HL7 door end to end: real MLLP sockets to a listener on 127.0.0.1, a real SQLite archive.

Each test sends hand-written messages as an HIS would, then reads the
worklist (Worklist.get/steps) and the message log to see what changed.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from archive import Archive
from tests.archive.helpers import ingest_ds, make_dataset, table_rows
from tests.conftest import free_port, start_server
from tests.worklist.hl7_helpers import (
    Client,
    Listener,
    adt,
    latin1_orm,
    listener,
    parse_ack,
    orm,
    pid,
    run_threads,
    segment,
    send,
    start_listener,
)
from worklist.service import Worklist

__all__ = ["listener"]  # the fixture, imported for pytest


def test_new_order_in_utf8_appears_on_the_worklist(listener: Listener) -> None:
    patient = pid(others="079123456789^^^CCCD^NI~HS4010123456789^^^BHYT^HC")
    ack = send(listener.address, orm("M1", patient=patient, obr={24: "CT"}))
    assert ack.code == "AA", ack.raw
    step = listener.worklist.get("ACC1")
    assert (step.status, step.modality, step.placer_order_number) == ("SCHEDULED", "CT", "ORD1")
    assert step.patient.name == "Nguyễn^Văn An"
    assert step.patient.birth_date == "19680315"
    assert {(o.value, o.issuer) for o in step.patient.other_ids} == {("079123456789", "CCCD"),
                                                                      ("HS4010123456789", "BHYT")}  # fmt: skip
    assert step.referring_physician == "Trần^Thị Bình"
    assert (step.start_date, step.start_time) == ("20261205", "143000")
    [logged] = listener.logged()
    assert logged["control_id"] == "M1" and logged["ack_code"] == "AA"
    raw, stored_ack = logged["raw"], logged["ack"]
    assert isinstance(raw, bytes) and isinstance(stored_ack, bytes)
    assert raw.startswith(b"MSH|") and stored_ack == ack.raw


def test_latin1_and_ascii_orders(listener: Listener) -> None:
    ack = send(listener.address, latin1_orm("L1", patient=pid("BN-L", name="Müller^Zoë")), "latin-1")
    assert ack.code == "AA", ack.raw
    assert ack.segments["MSH"][17] == "8859/1"
    assert listener.worklist.get("ACC1").patient.name == "Müller^Zoë"
    ascii_msg = orm("A1", "ORD2", accession="ACC2", charset="", procedure="CT-SONAO^CT so nao^LOCAL",
                    referring="BS02^TRAN^BINH", patient=pid("BN-A", name="NGUYEN^VAN AN"))  # fmt: skip
    assert send(listener.address, ascii_msg.encode("ascii")).code == "AA"
    assert listener.worklist.get("ACC2").patient.name == "NGUYEN^VAN AN"


def test_change_cancel_discontinue_and_status(listener: Listener) -> None:
    with Client(listener.address) as his:  # several messages on one connection
        assert his.send(orm("M1")).code == "AA"
        assert his.send(orm("M2", control="XO", start="20261206090000", obr={5: "S"})).code == "AA"
        step = listener.worklist.get("ACC1")
        assert (step.start_date, step.start_time, step.priority) == ("20261206", "090000", "STAT")
        assert his.send(orm("M3", control="CA")).code == "AA"
        assert listener.worklist.get("ACC1").status == "CANCELLED"
        assert listener.worklist.steps(status="SCHEDULED") == []
        # A cancelled order cannot be changed: AE with the service's code, nothing changes.
        ack = his.send(orm("M4", control="XO", start="20261207090000"))
        assert (ack.code, ack.error_code) == ("AE", "207"), ack.raw
        assert listener.worklist.get("ACC1").start_date == "20261206"

        assert his.send(orm("M5", "ORD2", accession="ACC2")).code == "AA"
        assert his.send(orm("M6", "ORD2", control="SC", orc={5: "IP"})).code == "AA"
        assert listener.worklist.get("ACC2").status == "IN PROGRESS"
        assert his.send(orm("M7", "ORD2", control="DC")).code == "AA"
        assert listener.worklist.get("ACC2").status == "DISCONTINUED"

        assert his.send(orm("M8", "ORD3", accession="ACC3")).code == "AA"
        assert his.send(orm("M9", "ORD3", control="SC", orc={5: "CM"})).code == "AA"
        assert listener.worklist.get("ACC3").status == "COMPLETED"
        ack = his.send(orm("M10", "ORD-NONE", control="CA"))
        assert (ack.code, ack.error_code) == ("AE", "204")


def test_adt_a08_corrects_the_name(listener: Listener) -> None:
    assert send(listener.address, orm("M1", patient=pid(name="Nguyen^Van An"))).code == "AA"
    ack = send(listener.address, adt("A08", "M2", pid(name="Nguyễn^Văn An", birth="19680316")))
    assert ack.code == "AA", ack.raw
    step = listener.worklist.get("ACC1")
    assert (step.patient.name, step.patient.birth_date) == ("Nguyễn^Văn An", "19680316")
    ack = send(listener.address, adt("A31", "M3", pid("NOBODY")))
    assert (ack.code, ack.error_code) == ("AE", "204")


def test_adt_a40_moves_orders_and_studies(listener: Listener) -> None:
    archive = listener.archive
    ingest_ds(archive, make_dataset(patient_id="BN-OLD", patient_name="Nguyen^Van An", AccessionNumber="OLD1"))
    assert send(listener.address, orm("M1", patient=pid("BN-OLD"))).code == "AA"
    ack = send(listener.address, adt("A40", "M2", pid("BN001"), mrg="BN-OLD^^^BV^MR"))
    assert ack.code == "AA", ack.raw
    assert listener.worklist.get("ACC1").patient.patient_id == "BN001"
    patients = {r["patient_id"] for r in table_rows(archive, "patient")}
    assert patients == {"BN001"}
    [study] = table_rows(archive, "study")
    [survivor] = [r for r in table_rows(archive, "patient") if r["patient_id"] == "BN001"]
    assert study["patient_pk"] == survivor["pk"]


def test_replay_gets_the_same_ack_and_is_not_applied_again(listener: Listener) -> None:
    first = send(listener.address, orm("R1"))
    assert send(listener.address, orm("R2", control="SC", orc={5: "IP"})).code == "AA"
    # The same NW again under its control ID: the stored ACK, byte for byte, and no new step or event.
    again = send(listener.address, orm("R1"))
    assert again.raw == first.raw
    assert len(listener.worklist.history("ACC1")) == 2
    refused = send(listener.address, orm("R3", control="SC"))
    assert refused.code == "AE"
    assert send(listener.address, orm("R3", control="SC")).raw == refused.raw
    assert [r["control_id"] for r in listener.logged()] == ["R1", "R2", "R3"]
    # The same control ID from another application is another message.
    other = orm("R1", "ORD7", accession="ACC7").replace("|HIS|", "|HIS2|", 1)
    assert send(listener.address, other).code == "AA"
    assert listener.worklist.get("ACC7").placer_issuer == "HIS2"


def test_all_orders_of_a_message_or_none(listener: Listener) -> None:
    assert send(listener.address, orm("M1", "ORD1", accession="ACC1")).code == "AA"
    # Two orders; the second reuses ACC1's accession number: refused, and the first is not kept either.
    two = orm("M2", "ORD2", accession="ACC2") + segment("ORC", {1: "NW", 2: "ORD3"}) + "\r" + segment(
        "OBR", {1: "2", 2: "ORD3", 4: "CT-SONAO", 18: "ACC1"}) + "\r"  # fmt: skip
    ack = send(listener.address, two)
    assert (ack.code, ack.error_code) == ("AE", "205"), ack.raw
    assert listener.step_count() == 1
    assert [r["ack_code"] for r in listener.logged()] == ["AA", "AE"]


# --- bad input -----------------------------------------------------------------------------


BAD = [
    ("unsupported type", orm("B1").replace("ORM^O01", "ORU^R01"), "AR", "200"),
    ("unsupported event", orm("B2").replace("ORM^O01", "ADT^A04"), "AR", "201"),
    ("wrong delimiters", orm("B3").replace("|^~\\&|", "|^^^^|", 1), "AR", "102"),
    ("missing PID-3", orm("B4", patient=pid(patient_id="")), "AE", "101"),
    ("bad birth date", orm("B5", patient=pid(birth="20261350")), "AE", "102"),
    ("bad schedule", orm("B6", start="2026-12-05"), "AE", "102"),
    ("unknown procedure, no modality", orm("B7", procedure="XYZ^?^LOCAL"), "AE", "101"),
]


@pytest.mark.parametrize("what,message,code,error", BAD, ids=[b[0] for b in BAD])
def test_bad_messages_are_refused_logged_and_change_nothing(listener: Listener, what: str, message: str,
                                                            code: str, error: str) -> None:  # fmt: skip
    with Client(listener.address) as his:
        ack = his.send(message)
        assert (ack.code, ack.error_code) == (code, error), ack.raw
        assert ack.text  # ERR-8 says what was wrong
        assert listener.step_count() == 0
        [logged] = listener.logged()
        assert logged["ack_code"] == code
        # The same connection carries on.
        assert his.send(orm("OK1")).code == "AA"
    assert listener.step_count() == 1


@pytest.mark.parametrize("payload", [b"no MSH here", b"PID|1||BN001\r", b"\x00\x01\x02\xff" * 100])
def test_framed_garbage_is_answered_ar_and_not_stored(listener: Listener, payload: bytes) -> None:
    with Client(listener.address) as his:
        his.sock.sendall(b"\x0b" + payload + b"\x1c\x0d")
        ack = parse_ack(his.read_frame())
        assert ack.code == "AR" and ack.segments["MSA"][2] == ""
        assert his.send(orm("OK1")).code == "AA"
    assert [r["control_id"] for r in listener.logged()] == ["OK1"]


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00",
                                     b"MSH|^~\\&|HIS|BV\r\x1c\r"])  # fmt: skip
def test_bytes_outside_a_frame_close_the_connection(listener: Listener, garbage: bytes) -> None:
    with Client(listener.address) as peer:
        peer.sock.sendall(garbage)
        assert peer.closed_by_peer()
    assert send(listener.address, orm("OK1")).code == "AA"
    assert [r["control_id"] for r in listener.logged()] == ["OK1"]


def test_a_20_mb_message_is_refused_and_not_stored(listener: Listener) -> None:
    huge = orm("BIG1", obr={13: "x" * (20 * 2**20)})
    with Client(listener.address) as his:
        ack = his.send(huge)
        assert (ack.code, ack.segments["MSA"][2]) == ("AR", "BIG1"), ack.raw[:300]
        assert "KiB" in ack.text
        assert his.send(orm("OK1")).code == "AA"
    assert [r["control_id"] for r in listener.logged()] == ["OK1"]
    assert listener.step_count() == 1


def test_oversized_garbage_without_msh_closes_the_connection(tmp_path: Path) -> None:
    with closing(Archive.open(f"sqlite:///{tmp_path / 'i.sqlite'}", str(tmp_path / "o"))) as arc:
        for running in start_listener(arc, max_message_bytes=4096):
            with Client(running.address) as peer:
                peer.sock.sendall(b"\x0b" + b"\xff" * 10000)
                assert peer.closed_by_peer()
            assert send(running.address, orm("OK1")).code == "AA"


def test_a_stalled_message_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with closing(Archive.open(f"sqlite:///{tmp_path / 'i.sqlite'}", str(tmp_path / "o"))) as arc:
        for running in start_listener(arc, idle_timeout=0.5):
            with Client(running.address) as stalled, Client(running.address) as silent:
                stalled.sock.sendall(b"\x0b" + orm("S1").encode()[:50])  # never the end block
                began = time.monotonic()
                assert stalled.closed_by_peer(timeout=10)
                assert silent.closed_by_peer(timeout=10)
                assert time.monotonic() - began < 5
            assert send(running.address, orm("OK1")).code == "AA"
            assert [r["control_id"] for r in running.logged()] == ["OK1"]


def test_a_message_trickling_in_is_cut_off(tmp_path: Path) -> None:
    """A byte now and then, each within the idle timeout, must not hold the connection for ever."""
    with closing(Archive.open(f"sqlite:///{tmp_path / 'i.sqlite'}", str(tmp_path / "o"))) as arc:
        for running in start_listener(arc, idle_timeout=0.5):
            message = b"\x0b" + orm("T1").encode()
            with Client(running.address) as trickler:
                began = time.monotonic()
                closed = False
                for byte in message:
                    try:
                        trickler.sock.sendall(bytes([byte]))
                    except OSError:
                        closed = True
                        break
                    time.sleep(0.3)
                    if time.monotonic() - began > 10:
                        break
                assert closed or trickler.closed_by_peer(timeout=1)
                assert time.monotonic() - began < 10  # 4 idle timeouts = 2 s, and some slack
            assert send(running.address, orm("OK1")).code == "AA"
            assert [r["control_id"] for r in running.logged()] == ["OK1"]


def test_connections_over_the_limit_are_closed(tmp_path: Path) -> None:
    with closing(Archive.open(f"sqlite:///{tmp_path / 'i.sqlite'}", str(tmp_path / "o"))) as arc:
        for running in start_listener(arc, max_connections=2):
            with Client(running.address) as a, Client(running.address) as b:
                assert a.send(orm("C1")).code == "AA" and b.send(orm("C2")).code == "AA"
                with Client(running.address) as c:
                    assert c.closed_by_peer()
            deadline = time.monotonic() + 5
            while True:  # the two slots are freed once their handlers notice the close
                try:
                    assert send(running.address, orm("C3")).code == "AA"
                    break
                except (ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def test_concurrent_connections(listener: Listener) -> None:
    def his(n: int) -> None:
        with Client(listener.address) as client:
            for i in range(10):
                ack = client.send(orm(f"C{n}-{i}", f"ORD{n}-{i}", accession=f"A{n}-{i}",
                                      patient=pid(f"BN{n}-{i}")))  # fmt: skip
                assert ack.code == "AA", ack.raw

    assert run_threads(8, his) == []
    assert listener.step_count() == 80
    assert len(listener.logged()) == 80


# --- minipacs serve ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["0", "1"], ids=["worker-processes", "one-process"])
def test_minipacs_serve_listens_for_hl7(tmp_path: Path, workers: str) -> None:
    """With DICOM worker processes the HL7 listener opens its own archive; in one process it shares it."""
    port = free_port()
    server = start_server(tmp_path / "data", env={"MINIPACS_HL7_PORT": str(port), "MINIPACS_HL7_HOST": "127.0.0.1",
                                                  "MINIPACS_DICOM_WORKERS": workers})  # fmt: skip
    try:
        address = ("127.0.0.1", port)
        assert send(address, orm("E1", obr={24: "CT"})).code == "AA"
        assert send(address, orm("E2", control="CA")).code == "AA"
        with Client(address) as peer:
            peer.sock.sendall(b"\x00garbage")
            assert peer.closed_by_peer()
        with closing(server.archive()) as arc:
            step = Worklist(arc).get("ACC1")
            assert (step.status, step.patient.name) == ("CANCELLED", "Nguyễn^Văn An")
    finally:
        code = server.stop()
    assert code == 0, server.log()
    log = server.log()
    assert "Traceback" not in log, log
    assert f"HL7 MLLP on 127.0.0.1:{port}" in log
    assert "HL7 ORM^O01 E1 from HIS@127.0.0.1: AA" in log


def test_minipacs_serve_names_a_busy_hl7_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "MINIPACS_HL7_PORT": str(port), "MINIPACS_HL7_HOST": "127.0.0.1",
               "MINIPACS_HTTP_PORT": str(free_port()), "MINIPACS_DICOM_HOST": "127.0.0.1",
               "MINIPACS_STORAGE_RESERVE_MB": "0"}  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "appliance.cli", "serve", "--data", str(tmp_path / "data"),
                                 "--dicom-port", str(free_port())], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"cannot listen for HL7 on 127.0.0.1:{port}" in result.stderr and "--hl7-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_mutated_messages_always_get_an_ack(listener: Listener) -> None:
    """300 randomly damaged orders (bytes dropped, doubled, replaced; fields shuffled) on one connection:
    each gets an ACK that says AA, AE or AR, never a dropped connection, and the listener keeps serving."""
    rng = random.Random(20261205)
    base = orm("F", obr={24: "CT"}, extra=segment("OBX", {3: "11449-6", 5: "Y"})).encode()
    codes = set()
    with Client(listener.address) as his:
        for n in range(300):
            data = bytearray(base.replace(b"|F|", f"|F{n}|".encode(), 1).replace(b"ORD1", f"O{n}".encode())
                             .replace(b"ACC1", f"A{n}".encode()))  # fmt: skip
            for _ in range(rng.randint(1, 6)):
                at = rng.randrange(8, len(data))  # keep "MSH|^~\&" so the ACK can be addressed
                choice = rng.random()
                if choice < 0.3:
                    del data[at]
                elif choice < 0.6:
                    data[at] = rng.choice(b"|^~\\&\r0123456789AZ\xc3\xff")
                elif choice < 0.8:
                    data[at:at] = data[at:at + rng.randint(1, 40)]
                else:
                    data[at] = rng.randrange(0x20, 0xFF)
            data = data.replace(b"\x0b", b"").replace(b"\x1c", b"")
            ack = his.send(bytes(data))
            assert ack.code in ("AA", "AE", "AR"), ack.raw
            codes.add(ack.code)
        assert his.send(orm("LAST", "ORD-LAST", accession="ACC-LAST")).code == "AA"
    assert codes >= {"AE", "AR"}
