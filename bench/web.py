"""DICOMweb latency and throughput: minipacs vs Debian's Orthanc 1.10 with its DICOMweb plugin.

Three archives, each served alone while it is measured:

- A, minipacs only: an index of 100,000 instances filled by bench/populate.py
  (rows only, no objects), plus real objects C-STOREd into it;
- B, minipacs and Orthanc: the same files C-STOREd into both, a few thousand
  studies of tiny (8x8) images with realistic headers (bench/populate.py's
  patients, names, dates and study mix) and the same real objects.

The real objects: a CT series (512x512, 16-bit), DX of 2500x2000 (16-bit)
and one uncompressed XA cine of about 1 GB. What is measured, on each:
QIDO-RS study searches (one client, then 8 at once), /rendered and
/thumbnail of CT and DX (cold: an instance never rendered before; cached:
the same URL again), WADO-RS retrieval of the CT series, and the server's
memory while it streams the 1 GB object.

    bench/web [--quick] [--reuse] [--no-orthanc] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import psutil
import requests
from pydicom import dcmread

import data
import find
import populate
from common import (MiB, OUT, PYTHON, ROOT, RssMonitor, describe_disk, median, percentile, process_tree, rss,
                    run_clients, run_folder, vm_hwm)
from ingest import STORESCU, storescu_argv
from servers import Server, orthanc_available, orthanc_dicomweb_plugin, start_minipacs, start_orthanc

WEB_DATA = OUT / "web-data"
#: Bump when the generated files change, so old caches are rebuilt.
VERSION = "1"
CT_SLICES = 150
DX_IMAGES = 16
DX_ROWS, DX_COLUMNS = 2500, 2000
TINY = 8  # rows and columns of archive B's small images
TINY_PER_SERIES = 3  # at most this many images per series in archive B
SENDERS = 4  # storescu processes at once while loading
CONCURRENT = 8
#: WADO-RS: every object as stored.
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CHUNK = 1 << 20
#: The QIDO query types of bench/find that the issue asks for over HTTP.
QUERY_TYPES = ("PatientName FAMILY*", "PatientName NAME^G*", "StudyDate 1-week range")
REFERENCE = ("the issue's reference for Orthanc 1.10 + DICOMweb on a 3-study archive: "
             "QIDO /studies?PatientName=Ngu* p50 8.8 ms / p95 14 ms, rendered CT 512x512 JPEG p50 17 ms")  # fmt: skip

QUICK = {"instances": 5_000, "studies": 200, "big_mb": 64, "queries": 30, "warmup": 3, "cold": 8,
         "renders": 30, "wado_repeat": 3}  # fmt: skip
FULL = {"instances": 100_000, "studies": 2_000, "big_mb": 1024, "queries": 200, "warmup": 10, "cold": 30,
        "renders": 100, "wado_repeat": 5}  # fmt: skip


# --- test data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str

    @property
    def path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    @property
    def series_path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}"


@dataclass
class Objects:
    """The real objects every server gets: folders to send, and their UIDs."""

    ct: data.Folder
    dx: data.Folder
    big: data.Folder
    ct_instances: list[Instance]
    dx_instances: list[Instance]
    big_instance: Instance

    @property
    def folders(self) -> list[data.Folder]:
        return [self.ct, self.dx, self.big]


def real_objects(big_mb: int) -> Objects:
    """The CT series, the DX study and the XA cine of `big_mb` MiB, made once into bench/out/web-data."""
    rng = np.random.default_rng(20231124)
    images = WEB_DATA / "images"
    if not _complete(images):
        print(f"generating {CT_SLICES} CT and {DX_IMAGES} DX {DX_ROWS}x{DX_COLUMNS} in {images} (once) ...", flush=True)
        shutil.rmtree(images, ignore_errors=True)
        ct_study = data.new_study("web-ct", data.PATIENTS[1], "CT sọ não không tiêm thuốc")
        data.ct_series(images / "ct", ct_study, CT_SLICES, rng)
        dx_study = data.new_study("web-dx", data.PATIENTS[2], "X-quang ngực thẳng")
        data.dx_study(images / "dx", dx_study, DX_IMAGES, rng, rows=DX_ROWS, columns=DX_COLUMNS)
        _mark(images)
    big = WEB_DATA / f"xa-{big_mb}mb"
    if not _complete(big):
        print(f"generating an XA cine of {big_mb} frames of 1024x1024 ({big_mb} MiB) in {big} (once) ...", flush=True)
        shutil.rmtree(big, ignore_errors=True)
        xa = data.new_study("web-xa", data.PATIENTS[3], "Chụp động mạch vành")
        data.xa_cine(big / "XA.dcm", xa, big_mb, rng)
        _mark(big)
    ct, dx = _describe(images / "ct"), _describe(images / "dx")
    return Objects(ct, dx, _describe(big), _instances(ct.path), _instances(dx.path), _instances(big)[0])


def _complete(folder: Path) -> bool:
    marker = _marker(folder)
    return marker.is_file() and marker.read_text().strip() == VERSION


def _mark(folder: Path) -> None:
    _marker(folder).write_text(VERSION + "\n")


def _marker(folder: Path) -> Path:
    """Next to the folder, not in it: storescu +sd would try to send it."""
    return folder.parent / f"{folder.name}.complete"


def _describe(folder: Path) -> data.Folder:
    files = sorted(folder.rglob("*.dcm"))
    return data.Folder(folder, len(files), sum(f.stat().st_size for f in files))


def _instances(folder: Path) -> list[Instance]:
    """The UIDs of the files in `folder`, in series and instance number order."""
    found = []
    for path in folder.glob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        key = (int(ds.SeriesNumber), int(ds.InstanceNumber))
        found.append((key, Instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)))
    return [instance for _, instance in sorted(found, key=lambda f: f[0])]


def tiny_archive(studies: int, seed: int) -> list[data.Folder]:
    """Archive B's small images: `studies` studies of bench/populate.py's mix, made once.

    Headers are populate's (patients with Vietnamese names, dates over three
    years, CR/DX/US/CT with their share of studies), at most TINY_PER_SERIES
    images per series, each TINY x TINY pixels. Studies are dealt to SENDERS
    folders, one storescu each.
    """
    folder = WEB_DATA / f"tiny-{studies}-seed{seed}"
    senders = [folder / f"sender{n}" for n in range(1, SENDERS + 1)]
    if not _complete(folder):
        print(f"generating {studies:,} studies of {TINY}x{TINY} images in {folder} (once) ...", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        gen = populate.Generator(seed)
        made = 0
        for _, kind, study in gen.visits():
            if made == studies:
                break
            target = senders[made % SENDERS]
            made += 1
            for number, count in enumerate(gen.images_of(kind), start=1):
                ds = gen.series(study, kind, number, count)
                color = kind.modality == "US"
                ds.Rows = ds.Columns = TINY
                ds.HighBit = ds.BitsStored - 1
                ds.PixelRepresentation = 0
                if color:
                    ds.PlanarConfiguration = 0
                    pixels = (np.arange(TINY * TINY * 3) * 7 % 256).astype(np.uint8)
                else:
                    pixels = (np.arange(TINY * TINY) * 61 % 4096).astype(np.uint16)
                ds.PixelData = pixels.tobytes()
                for i in range(min(count, TINY_PER_SERIES)):
                    if i:
                        ds.SOPInstanceUID = gen.uid()
                        ds.InstanceNumber = i + 1
                    data.write(ds, target / f"{ds.SOPInstanceUID}.dcm")
        _mark(folder)
    return [_describe(sender) for sender in senders]


# --- archives ----------------------------------------------------------------------------


@dataclass
class Archive:
    """One server's data folder, what went into it, and how to start and reach it."""

    column: str  # "minipacs A", "minipacs B", "Orthanc B"
    kind: str  # "minipacs" or "orthanc"
    folder: Path
    populated: int  # instances made by bench/populate.py (rows only)
    sent: list[data.Folder]  # folders C-STOREd into it
    reused: bool = False
    description: str = ""

    @property
    def expected(self) -> int:
        return self.populated + sum(f.files for f in self.sent)


