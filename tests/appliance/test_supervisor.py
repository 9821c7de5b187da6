"""The Supervisor: listeners start in order, stop in reverse, and a failed start undoes itself.

The listeners here are small test doubles of the Listener protocol (ours to
write); the Supervisor and the signals are real.
"""

from __future__ import annotations

import logging
import os
import signal

import pytest

from appliance.supervisor import Supervisor


class FakeListener:
    def __init__(self, name: str, events: list[str], fail_start: Exception | None = None,
                 fail_stop: Exception | None = None) -> None:  # fmt: skip
        self.name = name
        self.events = events
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    def start(self) -> None:
        self.events.append(f"start {self.name}")
        if self.fail_start is not None:
            raise self.fail_start

    def stop(self) -> None:
        self.events.append(f"stop {self.name}")
        if self.fail_stop is not None:
            raise self.fail_stop

    def describe(self) -> str:
        return f"{self.name} on port 1"


def test_start_in_order_stop_in_reverse() -> None:
    events: list[str] = []
    supervisor = Supervisor([FakeListener(n, events) for n in ("DICOM", "HTTP", "HL7")])
    supervisor.start()
    assert events == ["start DICOM", "start HTTP", "start HL7"]
    supervisor.stop()
    assert events[3:] == ["stop HL7", "stop HTTP", "stop DICOM"]
    supervisor.stop()  # stopping twice stops nothing twice
    assert len(events) == 6


def test_failed_start_stops_the_started_ones_and_reraises(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    busy = OSError(98, "Address already in use")
    supervisor = Supervisor([FakeListener("DICOM", events), FakeListener("HTTP", events),
                             FakeListener("HL7", events, fail_start=busy),
                             FakeListener("LAST", events)])  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="appliance.supervisor"):
        with pytest.raises(OSError) as raised:
            supervisor.start()
    assert raised.value is busy
    # The failing one is not stopped (it never started); the one after it never starts.
    assert events == ["start DICOM", "start HTTP", "start HL7", "stop HTTP", "stop DICOM"]
    assert "could not start the HL7 listener" in caplog.text


def test_a_failing_stop_does_not_keep_the_others_running(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    supervisor = Supervisor([FakeListener("DICOM", events),
                             FakeListener("HTTP", events, fail_stop=RuntimeError("stuck"))])  # fmt: skip
    supervisor.start()
    with caplog.at_level(logging.ERROR, logger="appliance.supervisor"):
        supervisor.stop()
    assert events[2:] == ["stop HTTP", "stop DICOM"]
    assert "error while stopping the HTTP listener" in caplog.text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_on_a_signal_and_restores_the_handlers(signum: int, caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    supervisor = Supervisor([FakeListener("DICOM", events), FakeListener("HTTP", events)])

    def started() -> None:
        events.append("ready")
        os.kill(os.getpid(), signum)  # a real signal, handled by the supervisor

    with caplog.at_level(logging.INFO, logger="appliance.supervisor"):
        supervisor.run(on_started=started)
    assert events == ["start DICOM", "start HTTP", "ready", "stop HTTP", "stop DICOM"]
    assert f"received {signal.Signals(signum).name}, shutting down" in caplog.text
    assert "ready: DICOM on port 1; HTTP on port 1" in caplog.text
    assert {s: signal.getsignal(s) for s in before} == before


def test_run_reraises_a_failed_start_and_restores_the_handlers() -> None:
    events: list[str] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    supervisor = Supervisor([FakeListener("DICOM", events),
                             FakeListener("HTTP", events, fail_start=PermissionError(13, "denied"))])  # fmt: skip
    with pytest.raises(PermissionError):
        supervisor.run(on_started=lambda: events.append("ready"))
    assert events == ["start DICOM", "start HTTP", "stop DICOM"]
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_stop_requested_before_run_waits_for_nothing() -> None:
    """SIGTERM during start-up (systemd stopping a unit that is still starting) still stops."""
    events: list[str] = []
    supervisor = Supervisor([FakeListener("DICOM", events)])
    supervisor.request_stop()
    supervisor.run()
    assert events == ["start DICOM", "stop DICOM"]
