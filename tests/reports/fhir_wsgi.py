"""minipacs's HTTP app with a Reports service, for gunicorn in the FHIR DiagnosticReport tests.

`minipacs serve` does not hand its HTTP workers a Reports service yet
(appliance/http.py wsgi_app), so /fhir/DiagnosticReport answers 503 there.
Until it does, the tests serve the same `create_app` through a real gunicorn
with this factory: ``gunicorn "tests.reports.fhir_wsgi:app()"``, the data
directory in MINIPACS_TEST_DATA. Each worker opens the archive on its first
request, as wsgi_app does (connections must not cross a fork).
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Any


def app() -> Any:
    from archive import Archive
    from reports.service import Reports
    from viewer import create_app
    from viewer.config import WebConfig
    from worklist.service import Worklist

    data = Path(os.environ["MINIPACS_TEST_DATA"])
    lock = threading.Lock()
    built: dict[int, Any] = {}

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        pid = os.getpid()
        with lock:
            if pid not in built:
                archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"), upgrade=False)
                atexit.register(archive.close)  # writes queued audit events when the worker stops
                config = WebConfig(secret_file=data / "session.key")
                built[pid] = create_app(archive, config, Worklist(archive), Reports(archive))
        return built[pid](environ, start_response)

    return wsgi
