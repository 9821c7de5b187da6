"""Ingest benchmark: dcmtk storescu against minipacs, Orthanc and a bare pynetdicom SCP.

Scenarios (test data from bench/data.py, made once):

- ct1: 1,000 CT slices (~0.5 MB) of one study in one association
- dx:  20 DX images of ~10 MB in one association
- ct4: 4 storescu processes at once, 250 CT slices of its own study each

Every run starts the server fresh on an empty folder under bench/out/runs and
times the storescu processes from launch to exit. Rounds interleave the
servers (in a rotating order) so that the disk's drifting fsync speed hits
them alike; a disk probe before each round shows that drift.

    bench/ingest [--scenario ct1 --scenario dx] [--repeat 3] [--no-orthanc] [--no-bare] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import data
from common import MiB, OUT, RssMonitor, cpu_seconds, describe_disk, disk_probe, median, rss, run_folder
from servers import START, Server, orthanc_available, remove

STORESCU = "/usr/bin/storescu"  # Debian's dcmtk; .venv/bin/storescu is pynetdicom's


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    folders: tuple[str, ...]  # keys of data.ensure(); one storescu process each
    unit: str  # what one instance is called in the table


SCENARIOS = {
    "ct1": Scenario("ct1", "1,000 CT, 1 association", ("ct1",), "CT"),
    "dx": Scenario("dx", "20 DX x 10 MB, 1 association", ("dx",), "DX"),
    "ct4": Scenario("ct4", "4 senders x 250 CT at once", ("ct4/1", "ct4/2", "ct4/3", "ct4/4"), "CT"),
}

#: The issue's targets for minipacs: (scenario, metric) -> (comparison, value).
TARGETS = {
    ("ct1", "per_s"): (">=", 80.0),
    ("ct4", "per_s"): (">=", 130.0),
    ("dx", "mb_s"): (">=", 150.0),
    ("ct1", "rss_mb"): ("<=", 250.0),
    ("dx", "rss_mb"): ("<=", 250.0),
    ("ct4", "rss_mb"): ("<=", 250.0),
}
REFERENCE = (
    "reference measured earlier on this machine: Orthanc 19 CT/s over one association "
    "(9.6 MB/s), 67 CT/s with 4 senders, 40 MB/s for 10 MB DX, RSS 340 MB; "
    "bare pynetdicom with fsync 114 CT/s, 162 CT/s, 196 MB/s"
)
NAMES = {"minipacs": "minipacs", "orthanc": "Orthanc 1.10", "bare": "bare pynetdicom"}


@dataclass
class Run:
    round: int
    scenario: str
    server: str
    instances: int
    bytes: int
    seconds: float
    idle_rss: int
    peak_rss: int
    cpu_seconds: float  # the server's user + system CPU time during the run
    stored: int
    ok: bool
    problems: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.instances / self.seconds

    @property
    def mb_s(self) -> float:
        return self.bytes / MiB / self.seconds

    @property
    def rss_mb(self) -> float:
        return self.peak_rss / MiB

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.instances


def storescu_argv(server: Server, folder: Path) -> list[str]:
    """The same command line for every server: one association, the file's own transfer syntax."""
    return [STORESCU, "-aet", "BENCH", "-aec", server.aet,
            "+sd", "-R",  # every file of the folder; propose only the contexts the files need
            "127.0.0.1", str(server.port), str(folder)]  # fmt: skip


