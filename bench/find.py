"""C-FIND latency at study level over a populated index (default 100,000 instances).

Fills a fresh index with bench/populate.py (or reuses bench/out/find-index-N
with --reuse), starts `minipacs serve` on it and asks study-level C-FINDs with
Debian's dcmtk findscu as a workstation would, 25 queries per association,
each query with another value taken from the index: Patient ID, patient name prefixes (a whole name
with the last word cut to one letter, NGUYEN^VAN^A* and Nguyễn^Văn A*; family name and an
initial, NGUYEN^V*; family name alone, TRAN*), an accession number, the last day of
the index ("today": its whole study list), a one-week and a one-month StudyDate range,
and ModalitiesInStudy CT within one week.

With --database postgresql the same index is copied into PostgreSQL (a fresh
LocalPostgres from tests/pg.py, or a database made on the server of
MINIPACS_BENCH_DATABASE_URL) and `minipacs serve` runs on it
(MINIPACS_DATABASE_URL); objects stay in the data directory (C-FIND never opens them).

    bench/find [--instances 100000] [--reuse] [--queries 200] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

import populate
from archive.text import name_tokens
from common import (MiB, OUT, PYTHON, ROOT, RssMonitor, describe_disk, finish, free_port, median, percentile,
                    run_folder)
from servers import Server, _spawn, _wait_ready, start_minipacs

#: What a workstation's study list asks for.
RETURN_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
               "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
               "NumberOfStudyRelatedInstances")  # fmt: skip


@dataclass
class QueryType:
    name: str
    key: str  # the matching key
    target_ms: float  # the p95 target
    values: Callable[[Values, random.Random], str]
    also: dict[str, str] = field(default_factory=dict)  # fixed further matching keys


@dataclass
class Result:
    query: QueryType
    latencies: list[float] = field(default_factory=list)  # seconds
    matches: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Values:
    """Query values drawn from what the index holds, so queries hit real patients and dates."""

    def __init__(self, index: Path) -> None:
        with closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as conn:
            self.patient_ids = [r[0] for r in conn.execute("SELECT patient_id FROM patient ORDER BY pk")]
            self.names = [name_tokens(r[0]) for r in conn.execute("SELECT patient_name FROM patient ORDER BY pk")]
            # Names as modalities sent them with diacritics, three words or more: Nguyễn^Văn An.
            self.accented = [r[0] for r in conn.execute("SELECT patient_name FROM patient ORDER BY pk")
                             if not r[0].isascii() and "^" in r[0] and len(r[0].split("^", 1)[1].split()) >= 2]
            self.accessions = [r[0] for r in conn.execute(
                "SELECT accession_number FROM study WHERE accession_number != '' ORDER BY pk")]
            low, high = conn.execute(
                "SELECT min(study_date), max(study_date) FROM study WHERE study_date != ''"
            ).fetchone()
        self.first_day = date(int(low[:4]), int(low[4:6]), int(low[6:]))
        self.last_day = date(int(high[:4]), int(high[4:6]), int(high[6:]))

    def patient_id(self, rng: random.Random) -> str:
        return str(rng.choice(self.patient_ids))

    def name_prefix(self, rng: random.Random) -> str:
        """``NGUYEN^VAN^A*``: a patient's name with the last word cut to its first letter,
        as a clerk types it before the end of the name."""
        words = [w for w in rng.choice(self.names) if w]
        while len(words) < 2:
            words = [w for w in rng.choice(self.names) if w]
        return "^".join(words[:-1]) + f"^{words[-1][0]}*"

    def accented_prefix(self, rng: random.Random) -> str:
        """``Nguyễn^Văn A*``: a name as the clerk types it with its diacritics, last word cut short."""
        family, rest = rng.choice(self.accented).split("^", 1)
        words = rest.split()
        return f"{family}^{' '.join(words[:-1])} {words[-1][0]}*"

    def accession(self, rng: random.Random) -> str:
        return str(rng.choice(self.accessions))

    def today(self, _rng: random.Random) -> str:
        """The index's last day: a "today's studies" list (the same value each time)."""
        return f"{self.last_day:%Y%m%d}"

    def family_initial(self, rng: random.Random) -> str:
        """``NGUYEN^V*``: a patient's family name and the first letter of the next word."""
        words = [w for w in rng.choice(self.names) if w]
        while len(words) < 2:
            words = [w for w in rng.choice(self.names) if w]
        return f"{words[0]}^{words[1][0]}*"

    def family(self, rng: random.Random) -> str:
        """``TRAN*``: a patient's family name as a prefix (names are drawn per patient,
        so common family names come up as often as at a real front desk)."""
        return f"{rng.choice(self.names)[0]}*"

    def date_range(self, days: int) -> Callable[[Values, random.Random], str]:
        def value(_: Values, rng: random.Random) -> str:
            start = self.first_day + timedelta(days=rng.randrange((self.last_day - self.first_day).days - days))
            return f"{start:%Y%m%d}-{start + timedelta(days=days - 1):%Y%m%d}"

        return value


