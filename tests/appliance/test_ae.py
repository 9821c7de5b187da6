"""`minipacs ae add|list|remove`: the registry of known AEs, from the command line.

Each command is a real subprocess (about a second each, mostly imports), so the
flows are grouped to keep the folder fast.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.appliance.util import assert_one_line_error, cli_env, open_archive, run_cli


def ae(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("ae", *args, "--data", "data", cwd=tmp_path, env=env)


def table(stdout: str) -> dict[str, dict[str, str]]:
    """The `ae list` table, cut at the header's column positions."""
    header, *rows = stdout.splitlines()
    names = ["AE TITLE", "HOST", "PORT", "LAST SEEN", "DESCRIPTION"]
    starts = [header.index(name) for name in names]
    assert starts == sorted(starts), header
    # PORT is right-aligned under its header: its column starts after HOST's.
    bounds = list(zip(starts, [*starts[1:], None]))
    parsed = {}
    for row in rows:
        cells = {name: row[start:end].strip() for name, (start, end) in zip(names, bounds)}
        parsed[cells["AE TITLE"]] = cells
    return parsed


def registered(tmp_path: Path) -> list[str]:
    archive = open_archive(tmp_path / "data")
    try:
        return [entry.ae_title for entry in archive.registry.list()]
    finally:
        archive.close()


def test_add_list_remove(tmp_path: Path) -> None:
    empty = ae(tmp_path, "list")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "no AEs registered (add one with: minipacs ae add TITLE HOST PORT)"

    added = ae(tmp_path, "add", "WORKSTATION", "192.168.1.50", "104", "--description", "Reading room 1")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == ["registered WORKSTATION: 192.168.1.50 port 104"]

    host_only = ae(tmp_path, "add", "CT_SCANNER", "10.0.0.5")
    assert host_only.returncode == 0, host_only.stderr
    assert host_only.stdout.splitlines()[0] == "registered CT_SCANNER: calls from 10.0.0.5"
    assert "cannot be a C-MOVE destination" in host_only.stdout

    title_only = ae(tmp_path, "add", "  US_ROOM2 ")  # padding is not significant (PS3.5 6.2)
    assert title_only.returncode == 0, title_only.stderr
    assert title_only.stdout.splitlines()[0] == "registered US_ROOM2: calls from any address"

    # The index keeps UTC; a hospital in Viet Nam (UTC+7) must see its own clock.
    archive = open_archive(tmp_path / "data")
    try:
        archive.registry.seen("CT_SCANNER")
    finally:
        archive.close()
    seen_at = datetime.now(UTC)

    listed = ae(tmp_path, "list", env=cli_env(TZ="ICT-7"))  # POSIX TZ: 7 hours east of UTC
    assert listed.returncode == 0, listed.stderr
    rows = table(listed.stdout)
    assert list(rows) == ["CT_SCANNER", "US_ROOM2", "WORKSTATION"]  # sorted by title
    assert rows["WORKSTATION"] == {"AE TITLE": "WORKSTATION", "HOST": "192.168.1.50", "PORT": "104",
                                   "LAST SEEN": "never", "DESCRIPTION": "Reading room 1"}  # fmt: skip
    assert (rows["US_ROOM2"]["HOST"], rows["US_ROOM2"]["PORT"]) == ("(any)", "-")
    assert (rows["CT_SCANNER"]["HOST"], rows["CT_SCANNER"]["PORT"]) == ("10.0.0.5", "-")
    shown = datetime.strptime(rows["CT_SCANNER"]["LAST SEEN"], "%Y-%m-%d %H:%M:%S")
    local = (seen_at + timedelta(hours=7)).replace(tzinfo=None)
    assert abs(shown - local) < timedelta(minutes=2), (shown, local)

    removed = ae(tmp_path, "remove", "CT_SCANNER")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "removed CT_SCANNER"
    assert registered(tmp_path) == ["US_ROOM2", "WORKSTATION"]


ERRORS = [
    (["add", "A_TITLE_OF_17_CHAR"], ["AE title 'A_TITLE_OF_17_CHAR' is not valid", "1-16"]),
    (["add", "CT", "10.0.0.1", "99999"], ["port 99999 is outside 1-65535"]),
    (["add", "CT", "not a host!", "104"], ["host 'not a host!' is neither an IP address nor a host name"]),
    (["add", "WORKSTATION ", "192.168.1.99", "11112"],
     ["AE WORKSTATION is already registered (192.168.1.50 port 104)", "minipacs ae remove WORKSTATION"]),
    (["remove", "NOBODY"], ["AE NOBODY is not registered", "minipacs ae list"]),
]  # fmt: skip


def test_errors_are_one_clear_line_and_change_nothing(tmp_path: Path) -> None:
    assert ae(tmp_path, "add", "WORKSTATION", "192.168.1.50", "104").returncode == 0
    for args, words in ERRORS:
        line = assert_one_line_error(ae(tmp_path, *args), 1)
        for word in words:
            assert word in line, (args, line)
    archive = open_archive(tmp_path / "data")
    try:
        assert [(e.ae_title, e.host, e.port) for e in archive.registry.list()] == [
            ("WORKSTATION", "192.168.1.50", 104)
        ]
    finally:
        archive.close()
