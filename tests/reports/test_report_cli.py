"""`minipacs report verify` and `minipacs user signing-key` as real subprocesses, the way an administrator runs them."""

from __future__ import annotations

import getpass
import subprocess
import sys
from pathlib import Path

import pytest

from reports.pdf import render_pdf
from reports.signing import load_identity, sign_pdf
from reports.types import Hospital
from tests.appliance.util import assert_one_line_error, cli_env, open_archive
from tests.archive.helpers import table_rows
from tests.reports import ca
from tests.reports.factory import report_view


def minipacs(cwd: Path, *args: str | Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """`minipacs ARGS --data data` in `cwd`, standard input not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *map(str, args), "--data", "data"],
        cwd=cwd, env=cli_env(**env), input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a signed report, an unsigned one, a tampered one, the CAs and the PKCS#12 files."""
    folder = tmp_path_factory.mktemp("files")
    pdf = render_pdf(report_view(), Hospital())
    identity = ca.radiologist()
    signed = sign_pdf(pdf, load_identity(identity.pkcs12, identity.passphrase.encode()),
                      reason="r", location="l", name="BS. Trần Thị Lan")  # fmt: skip
    (folder / "signed.pdf").write_bytes(signed)
    (folder / "unsigned.pdf").write_bytes(pdf)
    (folder / "tampered.pdf").write_bytes(signed.replace(b"ReportLab PDF Library", b"ReportLab PDF Librarz", 1))
    (folder / "not.pdf").write_text("Kết luận: bình thường\n")
    (folder / "ca.pem").write_bytes(ca.test_ca().pem)
    (folder / "other.pem").write_bytes(ca.other_ca().pem)
    (folder / "lan.p12").write_bytes(identity.pkcs12)
    (folder / "expired.p12").write_bytes(ca.expired().pkcs12)
    (folder / "pin.txt").write_text(ca.PASSPHRASE + "\n")
    return folder


def test_verify_a_signed_report(files: Path) -> None:
    ok = minipacs(files, "report", "verify", "signed.pdf", "--trust", "other.pem", "--trust", "ca.pem")
    assert ok.returncode == 0, ok.stderr
    assert "Traceback" not in ok.stderr
    lines = dict(line.split(":", 1) for line in ok.stdout.splitlines() if ":" in line)
    assert lines["signer"].strip() == "CN=Tran Thi Lan,O=Benh vien Da khoa Huyen,C=VN"
    assert lines["serial"].strip() == ca.radiologist().serial
    assert "(the signer's clock)" in lines["signed at"]
    assert lines["intact"].strip() == "yes" and lines["trusted"].strip() == "yes"
    assert ok.stdout.rstrip().endswith("signed.pdf: signature VALID")


def test_verify_says_no_for_untrusted_and_changed_reports(files: Path) -> None:
    untrusted = minipacs(files, "report", "verify", "signed.pdf", "--trust", "other.pem")
    assert untrusted.returncode == 1 and "Traceback" not in untrusted.stderr, untrusted.stderr
    assert "trusted:   no" in untrusted.stdout and "signature NOT VALID" in untrusted.stdout
    no_roots = minipacs(files, "report", "verify", "signed.pdf")
    assert no_roots.returncode == 1 and "no --trust CA given" in no_roots.stdout
    tampered = minipacs(files, "report", "verify", "tampered.pdf", "--trust", "ca.pem")
    assert tampered.returncode == 1 and "Traceback" not in tampered.stderr
    assert "intact:    NO" in tampered.stdout and "the signed content was changed" in tampered.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("unsigned.pdf", "--trust", "ca.pem"), "unsigned.pdf: the PDF carries no electronic signature"),
    (("not.pdf", "--trust", "ca.pem"), "not.pdf: not a readable PDF"),
    (("missing.pdf",), "cannot read the report PDF missing.pdf"),
    (("signed.pdf", "--trust", "missing.pem"), "cannot read the CA certificate missing.pem"),
    (("signed.pdf", "--trust", "not.pdf"), "trust root 1 is not a PEM or DER certificate"),
])  # fmt: skip
def test_verify_bad_input_is_one_line(files: Path, args: tuple[str, ...], message: str) -> None:
    assert message in assert_one_line_error(minipacs(files, "report", "verify", *args), 1)


