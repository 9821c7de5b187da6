"""Running the real `minipacs` command as a subprocess, the way an administrator does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from archive import Archive
from tests.conftest import echo, free_port

#: Settings that every command-line test starts from: nothing inherited from
#: the developer's shell, and no free-space reserve (tmp may be small).
BASE_ENV = {
    **{name: value for name, value in os.environ.items() if not name.startswith("MINIPACS_")},
    "MINIPACS_STORAGE_RESERVE_MB": "0",
}


def cli_env(**extra: str) -> dict[str, str]:
    return {**BASE_ENV, **extra}


def run_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`minipacs ARGS` in `cwd`; returns the finished process with text output."""
    env = {"MINIPACS_HTTP_PORT": str(free_port()), "MINIPACS_HL7_PORT": str(free_port()),
           **(cli_env() if env is None else env)}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *map(str, args)],
        cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with `code` and said why in one line, without a traceback."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("minipacs")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def open_archive(data: Path) -> Archive:
    return Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))


def instance_count(data: Path) -> int:
    archive = open_archive(data)
    try:
        return archive.statistics().instances
    finally:
        archive.close()


@dataclass
class Running:
    """A `minipacs serve` or `minipacs demo` started by a test, output in files."""

    process: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_cli(*args: str | Path, cwd: Path, env: dict[str, str], name: str = "run") -> Running:
    out, err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
    env = {"MINIPACS_HTTP_PORT": str(free_port()), "MINIPACS_HL7_PORT": str(free_port()),
           **env}  # tests run side by side: never 8080 or 2575
    with open(out, "wb") as o, open(err, "wb") as e:
        process = subprocess.Popen([sys.executable, "-m", "appliance.cli", *map(str, args)],
                                   cwd=cwd, env=env, stdout=o, stderr=e)  # fmt: skip
    return Running(process, out, err)


def wait_for_echo(running: Running, port: int, aet: str = "MINIPACS", timeout: float = 30) -> None:
    """Poll until the server answers C-ECHO addressed to `aet` (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise AssertionError(f"exited with {running.process.returncode}:\n{running.stderr}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            if echo(port, aet=aet):
                return
        except OSError:
            pass
        time.sleep(0.05)
    running.stop(signal.SIGKILL)
    raise AssertionError(f"no C-ECHO answer within {timeout} s:\n{running.stderr}")
