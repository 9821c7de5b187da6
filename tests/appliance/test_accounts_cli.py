"""`minipacs user ...` and `minipacs token ...` as an administrator runs them.

Each command is a real subprocess; flows are grouped to keep the folder fast.
"""

from __future__ import annotations

import getpass
import signal
import subprocess
import sys
from pathlib import Path

from appliance import cli_accounts
from archive import accounts
from tests.appliance.util import (
    BASE_ENV,
    assert_one_line_error,
    cli_env,
    open_archive,
    start_cli,
    wait_for_echo,
)
from tests.archive.helpers import table_rows
from tests.conftest import free_port


def minipacs(tmp_path: Path, *args: str, stdin: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`minipacs ARGS --data data` with `stdin` as standard input (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args, "--data", "data"],
        cwd=tmp_path, env=env or cli_env(), input=stdin or "", capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_user_add_list_passwd_disable_enable(tmp_path: Path) -> None:
    empty = minipacs(tmp_path, "user", "list")
    assert empty.returncode == 0, empty.stderr
    assert "no users yet" in empty.stdout and "minipacs user add admin --role admin" in empty.stdout

    added = minipacs(tmp_path, "user", "add", "BS.Lan", "--role", "radiologist", "--display-name",
                     "BS. Trần Thị Lan", "--password-stdin", stdin="đọc phim buổi sáng\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "created user bs.lan (radiologist)"
    assert "đọc phim" not in added.stdout + added.stderr

    listed = minipacs(tmp_path, "user", "list")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["USER", "ROLE", "STATE", "PASSWORD", "SET", "CCHN", "NAME"]
    assert row.split()[:3] == ["bs.lan", "radiologist", "active"] and row.endswith("BS. Trần Thị Lan")

    assert minipacs(tmp_path, "user", "passwd", "bs.lan", "--password-stdin", stdin="mật khẩu mới dài\n").returncode == 0
    assert minipacs(tmp_path, "user", "disable", "bs.lan").stdout.strip() == "user bs.lan disabled"
    assert "disabled" in minipacs(tmp_path, "user", "list").stdout
    archive = open_archive(tmp_path / "data")
    try:
        assert archive.accounts.authenticate("bs.lan", "mật khẩu mới dài") is None  # disabled
    finally:
        archive.close()
    assert minipacs(tmp_path, "user", "enable", "bs.lan").stdout.strip() == "user bs.lan enabled"
    archive = open_archive(tmp_path / "data")
    try:
        assert archive.accounts.authenticate("bs.lan", "mật khẩu mới dài") is not None
        assert archive.accounts.authenticate("bs.lan", "đọc phim buổi sáng") is None
        actions = [(r["actor"], r["action"]) for r in table_rows(archive, "audit_event")]
    finally:
        archive.close()
    me = f"cli:{getpass.getuser()}"
    assert actions == [(me, "USER_ADD"), (me, "USER_PASSWORD"), (me, "USER_DISABLE"), (me, "USER_ENABLE")]


def test_user_mistakes_get_one_line_and_change_nothing(tmp_path: Path) -> None:
    no_terminal = minipacs(tmp_path, "user", "add", "lan", "--role", "radiologist")
    assert "use --password-stdin" in assert_one_line_error(no_terminal, 1)
    nothing = minipacs(tmp_path, "user", "add", "lan", "--role", "radiologist", "--password-stdin")
    assert "nothing on standard input" in assert_one_line_error(nothing, 1)
    short = minipacs(tmp_path, "user", "add", "lan", "--role", "radiologist", "--password-stdin", stdin="abc\n")
    assert "too short: at least 8" in assert_one_line_error(short, 1)
    role = minipacs(tmp_path, "user", "add", "lan", "--role", "boss", "--password-stdin", stdin="long enough\n")
    assert "invalid choice: 'boss'" in role.stderr and role.returncode == 2
    bad_name = minipacs(tmp_path, "user", "add", "../lan", "--role", "admin", "--password-stdin",
                        stdin="long enough\n")  # fmt: skip
    assert "user name '../lan' is not valid" in assert_one_line_error(bad_name, 1)
    ghost = minipacs(tmp_path, "user", "disable", "ghost")
    assert "there is no user ghost" in assert_one_line_error(ghost, 1)
    archive = open_archive(tmp_path / "data")
    try:
        assert archive.accounts.users() == []
        assert table_rows(archive, "audit_event") == []
    finally:
        archive.close()


def test_token_create_list_revoke(tmp_path: Path) -> None:
    created = minipacs(tmp_path, "token", "create", "his-emr")
    assert created.returncode == 0, created.stderr
    first, secret = created.stdout.splitlines()
    assert first == "created token his-emr (emr). Store it now; it is not shown again:"
    archive = open_archive(tmp_path / "data")
    try:
        token = archive.accounts.verify_token(secret)
        assert token is not None and token.role == "emr"
    finally:
        archive.close()
    listed = minipacs(tmp_path, "token", "list").stdout
    assert secret not in listed and secret[:12] in listed and "active" in listed
    assert minipacs(tmp_path, "token", "revoke", "his-emr").stdout.strip() == "token his-emr revoked"
    assert "revoked" in minipacs(tmp_path, "token", "list").stdout
    archive = open_archive(tmp_path / "data")
    try:
        assert archive.accounts.verify_token(secret) is None
    finally:
        archive.close()
    unknown = minipacs(tmp_path, "token", "revoke", "ghost")
    assert "there is no token named ghost" in assert_one_line_error(unknown, 1)
    again = minipacs(tmp_path, "token", "create", "his-emr")
    assert "a token named his-emr already exists" in assert_one_line_error(again, 1)


def test_the_cli_offers_the_roles_the_archive_knows() -> None:
    assert cli_accounts.USER_ROLES == accounts.USER_ROLES
    assert cli_accounts.TOKEN_ROLES == accounts.TOKEN_ROLES
    assert cli_accounts.MIN_PASSWORD == accounts.MIN_PASSWORD


def test_serve_creates_the_first_admin_from_the_environment_once(tmp_path: Path) -> None:
    for run, password in (("first", "quản trị viên 01"), ("second", "ignored later")):
        port = free_port()
        env = {**BASE_ENV, "MINIPACS_DICOM_HOST": "127.0.0.1", "MINIPACS_ADMIN_PASSWORD": password}
        running = start_cli("serve", "--data", "data", "--dicom-port", str(port), cwd=tmp_path, env=env, name=run)
        try:
            wait_for_echo(running, port)
        finally:
            assert running.stop(signal.SIGTERM) == 0, running.stderr
        created = "created the first administrator, user admin, from MINIPACS_ADMIN_PASSWORD"
        assert (created in running.stderr) == (run == "first"), running.stderr
        assert password not in running.stderr
    archive = open_archive(tmp_path / "data")
    try:
        assert [(u.username, u.role) for u in archive.accounts.users()] == [("admin", "admin")]
        assert archive.accounts.authenticate("admin", "quản trị viên 01") is not None
    finally:
        archive.close()
