"""The administrator's dashboard over a busy index: the storage projection, the senders' last-seen times, the pages.

The index is bench/populate.py's (about 100,000 instances), its arrival times
then rewritten so they grow with the primary key as real arrivals do and are
squeezed into the last 60 days (about 1,700 instances a day: a busy district
hospital's CT, X-ray and ultrasound). Timed: archive.usage.storage (counts,
arrivals per day over 30 days, the projection), archive.usage.senders (the
day's instances per AE by bisecting the instance key, the 30-day senders,
last seen from the audit log), worklist.queues.queue_status, and the Flask
pages /ui/admin and /ui/admin/audit as a logged-in administrator: median and
95th percentile.

    .venv/bin/python bench/admin_dashboard.py [--instances 100000] [--reuse] [--runs 20]
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from archive import Archive, Origin, usage
from archive.models import AuditEvent, Instance, Study
from common import OUT, bench_index, describe_disk, timed
from populate import populate
from viewer.app import create_app
from viewer.config import WebConfig
from worklist.queues import queue_status

ADMIN = Origin("bench", "", "CLI")
PASSWORD = "bench admin dashboard"
SPAN = timedelta(days=60)


def prepare(folder: Path, instances: int) -> None:
    print(f"populating {instances:,} instances ...", file=sys.stderr)
    populate(folder, instances)
    archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
    try:
        archive.accounts.add_user("bench-admin", "admin", PASSWORD, ADMIN)
        now = datetime.now(UTC)
        with archive.db.write() as conn:
            low, high = conn.execute(select(func.min(Instance.pk), func.max(Instance.pk))).one()
            step = SPAN.total_seconds() / max(1, high - low)
            start = (now - SPAN).strftime("%Y-%m-%d %H:%M:%S")
            # Arrival times that grow with the key, as ingest writes them, over the last 60 days.
            conn.execute(text("UPDATE instance SET received_at = strftime('%Y-%m-%d %H:%M:%f', :start, "
                              "'+' || ((pk - :low) * :step) || ' seconds')"),
                         {"start": start, "low": low, "step": step})  # fmt: skip
            conn.execute(text("UPDATE study SET created_at = (SELECT min(i.received_at) FROM instance i JOIN series s "
                              "ON i.series_pk = s.pk WHERE s.study_pk = study.pk), updated_at = (SELECT "
                              "max(i.received_at) FROM instance i JOIN series s ON i.series_pk = s.pk WHERE "
                              "s.study_pk = study.pk)"))  # fmt: skip
            conn.execute(text("UPDATE audit_event SET at = (SELECT received_at FROM instance WHERE "
                              "instance.sop_instance_uid = audit_event.uid) WHERE action = 'STORE'"))
    finally:
        archive.close()


def main() -> int:
    args, archive = bench_index("admin_dashboard", __doc__.splitlines()[0], prepare, (Study, Instance, AuditEvent))
    try:
        now = datetime.now(UTC)
        report = usage.storage(archive, now)
        print(f"projection: {report.projection.bytes_per_day or 0:,.0f} bytes/day over "
              f"{report.projection.days_of_data} days, {report.projection.days_until_full or 0:,.0f} days until full")
        cases = {
            "usage.storage (counts, 30 days, projection)": lambda: usage.storage(archive, now),
            "usage.senders (24 h, 30 days, last seen)": lambda: usage.senders(archive, now),
            "queue_status (outbox per destination)": lambda: queue_status(archive.db),
            "archive.statistics (counts alone)": archive.statistics,
        }
        print(f"\n{'in process':<48} {'median':>9} {'p95':>9}")
        for label, call in cases.items():
            median, p95, _ = timed(args.runs, call)
            print(f"{label:<48} {median:>7.1f}ms {p95:>7.1f}ms")
        senders = usage.senders(archive, now)
        print("senders: " + ", ".join(f"{s.ae_title} ({s.instances_24h} in 24 h)" for s in senders))
        client = create_app(archive, WebConfig(secret_file=OUT / "admin_dashboard" / "web-key")).test_client()
        answer = client.post("/login", json={"username": "bench-admin", "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        pages = {"/ui/admin (dashboard)": "/ui/admin", "/ui/admin/audit (newest 50)": "/ui/admin/audit",
                 "/ui/admin/audit?action=STORE&page=20": "/ui/admin/audit?action=STORE&page=20",
                 "/ui/admin/audit?contains=<an instance UID>": "/ui/admin/audit?contains=1.2.826",
                 "/ui/admin/users": "/ui/admin/users"}  # fmt: skip
        print(f"\n{'the whole page (Flask, in process)':<48} {'median':>9} {'p95':>9} {'bytes':>9}")
        for label, url in pages.items():
            median, p95, response = timed(args.runs, lambda u=url: client.get(u))
            assert response.status_code == 200, response.text[:500]
            print(f"{label:<48} {median:>7.1f}ms {p95:>7.1f}ms {len(response.data):>9,}")
    finally:
        archive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
