"""DICOM worker processes: several processes on one port, restarted when they die, never orphaned."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import echo, start_server


def workers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children() if "appliance.worker" in " ".join(p.cmdline())]


def wait_for(condition, timeout: float = 20, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_workers_share_the_port_and_a_dead_worker_is_restarted(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"MINIPACS_DICOM_WORKERS": "2"})
    try:
        wait_for(lambda: len(workers_of(server.process.pid)) == 2, what="two workers")
        # Every association is answered, whichever worker takes it.
        assert all(echo(server.port) for _ in range(6))
        wait_for(lambda: "[dicom-1]" in server.log() and "[dicom-2]" in server.log(),
                 what="both workers to log")  # fmt: skip
        victim = workers_of(server.process.pid)[0]
        victim.kill()
        wait_for(lambda: "restarting it" in server.log(), what="the restart")
        wait_for(lambda: len(workers_of(server.process.pid)) == 2 and victim.pid not in
                 [p.pid for p in workers_of(server.process.pid)], what="a new worker")  # fmt: skip
        assert all(echo(server.port) for _ in range(6))
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log()


def test_killing_the_supervisor_takes_the_workers_with_it(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"MINIPACS_DICOM_WORKERS": "2"})
    wait_for(lambda: len(workers_of(server.process.pid)) == 2, what="two workers")
    workers = workers_of(server.process.pid)
    server.stop(signal.SIGKILL)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], "workers outlived a killed supervisor"
    # Nothing holds the port: a restart on the same port works at once.
    restarted = start_server(tmp_path / "data", port=server.port)
    assert restarted.stop() == 0


@pytest.mark.parametrize("count", ["1", "3"])
def test_worker_count_setting(tmp_path: Path, count: str) -> None:
    server = start_server(tmp_path / "data", env={"MINIPACS_DICOM_WORKERS": count})
    try:
        expected = 0 if count == "1" else int(count)  # 1 serves in the main process
        wait_for(lambda: len(workers_of(server.process.pid)) == expected, what=f"{expected} workers")
        assert echo(server.port)
    finally:
        assert server.stop() == 0