def query_types(values: Values) -> list[QueryType]:
    return [
        QueryType("PatientID exact", "PatientID", 30, Values.patient_id),
        QueryType("PatientName NAME^G*", "PatientName", 50, Values.name_prefix),
        QueryType("PatientName Nguyễn^Văn A*", "PatientName", 50, Values.accented_prefix),
        QueryType("PatientName FAMILY^G*", "PatientName", 50, Values.family_initial),
        QueryType("PatientName FAMILY*", "PatientName", 50, Values.family),
        QueryType("AccessionNumber exact", "AccessionNumber", 30, Values.accession),
        QueryType("StudyDate today", "StudyDate", 50, Values.today),
        QueryType("StudyDate 1-week range", "StudyDate", 50, values.date_range(7)),
        QueryType("StudyDate 1-month range", "StudyDate", 50, values.date_range(30)),
        QueryType("CT + 1-week range", "StudyDate", 50, values.date_range(7), {"ModalitiesInStudy": "CT"}),
    ]


def identifier(key: str, value: str, also: dict[str, str] | None = None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, "")
    for keyword, fixed in (also or {}).items():
        setattr(ds, keyword, fixed)
    setattr(ds, key, value)
    if not value.isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


#: dcmtk's logger, set up to stamp every line with the time in microseconds
#: (log4cplus PatternLayout: %Q is milliseconds with three decimals).
LOG_CONFIG = """\
log4cplus.rootLogger = INFO, out
log4cplus.appender.out = log4cplus::ConsoleAppender
log4cplus.appender.out.ImmediateFlush = true
log4cplus.appender.out.layout = log4cplus::PatternLayout
log4cplus.appender.out.layout.ConversionPattern = %D{%s.%Q} %m%n
"""
#: Queries per findscu process (= per association).
BATCH = 25
_LINE = re.compile(rb"^(\d+)\.(\d+\.\d+) (Sending Find Request|Find Response: \d+ \(Pending|"
                   rb"Received Final Find Response \((.*)\))")  # fmt: skip


def measure(server: Server, query: QueryType, values: Values, count: int, warmup: int, seed: int,
            folder: Path, nagle: bool = False, max_seconds: float = 0) -> Result:  # fmt: skip
    """`warmup` queries, then `count` timed ones, each with a new value, sent by
    Debian's dcmtk findscu, BATCH queries per association.

    findscu stamps its log lines with the time, so each query's latency is
    read from its log: from "Sending Find Request" to "Received Final Find
    Response", every match received and decoded by a real client in C++.

    With `max_seconds`, stops early once the timed queries have taken that
    long (a NGUYEN* query returns thousands of matches).

    Nagle's algorithm is off in findscu (TCP_NODELAY=1) unless `nagle`
    (TCP_NODELAY unset: stock dcmtk).
    """
    rng = random.Random(f"{seed}/{query.name}")
    result = Result(query)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "findscu-log.cfg"
    config.write_text(LOG_CONFIG)
    # dcmtk switches Nagle off when TCP_NODELAY is set at all; unset, it stays on.
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if not nagle:
        env["TCP_NODELAY"] = "1"
    done = 0
    while done < warmup + count:
        size = min(BATCH, warmup + count - done)
        files = []
        for i in range(size):
            value = query.values(values, rng)
            path = folder / f"q{i:03d}.dcm"
            ds = identifier(query.key, value, query.also)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(path, implicit_vr=True, little_endian=True)
            files.append(path)
        log = folder / "findscu.log"
        with log.open("wb") as out:
            run = subprocess.run(["findscu", "-S", "-aet", "BENCH", "-aec", server.aet, "-lc", str(config),
                                  "-to", "120", "-ta", "120", "-td", "120",
                                  "127.0.0.1", str(server.port), *map(str, files)],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, check=False)  # fmt: skip
        timings = parse_findscu_log(log.read_bytes())
        if run.returncode != 0 or len(timings) != size:
            result.failures.append(f"{query.name}: findscu exit {run.returncode}, {len(timings)} of {size} "
                                   f"queries answered; see {log}")  # fmt: skip
            break
        for latency, matches, final in timings:
            if final != "Success":
                result.failures.append(f"{query.name}: final status {final}")
            if done >= warmup:
                result.latencies.append(latency)
                result.matches.append(matches)
            done += 1
        if max_seconds and sum(result.latencies) > max_seconds:
            break
    return result


