"""`minipacs audit`: the administrator's view of who looked at what."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from archive.audit import audit_row
from archive.models import AuditEvent
from archive.origin import Origin
from tests.appliance.util import cli_env, open_archive


def minipacs_audit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "audit", "--data", "data", *args],
                          cwd=tmp_path, env=cli_env(TZ="UTC"), capture_output=True, text=True, timeout=60)  # fmt: skip


def seed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    archive = open_archive(tmp_path / "data")
    rows = []
    for day, actor, action, uid, detail in (
        (1, "lan", "QUERY", "", "PatientID=BN26001001"),
        (2, "his-emr", "RETRIEVE", "1.2.3.4", ""),
        (3, "CT_ROOM1", "STORE", "1.2.3.4.5", "study 1.2.3.4"),
        (4, "lan", "QUERY", "", "PatientName=tran*"),
    ):  # fmt: skip
        row = audit_row(Origin(actor, "10.0.0.7", "X"), action, "STUDY", uid, "done", detail)
        row["at"] = datetime(2026, 11, day, 9, 30, tzinfo=UTC)
        rows.append(row)
    try:
        with archive.db.write() as conn:
            conn.execute(insert(AuditEvent.__table__), rows)
    finally:
        archive.close()


def events(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:3] == ["TIME", "WHO", "FROM"]
    return [line.split() for line in lines]


def test_filters_by_user_action_uid_text_and_dates(tmp_path: Path) -> None:
    seed(tmp_path)
    everything = events(minipacs_audit(tmp_path))
    assert [e[2] for e in everything] == ["lan", "CT_ROOM1", "his-emr", "lan"]  # newest first
    assert everything[0][:2] == ["2026-11-04", "09:30:00"]
    assert [e[1] for e in events(minipacs_audit(tmp_path, "--user", "lan"))] == ["09:30:00", "09:30:00"]
    assert [e[4] for e in events(minipacs_audit(tmp_path, "--action", "retrieve"))] == ["RETRIEVE"]
    assert [e[2] for e in events(minipacs_audit(tmp_path, "--uid", "1.2.3.4"))] == ["his-emr"]
    found = events(minipacs_audit(tmp_path, "--contains", "BN26001001"))
    assert len(found) == 1 and found[0][-1] == "PatientID=BN26001001"
    days = events(minipacs_audit(tmp_path, "--since", "2026-11-02", "--until", "2026-11-03"))
    assert [e[0] for e in days] == ["2026-11-03", "2026-11-02"]
    assert len(events(minipacs_audit(tmp_path, "--limit", "1"))) == 1
    assert minipacs_audit(tmp_path, "--contains", "%").stdout.strip() == "no audit events match"


def test_bad_arguments_say_what_to_give(tmp_path: Path) -> None:
    for args, message in ((["--since", "23/11/2026"], "is not a date like 2026-11-23"),
                          (["--limit", "0"], "give a number from 1 to 100000"),
                          (["--limit", "lots"], "give a number from 1 to 100000")):  # fmt: skip
        result = minipacs_audit(tmp_path, *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_finds_everything_that_touched_one_patient(tmp_path: Path) -> None:
    from pydicom import dcmread

    from tests.conftest import CT_FILES, DX_FILE

    seed(tmp_path)
    ct = dcmread(CT_FILES[0], stop_before_pixels=True)
    archive = open_archive(tmp_path / "data")
    try:
        for path in (CT_FILES[0], DX_FILE):
            with open(path, "rb") as f:
                archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
        viewer = Origin("bs.hoa", "10.0.0.9", "WADO")
        for level, uid in (("STUDY", ct.StudyInstanceUID), ("SERIES", ct.SeriesInstanceUID),
                           ("IMAGE", ct.SOPInstanceUID), ("STUDY", dcmread(DX_FILE).StudyInstanceUID)):  # fmt: skip
            archive.audit.record(viewer, "VIEW", level, str(uid), "done")
        archive.audit.record(viewer, "QUERY", "STUDY", "", "1 matches", f"PatientID={ct.PatientID}")
    finally:
        archive.close()
    found = events(minipacs_audit(tmp_path, "--patient", str(ct.PatientID), "--user", "bs.hoa"))
    assert sorted((e[4], e[5]) for e in found) == [
        ("QUERY", "STUDY"), ("VIEW", "IMAGE"), ("VIEW", "SERIES"), ("VIEW", "STUDY")]  # not the DX patient's study
    assert minipacs_audit(tmp_path, "--patient", "BN-NOBODY").stdout.strip() == "no audit events match"
