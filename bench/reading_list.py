"""The study list's cost over a three-year district-hospital index: the SQL of one page, and the whole page.

Figures of one run (2 shared cores, SQLite, 5,414 studies of 4,096 patients,
5,396 reports, 1,116 orders), medians: a page of the default list (to read,
last 30 days) 11 ms of SQL, 13 ms as a whole page; every date 40-110 ms of
SQL (page 100 the most), 110-150 ms as a page; a name 12 ms, an accession 4 ms.
The same SQL over 54,000 studies (the index copied ten times): every date
0.25 s (to read) to 0.5 s (all), the last 30 days 26-39 ms; hence the
default window (viewer/ui/studies.py DEFAULT_DAYS).

The index is bench/populate.py's (about 100,000 instances: mostly CR/DX, some
US and CT); on top of it, HIS orders for a share of the studies (some STAT or
urgent, matched the way the reconciliation records them) and reports: most
old studies signed, recent ones drafts or unread. Then each filter the page
offers is timed through `reports.reading_list.reading_list` (the one SQL
statement of a page) and through the Flask page /ui/studies as a logged-in
radiologist (session, SQL, Jinja, translation): median and 95th percentile.

    .venv/bin/python bench/reading_list.py [--instances 100000] [--reuse] [--runs 20]
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from archive import Archive, Origin
from archive.models import Patient, Study
from archive.patients import read_patient
from common import OUT, bench_index, describe_disk, timed
from populate import END, populate
from reports.models import Report, ReportVersionRow
from reports.reading_list import ReadingListQuery, reading_list
from viewer.app import create_app
from viewer.config import WebConfig
from worklist.models import ProcedureStep, StudyMatch
from worklist.service import Worklist
from worklist.types import OrderRequest

ADMIN = Origin("bench", "", "CLI")
PASSWORD = "bench reading list"


def prepare(folder: Path, instances: int) -> None:
    """The populated index, orders for 1 study in 5 (3% STAT, 7% urgent) and reports by age."""
    base = OUT / f"reading_list_base_{instances}"
    if not (base / "index.sqlite").exists():  # populating takes minutes: kept for the next run
        print(f"populating {instances:,} instances ...", file=sys.stderr)
        populate(base, instances)
    folder.mkdir(parents=True)
    shutil.copyfile(base / "index.sqlite", folder / "index.sqlite")
    archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
    rng = random.Random(7)
    try:
        archive.accounts.add_user("bench-rad", "radiologist", PASSWORD, ADMIN, display_name="BS. Bench")
        worklist = Worklist(archive)
        with archive.db.read() as conn:
            studies = conn.execute(select(Study.pk, Study.study_instance_uid, Study.accession_number,
                                          Study.patient_pk, Study.study_date, Study.modalities_in_study)
                                   .where(Study.accession_number != "")).all()  # fmt: skip
        now = datetime.now(UTC)
        started = time.perf_counter()
        orders = 0
        for pk, uid, accession, patient_pk, day, modalities in studies:
            if rng.random() < 0.2 and len(accession) <= 16:
                with archive.db.read() as conn:
                    patient = read_patient(conn, patient_pk)
                roll = rng.random()
                priority = "STAT" if roll < 0.03 else "HIGH" if roll < 0.10 else "ROUTINE"
                # The order finds its study by accession number and records the match (worklist.reconcile).
                worklist.create(OrderRequest("HIS", f"B{pk}", patient, accession_number=accession,
                                             study_instance_uid=uid, modality=modalities.split("\\")[0],
                                             procedure_description="Chụp", priority=priority), Origin("HIS"))  # fmt: skip
                orders += 1
        with archive.db.read() as conn:
            matched = conn.execute(select(func.count()).select_from(StudyMatch)
                                   .where(StudyMatch.step_pk.is_not(None))).scalar_one()  # fmt: skip
        print(f"  {orders:,} orders ({matched:,} matched to their study) in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)  # fmt: skip
        rows = []
        for pk, uid, accession, patient_pk, day, modalities in studies:
            age = (END - date(int(day[:4]), int(day[4:6]), int(day[6:]))).days if len(day) == 8 else 999
            roll = rng.random()
            status = ("final" if roll < 0.9 else "amended" if roll < 0.92 else "draft") if age > 7 else \
                     ("final" if roll < 0.4 else "draft" if roll < 0.6 else "")  # fmt: skip
            if status and len(accession) <= 16:
                rows.append((pk, accession, patient_pk, modalities.split("\\")[0], status))
        with archive.db.write() as conn:
            for pk, accession, patient_pk, modality, status in rows:
                signed = status in ("final", "amended")
                report_pk = conn.execute(insert(Report).returning(Report.pk), {
                    "accession_number": accession, "study_pk": pk, "step_pk": None, "patient_pk": patient_pk,
                    "status": status, "current_version": 1, "revision": 1, "modality": modality,
                    "created_at": now, "updated_at": now, "finalised_at": now if signed else None}).scalar_one()  # fmt: skip
                conn.execute(insert(ReportVersionRow), {
                    "report_pk": report_pk, "number": 1, "status": status, "language": "vi", "template_id": "",
                    "sections": {"conclusion": "Bình thường."}, "structured": {}, "author": "bench-rad",
                    "author_name": "BS. Bench", "created_at": now, "updated_at": now,
                    "signer": "bench-rad" if signed else "", "signer_name": "BS. Bench" if signed else "",
                    "signer_certificate_number": "", "signed_at": now if signed else None, "x509_serial": "",
                    "x509_subject": "", "reason": "", "pdf_key": "", "pdf_sha256": "", "sr_sop_instance_uid": "",
                    "pdf_sop_instance_uid": ""})  # fmt: skip
        print(f"  {len(rows):,} reports", file=sys.stderr)
    finally:
        archive.close()


def main() -> int:
    args, archive = bench_index("reading_list", __doc__.splitlines()[0], prepare, (Patient, Study, Report, ProcedureStep))
    try:
        week = (END - timedelta(days=6)).strftime("%Y%m%d")
        month = (END - timedelta(days=29)).strftime("%Y%m%d")
        with archive.db.read() as conn:
            accession = conn.execute(select(Study.accession_number).where(Study.accession_number != "")
                                     .order_by(Study.pk.desc()).limit(1)).scalar_one()  # fmt: skip
        cases = {
            "to read, last 30 days (the default)": ReadingListQuery(status="todo", date_from=month),
            "to read, every date": ReadingListQuery(status="todo"),
            "all statuses, last 30 days": ReadingListQuery(status="all", date_from=month),
            "all statuses, every date, page 1": ReadingListQuery(status="all"),
            "all statuses, page 100": ReadingListQuery(status="all", page=100),
            "unread, last 7 days": ReadingListQuery(status="unread", date_from=week),
            "modality CT": ReadingListQuery(status="all", modality="CT"),
            "name 'nguyen van an'": ReadingListQuery(status="all", patient_name="nguyen van an"),
            "name 'nguyen' (a third of patients)": ReadingListQuery(status="all", patient_name="nguyen"),
            "accession (one study)": ReadingListQuery(status="all", accession=accession),
            "sorted by patient": ReadingListQuery(status="all", sort="patient"),
            "referrer, signed": ReadingListQuery(status="final", final_only=True),
        }
        print(f"\n{'reading_list() SQL, one page of 50':<40} {'median':>9} {'p95':>9} {'matches':>9}")
        for label, query in cases.items():
            median, p95, page = timed(args.runs, lambda q=query: reading_list(archive.db, q))
            print(f"{label:<40} {median:>7.1f}ms {p95:>7.1f}ms {page.total:>9,}")
        app = create_app(archive, WebConfig(secret_file=OUT / "reading_list" / "web-key"))
        client = app.test_client()
        answer = client.post("/login", json={"username": "bench-rad", "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        iso = f"{month[:4]}-{month[4:6]}-{month[6:]}"  # the bench's "today" is END, not the clock's
        pages = {"to read, last 30 days": f"/ui/studies?from={iso}&to=",
                 "all, last 30 days": f"/ui/studies?status=all&from={iso}&to=",
                 "all, every date": "/ui/studies?status=all&from=&to=",
                 "name nguyen van an, every date": "/ui/studies?status=all&from=&to=&name=nguyen+van+an",
                 "page 100, every date": "/ui/studies?status=all&from=&to=&page=100"}  # fmt: skip
        print(f"\n{'the whole page (Flask, in process)':<40} {'median':>9} {'p95':>9} {'bytes':>9}")
        for label, url in pages.items():
            median, p95, response = timed(args.runs, lambda u=url: client.get(u))
            assert response.status_code == 200, response.text[:500]
            print(f"{label:<40} {median:>7.1f}ms {p95:>7.1f}ms {len(response.data):>9,}")
    finally:
        archive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