def parse_findscu_log(log: bytes) -> list[tuple[float, int, str]]:
    """(latency in seconds, matches, final status) per query, from findscu's time-stamped log."""
    queries: list[tuple[float, int, str]] = []
    sent: float | None = None
    matches = 0
    for line in log.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        stamp = int(m.group(1)) + float(m.group(2)) / 1000
        what = m.group(3)
        if what.startswith(b"Sending"):
            sent, matches = stamp, 0
        elif what.startswith(b"Find Response"):
            matches += 1
        elif sent is not None:
            queries.append((stamp - sent, matches, m.group(4).decode("ascii", "replace")))
            sent = None
    return queries


def index_folder(instances: int, seed: int, reuse: bool, runs: Path) -> tuple[Path, bool]:
    """The data directory to query and whether it has to be populated first."""
    if reuse:
        folder = OUT / f"find-index-{instances}-seed{seed}"
        if (folder / ".complete").is_file():
            return folder, False
        shutil.rmtree(folder, ignore_errors=True)
        return folder, True
    return runs / "data", True


def add_index_options(parser: argparse.ArgumentParser) -> None:
    """The options naming the index to query and its database (bench/find and bench/qido)."""
    parser.add_argument("--instances", type=int, default=100_000, help="instances to index (default 100000)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the populated index in bench/out/find-index-N and reuse it next time")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the index in SQLite (default) or copied into PostgreSQL (LocalPostgres, or a "
                        "new database on MINIPACS_BENCH_DATABASE_URL's server)")  # fmt: skip


@contextmanager
def served_index(args: argparse.Namespace, runs: Path) -> Iterator[tuple[Server, Values, str]]:
    """`minipacs serve` on the populated index in args.database: (server, query values, database URL)."""
    data, fill = index_folder(args.instances, args.seed, args.reuse, runs)
    if fill:
        print(f"populating {data} with about {args.instances:,} instances ...", flush=True)
        s = populate.populate(data, args.instances, args.seed, progress=sys.stderr.isatty())
        print(f"  {s.instances:,} instances, {s.series:,} series, {s.studies:,} studies "
              f"({', '.join(f'{m} {n:,}' for m, n in sorted(s.by_modality.items()))}), "
              f"{s.patients:,} patients in {s.seconds:.0f} s", flush=True)  # fmt: skip
        (data / ".complete").write_text(f"{args.instances} {args.seed}\n")
    else:
        print(f"reusing the index in {data}", flush=True)
    index = data / "index.sqlite"
    values = Values(index)
    if args.database == "sqlite":
        url = f"sqlite:///{index}"
        server = start_minipacs(data, log_dir=runs)
        try:
            print(f"index: SQLite, {index_statistics(url, data)}; {index.stat().st_size / MiB:.0f} MB", flush=True)
            yield server, values, url
        finally:
            server.stop()
        return
    from archive.db import Database

    with populate.bench_database("postgresql") as url:
        started = time.monotonic()
        source = Database.open(f"sqlite:///{index}", upgrade=False)
        try:
            populate.copy_index_to(source, url)
        finally:
            source.dispose()
        print(f"copied the index into PostgreSQL in {time.monotonic() - started:.0f} s", flush=True)
        server = start_minipacs_on(data, url, runs)
        try:
            print(f"index: PostgreSQL, {index_statistics(url, data)}", flush=True)
            yield server, values, url
        finally:
            server.stop()


