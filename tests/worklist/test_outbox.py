"""The outbox: ORM^O01 status updates to a real MLLP peer on 127.0.0.1, retried until acknowledged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7
import pytest

from archive import Archive, InvalidArgument, NotFound, Origin
from archive.db import Database, make_engine
from tests.archive.helpers import make_dataset, part10, table_rows
from tests.conftest import dcmtk, free_port, start_server
from tests.worklist.helpers import HIS, TECH, MllpPeer, order
from worklist.outbox import Outbox, OutboxSender, check_ack, DeliveryError
from worklist.service import Worklist
from worklist.status_updates import StatusUpdates, parse_address
from worklist.types import StepStatus


@pytest.fixture
def peer() -> Iterator[MllpPeer]:
    p = MllpPeer()
    yield p
    p.close()


def worklist_with_updates(archive: Archive) -> Worklist:
    wl = Worklist(archive)
    wl.status_listeners.append(StatusUpdates(sender="MINIPACS").on_status)
    return wl


def sender(archive: Archive, port: int, **kwargs: float) -> OutboxSender:
    options = {"read_timeout": 2.0, "connect_timeout": 2.0, **kwargs}
    return OutboxSender(archive.db, {"his": ("127.0.0.1", port)}, **options)  # type: ignore[arg-type]


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_status_change_reaches_the_his_once(archive: Archive, peer: MllpPeer) -> None:
    wl = worklist_with_updates(archive)
    wl.create(order(), HIS)
    assert Outbox(archive.db).entries() == []  # creating an order is not a status change
    wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
    s = sender(archive, peer.port)
    assert s.run_once() == 1
    assert s.run_once(later(3600)) == 0  # acknowledged: never sent again
    [message] = peer.received
    parsed = hl7.parse(message.decode("utf-8"))
    assert str(parsed.segment("MSH")[9]) == "ORM^O01^ORM_O01" and str(parsed.segment("MSH")[18]) == "UNICODE UTF-8"
    assert str(parsed.segment("MSH")[12]) == "2.5"
    orc = parsed.segment("ORC")
    assert (str(orc[1]), str(orc[2]), str(orc[5])) == ("SC", "O1^HIS", "IP")
    assert str(parsed.segment("OBR")[18]) == "ACC001"
    pid = parsed.segment("PID")
    assert str(pid[3]) == "PID001" and str(pid[5]) == "Nguyễn^Văn An"
    [entry] = Outbox(archive.db).entries()
    assert (entry.state, entry.attempts, entry.subject, entry.last_error) == ("sent", 1, "ACC001", "")


def test_every_status_has_its_order_status_code(archive: Archive, peer: MllpPeer) -> None:
    wl = worklist_with_updates(archive)
    wl.create(order(), HIS)
    wl.create(order("O2", accession="ACC002"), HIS)
    wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
    wl.set_status("ACC001", StepStatus.COMPLETED, TECH)
    wl.set_status("ACC002", StepStatus.CANCELLED, TECH)
    assert sender(archive, peer.port).run_once() == 3
    codes = [str(hl7.parse(m.decode()).segment("ORC")[5]) for m in peer.received]
    assert codes == ["IP", "CM", "CA"]


def test_changes_the_his_made_itself_are_not_echoed(archive: Archive, peer: MllpPeer) -> None:
    wl = worklist_with_updates(archive)
    wl.create(order(), HIS)
    wl.create(order("O2", accession="ACC002"), HIS)
    wl.cancel("HIS", "O1", HIS)  # HL7 CA
    wl.discontinue("HIS", "O2", Origin("his-token", "10.0.0.2", "FHIR"))
    assert Outbox(archive.db).entries() == []
    wl.create(order("O3", accession="ACC003"), HIS)
    wl.set_status("ACC003", StepStatus.IN_PROGRESS, TECH)  # the technologist: the HIS must hear it
    assert [e.subject for e in Outbox(archive.db).entries()] == ["ACC003"]


def test_ae_then_aa_is_retried_with_backoff(archive: Archive) -> None:
    peer = MllpPeer(["AE", "AE", "AA"])
    try:
        wl = worklist_with_updates(archive)
        wl.create(order(), HIS)
        wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
        s = sender(archive, peer.port, base_delay=10, max_delay=15)
        assert s.run_once() == 0
        [entry] = Outbox(archive.db).entries()
        assert entry.state == "pending" and entry.attempts == 1 and "AE" in entry.last_error
        assert "unknown order" in entry.last_error
        first_wait = (entry.next_attempt_at - datetime.now(UTC)).total_seconds()
        assert 8 < first_wait <= 10
        assert s.run_once() == 0 and len(peer.received) == 1  # not due yet
        assert s.run_once(later(11)) == 0
        [entry] = Outbox(archive.db).entries()
        second_wait = (entry.next_attempt_at - datetime.now(UTC)).total_seconds()
        assert 13 < second_wait <= 15  # doubled, then capped at max_delay
        assert s.run_once(later(16)) == 1
        assert len(peer.received) == 3
        # The same message each time, with the same control ID (the HIS can spot a duplicate).
        assert len(set(peer.received)) == 1
        assert Outbox(archive.db).entries()[0].state == "sent"
    finally:
        peer.close()


@pytest.mark.parametrize("answer, error", [
    ("silent", "no ACK"), ("garbage", "not an HL7 ACK"), ("close", "closed the connection"), ("AR", "AR"),
])  # fmt: skip
def test_no_acknowledgement_means_retry(archive: Archive, answer: str, error: str) -> None:
    peer = MllpPeer([answer])
    try:
        wl = worklist_with_updates(archive)
        wl.create(order(), HIS)
        wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
        assert sender(archive, peer.port, read_timeout=0.5).run_once() == 0
        [entry] = Outbox(archive.db).entries()
        assert entry.state == "pending" and entry.attempts == 1 and error in entry.last_error
    finally:
        peer.close()


def test_nobody_listening_is_retried_and_gives_up_after_max_attempts(archive: Archive, peer: MllpPeer) -> None:
    wl = worklist_with_updates(archive)
    wl.create(order(), HIS)
    wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
    s = sender(archive, free_port(), base_delay=1, max_attempts=3)
    for n in range(3):
        assert s.run_once(later(10 * n)) == 0
    [entry] = Outbox(archive.db).entries()
    assert entry.state == "failed" and entry.attempts == 3 and "cannot reach" in entry.last_error
    assert s.run_once(later(3600)) == 0  # failed messages wait for an operator
    outbox = Outbox(archive.db)
    assert outbox.retry(entry.pk).state == "pending"
    assert sender(archive, peer.port).run_once() == 1
    with pytest.raises(InvalidArgument, match="already sent"):
        outbox.retry(entry.pk)
    with pytest.raises(NotFound):
        outbox.retry(999)
    assert outbox.entries("failed") == [] and len(outbox.entries("sent")) == 1
    with pytest.raises(InvalidArgument):
        outbox.entries("bogus")


def test_messages_of_one_order_keep_their_order(archive: Archive) -> None:
    peer = MllpPeer(["AE", "AA"])
    try:
        wl = worklist_with_updates(archive)
        wl.create(order(), HIS)
        wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
        wl.set_status("ACC001", StepStatus.COMPLETED, TECH)
        s = sender(archive, peer.port)
        assert s.run_once() == 0  # IN PROGRESS refused: COMPLETED must wait behind it
        assert len(peer.received) == 1
        assert s.run_once(later(60)) == 2
        assert [str(hl7.parse(m.decode()).segment("ORC")[5]) for m in peer.received] == ["IP", "IP", "CM"]
    finally:
        peer.close()


def test_a_restart_still_delivers(tmp_path: Path, peer: MllpPeer) -> None:
    url, objects = f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects")
    first = Archive.open(url, objects)
    wl = worklist_with_updates(first)
    wl.create(order(), HIS)
    wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
    assert sender(first, free_port()).run_once() == 0  # the HIS is down
    first.close()
    second = Archive.open(url, objects)  # a new process on the same data
    try:
        s = sender(second, peer.port)
        s.start()
        deadline = time.monotonic() + 20
        while not peer.received and time.monotonic() < deadline:
            time.sleep(0.1)
        s.stop()
        assert len(peer.received) == 1
        assert [r["state"] for r in table_rows(second, "outbox_message")] == ["sent"]
    finally:
        second.close()


def test_the_outbox_row_is_part_of_the_status_change(archive: Archive) -> None:
    """A refused status change leaves no message behind."""
    wl = worklist_with_updates(archive)
    wl.create(order(), HIS)
    wl.set_status("ACC001", StepStatus.CANCELLED, TECH)
    with pytest.raises(Exception, match="cannot become"):
        wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
    assert [e.subject for e in Outbox(archive.db).entries()] == ["ACC001"]


def test_an_unreachable_database_is_a_warning_and_the_sender_keeps_trying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = Database(make_engine(f"sqlite:///{tmp_path}"))  # a directory: SQLite cannot open it
    s = OutboxSender(unreachable, {}, poll_seconds=0.05)
    s.start()
    try:
        deadline = time.monotonic() + 10
        while sum("unavailable" in r.getMessage() for r in caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        s.stop()
        unreachable.engine.dispose()
    warnings = [r for r in caplog.records if r.name == "worklist.outbox"]
    assert len(warnings) >= 2 and all(r.levelname == "WARNING" and r.exc_info is None for r in warnings)
    assert "unable to open database file" in warnings[0].getMessage()


def test_ack_checks() -> None:
    msh = b"MSH|^~\\&|HIS||MINIPACS||20261205||ACK|1|P|2.5\r"
    assert check_ack(msh + b"MSA|AA|C1\r", "C1") == "AA"
    assert check_ack(msh + b"MSA|CA|C1\r", "C1") == "CA"
    for bad in (msh + b"MSA|AA|OTHER\r", msh + b"MSA|AE|C1\r", msh, b"", b"MSA|AA|C1\r", b"\xff\xfe"):
        with pytest.raises(DeliveryError):
            check_ack(bad, "C1")


def test_setting_values() -> None:
    assert parse_address("his.local:2575") == ("his.local", 2575)
    assert parse_address("[::1]:6661") == ("::1", 6661)
    for bad in ("his.local", ":2575", "his:0", "his:70000", "his:abc", ""):
        with pytest.raises(ValueError, match="host:port"):
            parse_address(bad)


def test_minipacs_serve_sends_the_status_when_images_arrive(tmp_path: Path, peer: MllpPeer) -> None:
    """storescu -> minipacs serve -> reconciled -> IN PROGRESS -> ORM^O01 SC at the HIS's MLLP port."""
    image = tmp_path / "img.dcm"
    image.write_bytes(part10(make_dataset(1)))
    env = {"MINIPACS_HL7_STATUS_UPDATES": f"127.0.0.1:{peer.port}"}
    server = start_server(tmp_path / "data", env=env)
    try:
        arc = server.archive()
        try:
            Worklist(arc).create(order(), HIS)
        finally:
            arc.close()
        dcmtk("storescu", "-aec", "MINIPACS", "127.0.0.1", str(server.port), image)
        deadline = time.monotonic() + 20
        while not peer.received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
    assert "HL7 status updates to 127.0.0.1" in server.log()
    [message] = peer.received
    orc = hl7.parse(message.decode()).segment("ORC")
    assert (str(orc[1]), str(orc[5])) == ("SC", "IP")
    arc = server.archive()
    try:
        assert [r["state"] for r in table_rows(arc, "outbox_message")] == ["sent"]
    finally:
        arc.close()


def test_minipacs_serve_refuses_a_bad_status_updates_setting(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "appliance.cli", "serve", "--data", str(tmp_path / "data")],
                            env={"MINIPACS_HL7_STATUS_UPDATES": "his-without-port", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "hl7.status_updates" in result.stderr and "host:port" in result.stderr
    assert "Traceback" not in result.stderr
