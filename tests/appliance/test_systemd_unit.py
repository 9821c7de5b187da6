"""The systemd units run `minipacs serve`, and nightly/weekly backup, retention and fsck, as the install guide says.

Each scheduled unit's command line is run here as systemd would run it (its
MINIPACS_CONFIG pointing at a test config) on a small site, so a unit that
names a subcommand or flag `minipacs` lacks, or that fails on a healthy
archive, fails this test.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.appliance.util import cli_env, instance_count, run_cli
from tests.conftest import CT_FILES, DX_FILE

DIRECTORY = Path(__file__).resolve().parents[2] / "appliance" / "systemd"
UNIT = DIRECTORY / "minipacs.service"
GUIDE = DIRECTORY.parents[1] / "docs" / "install.md"
BINARY = "/opt/minipacs/.venv/bin/minipacs"
SCHEDULED = ("backup", "retention", "fsck")
#: What every unit shares with minipacs.service: its user, its config, its hardening.
SHARED = ("User", "Group", "Environment", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "UMask")


def read(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    assert unit.read(path), path
    return unit


def command(service: configparser.ConfigParser) -> list[str]:
    """The `minipacs` arguments of ExecStart (the binary checked and dropped)."""
    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv[0] == BINARY, argv
    return argv[1:]


def success_statuses(service: configparser.ConfigParser) -> set[int]:
    return {0, *map(int, service["Service"].get("SuccessExitStatus", "").split())}


def test_the_unit_is_well_formed_and_matches_the_install_guide() -> None:
    unit = read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].split() == [BINARY, "serve"]
    assert service["Environment"] == "MINIPACS_CONFIG=/etc/minipacs/minipacs.toml"
    assert service["User"] == "minipacs" and service["KillSignal"] == "SIGTERM"
    assert "/var/lib/minipacs" in service["ReadWritePaths"] and unit["Install"]["WantedBy"] == "multi-user.target"
    guide = GUIDE.read_text(encoding="utf-8")
    assert "/etc/minipacs/minipacs.toml --data /var/lib/minipacs" in guide


def test_there_is_a_timer_for_each_scheduled_command_and_nothing_else() -> None:
    assert sorted(p.name for p in DIRECTORY.iterdir()) == sorted(
        ["minipacs.service", *(f"minipacs-{name}.{kind}" for name in SCHEDULED for kind in ("service", "timer"))]
    )


@pytest.mark.parametrize("name", SCHEDULED)
def test_each_scheduled_unit_is_a_hardened_oneshot_run_by_its_timer(name: str) -> None:
    main = read(UNIT)["Service"]
    service = read(DIRECTORY / f"minipacs-{name}.service")
    assert service["Service"]["Type"] == "oneshot"
    assert {key: service["Service"].get(key) for key in SHARED} == {key: main[key] for key in SHARED}
    assert "/var/lib/minipacs" in service["Service"]["ReadWritePaths"].split()
    assert command(service)[0] == name and "--no-progress" in command(service)  # no progress bar in the journal
    assert "--repair" not in command(service)  # fsck only reports; a person decides what to quarantine
    assert "Install" not in service  # started by its timer, never at boot
    assert service["Unit"]["Documentation"] == read(UNIT)["Unit"]["Documentation"]

    timer = read(DIRECTORY / f"minipacs-{name}.timer")
    assert timer["Timer"]["Unit"] == f"minipacs-{name}.service"
    assert timer["Timer"]["Persistent"] == "true"  # a run missed while the box was off is made up at boot
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == "timers.target"
    if shutil.which("systemd-analyze"):
        calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]],
                                  capture_output=True, text=True, timeout=30)  # fmt: skip
        assert calendar.returncode == 0 and "Next elapse" in calendar.stdout, calendar.stderr


def test_the_backup_unit_may_write_the_documented_backup_folder_and_reads_its_key_file() -> None:
    service = read(DIRECTORY / "minipacs-backup.service")["Service"]
    assert "-/var/backups/minipacs" in service["ReadWritePaths"].split()  # "-": an S3 site has no such folder
    assert service["EnvironmentFile"] == "-/etc/minipacs/backup.env"
    assert success_statuses(read(DIRECTORY / "minipacs-backup.service")) == {0, 75}  # 75: another node runs it
    guide = GUIDE.read_text(encoding="utf-8")
    assert "/var/backups/minipacs" in guide and "/etc/minipacs/backup.env" in guide
    for name in SCHEDULED:
        assert f"minipacs-{name}.timer" in guide


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    """Every unit as systemd reads it; ExecStart points at this checkout's `minipacs` (/opt is not installed here)."""
    here = Path(sys.executable).parent / "minipacs"
    assert here.is_file()
    for path in DIRECTORY.iterdir():
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8").replace(BINARY, str(here)), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.iterdir()))],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # unknown keys are only warnings: none


def test_the_scheduled_commands_run_as_the_units_run_them(tmp_path: Path) -> None:
    """backup, retention (default rules: nothing deleted) and fsck, each exactly as its unit's ExecStart says."""
    data = tmp_path / "var-lib-minipacs"
    assert run_cli("import", CT_FILES[0], DX_FILE, "--data", data, "--no-progress", cwd=tmp_path).returncode == 0
    config = tmp_path / "minipacs.toml"
    config.write_text(f'data = "{data}"\n\n[backup]\ndestination = "{tmp_path / "backups"}"\n', encoding="utf-8")
    elsewhere = tmp_path / "cwd"  # systemd starts the unit in /: nothing may depend on the working directory
    elsewhere.mkdir()

    def run(name: str) -> subprocess.CompletedProcess[str]:
        unit = read(DIRECTORY / f"minipacs-{name}.service")
        variable, _, _ = unit["Service"]["Environment"].partition("=")
        return run_cli(*command(unit), cwd=elsewhere, env=cli_env(**{variable: str(config)}))

    backup = run("backup")
    assert backup.returncode == 0 and "2 objects copied" in backup.stdout, backup.stderr
    assert len(list((tmp_path / "backups" / "snapshots").iterdir())) == 1
    retention = run("retention")
    assert retention.returncode == 0 and "retention.rules is empty" in retention.stdout, retention.stderr
    assert instance_count(data) == 2  # the default rules delete nothing
    fsck = run("fsck")
    assert fsck.returncode == 0 and "2 objects checked" in fsck.stdout, fsck.stderr

    victim = next((data / "objects").rglob("*.dcm"))
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    damaged = run("fsck")
    assert damaged.returncode not in success_statuses(read(DIRECTORY / "minipacs-fsck.service"))  # systemctl --failed
    assert "1 corrupt" in damaged.stdout and victim.exists()  # reported, not moved