def archive_folder(name: str, reuse: bool, runs: Path) -> tuple[Path, bool]:
    """The data folder of an archive and whether it still has to be filled."""
    if reuse:
        folder = OUT / f"web-{name}"
        if (folder / ".complete").is_file():
            return folder, False
        shutil.rmtree(folder, ignore_errors=True)
        return folder, True
    return runs / name, True


def start(archive: Archive, log_dir: Path) -> Server:
    if archive.kind == "orthanc":
        return start_orthanc(archive.folder, dicomweb=True, log_dir=log_dir)
    return start_minipacs(archive.folder, log_dir=log_dir)


def fill(archive: Archive, seed: int, log_dir: Path) -> None:
    """Populate (archive A), C-STORE the folders, check every instance arrived."""
    started = time.monotonic()
    if archive.populated:
        s = populate.populate(archive.folder, archive.populated, seed, progress=sys.stderr.isatty())
        archive.populated = s.instances
        print(f"  {archive.column}: populated {s.instances:,} instances, {s.studies:,} studies, "
              f"{s.patients:,} patients in {s.seconds:.0f} s", flush=True)  # fmt: skip
    server = start(archive, log_dir)
    problems = []
    try:
        tiny = [f for f in archive.sent if f.path.name.startswith("sender")]
        for batch in (tiny, [f for f in archive.sent if f not in tiny]):
            for folder, code, output in _storescu(server, batch, log_dir):
                if code != 0 or "E:" in output:
                    problems.append(f"storescu {folder.path} exit {code}: {output[-500:]}")
        stored = server.stored() if archive.kind == "orthanc" else None
    finally:
        status = server.stop()
    if stored is None:
        stored = server.stored()
    if stored != archive.expected:
        problems.append(f"stored {stored:,} of {archive.expected:,} instances")
    if status != 0:
        problems.append(f"{archive.kind} exited with status {status}")
    if problems:
        raise RuntimeError(f"loading {archive.column} failed (log: {server.log_path}):\n" + "\n".join(problems))
    sent = sum(f.files for f in archive.sent)
    print(f"  {archive.column}: C-STOREd {sent:,} files ({sum(f.size for f in archive.sent) / MiB:,.0f} MB) "
          f"in {time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
    (archive.folder / ".complete").write_text(f"{archive.expected}\n")


def _storescu(server: Server, folders: list[data.Folder], log_dir: Path) -> list[tuple[data.Folder, int, str]]:
    """Send every folder at once, one storescu each (bench/ingest's command line)."""
    running = []
    for n, folder in enumerate(folders):
        log_path = log_dir / f"{server.folder.name}-storescu{n}.log"
        with open(log_path, "wb") as log:
            running.append((folder, log_path, subprocess.Popen(storescu_argv(server, folder.path), stdout=log,
                                                                stderr=subprocess.STDOUT)))  # fmt: skip
    results = []
    for folder, log_path, process in running:
        code = process.wait()
        results.append((folder, code, log_path.read_text(errors="replace").strip()))
        log_path.unlink()
    return results


def minipacs_token(folder: Path) -> str:
    """A new Bearer token (radiologist) made with `minipacs token create`: the cheapest credential."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPACS_")}
    env["PYTHONPATH"] = str(ROOT)
    name = f"bench-web-{datetime.now():%Y%m%d-%H%M%S-%f}"
    run = subprocess.run([str(PYTHON), "-m", "appliance.cli", "token", "create", name, "--role", "radiologist",
                          "--data", str(folder)], env=env, cwd=folder.parent, capture_output=True, text=True,
                         check=False)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"minipacs token create failed: {run.stderr or run.stdout}")
    return run.stdout.strip().splitlines()[-1]


def describe(archive: Archive, server: Server) -> str:
    if archive.kind == "orthanc":
        stats = requests.get(f"http://127.0.0.1:{server.http_port}/statistics", timeout=30).json()
        return f"{stats['CountInstances']:,} instances, {stats['CountStudies']:,} studies"
    return find.server_statistics(server)


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Figure:
    """One metric on one server: samples (ms per request, MB/s per run or MB), or why there are none."""

    samples: list[float] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the timed requests (8 clients: all of them)
    bytes: int = 0  # body bytes of the last response
    unavailable: str = ""


@dataclass
class Client:
    """How to reach one server's DICOMweb root."""

    root: str
    headers: dict[str, str]
    failures: list[str]

    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self.headers)
        # Both servers send the body as is: Orthanc would gzip JSON for a client
        # that accepts it (requests does by default), minipacs does not.
        session.headers["Accept-Encoding"] = "identity"
        return session

    def get(self, session: requests.Session, path: str, accept: str,
            keep: bool = False) -> tuple[float, int, bytes, int]:  # fmt: skip
        """(seconds to the last body byte, status, body if `keep`, body size)."""
        started = time.perf_counter()
        with session.get(self.root + path, headers={"Accept": accept}, stream=True, timeout=900) as response:
            chunks, size = [], 0
            for chunk in response.iter_content(CHUNK):
                size += len(chunk)
                if keep or response.status_code >= 400:
                    chunks.append(chunk)
        seconds = time.perf_counter() - started
        body = b"".join(chunks)
        if response.status_code != 200 and response.status_code != 404:
            self.failures.append(f"GET {path[:120]}: {response.status_code} {body[:300]!r}")
        return seconds, response.status_code, body, size


