"""``/healthz`` and ``/metrics``: is this node fit to serve, and what is it doing? For load balancers and monitors.

Anonymous (it shows no patient data) and cheap, since a load balancer asks
every few seconds: one ``SELECT 1``, one look at the object store (free space
on a filesystem, the bucket on S3) and a TCP connect to each of this node's
own listeners (DICOM, HL7). 200 when all is well; 503 with what failed when
the database or the store cannot be used, the disk is below the reserve, or
a listener is down, so a balancer takes the node out.

``/metrics`` (also anonymous: volumes and latencies, no patient data) is
Prometheus' text format: instances received by way in and outcome, bytes,
the ingest latency histogram and the C-FIND/QIDO/MWL latency histograms
summed over every process of the node (archive/metrics.py), plus gauges read
at each scrape: studies, instances and bytes in the archive, free disk, and
outbox messages not yet delivered per destination.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
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


# --- /metrics ------------------------------------------------------------------------------------


class _ArchiveFigures:
    """Gauges read from the index and the store at each scrape (the same for every process)."""

    def __init__(self, archive: Archive, config: Any) -> None:
        self.archive = archive
        self.config = config

    def describe(self) -> list[Any]:
        return []  # no fixed description: collect() is only run at a scrape, never at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        stats = self.archive.statistics()
        for name, value, text_ in (("studies", stats.studies, "Studies in the archive"),
                                   ("instances", stats.instances, "Instances in the archive"),
                                   ("stored_bytes", stats.size_bytes, "Bytes of the instances in the archive")):  # fmt: skip
            yield GaugeMetricFamily(f"minipacs_archive_{name}", text_, value=value)
        free = getattr(self.archive.objects, "free_bytes", None)
        if free is not None:
            yield GaugeMetricFamily("minipacs_disk_free_bytes", "Free space where images are stored", value=free())
        depth = GaugeMetricFamily("minipacs_outbox_messages", "Outbox messages not yet delivered",
                                  labels=["destination", "state"])  # fmt: skip
        for (destination, state), count in _outbox_depth(self.archive).items():
            depth.add_metric([destination, state], count)
        yield depth


def _outbox_depth(archive: Archive) -> dict[tuple[str, str], int]:
    from sqlalchemy import func, select

    from worklist.outbox import OUTBOX

    with archive.db.read() as conn:
        rows = conn.execute(select(OUTBOX.c.destination, OUTBOX.c.state, func.count())
                            .where(OUTBOX.c.state != "sent").group_by(OUTBOX.c.destination, OUTBOX.c.state))  # fmt: skip
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus text format: the counters of every process of this node, and the archive's gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    archive: Archive = current_app.config["ARCHIVE"]
    registry = CollectorRegistry()
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:  # one process (a test's app): its own counters
        from prometheus_client import REGISTRY

        registry = REGISTRY
    scraped = CollectorRegistry()
    scraped.register(_ArchiveFigures(archive, web_config()))
    body = generate_latest(registry) + generate_latest(scraped)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
