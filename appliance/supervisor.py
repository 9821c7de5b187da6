"""Runs the listeners of `minipacs serve` and stops them cleanly on SIGTERM/SIGINT.

Each listener (DICOM now; HTTP and HL7 later) only needs start/stop/describe,
so adding one is adding it to the list.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)


class Listener(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def describe(self) -> str: ...


class Supervisor:
    def __init__(self, listeners: Sequence[Listener]) -> None:
        self.listeners = list(listeners)
        self._stop = threading.Event()
        self._started: list[Listener] = []

    def start(self) -> None:
        """Start every listener; if one fails, stop those already started and re-raise."""
        for listener in self.listeners:
            try:
                listener.start()
            except Exception:
                log.error("could not start the %s listener", listener.name)
                self.stop()
                raise
            self._started.append(listener)

    def stop(self) -> None:
        for listener in reversed(self._started):
            try:
                listener.stop()
            except Exception:
                log.exception("error while stopping the %s listener", listener.name)
        self._started.clear()

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
        self._stop.set()

    def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Start, call `on_started`, wait for SIGTERM/SIGINT, stop.

        Raises what a listener's start raised (a busy port, say).
        """
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            log.info("ready: %s", "; ".join(listener.describe() for listener in self.listeners))
            if on_started is not None:
                on_started()
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
