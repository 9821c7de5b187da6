"""MWL C-FIND latency over 10,000 scheduled procedure steps.

Fills a fresh index with a month of a district hospital's orders (default
10,000 steps over 31 days around today, six stations: CT1, CT2, DX1, DX2,
US1, US2; days before today COMPLETED, today and later SCHEDULED), starts
`minipacs serve` on it and asks Modality Worklist C-FINDs with Debian's dcmtk
`findscu -W` as a console would, with every Type 1/2 return key of the MWL
IOD, 25 queries per association:

- today's worklist of one station: ScheduledStationAETitle + Modality + today's date;
- a patient name wildcard over the open worklist: ``FAMILY^MIDDLE^G*`` from a real name;
- an accession number lookup.

Population: by default the rows are inserted directly in one transaction with
the same patient code the service uses (archive.patients.upsert_patient) and
the columns Worklist.create writes, so filling takes seconds; ``--create``
goes through Worklist.create, one fsynced transaction per order (minutes).

With --database postgresql the steps go into PostgreSQL (a fresh LocalPostgres
from tests/pg.py, or a new database on MINIPACS_BENCH_DATABASE_URL's server) and
`minipacs serve` runs on it.

    bench/mwl [--steps 10000] [--queries 100] [--create] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian
from sqlalchemy import Table, insert

import populate
from archive import Archive, Origin
from archive.db import Database
from archive.patients import OtherId, PatientDemographics, upsert_patient
from archive.text import name_tokens
from common import MiB, RssMonitor, describe_disk, median, percentile, run_folder
from find import LOG_CONFIG, parse_findscu_log, start_minipacs_on
from servers import Server, start_minipacs
from worklist.models import ProcedureStep
from worklist.service import Worklist
from worklist.types import OrderRequest

STEP = cast(Table, ProcedureStep.__table__)
STATIONS = {"CT1": "CT", "CT2": "CT", "DX1": "DX", "DX2": "DX", "US1": "US", "US2": "US"}
PROCEDURES = {"CT": ("CT-SONAO", "CT sọ não không tiêm thuốc cản quang"),
              "DX": ("DX-NGUC", "X-quang ngực thẳng"),
              "US": ("US-OBUNG", "Siêu âm ổ bụng tổng quát")}  # fmt: skip
TOP_KEYS = ("AccessionNumber", "ReferringPhysicianName", "PatientName", "PatientID", "IssuerOfPatientID",
            "PatientBirthDate", "PatientSex", "PatientWeight", "MedicalAlerts", "Allergies", "PregnancyStatus",
            "StudyInstanceUID", "RequestingPhysician", "RequestedProcedureDescription", "AdmissionID",
            "SpecialNeeds", "CurrentPatientLocation", "PatientState", "RequestedProcedureID",
            "RequestedProcedurePriority", "PatientTransportArrangements")  # fmt: skip
SPS_KEYS = ("ScheduledStationAETitle", "ScheduledStationName", "ScheduledProcedureStepStartDate",
            "ScheduledProcedureStepStartTime", "Modality", "ScheduledPerformingPhysicianName",
            "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "ScheduledProcedureStepStatus")
BATCH = 25
DAYS = 31


@dataclass
class Step:
    accession: str
    station: str
    day: str
    name: str


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def orders(count: int, seed: int, today: date) -> list[tuple[OrderRequest, str]]:
    """(order, status) pairs: `count` orders over DAYS days centred on today."""
    gen = populate.Generator(seed)
    rng = gen.rng
    patients: list[PatientDemographics] = []
    result = []
    for n in range(count):
        if not patients or rng.random() < 0.8:
            ds = gen.patient()
            others = tuple(OtherId(str(i.PatientID), str(i.IssuerOfPatientID))
                           for i in ds.get("OtherPatientIDsSequence", []))  # fmt: skip
            patients.append(PatientDemographics(str(ds.PatientID), name=str(ds.PatientName),
                                                birth_date=str(ds.PatientBirthDate), sex=str(ds.PatientSex),
                                                other_ids=others))  # fmt: skip
        patient = rng.choice(patients)
        station = rng.choice(list(STATIONS))
        modality = STATIONS[station]
        day = today + timedelta(days=rng.randrange(DAYS) - DAYS // 2)
        code, description = PROCEDURES[modality]
        order = OrderRequest(
            placer_issuer="HIS", placer_order_number=f"HIS{n:07d}", accession_number=f"A{n:07d}",
            patient=patient, procedure_code=code, procedure_description=description, modality=modality,
            station_ae_title=station, start_date=f"{day:%Y%m%d}",
            start_time=f"{7 + rng.randrange(10):02d}{rng.randrange(0, 60, 5):02d}00",
            referring_physician=rng.choice(populate.DOCTORS), priority="STAT" if rng.random() < 0.05 else "ROUTINE",
        )  # fmt: skip
        result.append((order, "COMPLETED" if day < today else "SCHEDULED"))
    return result


def fill(url: str, objects: str, count: int, seed: int, through_service: bool) -> list[Step]:
    """Add `count` orders to the index at `url` (objects: its object store, unused by orders)."""
    archive = Archive.open(url, objects)
    today = date.today()
    pairs = orders(count, seed, today)
    origin = Origin("bench", "", "BENCH")
    try:
        if through_service:
            wl = Worklist(archive)
            for order, state in pairs:
                wl.create(order, origin)
            with archive.db.write() as conn:
                conn.execute(STEP.update().where(STEP.c.start_date < f"{today:%Y%m%d}").values(status="COMPLETED"))
        else:
            insert_steps(archive.db, pairs)
        if not archive.db.is_sqlite:
            # Statistics, as autovacuum gathers them within a minute of such a bulk insert:
            # without them PostgreSQL plans the name query blind (p95 1 s instead of 30 ms).
            with archive.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        archive.close()
    return [Step(o.accession_number, o.station_ae_title, o.start_date, o.patient.name) for o, _ in pairs]


def insert_steps(db: Database, pairs: list[tuple[OrderRequest, str]]) -> None:
    """The rows Worklist.create would write, inserted in one transaction (seconds, not minutes)."""
    now = datetime.now(UTC)
    with db.write() as conn:
        rows = []
        for order, state in pairs:
            patient_pk, _ = upsert_patient(conn, order.patient, now)
            rows.append(_columns(order, patient_pk, state, now))
        conn.execute(insert(STEP), rows)


def _columns(order: OrderRequest, patient_pk: int, state: str, now: datetime) -> dict[str, Any]:
    """The row Worklist.create writes for `order` (catalogue-free: the order names everything)."""
    from pydicom.uid import generate_uid

    return {
        "placer_issuer": order.placer_issuer, "placer_order_number": order.placer_order_number,
        "filler_order_number": order.accession_number, "accession_number": order.accession_number,
        "study_instance_uid": generate_uid(prefix=None), "patient_pk": patient_pk,
        "requested_procedure_id": order.accession_number,
        "requested_procedure_description": order.procedure_description, "procedure_code": order.procedure_code,
        "procedure_scheme": "LOCAL", "service_code": "", "indicator_code": "", "sps_id": order.accession_number,
        "sps_description": order.procedure_description, "modality": order.modality,
        "station_ae_title": order.station_ae_title, "station_name": "", "start_date": order.start_date,
        "start_time": order.start_time, "performing_physician": "", "referring_physician": order.referring_physician,
        "priority": order.priority, "pregnancy_status": None, "reason": "", "status": state, "attrs": {},
        "created_at": now, "updated_at": now,
    }  # fmt: skip


def identifier(sps: dict[str, str] | None = None, **top: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in TOP_KEYS:
        setattr(ds, keyword, top.get(keyword, ""))
    ds.OtherPatientIDsSequence = Sequence()
    ds.RequestedProcedureCodeSequence = Sequence()
    item = Dataset()
    for keyword in SPS_KEYS:
        setattr(item, keyword, (sps or {}).get(keyword, ""))
    item.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledProcedureStepSequence = Sequence([item])
    return ds


def query_values(kind: str, steps: list[Step], rng: random.Random) -> Dataset:
    today = f"{date.today():%Y%m%d}"
    if kind == "today's worklist, one station":
        station = rng.choice(list(STATIONS))
        return identifier({"ScheduledStationAETitle": station, "Modality": STATIONS[station],
                           "ScheduledProcedureStepStartDate": today})  # fmt: skip
    if kind == "PatientName FAMILY^MIDDLE^G*":
        open_steps = [s for s in steps if s.day >= today]
        words = name_tokens(rng.choice(open_steps).name)
        while len(words) < 3:
            words = name_tokens(rng.choice(open_steps).name)
        return identifier(PatientName=f"{words[0]}^{words[1]}^{words[2][0]}*")
    return identifier(AccessionNumber=rng.choice([s for s in steps if s.day >= today]).accession)


def measure(server: Server, kind: str, steps: list[Step], count: int, warmup: int, folder: Path,
            seed: int) -> Result:  # fmt: skip
    rng = random.Random(f"{seed}/{kind}")
    result = Result(kind)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "findscu-log.cfg"
    config.write_text(LOG_CONFIG)
    done = 0
    while done < warmup + count:
        size = min(BATCH, warmup + count - done)
        files = []
        for i in range(size):
            ds = query_values(kind, steps, rng)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            path = folder / f"q{i:03d}.dcm"
            ds.save_as(path, implicit_vr=True, little_endian=True)
            files.append(path)
        log = folder / "findscu.log"
        with log.open("wb") as out:
            run = subprocess.run(["findscu", "-W", "-aet", "BENCH", "-aec", server.aet, "-lc", str(config),
                                  "-to", "60", "-ta", "60", "-td", "60", "127.0.0.1", str(server.port),
                                  *map(str, files)], stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "TCP_NODELAY": "1"}, check=False)  # fmt: skip
        timings = parse_findscu_log(log.read_bytes())
        if run.returncode != 0 or len(timings) != size:
            result.failures.append(f"{kind}: findscu exit {run.returncode}, {len(timings)} of {size} answered; {log}")
            break
        for latency, matches, final in timings:
            if final != "Success":
                result.failures.append(f"{kind}: final status {final}")
            if done >= warmup:
                result.latencies.append(latency)
                result.matches.append(matches)
            done += 1
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MWL C-FIND latency over scheduled procedure steps.")
    parser.add_argument("--steps", type=int, default=10_000, help="scheduled steps (default 10000)")
    parser.add_argument("--queries", type=int, default=100, help="timed queries per query type (default 100)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the index in SQLite (default) or PostgreSQL (LocalPostgres, or a new database "
                        "on MINIPACS_BENCH_DATABASE_URL's server)")  # fmt: skip
    parser.add_argument("--create", action="store_true",
                        help="populate through Worklist.create (one transaction per order; slow)")  # fmt: skip
    args = parser.parse_args(argv)

    runs = run_folder("mwl")
    print(f"disk: {describe_disk(runs)}", flush=True)
    data = runs / "data"
    data.mkdir()
    with ExitStack() as stack:
        if args.database == "postgresql":
            url = stack.enter_context(populate.bench_database("postgresql"))
        else:
            url = f"sqlite:///{data / 'index.sqlite'}"
        started = time.monotonic()
        steps = fill(url, str(data / "objects"), args.steps, args.seed, args.create)
        today = f"{date.today():%Y%m%d}"
        open_steps = sum(1 for s in steps if s.day >= today)
        print(f"{len(steps):,} steps ({open_steps:,} today or later, SCHEDULED) in {args.database}, "
              f"{'through Worklist.create' if args.create else 'inserted directly'} in "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip

        server = start_minipacs(data, log_dir=runs) if args.database == "sqlite" else start_minipacs_on(data, url, runs)
        results = []
        try:
            with RssMonitor(server.pid) as monitor:
                for kind in ("today's worklist, one station", "PatientName FAMILY^MIDDLE^G*", "accession number"):
                    results.append(measure(server, kind, steps, args.queries, args.warmup, runs / "queries", args.seed))
            peak = monitor.peak
        finally:
            status = server.stop()
    failed = [f for r in results for f in r.failures]
    if status not in (0, -15):
        failed.append(f"minipacs exited with status {status}")
    if "Traceback" in server.log():
        failed.append(f"Traceback in the server log {server.log_path}")

    print(f"\nMWL C-FIND (findscu -W) on {args.database}, {len(TOP_KEYS) + len(SPS_KEYS) + 3} return keys, {BATCH} queries per "
          f"association, {args.warmup} warm-up + {args.queries} timed per type; latency from sending the "
          "request to the final status in findscu's log")  # fmt: skip
    header = f"{'query':<32} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'matches mean':>13} {'max':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        if not r.latencies:
            print(f"{r.name:<32} (no answers)")
            continue
        ms = [t * 1000 for t in r.latencies]
        print(f"{r.name:<32} {len(ms):4d} {median(ms):8.1f} {percentile(ms, 95):8.1f} {max(ms):8.1f} "
              f"{sum(r.matches) / len(r.matches):13.1f} {max(r.matches):5d}")  # fmt: skip
    print(f"\nserver peak RSS during the queries: {peak / MiB:.0f} MB")
    for failure in failed[:20]:
        print(f"FAILED: {failure}")
    if not failed:
        shutil.rmtree(runs, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
