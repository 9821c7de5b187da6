"""Shared by the benchmarks: paths, ports, processes, memory, the disk probe, statistics."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"  # git-ignored
PYTHON = ROOT / ".venv" / "bin" / "python"
MiB = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_folder(name: str) -> Path:
    """A fresh folder under bench/out/runs for one benchmark invocation.

    It lives under the repository, not /tmp: /tmp is often tmpfs or another
    disk, and ingest figures only mean something on the archive's own disk.
    """
    folder = OUT / "runs" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    folder.mkdir(parents=True, exist_ok=False)
    if os.stat(folder).st_dev != os.stat(ROOT).st_dev:
        print(f"warning: {folder} is not on the repository's filesystem", flush=True)
    return folder


def describe_disk(folder: Path) -> str:
    """One line naming the filesystem `folder` is on and its free space."""
    usage = shutil.disk_usage(folder)
    device = mount = fstype = "?"
    best = ""
    for part in psutil.disk_partitions(all=True):
        if str(folder.resolve()).startswith(part.mountpoint) and len(part.mountpoint) > len(best):
            best, device, mount, fstype = part.mountpoint, part.device, part.mountpoint, part.fstype
    return (f"{folder} on {device} ({fstype}, mounted on {mount}), "
            f"{usage.free / 2**30:.0f} GiB free of {usage.total / 2**30:.0f} GiB")  # fmt: skip


def disk_probe(folder: Path, files: int = 50, size: int = 512 * 1024) -> float:
    """Write `files` files of `size` bytes, each fsynced before the next: files per second.

    The same probe every time, so runs on different days (or hours: this
    machine's fsync speed drifts) can be put side by side.
    """
    probe = folder / "disk-probe"
    probe.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(size)
    os.sync()
    started = time.perf_counter()
    for i in range(files):
        fd = os.open(probe / f"{i}.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - started
    shutil.rmtree(probe)
    return files / elapsed


class RssMonitor:
    """Samples a server's resident memory every `interval` seconds in a thread.

    One process: ``peak`` is the larger of the sampled RSS maximum and the
    kernel's high-water mark (VmHWM), which also catches spikes between
    samples. Several processes (minipacs and its DICOM workers): the sum of
    their RSS is sampled (reading PSS takes a walk of /proc/PID/smaps, which
    costs enough CPU to slow the server it measures), and at the end the
    pages they share are subtracted once: peak = max(sum of RSS) - (sum of
    RSS - sum of PSS) measured after the run.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.sampled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        tree = process_tree(self.pid)
        if len(tree) > 1:
            self.shared = max(0, _sum_rss(tree) - rss(self.pid))

    shared = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sampled = max(self.sampled, _sum_rss(process_tree(self.pid)))
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        if len(process_tree(self.pid)) > 1:
            return self.sampled - self.shared
        return max(self.sampled, vm_hwm(self.pid))


def _sum_rss(tree: list[psutil.Process]) -> int:
    total = 0
    for process in tree:
        try:
            total += int(process.memory_info().rss)
        except psutil.Error:
            pass
    return total


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process, from /proc (0 if unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[psutil.Process]:
    """A server process and its worker processes (minipacs serves DICOM from several)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def rss(pid: int) -> int:
    """Resident memory of a server and its workers.

    One process: its RSS. Several: the sum of their PSS (proportional set
    size), which counts the shared libraries and pages they share once
    instead of once per process.
    """
    tree = process_tree(pid)
    total = 0
    for process in tree:
        try:
            if len(tree) == 1:
                total += int(process.memory_info().rss)
            else:
                total += int(process.memory_full_info().pss)
        except psutil.Error:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a server and its workers have used so far."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += float(times.user + times.system)
    return total


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), nearest-rank, of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(runs: int, call: Any) -> tuple[float, float, Any]:
    """Median and p95 milliseconds of `runs` calls after one warm-up call, and the last result."""
    call()  # warm the caches
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], result


def run_clients(run: Callable[[list[str], list[str]], None], timed: list[str], warm: list[str], clients: int,
                barrier: threading.Barrier) -> float:  # fmt: skip
    """`clients` threads, each `run(its share of timed, its share of warm)`; `run` waits on `barrier`
    (of clients + 1 parties) after its warm-up. The seconds from all warm to the last one done."""
    threads = [threading.Thread(target=run, args=(timed[k::clients], warm[k::clients] or warm[:1]))
               for k in range(clients)]  # fmt: skip
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def finish(started: float, failed: Sequence[str], runs: Path) -> int:
    """The end of a benchmark: total time, what failed (its run folder kept to look at), the exit status."""
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    for failure in failed[:20]:
        print(f"FAILED: {failure}")
    if not failed:
        shutil.rmtree(runs, ignore_errors=True)
    return 1 if failed else 0


def bench_index(name: str, description: str, prepare: Any, tables: Sequence[Any]) -> tuple[argparse.Namespace, Any]:
    """The options of an index benchmark (--instances, --runs, --reuse) and its archive, filled by
    `prepare(folder, instances)` unless --reuse finds one; prints the disk and the rows of `tables`."""
    from sqlalchemy import func, select

    from archive import Archive

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep the index of an earlier run")
    args = parser.parse_args()
    folder = OUT / name
    OUT.mkdir(parents=True, exist_ok=True)
    print(describe_disk(OUT))
    if not (args.reuse and (folder / "index.sqlite").exists()):
        if folder.exists():
            shutil.rmtree(folder)
        prepare(folder, args.instances)
    archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
    with archive.db.read() as conn:
        counts = {t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables}
    print("index: " + ", ".join(f"{n:,} {t}" for t, n in counts.items()))
    return args, archive