def wait_http(client: Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with client.session() as session:
                _, status, body, _ = client.get(session, "/studies?limit=1", "application/dicom+json", keep=True)
            if status == 200:
                return
        except requests.ConnectionError:
            status, body = 0, b""
        if time.monotonic() > deadline:
            raise RuntimeError(f"{client.root} did not answer QIDO within {timeout} s: {status} {body[:300]!r}")
        time.sleep(0.2)


def qido(client: Client, query: find.QueryType, values: find.Values, clients: int, count: int, warmup: int,
         seed: int, limit: int) -> Figure:  # fmt: skip
    """`count` study searches, each with another value from the index, from `clients` threads
    with a keep-alive session each; every thread first sends untimed warm-up searches."""
    rng = random.Random(f"{seed}/{query.name}/{clients}")  # the same values on every server
    paths = []
    for _ in range(warmup + count):
        params = f"{query.key}={quote(query.values(values, rng), safe='*^-')}&fuzzymatching=true"
        paths.append(f"/studies?{params}" + (f"&limit={limit}" if limit else ""))
    figure = Figure()
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def run(mine: list[str], warm: list[str]) -> None:
        with client.session() as session:
            for path in warm:
                client.get(session, path, "application/dicom+json")
            barrier.wait()
            for path in mine:
                seconds, status, body, _ = client.get(session, path, "application/dicom+json", keep=True)
                with lock:
                    if status == 200:
                        figure.samples.append(seconds * 1000)
                        figure.matches.append(body.count(b'"0020000D"'))

    figure.seconds = run_clients(run, paths[warmup:], paths[:warmup], clients, barrier)
    return figure


@dataclass(frozen=True)
class Pools:
    """Which instances each rendered section may use: warm ones (primed, then asked again
    for the cached figures) and, per endpoint, its own instances never rendered before."""

    warm: list[Instance]
    cold: dict[str, list[Instance]]


def pools(instances: list[Instance], warm: int, cold: int) -> Pools:
    cold = min(cold, (len(instances) - warm) // 2)
    first, second = warm, warm + cold
    return Pools(instances[:warm], {"rendered": instances[first:second], "thumbnail": instances[second:second + cold]})


def rendered(client: Client, suffix: str, pool: Pools, renders: int) -> tuple[Figure, Figure]:
    """(cold, cached) latencies of /rendered or /thumbnail as image/jpeg.

    Untimed first: each warm instance twice over four connections (both
    gunicorn workers of minipacs get some), which also renders and caches
    them. Cold: each of the section's own instances once. Cached: `renders`
    requests going round the warm instances.
    """
    cold, cached = Figure(), Figure()
    with client.session() as session:
        _, status, _, _ = client.get(session, f"{pool.warm[0].path}/{suffix}", "image/jpeg")
        if status != 200:
            cold.unavailable = cached.unavailable = f"not available ({status})"
            return cold, cached
        for _ in range(4):
            with client.session() as other:
                for instance in pool.warm:
                    client.get(other, f"{instance.path}/{suffix}", "image/jpeg")
        for instance in pool.warm:
            client.get(session, f"{instance.path}/{suffix}", "image/jpeg")
        for figure, instances in ((cold, pool.cold[suffix]), (cached, [pool.warm[i % len(pool.warm)]
                                                                        for i in range(renders)])):  # fmt: skip
            started = time.perf_counter()
            for instance in instances:
                seconds, status, _, size = client.get(session, f"{instance.path}/{suffix}", "image/jpeg")
                if status == 404:
                    client.failures.append(f"GET {instance.path}/{suffix}: 404 after the first one answered")
                elif status == 200:
                    figure.samples.append(seconds * 1000)
                    figure.bytes = size
            figure.seconds = time.perf_counter() - started
    return cold, cached


def wado_series(client: Client, instance: Instance, expected: int, repeat: int) -> Figure:
    """MB/s of retrieving a whole series as stored, after one untimed retrieval."""
    figure = Figure()
    with client.session() as session:
        for n in range(repeat + 1):
            seconds, status, _, size = client.get(session, instance.series_path, ACCEPT_DICOM)
            if status != 200 or size < expected:
                client.failures.append(f"WADO-RS series: status {status}, {size:,} of >= {expected:,} bytes")
                break
            if n:
                figure.samples.append(size / MiB / seconds)
                figure.seconds += seconds
            figure.bytes = size
    return figure


def stream(client: Client, server: Server, instance: Instance, expected: int) -> tuple[Figure, Figure, int]:
    """(MB/s, MB of memory added, PSS before) for one WADO-RS retrieval of the big object.

    Memory added: for each of the server's processes, its peak resident set
    during the retrieval (VmHWM, reset just before through
    /proc/PID/clear_refs, so spikes between samples count too) minus its RSS
    just before, summed. Where the reset is refused, the sum of the RSS
    sampled every 50 ms stands in for it. The client reads the answer a
    megabyte at a time.
    """
    rate, added = Figure(), Figure()
    time.sleep(1)  # let the earlier requests' memory settle
    before_pss = rss(server.pid)
    before = {}
    for process in process_tree(server.pid):
        with suppress(psutil.Error):
            before[process.pid] = int(process.memory_info().rss)
    reset = all(_reset_peak(pid) for pid in before)
    with client.session() as session, RssMonitor(server.pid) as monitor:
        seconds, status, _, size = client.get(session, instance.path, ACCEPT_DICOM)
    if status != 200 or size < expected:
        client.failures.append(f"WADO-RS of the big object: status {status}, {size:,} of >= {expected:,} bytes")
        rate.unavailable = added.unavailable = f"failed ({status})"
        return rate, added, before_pss
    rate.samples.append(size / MiB / seconds)
    rate.seconds, rate.bytes = seconds, size
    growth = monitor.sampled - sum(before.values())
    if reset:
        growth = max(growth, sum(max(0, vm_hwm(pid) - rss_before) for pid, rss_before in before.items()))
    added.samples.append(max(0, growth) / MiB)
    return rate, added, before_pss


def _reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux: 5 > /proc/PID/clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure(archive: Archive, objects: Objects, values: find.Values, args: argparse.Namespace,
            log_dir: Path) -> tuple[dict[str, Figure], list[str]]:  # fmt: skip
    """Start the archive's server fresh and take every figure from it."""
    if archive.kind == "minipacs":
        # Rendered images cached by an earlier run would not be cold.
        shutil.rmtree(archive.folder / "cache", ignore_errors=True)
        client = Client("", {"Authorization": f"Bearer {minipacs_token(archive.folder)}"}, [])
    else:
        client = Client("", {}, [])
    server = start(archive, log_dir)
    client.root = (f"http://127.0.0.1:{server.http_port}/dicomweb" if archive.kind == "minipacs"
                   else f"http://127.0.0.1:{server.http_port}/dicom-web")  # fmt: skip
    figures: dict[str, Figure] = {}
    try:
        wait_http(client)
        archive.description = describe(archive, server)
        print(f"{archive.column}: {archive.description}, {server.kind} pid {server.pid}", flush=True)
        queries = [q for q in find.query_types(values) if q.name in QUERY_TYPES]
        for query in queries:
            for clients in (1, CONCURRENT):
                figure = qido(client, query, values, clients, args.queries, args.warmup, args.seed, args.limit)
                figures[f"qido/{query.name}/{clients}"] = figure
                print(f"  QIDO {query.name:<24} {clients} client(s): {_cell(figure, 'latency'):>15} ms, "
                      f"{sum(figure.matches) / max(1, len(figure.matches)):6.1f} matches, "
                      f"{len(figure.samples) / figure.seconds:5.0f} queries/s", flush=True)  # fmt: skip
        for suffix in ("rendered", "thumbnail"):
            for modality, instances in (("CT", objects.ct_instances), ("DX", objects.dx_instances)):
                pool = pools(instances, 2, args.cold)
                cold, cached = rendered(client, suffix, pool, args.renders)
                figures[f"{suffix}/{modality}/cold"], figures[f"{suffix}/{modality}/cached"] = cold, cached
                print(f"  {suffix} {modality}: cold {_cell(cold, 'latency')}, cached {_cell(cached, 'latency')} ms"
                      f"{f' ({cached.bytes:,} bytes)' if cached.bytes else ''}", flush=True)  # fmt: skip
        figures["wado/CT"] = wado_series(client, objects.ct_instances[0], objects.ct.size, args.wado_repeat)
        print(f"  WADO-RS CT series: {_cell(figures['wado/CT'], 'rate')} MB/s", flush=True)
        rate, added, before = stream(client, server, objects.big_instance, objects.big.size)
        figures["stream/rate"], figures["stream/rss"] = rate, added
        print(f"  big object: {_cell(rate, 'rate')} MB/s, server memory {before / MiB:.0f} MB (PSS) before, "
              f"+{_cell(added, 'mb')} MB at the peak", flush=True)  # fmt: skip
    finally:
        status = server.stop()
    failures = [f"{archive.column}: {f}" for f in client.failures]
    if status not in (0, -15):
        failures.append(f"{archive.column}: {server.kind} exited with status {status}; log {server.log_path}")
    if archive.kind == "minipacs" and "Traceback" in server.log():
        failures.append(f"{archive.column}: Traceback in the server log {server.log_path}")
    return figures, failures


# --- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    key: str
    kind: str  # "latency" (p50 / p95 ms), "matches", "rate" (MB/s), "mb"
    target: tuple[str, str, float] | None = None  # (statistic, "<=" or ">=", value), judged on minipacs A


def rows() -> list[Row]:
    table = []
    for name in QUERY_TYPES:
        table += [Row(f"QIDO {name}, 1 client", f"qido/{name}/1", "latency", ("p95", "<=", 30)),
                  Row(f"  {CONCURRENT} clients at once", f"qido/{name}/{CONCURRENT}", "latency", ("p95", "<=", 100)),
                  Row("  matches per query (mean)", f"qido/{name}/1", "matches")]  # fmt: skip
    targets = {("rendered", "CT", "cold"): 40, ("rendered", "CT", "cached"): 15, ("rendered", "DX", "cold"): 250,
               ("rendered", "DX", "cached"): 20, ("thumbnail", "CT", "cached"): 10,
               ("thumbnail", "DX", "cached"): 10}  # fmt: skip
    for suffix in ("rendered", "thumbnail"):
        for modality, size in (("CT", "512x512"), ("DX", f"{DX_ROWS}x{DX_COLUMNS}")):
            for state in ("cold", "cached"):
                target = targets.get((suffix, modality, state))
                table.append(Row(f"/{suffix} {modality} {size} JPEG, {state}", f"{suffix}/{modality}/{state}",
                                 "latency", ("p50", "<=", target) if target else None))  # fmt: skip
    table += [Row(f"WADO-RS CT series ({CT_SLICES} x 0.5 MB), MB/s", "wado/CT", "rate"),
              Row("WADO-RS big object, MB/s", "stream/rate", "rate"),
              Row("  memory added while streaming it, MB", "stream/rss", "mb", ("value", "<=", 100))]  # fmt: skip
    return table


def _same_matches(a: Figure, b: Figure) -> bool:
    """Whether two servers found about as many matches (within 5 %) for the same queries."""
    mean_a, mean_b = sum(a.matches) / len(a.matches), sum(b.matches) / len(b.matches)
    return abs(mean_a - mean_b) <= 0.05 * max(mean_a, mean_b)


def _stat(figure: Figure, kind: str, statistic: str = "") -> float:
    if kind == "matches":
        return sum(figure.matches) / len(figure.matches)
    if kind == "latency":
        return percentile(figure.samples, 95) if statistic == "p95" else median(figure.samples)
    return median(figure.samples)


def _cell(figure: Figure | None, kind: str) -> str:
    if figure is None:
        return "-"
    if figure.unavailable:
        return figure.unavailable
    if not figure.samples:
        return "no answers"
    if kind == "latency":
        return f"{_num(median(figure.samples))} / {_num(percentile(figure.samples, 95))}"
    return _num(_stat(figure, kind))


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def report(archives: list[Archive], objects: Objects, results: dict[str, dict[str, Figure]],
           args: argparse.Namespace) -> str:  # fmt: skip
    columns = [a.column for a in archives]
    lines = [
        f"DICOMweb on 127.0.0.1, Python requests client (keep-alive session per client, Accept-Encoding: identity); "
        f"time = request sent to last body byte read.",
        f"QIDO: /studies?<key>=<value>&fuzzymatching=true{f'&limit={args.limit}' if args.limit else ''}, "
        f"{args.warmup} warm-up then {args.queries} timed queries per row, values drawn from the index per patient.",
        f"cold = an instance never rendered before ({args.cold} of them for CT, fewer for DX); "
        f"cached = the same URL again ({args.renders} requests); server restarted before each column.",
    ]
    for a in archives:
        lines.append(f"  {a.column}: {a.description}" + (
            f" ({a.populated:,} index rows from bench/populate.py, no objects, + the real objects)" if a.populated
            else f" (the same files C-STOREd into both: {sum(f.files for f in a.sent[:SENDERS]):,} "
                 f"{TINY}x{TINY} images + the real objects)"))  # fmt: skip
    lines.append(f"  real objects: {objects.ct.files} CT 512x512 16-bit ({objects.ct.size / MiB:.0f} MB), "
                 f"{objects.dx.files} DX {DX_ROWS}x{DX_COLUMNS} 16-bit ({objects.dx.size / MiB:.0f} MB), "
                 f"1 XA cine 1024x1024 8-bit uncompressed ({objects.big.size / MiB:,.0f} MB)")  # fmt: skip
    lines.append("")
    width = 42
    header = f"{'metric (latency: p50 / p95 ms)':<{width}}" + "".join(f" {c:>17}" for c in columns)
    has_ratio = "Orthanc B" in columns and "minipacs B" in columns
    if has_ratio:
        header += f" {'ratio B':>8}"
    header += "  target (minipacs A)"
    lines += [header, "-" * len(header)]
    for row in rows():
        line = f"{row.label:<{width}}" + "".join(f" {_cell(results[c].get(row.key), row.kind):>17}" for c in columns)
        if has_ratio:
            mine, theirs = results["minipacs B"].get(row.key), results["Orthanc B"].get(row.key)
            usable = all(f is not None and f.samples and not f.unavailable for f in (mine, theirs))
            if usable and row.kind != "matches":
                assert mine is not None and theirs is not None
                ratio = _stat(mine, row.kind) / _stat(theirs, row.kind) if _stat(theirs, row.kind) else 0
                unequal = row.key.startswith("qido/") and not _same_matches(mine, theirs)
                line += f" {ratio:7.2f}{'*' if unequal else 'x'}"
            else:
                line += f" {'':>8}"
        figure = results.get("minipacs A", {}).get(row.key)
        if row.target:
            statistic, op, value = row.target
            line += f"  {statistic} {op} {value:g}"
            if figure is not None and figure.samples and not figure.unavailable:
                got = _stat(figure, row.kind, statistic)
                met = got <= value if op == "<=" else got >= value
                line += " met" if met else " MISSED"
            else:
                line += " not measured"
        lines.append(line.rstrip())
    lines += ["", "ratio B = minipacs B / Orthanc B on the same files (latency: of the p50; lower is better "
              "for latency and memory, higher for MB/s).",
              "* the two found different numbers of matches for the same queries, so the ratio compares unequal "
              "work: Orthanc matches names as stored, case aside (NGUYEN* misses Nguyễn^Văn An, NGUYEN^VAN^A* "
              "misses NGUYEN^VAN AN); minipacs folds diacritics and name layouts.", REFERENCE]  # fmt: skip
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DICOMweb latency and throughput: minipacs vs Orthanc + DICOMweb.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke test (under about 2 minutes): "
                        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))  # fmt: skip
    parser.add_argument("--reuse", action="store_true",
                        help="keep the filled data folders in bench/out/web-* and reuse them next time")  # fmt: skip
    parser.add_argument("--no-orthanc", action="store_true", help="minipacs A only (no archive B)")
    parser.add_argument("--instances", type=int, help=f"archive A's populated index rows (default {FULL['instances']})")
    parser.add_argument("--studies", type=int, help=f"archive B's small studies (default {FULL['studies']})")
    parser.add_argument("--big-mb", type=int, help=f"size of the big object in MiB (default {FULL['big_mb']})")
    parser.add_argument("--queries", type=int, help=f"timed QIDO queries per row (default {FULL['queries']})")
    parser.add_argument("--warmup", type=int, help=f"untimed QIDO queries first (default {FULL['warmup']})")
    parser.add_argument("--cold", type=int,
                        help=f"cold CT renders per endpoint (default {FULL['cold']}; DX: at most 7)")
    parser.add_argument("--renders", type=int, help=f"cached renders per row (default {FULL['renders']})")
    parser.add_argument("--wado-repeat", type=int,
                        help=f"timed WADO-RS series retrievals (default {FULL['wado_repeat']})")
    parser.add_argument("--limit", type=int, default=100,
                        help="QIDO limit parameter (default 100, a study list's page; 0: none, each server's default)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    if not Path(STORESCU).is_file():
        print(f"{STORESCU} not found: run tests/setup.sh (installs Debian's dcmtk)", file=sys.stderr)
        return 2
    orthanc = not args.no_orthanc
    if orthanc and not (orthanc_available() and orthanc_dicomweb_plugin()):
        print("Orthanc or its DICOMweb plugin is not installed (tests/setup.sh orthanc orthanc-dicomweb): "
              "minipacs A only", flush=True)  # fmt: skip
        orthanc = False

    started = time.monotonic()
    runs = run_folder("web")
    print(f"disk: {describe_disk(runs)}", flush=True)
    objects = real_objects(args.big_mb)
    tag = f"seed{args.seed}-xa{args.big_mb}"
    archives = [Archive("minipacs A", "minipacs", Path(), args.instances, objects.folders)]
    if orthanc:
        tiny = tiny_archive(args.studies, args.seed)
        archives += [Archive("minipacs B", "minipacs", Path(), 0, tiny + objects.folders),
                     Archive("Orthanc B", "orthanc", Path(), 0, tiny + objects.folders)]  # fmt: skip
    names = {"minipacs A": f"minipacs-{args.instances}-{tag}", "minipacs B": f"minipacs-{args.studies}studies-{tag}",
             "Orthanc B": f"orthanc-{args.studies}studies-{tag}"}  # fmt: skip
    for archive in archives:
        archive.folder, empty = archive_folder(names[archive.column], args.reuse, runs)
        archive.reused = not empty
        if empty:
            print(f"filling {archive.column} in {archive.folder} ...", flush=True)
            fill(archive, args.seed, runs)
        else:
            print(f"reusing {archive.column} in {archive.folder}", flush=True)
            archive.populated = int((archive.folder / ".complete").read_text()) - sum(f.files for f in archive.sent)

    results: dict[str, dict[str, Figure]] = {}
    failures: list[str] = []
    shared_values = find.Values(archives[1].folder / "index.sqlite") if orthanc else None
    for archive in archives:
        values = shared_values if archive.column.endswith("B") else find.Values(archive.folder / "index.sqlite")
        assert values is not None
        results[archive.column], failed = measure(archive, objects, values, args, runs)
        failures += failed

    print()
    print(report(archives, objects, results, args))
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    out = OUT / f"web-{runs.name.removeprefix('web-')}.json"
    out.write_text(json.dumps({"args": vars(args),
                               "archives": {a.column: {"folder": str(a.folder), "description": a.description,
                                                       "populated": a.populated, "reused": a.reused}
                                            for a in archives},
                               "results": {c: {k: asdict(f) for k, f in figures.items()}
                                           for c, figures in results.items()}}, indent=1))  # fmt: skip
    print(f"raw results: {out}")
    for failure in failures[:20]:
        print(f"FAILED: {failure}")
    if not failures:
        shutil.rmtree(runs, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
