"""`minipacs report list|show|pdf` and `minipacs user certificate-number` as an administrator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reports.signing import verify_pdf
from reports.types import ReportDraft
from tests.appliance.util import assert_one_line_error, cli_env, open_archive
from tests.reports import ca
from tests.reports.service_helpers import ACCESSION, RADIOLOGIST, STUDY_UID, add_users, ordered_study, signing_reports
from worklist.service import Worklist


def minipacs(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *map(str, args), "--data", "data"], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A data directory with one signed report (ACC001, CT) and one draft (ACC002)."""
    archive = open_archive(tmp_path / "data")
    try:
        add_users(archive)
        worklist = Worklist(archive)
        ordered_study(archive, worklist)
        from tests.archive.helpers import uid

        ordered_study(archive, worklist, "ACC002", 2, uid(1, 2))
        reports = signing_reports(archive)
        view = reports.create(STUDY_UID, ReportDraft(template_id="ct-so-nao-vi"), RADIOLOGIST)
        reports.sign(ACCESSION, RADIOLOGIST, ca.PASSPHRASE, view.revision)
        reports.create(uid(1, 2), ReportDraft(sections={"findings": "Đang đọc"}), RADIOLOGIST)
    finally:
        archive.close()
    return tmp_path


def test_list_show_and_save_the_pdf(folder: Path) -> None:
    listed = minipacs(folder, "report", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["ACCESSION", "STATUS", "VER"]
    assert {tuple(line.split()[:2]) for line in lines[1:]} == {(ACCESSION, "final"), ("ACC002", "draft")}
    drafts = minipacs(folder, "report", "list", "--status", "draft").stdout.splitlines()[1:]
    assert [line.split()[0] for line in drafts] == ["ACC002"]
    shown = minipacs(folder, "report", "show", ACCESSION)
    assert shown.returncode == 0 and "Kết luận:" in shown.stdout and "CCHN 003421/HCM-CCHN" in shown.stdout
    assert "Nguyễn Văn An (PID001)" in shown.stdout
    saved = minipacs(folder, "report", "pdf", ACCESSION, "-o", "out.pdf")
    assert saved.returncode == 0, saved.stderr
    assert verify_pdf((folder / "out.pdf").read_bytes(), [ca.test_ca().pem]).ok


@pytest.mark.parametrize("args, message", [
    (("report", "show", "NOPE"), "no report for accession number"),
    (("report", "pdf", "ACC002", "-o", "x.pdf"), "no signed PDF"),
    (("report", "show", ACCESSION, "--version", "9"), "no version 9"),
    (("report", "list", "--limit", "0"), "--limit"),
    (("user", "certificate-number", "nobody", "1/CCHN"), "nobody"),
    (("user", "certificate-number", RADIOLOGIST, "x" * 65), "at most 64"),
])  # fmt: skip
def test_bad_requests_say_what_is_wrong_in_one_line(folder: Path, args: tuple[str, ...], message: str) -> None:
    assert message in assert_one_line_error(minipacs(folder, *args), 1)
    assert not (folder / "x.pdf").exists()


def test_the_certificate_number_goes_on_the_next_signature(folder: Path) -> None:
    done = minipacs(folder, "user", "certificate-number", "bs.minh", "001234/BYT-CCHN")
    assert done.returncode == 0 and "001234/BYT-CCHN" in done.stdout
    listed = minipacs(folder, "user", "list").stdout
    assert "001234/BYT-CCHN" in listed and "003421/HCM-CCHN" in listed
    archive = open_archive(folder / "data")
    try:
        assert archive.accounts.user("bs.minh").practising_certificate == "001234/BYT-CCHN"  # type: ignore[union-attr]
    finally:
        archive.close()


@pytest.mark.parametrize("env, message", [
    ({"MINIPACS_REPORTS_TEMPLATES": "/nonexistent/templates"}, "does not exist (setting reports.templates)"),
    ({"MINIPACS_REPORTS_TEMPLATES": "BAD"}, "language must be one of vi, en"),
    ({"MINIPACS_REPORTS_DICOM": "sr,cd"}, "'cd' is not sr or pdf"),
])  # fmt: skip
def test_serve_refuses_report_settings_that_cannot_work(tmp_path: Path, env: dict[str, str], message: str) -> None:
    from tests.appliance.util import run_cli

    bad = tmp_path / "BAD"
    bad.mkdir()
    (bad / "mine.toml").write_text('id = "mine"\nlanguage = "fr"\ntitle = "x"\n', encoding="utf-8")
    result = run_cli("serve", "--data", "data", cwd=tmp_path, env={**cli_env(), **env})
    assert message in assert_one_line_error(result, 1)