def start_minipacs_on(folder: Path, database_url: str, log_dir: Path) -> Server:
    """`minipacs serve` as servers.start_minipacs starts it, its index in the database at `database_url`."""
    port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPACS_")}
    env.update(MINIPACS_DICOM_HOST="127.0.0.1", MINIPACS_DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    argv = [str(PYTHON), "-m", "appliance.cli", "serve", "--data", str(folder), "--dicom-port", str(port),
            "--http-port", str(http_port), "--hl7-port", str(free_port()), "--log-level", "INFO"]  # fmt: skip
    process, log_path = _spawn(folder, argv, env, log_dir)
    return _wait_ready(Server("minipacs", "MINIPACS", port, folder, process, log_path, http_port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Study-level C-FIND latency on a populated minipacs index.")
    add_index_options(parser)
    parser.add_argument("--queries", type=int, default=200, help="timed queries per query type (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed queries first (default 10)")
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="stop a query type's timed queries after this long (default 120; 0: no limit)")  # fmt: skip
    parser.add_argument("--only", default="", help="only query types whose name contains this")
    parser.add_argument("--client-nagle", action="store_true",
                        help="Nagle's algorithm on in findscu (TCP_NODELAY unset: stock dcmtk); "
                        "default: TCP_NODELAY=1, so the figures are the server's")  # fmt: skip
    args = parser.parse_args(argv)

    started = time.monotonic()
    runs = run_folder("find")
    print(f"disk: {describe_disk(runs)}", flush=True)
    results: list[Result] = []
    failed: list[str] = []
    with served_index(args, runs) as (server, values, _):
        with RssMonitor(server.pid) as monitor:
            for query in query_types(values):
                if args.only and args.only.lower() not in query.name.lower():
                    continue
                result = measure(server, query, values, args.queries, args.warmup, args.seed,
                                 runs / "queries", args.client_nagle, args.max_seconds)  # fmt: skip
                results.append(result)
                print(f"  {query.name}: {len(result.latencies)} queries in {sum(result.latencies):.0f} s",
                      flush=True)  # fmt: skip
        peak = monitor.peak
    failed += [f for r in results for f in r.failures]
    status = server.process.returncode
    if status not in (0, -15):
        failed.append(f"minipacs exited with status {status}")
    if "Traceback" in server.log():
        failed.append(f"Traceback in the server log {server.log_path}")

    print()
    print(f"database: {args.database}")
    print(report(results, args.queries, args.warmup, peak, args.client_nagle))
    return finish(started, failed, runs)


def server_statistics(server: Server) -> str:
    """Rows of the SQLite index `server` runs on (bench/web)."""
    return index_statistics(f"sqlite:///{server.folder / 'index.sqlite'}", server.folder)


def index_statistics(url: str, data: Path) -> str:
    from archive import Archive

    archive = Archive.open(url, str(data / "objects"))
    try:
        s = archive.statistics()
    finally:
        archive.close()
    return f"{s.patients:,} patients, {s.studies:,} studies, {s.series:,} series, {s.instances:,} instances"


def report(results: list[Result], queries: int, warmup: int, peak_rss: int, nagle: bool) -> str:
    client = "Nagle on (stock, TCP_NODELAY unset)" if nagle else "Nagle off (TCP_NODELAY=1)"
    lines = [
        f"C-FIND, Study Root, STUDY level, {len(RETURN_KEYS)} return keys; per query type "
        f"{warmup} warm-up then {queries} timed queries, each with another value, {BATCH} per association.",
        f"latency = findscu's log from sending the request to the final status (all matches received); "
        f"dcmtk findscu on 127.0.0.1, {client}",
        "",
        f"{'query':<26} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'matches mean':>13} {'max':>6}  p95 target",
    ]
    lines.append("-" * len(lines[-1]))
    for r in results:
        if not r.latencies:
            lines.append(f"{r.query.name:<28} (no answers)")
            continue
        ms = [t * 1000 for t in r.latencies]
        p95 = percentile(ms, 95)
        met = "met" if p95 <= r.query.target_ms else "MISSED"
        lines.append(f"{r.query.name:<28} {len(ms):4d} {median(ms):8.1f} {p95:8.1f} {max(ms):8.1f} "
                     f"{sum(r.matches) / len(r.matches):13.1f} {max(r.matches):6d}  "
                     f"<= {r.query.target_ms:.0f} ms {met}")  # fmt: skip
    lines.append(f"\nn = timed queries (fewer than asked when --max-seconds ran out); "
                 f"server peak RSS during the queries: {peak_rss / MiB:.0f} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
