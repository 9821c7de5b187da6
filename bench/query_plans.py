"""The query plans of the queries a hospital asks, on SQLite or PostgreSQL.

Runs each query through the code that answers it (the matching engine behind
C-FIND and QIDO-RS, the MWL query, the reading list), records the SQL it sent
and prints that SQL's plan: ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL,
``EXPLAIN QUERY PLAN`` on SQLite. So the plans shown are those of the SQL
the service really sends, not of hand-written look-alikes, and stay true when
the query code changes. With ``--time N`` each query is also run N times
in-process (index latency without the DIMSE/HTTP edge): median and p95.

Query values come from the index: a patient of it, the accession number of a
study of its last day ("today"), its last day and week.

    .venv/bin/python bench/query_plans.py --backend sqlite --backend postgresql [--time 50] [--sql] [--only NAME]
    .venv/bin/python bench/query_plans.py URL [--time 50]     # an index as it is (read only)

--backend works on a copy of bench/find --reuse's 100k index (--index DIR), its
schema brought to the newest migration, with bench/mwl's 10,000 steps added.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, cast

from pydicom.dataset import Dataset
from sqlalchemy import Engine, Table, case, event, func, insert, select

import populate
from archive.db import Database
from archive.attributes import TOKEN_PATIENT_NAME
from archive.models import Instance, NameToken, Patient, PatientIdentifier, Series, Study
from archive.query import Level, QueryService, query_from_identifier
from archive.text import name_tokens
from common import median, percentile, run_folder
from reports.reading_list import ReadingListQuery, reading_list

#: What a workstation's study list asks for (bench/find.py's return keys).
STUDY_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
              "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")  # fmt: skip


#: What a viewer asks for a study's series (QIDO-RS /studies/{uid}/series).
SERIES_KEYS = ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances")


#: What a viewer asks for a series' instances (QIDO-RS .../series/{uid}/instances).
INSTANCE_KEYS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames")


def retrieve_query(study_uid: str) -> Callable[[Database], int]:
    """The instances a C-MOVE/C-GET or WADO-RS of one study sends, in their order."""

    def run(db: Database) -> int:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        return len(QueryService(db).instances(query_from_identifier(ds, patient_root=False)))

    return run


@dataclass(frozen=True)
class Named:
    name: str
    run: Callable[[Database], int]  # runs the query the service's way; the number of matches


def study_query(limit: int | None = None, level: str = "STUDY", **keys: str) -> Callable[[Database], int]:
    """A study-level C-FIND / QIDO-RS query with the study list's return keys (QIDO asks limit + 1)."""

    def run(db: Database) -> int:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for keyword in {"STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS}.get(level, INSTANCE_KEYS):
            setattr(ds, keyword, "")
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        query = query_from_identifier(ds, patient_root=False)
        query.limit = limit
        return sum(1 for _ in QueryService(db).find_json(query))

    return run


def mwl_query(station: str, modality: str, day: str) -> Callable[[Database], int]:
    """Today's worklist of one station, as a console asks it (bench/mwl.py's identifier)."""

    def run(db: Database) -> int:
        import mwl
        from worklist.mwl import find, parse_query

        ds = mwl.identifier({"ScheduledStationAETitle": station, "Modality": modality,
                             "ScheduledProcedureStepStartDate": day})  # fmt: skip
        return sum(1 for _ in find(db, parse_query(ds)))

    return run


def reading_query(query: ReadingListQuery) -> Callable[[Database], int]:
    def run(db: Database) -> int:
        return len(reading_list(db, query).rows)

    return run


def queries(db: Database) -> list[Named]:
    """The hospital's queries, with values drawn from the index in `db`."""
    with db.read() as conn:
        last = conn.execute(select(func.max(Study.study_date)).where(Study.study_date != "")).scalar_one()
        # Patients with studies (the MWL steps bring patients of their own).
        patients = conn.execute(select(Patient.patient_id, Patient.patient_name)
                                .where(Patient.pk.in_(select(Study.patient_pk))).order_by(Patient.pk)).all()  # fmt: skip
        accession, study_uid = conn.execute(select(Study.accession_number, Study.study_instance_uid)
                                            .where(Study.study_date == last).order_by(Study.pk).limit(1)).one()
        # The series of a CT with most instances (a viewer opening it asks for all of them).
        big_study, big_series = conn.execute(select(Study.study_instance_uid, Series.series_instance_uid)
                                             .join(Series, Series.study_pk == Study.pk)
                                             .where(Series.pk.in_(select(Instance.series_pk)))
                                             .order_by(Series.num_instances.desc()).limit(1)).one()
        other_id = conn.execute(select(PatientIdentifier.value).order_by(PatientIdentifier.pk)
                                .offset(100).limit(1)).scalar_one()  # fmt: skip
    today = date(int(last[:4]), int(last[4:6]), int(last[6:]))
    week = f"{today - timedelta(days=6):%Y%m%d}-{last}"
    month = f"{today - timedelta(days=29):%Y%m%d}"
    middle = patients[len(patients) // 2]
    # A name with diacritics and three words (Nguyễn^Văn An), as a clerk types it: the last word cut short.
    accented = next(name for _, name in patients[len(patients) // 3:]
                    if not name.isascii() and len(name_tokens(name)) >= 3)  # fmt: skip
    family, rest = accented.split("^", 1)
    words = rest.split()
    with_marks = f"{family}^{' '.join(words[:-1])} {words[-1][0]}*"  # Nguyễn^Văn A*
    words_ascii = name_tokens(accented)
    plain = f"{words_ascii[0].upper()}^{words_ascii[1].upper()}^{words_ascii[2][0].upper()}*"  # NGUYEN^VAN^A*
    rare = next(n for n in ("Lý", "Dương", "Ngô") if any(name.startswith(n) for _, name in patients))
    found: list[Named] = [
        Named("PatientID exact", study_query(PatientID=str(middle[0]))),
        Named(f"PatientName {plain}", study_query(PatientName=plain)),
        Named(f"PatientName {with_marks}", study_query(PatientName=with_marks)),
        Named(f"PatientName {name_tokens(rare)[0].upper()}*", study_query(PatientName=f"{name_tokens(rare)[0]}*")),
        Named("PatientName NGUYEN* (a third)", study_query(PatientName="NGUYEN*")),
        Named("AccessionNumber exact", study_query(AccessionNumber=accession)),
        Named("StudyDate today", study_query(StudyDate=last)),
        Named("StudyDate last 7 days", study_query(StudyDate=week)),
        Named("Modality CT + last 7 days", study_query(ModalitiesInStudy="CT", StudyDate=week)),
        Named("QIDO today, limit 100", study_query(limit=101, StudyDate=last)),
        Named("QIDO all studies, limit 100", study_query(limit=101)),
        Named("series of one study", study_query(level="SERIES", StudyInstanceUID=study_uid)),
        Named("instances of a CT series", study_query(level="IMAGE", StudyInstanceUID=big_study,
                                                       SeriesInstanceUID=big_series)),
        Named("retrieve a CT study (C-MOVE)", retrieve_query(big_study)),
        Named("OtherPatientIDs exact (CCCD/BHYT)", study_query(OtherPatientIDs=other_id)),
        Named("reading list, default page", reading_query(ReadingListQuery(status="todo", date_from=month))),
        Named("reading list, patient ID", reading_query(ReadingListQuery(status="all", patient_id=str(middle[0])))),
    ]
    if _has_steps(db):
        found.append(Named("MWL today, one station", mwl_query("CT1", "CT", f"{date.today():%Y%m%d}")))
    return found


def _has_steps(db: Database) -> bool:
    from worklist.models import ProcedureStep

    with db.read() as conn:
        return conn.execute(select(ProcedureStep.pk).limit(1)).first() is not None


def multiply(db: Database, scale: int) -> None:
    """Copy patients, studies, series, their name words and other IDs `scale` - 1 more times.

    Each copy gets its own keys (UIDs, Patient IDs and accession numbers with a
    suffix) and the same names and dates: a site `scale` times as busy, or
    `scale` sites in one database, as far as study-level queries can tell.
    Instances are not copied (no study-level query reads them).
    """
    tables = [cast(Table, m.__table__) for m in (Patient, Study, Series, NameToken, PatientIdentifier)]
    with db.write() as conn:
        top = {t.name: int(conn.execute(select(func.max(t.c.pk))).scalar_one() or 0) for t in tables}
        for k in range(1, scale):
            tag = f".{k}"
            shift = {name: k * top[name] for name in top}
            for table in tables:
                c = table.c
                changed: dict[str, Any] = {"pk": c.pk + shift[table.name]}
                if table.name == "patient":
                    changed.update(patient_key=c.patient_key + tag, patient_id=c.patient_id + tag)
                elif table.name == "study":
                    changed.update(study_instance_uid=c.study_instance_uid + tag,
                                   accession_number=c.accession_number + tag, patient_pk=c.patient_pk + shift["patient"])
                elif table.name == "series":
                    changed.update(series_instance_uid=c.series_instance_uid + tag, study_pk=c.study_pk + shift["study"])
                elif table.name == "patient_identifier":
                    changed.update(patient_pk=c.patient_pk + shift["patient"])
                elif table.name == "name_token":
                    changed.update(owner_pk=case((c.kind == TOKEN_PATIENT_NAME, c.owner_pk + shift["patient"]),
                                                 else_=c.owner_pk + shift["study"]))  # fmt: skip
                columns = [changed[col.name].label(col.name) if col.name in changed else col for col in c]
                source = select(*columns).where(c.pk <= top[table.name])
                conn.execute(insert(table).from_select([col.name for col in c], source))


class Recorder:
    """The statements an engine executes while recording."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []
        self.on = False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if self.on and statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, parameters))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


def explain(db: Database, statement: str, parameters: Any) -> list[str]:
    with db.read() as conn:
        if db.is_sqlite:
            rows: list[Any] = list(conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all())
            depth: dict[int, int] = {}
            lines = []
            for node, parent, _, detail in rows:
                depth[int(node)] = depth.get(int(parent), -1) + 1
                lines.append("  " * depth[int(node)] + str(detail))
            return lines
        analyzed = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).all()
        return [str(r[0]) for r in analyzed]


def timed(db: Database, named: Named, count: int) -> tuple[list[float], int]:
    named.run(db)  # warm
    times, matches = [], 0
    for _ in range(count):
        started = time.perf_counter()
        matches = named.run(db)
        times.append((time.perf_counter() - started) * 1000)
    return times, matches


def report(db: Database, count: int, runs: int, show_sql: bool, only: str, plans: bool = True,
           skip: str = "") -> None:
    """Print the plans, and with `count`, each query's p50/p95 over `count` calls, `runs` times."""
    recorder = Recorder(db.engine)
    selected = [n for n in queries(db) if (not only or only.lower() in n.name.lower())
                and not (skip and skip.lower() in n.name.lower())]
    try:
        for named in selected:
            recorder.statements.clear()
            recorder.on = True
            try:
                matches = named.run(db)
            finally:
                recorder.on = False
            if plans:
                print(f"\n=== {named.name}: {matches} matches, {len(recorder.statements)} statement(s); "
                      "plan of the first")  # fmt: skip
                statement, parameters = recorder.statements[0]
                if show_sql:
                    print(statement)
                    print(f"-- {parameters}")
                for line in explain(db, statement, parameters):
                    print(f"  {line}")
    finally:
        recorder.close()
    if not count:
        return
    # Runs one after the other over every query, so a burst of load elsewhere spreads over all of them.
    figures: dict[str, list[tuple[float, float, int]]] = {n.name: [] for n in selected}
    for _ in range(runs):
        for named in selected:
            times, matches = timed(db, named, count)
            figures[named.name].append((median(times), percentile(times, 95), matches))
    print(f"\nin-process latency on {db.engine.dialect.name} ({count} calls per run after one warm-up, "
          f"all matches fetched; {runs} runs: median of the runs' figures [lowest-highest])")  # fmt: skip
    header = f"{'query':<36} {'p50 ms':>22} {'p95 ms':>22} {'matches':>8}"
    print(header)
    print("-" * len(header))
    for name, per_run in figures.items():
        p50s, p95s = [f[0] for f in per_run], [f[1] for f in per_run]
        cells = [f"{median(v):7.2f} [{min(v):.2f}-{max(v):.2f}]" for v in (p50s, p95s)]
        print(f"{name:<36} {cells[0]:>22} {cells[1]:>22} {per_run[-1][2]:8d}")


def _databases(args: argparse.Namespace) -> Iterator[str]:
    """The database(s) to explain: the URL given, or a copy of --index on each --backend."""
    if args.url:
        yield args.url
        return
    index = args.index / "index.sqlite"
    if not index.is_file():
        raise SystemExit(f"no index in {args.index}: run bench/find --reuse (or bench/populate.py) first")
    for backend in args.backend:
        started = time.perf_counter()
        if backend == "sqlite":
            folder = run_folder("query-plans")
            try:
                shutil.copyfile(index, folder / "index.sqlite")
                url = f"sqlite:///{folder / 'index.sqlite'}"
                _prepare(url, args.steps, folder, args.scale, args.revision)
                print(f"\n##### SQLite: a copy of {index}{_shape(args)} ({time.perf_counter() - started:.0f} s)",
                      flush=True)  # fmt: skip
                yield url
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        else:
            with populate.bench_database("postgresql") as url:
                source = Database.open(f"sqlite:///{index}", upgrade=False)
                try:
                    populate.copy_index_to(source, url)
                finally:
                    source.dispose()
                with TemporaryDirectory() as objects:
                    _prepare(url, args.steps, Path(objects), args.scale, args.revision)
                print(f"\n##### PostgreSQL: {index} copied in{_shape(args)} ({time.perf_counter() - started:.0f} s)",
                      flush=True)  # fmt: skip
                yield url


def _shape(args: argparse.Namespace) -> str:
    scaled = f", study-level rows x{args.scale}" if args.scale > 1 else ""
    return f"{scaled}, schema at {args.revision or 'the newest migration'}, {args.steps:,} MWL steps"


def _prepare(url: str, steps: int, objects: Path, scale: int = 1, revision: str = "") -> None:
    """Bring the copy's schema to head (or `revision`), add `steps` MWL steps, multiply the
    study-level rows `scale` times, refresh the planner's statistics."""
    import mwl

    Database.open(url).dispose()  # migrates
    if revision:
        from alembic import command

        from archive.db import alembic_config, make_engine

        engine = make_engine(url)
        try:
            command.downgrade(alembic_config(engine), revision)
        finally:
            engine.dispose()
    if steps:
        mwl.fill(url, str(objects), steps, 1, through_service=False)
    db = Database.open(url, upgrade=False)
    try:
        if scale > 1:
            multiply(db, scale)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # VACUUM too on PostgreSQL: the visibility map autovacuum keeps in a running server
            # is what lets the planner choose index-only scans.
            conn.exec_driver_sql("ANALYZE" if db.is_sqlite else "VACUUM ANALYZE")
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="SQLAlchemy URL of a populated index")
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"),
                        help="explain a copy of --index on this backend (PostgreSQL: LocalPostgres, or "
                        "MINIPACS_BENCH_DATABASE_URL); may be given twice")  # fmt: skip
    parser.add_argument("--steps", type=int, default=10_000,
                        help="MWL steps added to the copy (bench/mwl's month of orders; default 10000)")
    parser.add_argument("--index", type=Path, default=populate.OUT_INDEX,
                        help=f"data directory of a populated SQLite index (default {populate.OUT_INDEX})")
    parser.add_argument("--scale", type=int, default=1, metavar="K",
                        help="copy the study-level rows K times (K sites, or one K times as busy; no instances)")
    parser.add_argument("--revision", default="",
                        help="the copy's schema at this migration, e.g. 0006 (default: the newest)")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="run each query N times: p50/p95")
    parser.add_argument("--runs", type=int, default=3, help="timing runs (default 3)")
    parser.add_argument("--no-plans", action="store_true", help="only the timings")
    parser.add_argument("--sql", action="store_true", help="print the SQL too")
    parser.add_argument("--only", default="", help="only queries whose name contains this")
    parser.add_argument("--skip", default="", help="not the queries whose name contains this (e.g. NGUYEN)")
    args = parser.parse_args(argv)
    if not args.url and not args.backend:
        parser.error("give a database URL or --backend")
    for url in _databases(args):
        db = Database.open(url, upgrade=False)
        try:
            report(db, args.time, args.runs, args.sql, args.only, plans=not args.no_plans, skip=args.skip)
        finally:
            db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