@pytest.mark.slow  # eight runs of the command
def test_signing_key_install_show_remove(files: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    work = tmp_path
    for name in ("lan.p12", "expired.p12", "pin.txt", "not.pdf"):
        (work / name).write_bytes((files / name).read_bytes())
    added = minipacs(work, "user", "add", "bs.lan", "--role", "radiologist", "--password-stdin",
                     stdin="đọc phim buổi sáng\n")  # fmt: skip
    assert added.returncode == 0, added.stderr

    none = minipacs(work, "user", "signing-key", "bs.lan")
    assert none.returncode == 1 and "bs.lan has no signing certificate" in none.stdout

    installed = minipacs(work, "user", "signing-key", "bs.lan", "lan.p12", "--passphrase-file", "pin.txt")
    assert installed.returncode == 0, installed.stderr
    assert "installed the signing certificate of bs.lan" in installed.stdout
    assert ca.radiologist().serial in installed.stdout and "(valid)" in installed.stdout
    assert ca.PASSPHRASE not in installed.stdout + installed.stderr

    # From the environment, for scripts (and no warning about an unknown MINIPACS_ variable).
    again = minipacs(work, "user", "signing-key", "BS.LAN", "lan.p12", MINIPACS_SIGNING_PASSPHRASE=ca.PASSPHRASE)
    assert again.returncode == 0 and "ignoring the environment variable" not in again.stderr, again.stderr

    shown = minipacs(work, "user", "signing-key", "bs.lan")
    assert shown.returncode == 0 and "CN=Tran Thi Lan" in shown.stdout and ca.radiologist().serial in shown.stdout

    archive = open_archive(work / "data")
    try:
        assert len(table_rows(archive, "signing_identity")) == 1
    finally:
        archive.close()

    removed = minipacs(work, "user", "signing-key", "bs.lan", "--remove")
    assert removed.returncode == 0 and removed.stdout.strip() == "signing certificate of bs.lan removed"
    archive = open_archive(work / "data")
    try:
        assert table_rows(archive, "signing_identity") == []
        events = [(r["actor"], r["action"], r["uid"]) for r in table_rows(archive, "audit_event")
                  if r["action"].startswith("SIGNING_KEY")]  # fmt: skip
    finally:
        archive.close()
    me = f"cli:{getpass.getuser()}"
    assert events == [(me, "SIGNING_KEY_INSTALL", "bs.lan"), (me, "SIGNING_KEY_INSTALL", "bs.lan"),
                      (me, "SIGNING_KEY_REMOVE", "bs.lan")]  # fmt: skip


@pytest.mark.slow  # a dozen runs of the command
def test_signing_key_mistakes_are_one_line_and_change_nothing(files: Path, tmp_path: Path) -> None:
    work = tmp_path
    for name in ("lan.p12", "expired.p12", "pin.txt", "not.pdf"):
        (work / name).write_bytes((files / name).read_bytes())
    assert minipacs(work, "user", "add", "bs.lan", "--role", "radiologist", "--password-stdin",
                    stdin="đọc phim buổi sáng\n").returncode == 0  # fmt: skip
    (work / "wrong.txt").write_text("654321\n")
    cases = [
        (("bs.lan", "lan.p12"), {}, "no terminal to ask for the passphrase"),
        (("bs.lan", "lan.p12", "--passphrase-file", "wrong.txt"), {}, "the signing PIN is wrong"),
        (("bs.lan", "lan.p12"), {"MINIPACS_SIGNING_PASSPHRASE": "nope"}, "the signing PIN is wrong"),
        (("bs.lan", "not.pdf", "--passphrase-file", "pin.txt"), {}, "is not a PKCS#12"),
        (("bs.lan", "expired.p12", "--passphrase-file", "pin.txt"), {}, "the signing certificate expired on"),
        (("bs.lan", "missing.p12", "--passphrase-file", "pin.txt"), {}, "cannot read the PKCS#12 file missing.p12"),
        (("bs.lan", "lan.p12", "--passphrase-file", "missing.txt"), {}, "cannot read the passphrase file"),
        (("nobody", "lan.p12", "--passphrase-file", "pin.txt"), {}, "there is no user nobody"),
        (("bs.lan", "--remove"), {}, "bs.lan has no signing certificate"),
        (("bs.lan", "lan.p12", "--remove"), {}, "not both"),
    ]
    for args, env, message in cases:
        result = minipacs(work, "user", "signing-key", *args, **env)
        assert message in assert_one_line_error(result, 1), (args, result.stderr)
    archive = open_archive(work / "data")
    try:
        assert table_rows(archive, "signing_identity") == []
    finally:
        archive.close()


def test_report_without_an_action_shows_help(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "report"], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "verify" in result.stdout
