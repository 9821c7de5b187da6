"""``/healthz``: is this node fit to serve? For load balancers, monitoring and the IT person.

Anonymous (it shows no patient data) and cheap, since a load balancer asks
every few seconds: one ``SELECT 1``, one look at the object store (free space
on a filesystem, the bucket on S3) and a TCP connect to each of this node's
own listeners (DICOM, HL7). 200 when all is well; 503 with what failed when
the database or the store cannot be used, the disk is below the reserve, or
a listener is down, so a balancer takes the node out.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from archive import Archive
from viewer.config import web_config

blueprint = Blueprint("health", __name__)


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result: dict[str, Any] = {"ok": True, **(check() or {})}
    except Exception as exc:  # any failure is the answer here, never a 500
        result = {"ok": False, "error": str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _database(archive: Archive) -> dict[str, Any]:
    with archive.db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"backend": archive.db.engine.dialect.name}


def _storage(archive: Archive, reserve: int) -> dict[str, Any]:
    objects: Any = archive.objects
    free = getattr(objects, "free_bytes", None)
    if free is not None:  # a filesystem: its free space is what runs out
        left = int(free())
        if reserve and left < reserve:
            raise OSError(f"{left >> 20} MiB free, below the reserve of {reserve >> 20} MiB: images are refused")
        return {"kind": "filesystem", "free_bytes": left}
    objects.exists("minipacs-health-check")  # an S3 round trip (HEAD): the server and the credentials answer
    return {"kind": "s3"}


def _listener(host: str, port: int) -> dict[str, Any]:
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    with socket.create_connection((target, port), timeout=1.0):
        pass
    return {"port": port}


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    archive: Archive = current_app.config["ARCHIVE"]
    config = web_config()
    checks = {"database": _timed(lambda: _database(archive)),
              "storage": _timed(lambda: _storage(archive, config.storage_reserve_bytes))}  # fmt: skip
    for name, host, port in config.health_listeners:
        checks[name] = _timed(lambda h=host, p=port: _listener(h, p))
    ok = all(c["ok"] for c in checks.values())
    return jsonify({"status": "ok" if ok else "failing", "checks": checks}), 200 if ok else 503
