"""DICOM worker processes that share one listening socket.

The supervisor opens the DICOM port itself and starts `dicom.workers`
processes (appliance.worker) that all accept on it; the kernel gives each
new association to one of them. A worker that dies is restarted; on
shutdown every worker gets SIGTERM and finishes the message in hand.
Workers die with the supervisor (PR_SET_PDEATHSIG), so a killed service never
leaves processes behind that still hold the port.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from appliance.settings import Settings, as_environment

log = logging.getLogger(__name__)

_RESTART_WINDOW = 60.0
_MAX_RESTARTS = 5


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment of a worker: ours, plus the resolved settings as MINIPACS_* variables."""
    return {**os.environ, **as_environment(settings)}


def prepare(settings: Settings) -> int:
    """Bring the index up to date and report on it, in a process of its own.

    Returns its exit status; it has already told the operator what is wrong.
    """
    return subprocess.run(
        [sys.executable, "-m", "appliance.worker", "--prepare"],
        env=worker_environment(settings), check=False,
    ).returncode  # fmt: skip


class DicomWorkers:
    """The DICOM listener as N worker processes (the Listener protocol of appliance.supervisor)."""

    name = "DICOM"

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._socket: socket.socket | None = None
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: list[float] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._socket is None:
            return self.settings["dicom.host"], self.settings["dicom.port"]
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def describe(self) -> str:
        host, port = self.address
        return (f"DICOM AE {self.settings['dicom.ae_title']} on {host}:{port} "
                f"({self.count} worker processes)")  # fmt: skip

    def start(self) -> None:
        host, port = self.settings["dicom.host"], self.settings["dicom.port"]
        self._socket = socket.create_server((host, port), backlog=128)
        self._socket.set_inheritable(True)
        shutil.rmtree(self.settings.spool_dir, ignore_errors=True)
        for number in range(1, self.count + 1):
            self._spawn(number)
        self._watcher = threading.Thread(target=self._watch, name="dicom-workers", daemon=True)
        self._watcher.start()
        log.info("listening: %s", self.describe())

    def stop(self) -> None:
        self._stopping.set()
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for number, process in self._workers.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.warning("DICOM worker %d did not stop within 30 s; killing it", number)
                process.kill()
                process.wait()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        log.info("DICOM listener stopped")

    def _spawn(self, number: int) -> None:
        assert self._socket is not None
        fd = self._socket.fileno()
        env = worker_environment(self.settings)
        self._workers[number] = subprocess.Popen(
            [sys.executable, "-m", "appliance.worker", "--fd", str(fd), "--number", str(number),
             "--parent", str(os.getpid())],
            pass_fds=(fd,), env=env,
        )  # fmt: skip

    def _watch(self) -> None:
        """Restart workers that die; give up restarting (and say so) if they keep dying."""
        while not self._stopping.wait(0.5):
            for number, process in list(self._workers.items()):
                code = process.poll()
                if code is None or self._stopping.is_set():
                    continue
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < _RESTART_WINDOW]
                if len(self._restarts) >= _MAX_RESTARTS:
                    log.error("DICOM worker %d exited with status %s; workers keep failing "
                              "(%d restarts in %.0f s), not restarting it: see the errors above",
                              number, code, len(self._restarts), _RESTART_WINDOW)  # fmt: skip
                    del self._workers[number]
                    continue
                log.error("DICOM worker %d exited with status %s; restarting it", number, code)
                self._restarts.append(now)
                self._spawn(number)