def run_once(kind: str, scenario: Scenario, round_: int, folders: dict[str, data.Folder],
             runs_dir: Path, keep: bool) -> Run:  # fmt: skip
    """Start a fresh `kind` server, send the scenario's folders, measure, verify, stop."""
    server = START[kind](runs_dir / f"r{round_}-{scenario.name}-{kind}")
    sent = [folders[k] for k in scenario.folders]
    expected = sum(f.files for f in sent)
    problems: list[str] = []
    try:
        idle = rss(server.pid)
        os.sync()  # start with no dirty pages left over from the previous run
        logs = [server.folder.parent / f"{server.folder.name}-storescu{i}.log" for i in range(len(sent))]
        cpu_before = cpu_seconds(server.pid)
        with RssMonitor(server.pid) as monitor:
            started = time.perf_counter()
            senders = []
            for folder, log_path in zip(sent, logs):
                with open(log_path, "wb") as log:
                    senders.append(subprocess.Popen(storescu_argv(server, folder.path),
                                                    stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            codes = [p.wait() for p in senders]
            seconds = time.perf_counter() - started
        peak = monitor.peak
        cpu = cpu_seconds(server.pid) - cpu_before
        for code, log_path in zip(codes, logs):
            output = log_path.read_text(errors="replace").strip()
            if code != 0 or "E:" in output:
                problems.append(f"storescu exit {code}: {output[-500:]}")
        # Orthanc answers only while it runs; the others are counted on disk once stopped.
        stored = server.stored() if kind == "orthanc" else None
    finally:
        status = server.stop()
    if stored is None:
        stored = server.stored()
    problems += verify(server, status, stored, expected)
    if problems:
        print(f"    server log kept: {server.log_path}", flush=True)
    elif not keep:
        remove(server)
        for log_path in logs:
            log_path.unlink(missing_ok=True)
    return Run(round_, scenario.name, kind, expected, sum(f.size for f in sent), seconds,
               idle, peak, cpu, stored, not problems, problems)  # fmt: skip


def verify(server: Server, status: int, stored: int, expected: int) -> list[str]:
    """What went wrong: a lost instance, a missing object file, a crash or a traceback."""
    problems = []
    if status != 0 and not (server.kind == "bare" and status == -15):  # bare_scp dies of SIGTERM
        problems.append(f"{server.kind} exited with status {status}")
    if stored != expected:
        problems.append(f"stored {stored} of {expected} instances")
    if server.kind == "minipacs":
        files = server.object_files()
        if files != expected:
            problems.append(f"{files} object files on disk for {expected} instances")
        if "Traceback" in server.log():
            problems.append("Traceback in the server log")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ingest throughput and memory: minipacs vs Orthanc vs bare pynetdicom.")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="run only this scenario (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="runs of each scenario per server (default 2)")
    parser.add_argument("--no-orthanc", action="store_true", help="skip Orthanc")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare pynetdicom SCP")
    parser.add_argument("--keep", action="store_true", help="keep each run's data folder and logs")
    args = parser.parse_args(argv)

    if not Path(STORESCU).is_file():
        print(f"{STORESCU} not found: run tests/setup.sh (installs Debian's dcmtk)", file=sys.stderr)
        return 2
    kinds = ["minipacs"]
    if not args.no_orthanc:
        if orthanc_available():
            kinds.append("orthanc")
        else:
            print("Orthanc is not installed (tests/setup.sh orthanc): skipping it", flush=True)
    if not args.no_bare:
        kinds.append("bare")
    scenarios = [SCENARIOS[s] for s in (args.scenario or list(SCENARIOS))]

    started = time.monotonic()
    folders = data.ensure()
    runs_dir = run_folder("ingest")
    print(f"disk: {describe_disk(runs_dir)}", flush=True)
    runs: list[Run] = []
    probes: list[float] = []
    for round_ in range(1, args.repeat + 1):
        probes.append(disk_probe(runs_dir))
        print(f"round {round_}/{args.repeat}: disk probe {probes[-1]:.0f} fsynced 512 KB files/s", flush=True)
        # Rotate who goes first, so no server always runs right after another's writes.
        order = kinds[(round_ - 1) % len(kinds):] + kinds[:(round_ - 1) % len(kinds)]
        for scenario in scenarios:
            for kind in order:
                run = run_once(kind, scenario, round_, folders, runs_dir, args.keep)
                runs.append(run)
                print(f"  {scenario.name:<4} {NAMES[kind]:<16} {run.instances} in {run.seconds:6.2f} s = "
                      f"{run.per_s:6.1f} {scenario.unit}/s, {run.mb_s:6.1f} MB/s, "
                      f"peak RSS {run.rss_mb:4.0f} MB (idle {run.idle_rss / MiB:.0f}), "
                      f"server CPU {run.cpu_ms:5.1f} ms/instance, "
                      f"stored {run.stored}/{run.instances} {'ok' if run.ok else 'FAILED'}", flush=True)  # fmt: skip
                for problem in run.problems:
                    print(f"    FAILED: {problem}", flush=True)
    probes.append(disk_probe(runs_dir))
    print(f"after the last round: disk probe {probes[-1]:.0f} fsynced 512 KB files/s\n", flush=True)

    print(report(runs, scenarios, kinds, args.repeat, probes))
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    results = OUT / f"ingest-{runs_dir.name.removeprefix('ingest-')}.json"
    results.write_text(json.dumps({"disk_probe_files_per_s": probes,
                                   "runs": [asdict(r) for r in runs]}, indent=1))  # fmt: skip
    print(f"raw results: {results}")
    if not args.keep and all(r.ok for r in runs):
        shutil.rmtree(runs_dir, ignore_errors=True)
    return 0 if all(r.ok for r in runs) else 1


def report(runs: list[Run], scenarios: list[Scenario], kinds: list[str], repeat: int,
           probes: list[float]) -> str:  # fmt: skip
    """The summary table: best and median per server, the Orthanc ratio, the targets."""
    lines = [
        f"Ingest, dcmtk storescu -> server on 127.0.0.1: best / median of {repeat} run(s); "
        "MB = 2^20 bytes; RSS = server peak resident memory (minipacs: supervisor + DICOM workers, summed as PSS)",
        f"disk probe (fsynced 512 KB files/s): {', '.join(f'{p:.0f}' for p in probes)}",
        "",
    ]
    header = f"{'scenario':<30} {'metric (best / median)':<22}"
    for kind in kinds:
        header += f" {NAMES[kind]:>17}"
        if kind == "orthanc":
            header += f" {'ratio':>6}"
    header += f"  {'target (minipacs)':<18}"
    lines += [header, "-" * len(header)]
    for scenario in scenarios:
        metrics = [("per_s", f"{scenario.unit}/s"), ("mb_s", "MB/s"), ("rss_mb", "peak RSS MB"),
                   ("cpu_ms", "server CPU ms/inst")]
        for i, (metric, label) in enumerate(metrics):
            row = f"{scenario.title if i == 0 else '':<30} {label:<22}"
            medians: dict[str, float] = {}
            for kind in kinds:
                values = [getattr(r, metric) for r in runs if r.scenario == scenario.name and r.server == kind]
                if not values:
                    row += f" {'-':>17}"
                    continue
                best = min(values) if metric in ("rss_mb", "cpu_ms") else max(values)
                medians[kind] = median(values)
                row += f" {_fmt(best) + ' / ' + _fmt(medians[kind]):>17}"
                if kind == "orthanc":
                    ratio = medians.get("minipacs", 0) / medians[kind] if medians[kind] else 0
                    row += f" {ratio:5.2f}x"
            target = TARGETS.get((scenario.name, metric))
            if target and "minipacs" in medians:
                op, value = target
                met = medians["minipacs"] >= value if op == ">=" else medians["minipacs"] <= value
                row += f"  {op} {value:<5.0f} {'met' if met else 'MISSED'}"
            lines.append(row)
    failed = [r for r in runs if not r.ok]
    lines += ["", "ratio = minipacs median / Orthanc median (for RSS and CPU lower is better); "
              "targets are judged on the median.", REFERENCE]  # fmt: skip
    if failed:
        lines.append(f"{len(failed)} run(s) FAILED (lost or refused instances): see the lines above")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
