"""Ingest benchmark: dcmtk storescu against minipacs, Orthanc and a bare pynetdicom SCP.

Scenarios (test data from bench/data.py, made once):

- ct1: 1,000 CT slices (~0.5 MB) of one study in one association
- dx:  20 DX images of ~10 MB in one association
- ct4: 4 storescu processes at once, 250 CT slices of its own study each

Every run starts the server fresh on an empty folder under bench/out/runs and
times the storescu processes from launch to exit. Rounds interleave the
servers (in a rotating order) so that the disk's drifting fsync speed hits
them alike; a disk probe before each round shows that drift.

minipacs runs on one or more backends (--backend, repeatable): sqlite-fs (the
default: SQLite index and objects in its data folder), pg-s3 (one node on a
PostgreSQL and a JuiceFS S3 gateway, bench/scaleout.py) and 2nodes (two nodes
on one PostgreSQL and one bucket; senders go to the nodes in turn, so ct4's
four senders are two per node and ct1's one sender goes to node A). A fresh
PostgreSQL, gateway, database and bucket are made for every run.

    bench/ingest [--scenario ct1 --scenario dx] [--repeat 3] [--no-orthanc] [--no-bare] [--keep]
                 [--backend sqlite-fs --backend pg-s3 --backend 2nodes]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import data
from common import MiB, OUT, RssMonitor, cpu_seconds, describe_disk, disk_probe, median, rss, run_folder
from scaleout import Backing, cpu_with_reaped
from servers import START, Server, orthanc_available, remove, start_minipacs

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
NAMES = {"minipacs": "minipacs", "minipacs-pg-s3": "minipacs PG+S3", "minipacs-2nodes": "minipacs 2 nodes",
         "orthanc": "Orthanc 1.10", "bare": "bare pynetdicom"}  # fmt: skip
#: --backend -> the server kind that runs minipacs on it.
BACKENDS = {"sqlite-fs": "minipacs", "pg-s3": "minipacs-pg-s3", "2nodes": "minipacs-2nodes"}
#: minipacs nodes of each scale-out kind, all on one PostgreSQL and one bucket.
NODES = {"minipacs-pg-s3": 1, "minipacs-2nodes": 2}


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
    node_peak_rss: list[int] = field(default_factory=list)  # each minipacs node's (peak_rss is their sum)
    service_peak_rss: dict[str, int] = field(default_factory=dict)  # PostgreSQL, S3 gateway
    service_cpu_seconds: dict[str, float] = field(default_factory=dict)

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

    @property
    def backing_rss_mb(self) -> float:
        return sum(self.service_peak_rss.values()) / MiB

    @property
    def backing_cpu_ms(self) -> float:
        return sum(self.service_cpu_seconds.values()) * 1000 / self.instances


@dataclass
class Deployment:
    """What one run measures: the server (or minipacs nodes) and, for scale-out, its PostgreSQL + S3."""

    folder: Path
    nodes: list[Server]
    backing: Backing | None = None

    def stop_nodes(self) -> list[int]:
        return [node.stop() for node in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.backing is not None:
            self.backing.stop()


def deploy(kind: str, folder: Path) -> Deployment:
    """Start a fresh `kind` in `folder` (the server's data folder; for scale-out, its nodes' and services')."""
    if kind not in NODES:
        return Deployment(folder, [START[kind](folder)])
    backing = Backing(folder).start()
    deployment = Deployment(folder, [], backing)
    try:
        for name in "ab"[: NODES[kind]]:
            deployment.nodes.append(start_minipacs(folder / f"node-{name}", store_env=backing.env))
    except BaseException:
        deployment.stop()
        raise
    return deployment


def storescu_argv(server: Server, folder: Path) -> list[str]:
    """The same command line for every server: one association, the file's own transfer syntax."""
    return [STORESCU, "-aet", "BENCH", "-aec", server.aet,
            "+sd", "-R",  # every file of the folder; propose only the contexts the files need
            "127.0.0.1", str(server.port), str(folder)]  # fmt: skip


def run_once(kind: str, scenario: Scenario, round_: int, folders: dict[str, data.Folder],
             runs_dir: Path, keep: bool) -> Run:  # fmt: skip
    """Start a fresh `kind` server, send the scenario's folders, measure, verify, stop."""
    deployment = deploy(kind, runs_dir / f"r{round_}-{scenario.name}-{kind}")
    nodes = deployment.nodes
    sent = [folders[k] for k in scenario.folders]
    expected = sum(f.files for f in sent)
    problems: list[str] = []
    statuses: list[int] = []
    stored: int | None = None
    objects: int | None = None
    try:
        services = deployment.backing.services() if deployment.backing else []
        idle = sum(rss(node.pid) for node in nodes)
        os.sync()  # start with no dirty pages left over from the previous run
        run_dir = deployment.folder
        logs = [run_dir.parent / f"{run_dir.name}-storescu{i}.log" for i in range(len(sent))]
        cpu_before = sum(cpu_seconds(node.pid) for node in nodes)
        service_cpu_before = {s.name: cpu_with_reaped(s.pid) for s in services}
        with ExitStack() as stack:
            monitors = [stack.enter_context(RssMonitor(node.pid)) for node in nodes]
            service_monitors = {s.name: stack.enter_context(RssMonitor(s.pid)) for s in services}
            started = time.perf_counter()
            senders = []
            # Senders go to the nodes in turn: ct4 on two nodes is two senders each.
            for i, (folder, log_path) in enumerate(zip(sent, logs)):
                with open(log_path, "wb") as log:
                    senders.append(subprocess.Popen(storescu_argv(nodes[i % len(nodes)], folder.path),
                                                    stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            codes = [p.wait() for p in senders]
            seconds = time.perf_counter() - started
        node_peaks = [monitor.peak for monitor in monitors]
        service_peaks = {name: monitor.peak for name, monitor in service_monitors.items()}
        cpu = sum(cpu_seconds(node.pid) for node in nodes) - cpu_before
        service_cpu = {s.name: cpu_with_reaped(s.pid) - service_cpu_before[s.name] for s in services}
        for code, log_path in zip(codes, logs):
            output = log_path.read_text(errors="replace").strip()
            if code != 0 or "E:" in output:
                problems.append(f"storescu exit {code}: {output[-500:]}")
        # Orthanc answers only while it runs; the others are counted once stopped
        # (PostgreSQL and the S3 gateway outlive the nodes for that).
        if kind == "orthanc":
            stored = nodes[0].stored()
        statuses = deployment.stop_nodes()
        if stored is None:
            stored = nodes[0].stored()
        if nodes[0].kind == "minipacs":
            objects = nodes[0].object_files()
    finally:
        deployment.stop()
    problems += verify(nodes, statuses, stored, objects, expected)
    if problems:
        print(f"    server log(s) kept: {', '.join(str(node.log_path) for node in nodes)}", flush=True)
    elif not keep:
        if deployment.backing is None:
            remove(nodes[0])
        else:
            shutil.rmtree(deployment.folder, ignore_errors=True)
        for log_path in logs:
            log_path.unlink(missing_ok=True)
    return Run(round_, scenario.name, kind, expected, sum(f.size for f in sent), seconds,
               idle, sum(node_peaks), cpu, stored, not problems, problems,
               node_peaks, service_peaks, service_cpu)  # fmt: skip


def verify(nodes: list[Server], statuses: list[int], stored: int, objects: int | None,
           expected: int) -> list[str]:  # fmt: skip
    """What went wrong: a lost instance, a missing object, a crash or a traceback."""
    problems = []
    for node, status in zip(nodes, statuses):
        if status != 0 and not (node.kind == "bare" and status == -15):  # bare_scp dies of SIGTERM
            problems.append(f"{node.kind} {node.folder.name} exited with status {status}")
    if stored != expected:
        problems.append(f"stored {stored} of {expected} instances")
    if objects is not None and objects != expected:
        where = "objects in the bucket" if nodes[0].store_env else "object files on disk"
        problems.append(f"{objects} {where} for {expected} instances")
    for node in nodes:
        if node.kind == "minipacs" and "Traceback" in node.log():
            problems.append(f"Traceback in the server log of {node.folder.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ingest throughput and memory: minipacs vs Orthanc vs bare pynetdicom.")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="run only this scenario (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="runs of each scenario per server (default 2)")
    parser.add_argument("--no-orthanc", action="store_true", help="skip Orthanc")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare pynetdicom SCP")
    parser.add_argument("--keep", action="store_true", help="keep each run's data folder and logs")
    parser.add_argument("--backend", action="append", choices=list(BACKENDS),
                        help="minipacs on this index + store (repeatable; default: sqlite-fs): sqlite-fs, pg-s3 "
                             "(PostgreSQL + S3 gateway), 2nodes (two nodes on one PostgreSQL and bucket)")  # fmt: skip
    args = parser.parse_args(argv)

    if not Path(STORESCU).is_file():
        print(f"{STORESCU} not found: run tests/setup.sh (installs Debian's dcmtk)", file=sys.stderr)
        return 2
    kinds = [BACKENDS[b] for b in dict.fromkeys(args.backend or ["sqlite-fs"])]
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
                if len(run.node_peak_rss) > 1 or run.service_peak_rss:
                    print("       " + ", ".join(
                        [f"node {'ab'[i]} {peak / MiB:.0f} MB" for i, peak in enumerate(run.node_peak_rss)]
                        + [f"{name} {peak / MiB:.0f} MB, {run.service_cpu_seconds[name] * 1000 / run.instances:.1f} "
                           f"ms/instance" for name, peak in run.service_peak_rss.items()]), flush=True)  # fmt: skip
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
        "MB = 2^20 bytes; RSS = server peak resident memory (minipacs: supervisor + DICOM workers, summed as PSS; "
        "2 nodes: both summed); PG+S3 = the PostgreSQL server and the S3 gateway the nodes use",
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
        if any(k in NODES for k in kinds):
            metrics += [("backing_rss_mb", "PG+S3 peak RSS MB"), ("backing_cpu_ms", "PG+S3 CPU ms/inst")]
        for i, (metric, label) in enumerate(metrics):
            row = f"{scenario.title if i == 0 else '':<30} {label:<22}"
            medians: dict[str, float] = {}
            for kind in kinds:
                values = [getattr(r, metric) for r in runs if r.scenario == scenario.name and r.server == kind]
                if not values or (metric.startswith("backing") and kind not in NODES):
                    row += f" {'-':>17}"
                    continue
                best = max(values) if metric in ("per_s", "mb_s") else min(values)
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
