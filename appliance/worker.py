"""One DICOM worker process (started by appliance.workers, not by hand).

It loads the settings the supervisor passed in its environment, opens the
archive and serves DICOM associations on the listening socket it inherited.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

from appliance import logs
from appliance.services import ServiceError, dicom_config, open_archive, open_worklist, startup_report
from appliance.settings import Settings, SettingsError, load
from appliance.supervisor import Supervisor

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: Seconds a worker may take to stop (associations get 10 of them) before it exits anyway.
_STOP_LIMIT = 13.0


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when the supervisor dies (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        log.warning("cannot ask to die with the supervisor on this system")
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minipacs-worker", description=__doc__)
    parser.add_argument("--prepare", action="store_true",
                        help="only bring the index up to date and report on it, then exit")  # fmt: skip
    parser.add_argument("--fd", type=int, help="inherited listening socket")
    parser.add_argument("--number", type=int, default=0, help="worker number, for the log")
    parser.add_argument("--parent", type=int, help="the supervisor's pid")
    args = parser.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)
    try:
        settings = load()
    except SettingsError as exc:
        print(f"minipacs: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.prepare:
        return _prepare(settings)
    if args.fd is None:
        parser.error("--fd is required to serve")
    logs.configure(settings["log.level"], tag=f"dicom-{args.number}", fmt=settings["log.format"])
    try:
        archive = open_archive(settings, upgrade=False)
    except ServiceError as exc:
        log.error("%s", exc)
        return 1
    from dicom_scp import DicomService

    listen_socket = socket.socket(fileno=args.fd)
    config = dicom_config(settings, spool_dir=settings.spool_dir / f"w{args.number}",
                          session_prefix=f"w{args.number}.")  # fmt: skip
    try:
        worklist = open_worklist(archive, settings)
    except ServiceError as exc:
        log.error("%s", exc)
        return 1
    supervisor = Supervisor([DicomService(archive, config, listen_socket=listen_socket, worklist=worklist)])
    asked_to_stop = supervisor.request_stop

    def request_stop(signum: int | None = None, frame: FrameType | None = None) -> None:
        # Open associations get 10 s to finish; a stop that still hangs after
        # that is a bug: write every thread's stack to the log and exit, so
        # the service stops in bounded time and the log says where it hung.
        faulthandler.dump_traceback_later(_STOP_LIMIT, exit=True, file=sys.stderr)
        asked_to_stop(signum, frame)

    supervisor.request_stop = request_stop  # type: ignore[method-assign,assignment]
    try:
        supervisor.run()
    finally:
        archive.close()
    return 0


def _prepare(settings: Settings) -> int:
    logs.configure(settings["log.level"], fmt=settings["log.format"])
    try:
        archive = open_archive(settings)
    except ServiceError as exc:
        print(f"minipacs: {exc}", file=sys.stderr)
        return 1
    try:
        startup_report(archive, settings)
    finally:
        archive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
