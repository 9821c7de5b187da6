"""Prometheus counters and histograms of what the archive does, summed over every process of a node.

`minipacs serve` runs several processes (DICOM workers, HTTP workers, the
supervisor with its outbox). prometheus_client's multiprocess mode adds up
their figures: `minipacs serve` points ``PROMETHEUS_MULTIPROC_DIR`` at an
empty folder of the data directory before anything is counted, and /metrics
reads that folder. prometheus_client is imported on first use, after that
variable is set; a process without it (a CLI import) counts in memory only.
Figures describe volumes and latencies, never patients.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Seconds: C-STORE/STOW of one instance (spool to durable), and queries.
INGEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True)
class Metrics:
    stored: Any  # Counter: instances by way in (DIMSE, STOW, IMPORT, REPORT) and outcome
    stored_bytes: Any  # Counter: bytes of those instances
    ingest_seconds: Any  # Histogram by way in
    query_seconds: Any  # Histogram by kind (C-FIND, QIDO, MWL)


_lock = threading.Lock()
_made: list[Metrics] = []


def metrics() -> Metrics:
    """The metric objects, made once per process (threads of a worker ask at the same moment)."""
    if _made:
        return _made[0]
    with _lock:
        if not _made:
            _made.append(_make())
    return _made[0]


def _make() -> Metrics:
    from prometheus_client import Counter, Histogram

    return Metrics(
        Counter("minipacs_instances_received", "DICOM instances received, by way in and outcome",
                ["via", "outcome"]),  # fmt: skip
        Counter("minipacs_received_bytes", "Bytes of the DICOM instances received", ["via"]),
        Histogram("minipacs_ingest_seconds", "Time to store one instance durably", ["via"], buckets=INGEST_BUCKETS),
        Histogram("minipacs_query_seconds", "Time to answer one query", ["kind"], buckets=QUERY_BUCKETS),
    )


def observe_ingest(via: str, outcome: str, size: int, seconds: float) -> None:
    """Count one instance received. Never raises: a figure must not fail a store that succeeded."""
    try:
        m = metrics()
        m.stored.labels(via=via or "other", outcome=outcome).inc()
        if outcome != "refused":
            m.stored_bytes.labels(via=via or "other").inc(size)
            m.ingest_seconds.labels(via=via or "other").observe(seconds)
    except Exception:
        log.warning("metrics: could not count an ingest", exc_info=True)


def observe_query(kind: str, seconds: float) -> None:
    """Time one query. Never raises."""
    try:
        metrics().query_seconds.labels(kind=kind).observe(seconds)
    except Exception:
        log.warning("metrics: could not time a query", exc_info=True)
