"""QIDO-RS study search latency over bench/find's populated index, on SQLite or PostgreSQL.

The same index, values and query types as bench/find (C-FIND), asked over
HTTP as a web viewer or the EMR would: ``GET /dicomweb/studies?...`` with a
Bearer token, from 1 and from 4 client threads (a keep-alive session each),
plus the study list of the index's last day ("today") with ``limit=100``.
Latency is from sending the request to the last byte of the answer. QIDO
answers at most 1,000 matches without a limit (viewer/qido.py MAX_LIMIT), so
``FAMILY*`` is capped there.

    bench/qido [--reuse] [--database sqlite|postgresql] [--queries 100] [--clients 1,4]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

import find
from common import PYTHON, ROOT, finish, median, percentile, run_clients, run_folder

#: The study list of one day, as the viewer's first screen asks it.
TODAY_LIST = find.QueryType("today's list, limit=100", "StudyDate", 100, find.Values.today, {"limit": "100"})


@dataclass
class Figure:
    latencies: list[float] = field(default_factory=list)  # ms
    matches: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the timed requests, all threads


def token(folder: str, database_url: str) -> str:
    """A new Bearer token (radiologist) made with `minipacs token create` in the served index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPACS_")}
    env.update(PYTHONPATH=str(ROOT), MINIPACS_DATABASE_URL=database_url)
    name = f"bench-qido-{time.time_ns()}"
    run = subprocess.run([str(PYTHON), "-m", "appliance.cli", "token", "create", name, "--role", "radiologist",
                          "--data", folder], env=env, capture_output=True, text=True, check=False)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"minipacs token create failed: {run.stderr or run.stdout}")
    return run.stdout.strip().splitlines()[-1]


def paths(query: find.QueryType, values: find.Values, count: int, seed: int) -> list[str]:
    rng = random.Random(f"{seed}/{query.name}")
    out = []
    for _ in range(count):
        params = {**{k: v for k, v in query.also.items()}, query.key: query.values(values, rng)}
        out.append("/studies?" + "&".join(f"{k}={quote(v, safe='*^-')}" for k, v in params.items()))
    return out


def measure(root: str, bearer: str, query: find.QueryType, values: find.Values, clients: int, count: int,
            warmup: int, seed: int) -> Figure:  # fmt: skip
    """`count` searches, each with another value, spread over `clients` threads; each thread
    sends its share of `warmup` untimed searches first."""
    every = paths(query, values, warmup + count, seed)
    warm, timed = every[:warmup], every[warmup:]
    figure = Figure()
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def run(mine: list[str], first: list[str]) -> None:
        with requests.Session() as session:
            session.headers.update({"Authorization": f"Bearer {bearer}", "Accept": "application/dicom+json",
                                    "Accept-Encoding": "identity"})  # fmt: skip
            for path in first:
                session.get(root + path, timeout=300).close()
            barrier.wait()
            for path in mine:
                started = time.perf_counter()
                response = session.get(root + path, timeout=300)
                body = response.content
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if response.status_code == 200:
                        figure.latencies.append(elapsed)
                        figure.matches.append(body.count(b'"0020000D"'))
                    else:
                        figure.failures.append(f"GET {path[:100]}: {response.status_code} {body[:200]!r}")

    figure.seconds = run_clients(run, timed, warm, clients, barrier)
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    find.add_index_options(parser)
    parser.add_argument("--queries", type=int, default=100, help="timed searches per query type (default 100)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--clients", default="1,4", help="client threads, comma-separated (default 1,4)")
    parser.add_argument("--only", default="", help="only query types whose name contains this")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]

    started = time.monotonic()
    runs = run_folder("qido")
    rows: list[tuple[str, int, Figure]] = []
    with find.served_index(args, runs) as (server, values, url):
        root = f"http://127.0.0.1:{server.http_port}/dicomweb"
        bearer = token(str(server.folder), url)
        _wait(root, bearer)
        for query in [*find.query_types(values), TODAY_LIST]:
            if args.only and args.only.lower() not in query.name.lower():
                continue
            for clients in counts:
                figure = measure(root, bearer, query, values, clients, args.queries, args.warmup, args.seed)
                rows.append((query.name, clients, figure))
                print(f"  {query.name}, {clients} client(s): {len(figure.latencies)} in {figure.seconds:.0f} s",
                      flush=True)  # fmt: skip
    failed = [f for _, _, fig in rows for f in fig.failures]
    if "Traceback" in server.log():
        failed.append(f"Traceback in the server log {server.log_path}")

    print(f"\nQIDO-RS GET /studies (study list return keys), database: {args.database}; "
          f"{args.warmup} warm-up then {args.queries} timed searches per query type and client count, "
          "each with another value; latency to the last byte, keep-alive session per client thread")  # fmt: skip
    header = f"{'query':<28} {'clients':>7} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'queries/s':>9} {'matches':>8}"
    print(header)
    print("-" * len(header))
    for name, clients, fig in rows:
        if not fig.latencies:
            print(f"{name:<28} {clients:7d} (no answers)")
            continue
        print(f"{name:<28} {clients:7d} {len(fig.latencies):4d} {median(fig.latencies):8.1f} "
              f"{percentile(fig.latencies, 95):8.1f} {len(fig.latencies) / fig.seconds:9.1f} "
              f"{sum(fig.matches) / len(fig.matches):8.1f}")  # fmt: skip
    return finish(started, failed, runs)


def _wait(root: str, bearer: str, timeout: float = 60) -> None:
    """Until QIDO answers (gunicorn's workers boot after the DICOM side answers C-ECHO)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(f"{root}/studies?limit=1", headers={"Authorization": f"Bearer {bearer}"},
                                    timeout=10)  # fmt: skip
            if response.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"QIDO at {root} never answered")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
