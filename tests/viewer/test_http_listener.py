"""The HTTP listener lives and dies with `minipacs serve`."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.conftest import free_port, start_server
from tests.viewer.helpers import http_answers


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_killed_server_leaves_no_http_server_behind(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, a power button) gives gunicorn no chance to be told:
    Linux stops it, so the next start finds the port free."""
    port = free_port()
    for attempt in ("first", "after the kill"):
        server = start_server(tmp_path / "data", env={"MINIPACS_HTTP_PORT": str(port)})
        wait_until(lambda: http_answers(f"http://127.0.0.1:{port}/healthz"), 30, f"HTTP answers ({attempt})")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        wait_until(lambda: refused(port), 20, f"nothing listens on the HTTP port ({attempt})")
