"""`minipacs worklist ...` and `minipacs outbox ...`, run as the administrator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from archive.audit import search
from tests.appliance.util import assert_one_line_error, cli_env, open_archive, run_cli
from tests.archive.helpers import find, make_dataset, part10, uid
from tests.worklist.helpers import HIS, TECH, order
from worklist.outbox import FAILED, OUTBOX, Outbox
from worklist.service import Worklist
from worklist.status_updates import StatusUpdates
from worklist.types import StepStatus


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory with two orders (ACC001 for PID001, ACC002 for PID002) and no images."""
    folder = tmp_path / "data"
    folder.mkdir()
    archive = open_archive(folder)
    try:
        wl = Worklist(archive)
        wl.create(order(), HIS)
        wl.create(order("O2", accession="ACC002", patient_id="PID002", name="Lê^Thị Hoa", modality="DX",
                        priority="STAT"), HIS)  # fmt: skip
    finally:
        archive.close()
    return folder


def cli(data: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, "--data", data, cwd=data.parent, env=cli_env())
    return result.returncode, result.stdout, result.stderr


def image(tmp_path: Path, name: str, **kwargs: object) -> Path:
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(part10(make_dataset(**kwargs)))  # type: ignore[arg-type]
    return path


def test_import_reconciles_and_unmatched_studies_are_matched_by_hand(tmp_path: Path, data: Path) -> None:
    matched = image(tmp_path, "a", n=1)  # ACC001: matched on import
    stray = image(tmp_path, "b", n=2, study=uid(1, 2), series=uid(2, 2), AccessionNumber="TYPO",
                  patient_id="XX9", patient_name="LE THI HOA")  # fmt: skip
    code, out, err = cli(data, "import", "--no-progress", str(matched), str(stray))
    assert code == 0, err
    code, out, err = cli(data, "worklist", "unmatched")
    assert code == 0 and uid(1, 2) in out and uid(1, 1) not in out and "TYPO" in out and "XX9" in out

    code, out, err = cli(data, "worklist", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["ACCESSION", "DATE"]
    assert lines[1].startswith("ACC002") and "STAT" in lines[1]  # STAT first
    assert "ACC001" in lines[2] and "IN PROGRESS" in lines[2]
    code, out, _ = cli(data, "worklist", "list", "--modality", "ct", "--status", "in_progress", "--date", "today")
    assert code == 0 and "ACC001" in out and "ACC002" not in out
    code, out, _ = cli(data, "worklist", "list", "--date", "20000101")
    assert code == 0 and out.startswith("no steps match")

    code, out, err = cli(data, "worklist", "match", uid(1, 2), "ACC002")
    assert code == 0, err
    assert "matched study" in out and "patient PID002" in out and "corrected: patient ID: modality 'XX9'" in out
    code, out, _ = cli(data, "worklist", "unmatched")
    assert code == 0 and out.startswith("no unmatched studies")
    code, out, _ = cli(data, "worklist", "match", uid(1, 2), "ACC002")
    assert code == 0 and "already matched" in out

    code, out, _ = cli(data, "worklist", "show", "ACC002")
    assert code == 0
    assert "status:     IN PROGRESS" in out and "Lê^Thị Hoa" in out
    assert "matched" in out and "cli:" in out  # the history says who matched it
    archive = open_archive(data)
    try:
        [study] = find(archive, "STUDY", StudyInstanceUID=uid(1, 2), PatientID=None, AccessionNumber=None)
        assert (study.PatientID, study.AccessionNumber) == ("PID002", "ACC002")
        assert {e.outcome for e in search(archive.db, action="RECONCILE", uid=uid(1, 2))} == {
            "matched by hand", "corrected"}
    finally:
        archive.close()


def test_show_lists_prior_studies(tmp_path: Path, data: Path) -> None:
    prior = image(tmp_path, "p", n=5, study=uid(1, 5), series=uid(2, 5), AccessionNumber="OLD1",
                  StudyDescription="CT ngực 2025", StudyDate="20250101")  # fmt: skip
    assert cli(data, "import", "--no-progress", str(prior))[0] == 0
    code, out, _ = cli(data, "worklist", "show", "ACC001")
    assert code == 0
    priors = out.split("prior studies:")[1]
    assert "OLD1" in priors and "CT ngực 2025" in priors and "20250101" in priors


@pytest.mark.parametrize("args, expected", [
    (("worklist", "show", "NOSUCH"), "no step with accession number NOSUCH; `minipacs worklist list`"),
    (("worklist", "match", "1.2.3.4", "ACC001"), "no study 1.2.3.4 in the archive; `minipacs worklist unmatched`"),
    (("outbox", "retry", "99"), "no outbox message 99"),
])  # fmt: skip
def test_errors_say_what_to_do(data: Path, args: tuple[str, ...], expected: str) -> None:
    result = run_cli(*args, "--data", data, cwd=data.parent, env=cli_env())
    assert expected in assert_one_line_error(result, 1)


def test_match_errors(tmp_path: Path, data: Path) -> None:
    files = [image(tmp_path, "a", n=1), image(tmp_path, "b", n=2, study=uid(1, 2), series=uid(2, 2),
                                              AccessionNumber="")]  # fmt: skip
    assert cli(data, "import", "--no-progress", *map(str, files))[0] == 0
    result = run_cli("worklist", "match", uid(1, 2), "NOSUCH", "--data", data, cwd=data.parent, env=cli_env())
    assert "no order with accession number NOSUCH" in assert_one_line_error(result, 1)
    result = run_cli("worklist", "match", uid(1, 2), "ACC001", "--data", data, cwd=data.parent, env=cli_env())
    assert "already has study" in assert_one_line_error(result, 1)


@pytest.mark.parametrize("args", [
    ("worklist", "list", "--date", "2026-12-05"), ("worklist", "list", "--status", "DONE"),
    ("worklist", "list", "--limit", "0"), ("outbox", "retry", "abc"), ("outbox", "list", "--state", "lost"),
])  # fmt: skip
def test_bad_arguments_are_refused_by_the_parser(data: Path, args: tuple[str, ...]) -> None:
    result = run_cli(*args, "--data", data, cwd=data.parent, env=cli_env())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error:" in result.stderr


def test_outbox_list_and_retry(data: Path) -> None:
    archive = open_archive(data)
    try:
        wl = Worklist(archive)
        wl.status_listeners.append(StatusUpdates().on_status)
        wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
        wl.set_status("ACC002", StepStatus.IN_PROGRESS, TECH)
        [newest, oldest] = Outbox(archive.db).entries()
        with archive.db.write() as conn:
            conn.execute(OUTBOX.update().where(OUTBOX.c.pk == oldest.pk).values(
                state=FAILED, attempts=200, last_error="cannot reach 10.0.0.9:2575: Connection refused"))  # fmt: skip
    finally:
        archive.close()
    code, out, _ = cli(data, "outbox", "list")
    assert code == 0
    assert "failed" in out and "pending" in out and "Connection refused" in out and "200" in out
    code, out, _ = cli(data, "outbox", "list", "--state", "failed")
    assert code == 0 and "ACC001" in out and "ACC002" not in out
    code, out, _ = cli(data, "outbox", "retry", str(oldest.pk))
    assert code == 0 and "will be sent again" in out and "hl7.status_updates is not set" in out
    code, out, _ = cli(data, "outbox", "list", "--state", "failed")
    assert code == 0 and out.startswith("the outbox is empty")
    assert newest.subject == "ACC002"


def test_help_is_helpful(data: Path) -> None:
    for args in (("worklist", "--help"), ("worklist", "match", "--help"), ("outbox", "retry", "--help")):
        result = run_cli(*args, cwd=data.parent, env=cli_env())
        assert result.returncode == 0 and "usage: minipacs" in result.stdout
    result = run_cli("worklist", cwd=data.parent, env=cli_env())
    assert result.returncode == 2 and "unmatched" in result.stdout
