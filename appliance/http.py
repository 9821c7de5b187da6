"""The HTTP listener: gunicorn serving viewer's Flask app, as one of `minipacs serve`'s listeners.

The supervisor binds the port itself (a busy port is reported at once, and
port 0 works for tests) and hands the socket to gunicorn (`--bind fd://N`).
gunicorn's workers each open the archive from the same MINIPACS_* settings
the DICOM workers get. Access log lines carry the path without the query
string: QIDO query strings hold patient names.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from appliance import logs
from appliance.settings import Settings, load
from appliance.workers import worker_environment

log = logging.getLogger(__name__)

_ACCESS_FORMAT = '%(t)s %(h)s %(u)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


class HttpPortError(OSError):
    """The HTTP port could not be opened (so `minipacs serve` names the right setting)."""


class HttpListener:
    """The Listener protocol of appliance.supervisor."""

    name = "HTTP"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        if self._socket is None:
            return self.settings["http.host"], self.settings["http.port"]
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def describe(self) -> str:
        host, port = self.address
        return f"HTTP (DICOMweb at /dicomweb) on {host}:{port}"

    def start(self) -> None:
        try:
            self._socket = socket.create_server((self.settings["http.host"], self.settings["http.port"]), backlog=128)
        except OSError as exc:
            raise HttpPortError(exc.errno, exc.strerror or str(exc)) from exc
        self._socket.set_inheritable(True)
        fd = self._socket.fileno()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "appliance.http", str(os.getpid()),
             "--bind", f"fd://{fd}", "--workers", str(self.settings.http_workers),
             "--threads", str(self.settings["http.threads"]), "--worker-class", "gthread", "--graceful-timeout", "10",
             "--access-logfile", "-", "--access-logformat", _ACCESS_FORMAT, "--error-logfile", "-",
             "--log-level", self.settings["log.level"].lower(), "--name", "minipacs-http",
             # No control socket: gunicorn would put it in the home directory,
             # outside the data directory, one path for every instance.
             "--preload", "--no-control-socket", "appliance.http:wsgi_app()"],
            pass_fds=(fd,), env=worker_environment(self.settings), stdout=sys.stderr,
        )  # fmt: skip
        self._stopping.clear()
        threading.Thread(target=self._watch, name="http-watch", daemon=True).start()
        log.info("listening: %s", self.describe())

    def _watch(self) -> None:
        """gunicorn restarts its own workers; if gunicorn itself exits, say so loudly.

        It only exits on its own when its workers cannot even start (a broken
        install, say): starting it again would fail the same way.
        """
        process = self._process
        while process is not None and not self._stopping.wait(0.5):
            code = process.poll()
            if code is not None:
                log.error("the HTTP server exited with status %s: DICOMweb is down until minipacs "
                          "is restarted; the lines above say why", code)  # fmt: skip
                return

    def stop(self) -> None:
        self._stopping.set()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)  # gunicorn: graceful stop
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log.warning("the HTTP server did not stop within 20 s; killing it")
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        log.info("HTTP listener stopped")


def wsgi_app() -> Any:
    """gunicorn's app factory, run once in gunicorn's master (--preload).

    Everything is imported here, before gunicorn forks its workers, so they
    share those pages (about 45 MB less per worker); the archive itself, with
    its database connections, is opened in each worker on its first request
    (connections must not cross a fork).
    """
    import reports.outputs  # noqa: F401  (reports and their outputs: PDF, pyHanko, highdicom, shared by the workers)
    from appliance.report_services import open_reports
    from appliance.services import open_archive, open_worklist
    from viewer import create_app

    settings = load(None, {})
    logs.configure(settings["log.level"], tag="http", fmt=settings["log.format"])
    lock = threading.Lock()
    built: dict[int, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        pid = os.getpid()
        if pid not in built:
            with lock:
                if pid not in built:
                    archive = open_archive(settings, upgrade=False)
                    atexit.register(archive.close)  # writes queued audit events when the worker stops
                    built.clear()
                    built[pid] = create_app(archive, web_config(settings), open_worklist(archive, settings),
                                            open_reports(archive, settings))  # fmt: skip
                    _freeze_heap()
        return built[pid](environ, start_response)

    _check_order_mapping(settings)
    _freeze_heap()  # in the master: what the workers inherit stays shared and is never scanned
    return app


def _check_order_mapping(settings: Settings) -> None:
    """Say at start, not at the first order, when the JSON order API's mapping file is broken.

    Only /api/orders depends on it (it answers 503 until the file is fixed), so
    images keep being served.
    """
    from archive import ArchiveError
    from worklist.order_mapping import OrderMapping

    try:
        OrderMapping.load(web_config(settings).order_mapping)
    except ArchiveError as exc:
        log.error("%s (setting worklist.order_mapping): /api/orders answers 503 until it is fixed", exc.message)


def _freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's sight.

    The modules, the app and the archive live as long as the worker; a full
    collection walking them took 35-40 ms every 16th or so request (bench/web,
    QIDO p95), and they are never garbage. Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


def web_config(settings: Settings) -> Any:
    """The HTTP edge's part of the settings (viewer.config.WebConfig)."""
    from viewer.config import WebConfig

    origins = tuple(o.strip().rstrip("/") for o in settings["http.cors_origins"].split(",") if o.strip())
    return WebConfig(
        anonymous_read=settings["http.anonymous_read"],
        cors_origins=origins,
        max_upload_bytes=settings["http.max_upload_mb"] << 20,
        session_minutes=settings["http.session_minutes"],
        secret_file=settings.data_dir / "http-session.key",
        spool_dir=settings.spool_dir,
        cache_dir=settings.data_dir / "cache" / "rendered" if settings["http.cache_mb"] else None,
        cache_bytes=settings["http.cache_mb"] << 20,
        order_mapping=Path(settings["worklist.order_mapping"]) if settings["worklist.order_mapping"] else None,
        share_link_days=settings["reports.share_link_days"],
        share_on_final=settings["reports.share_on_final"],
        public_url=settings["reports.public_url"].rstrip("/"),
        health_listeners=(("dicom", settings["dicom.host"], settings["dicom.port"]),
                          ("hl7", settings["hl7.host"], settings["hl7.port"])),
        storage_reserve_bytes=settings["storage.reserve_mb"] << 20,
    )


def main() -> None:
    """`python -m appliance.http PARENT GUNICORN-ARGS...`: gunicorn that stops when minipacs dies.

    A killed `minipacs serve` (SIGKILL, the OOM killer) must not leave an HTTP
    server behind holding the port: Linux sends gunicorn SIGTERM (a graceful
    stop) when its parent dies, and gunicorn's workers follow their arbiter.
    """
    from gunicorn.app.wsgiapp import run

    from appliance.worker import die_with_parent

    die_with_parent(int(sys.argv[1]), signal.SIGTERM)
    sys.argv = ["gunicorn", *sys.argv[2:]]
    run()


if __name__ == "__main__":
    main()
