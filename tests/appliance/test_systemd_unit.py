"""The systemd unit runs `minipacs serve` as its own user with the config the install guide writes."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "appliance" / "systemd" / "minipacs.service"


def test_the_unit_is_well_formed_and_matches_the_install_guide() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].split() == ["/opt/minipacs/.venv/bin/minipacs", "serve"]
    assert service["Environment"] == "MINIPACS_CONFIG=/etc/minipacs/minipacs.toml"
    assert service["User"] == "minipacs" and service["KillSignal"] == "SIGTERM"
    assert "/var/lib/minipacs" in service["ReadWritePaths"] and unit["Install"]["WantedBy"] == "multi-user.target"
    guide = (UNIT.parents[2] / "docs" / "install.md").read_text(encoding="utf-8")
    assert "/etc/minipacs/minipacs.toml --data /var/lib/minipacs" in guide
    if shutil.which("systemd-analyze"):  # present on a systemd machine; CI containers may lack it
        done = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
        assert "Unknown key" not in done.stderr and "Invalid" not in done.stderr, done.stderr
