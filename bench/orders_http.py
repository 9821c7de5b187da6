"""Orders over HTTP: how fast a HIS can place orders, and how fast the technologist's list answers.

Against a fresh `minipacs serve` (default settings, bundled order mapping):

- POST /api/orders (plain JSON), one client, then 4 at once: orders per second;
- POST /fhir/ServiceRequest (contained Patient), one client, then 4 at once;
- GET /api/worklist?modality=CT (today's list, its default page of 200 steps) over the steps
  just made: latency p50/p95.

    bench/orders [--orders 400] [--queries 200]
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from common import describe_disk, median, percentile, run_folder
from servers import Server, start_minipacs, wait_http

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CLIENTS = 4


def make_token(folder: Path) -> str:
    """A his token, made in the archive before the server starts (as `minipacs token create --role his`)."""
    from archive import Archive, Origin

    archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
    try:
        return archive.accounts.create_token("bench-his", Origin("bench", "", "CLI"), role="his").secret
    finally:
        archive.close()


def json_order(number: str) -> dict[str, Any]:
    return {"order_number": number, "patient": {"id": f"BN{number}", "name": "Nguyễn^Văn An", "sex": "M",
                                                "birth_date": "19800203", "citizen_id": "001080012345"},
            "procedure": {"code": "CT-SONAO"}, "scheduled": datetime.now().astimezone().isoformat()}  # fmt: skip


def fhir_order(number: str) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "contained": [{"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1991-07-04",
                           "identifier": [{"type": {"coding": [{"system": V2, "code": "MR"}]}, "value": f"F{number}"}],
                           "name": [{"family": "Lê", "given": ["Thị", "Hồng"]}]}],
            "identifier": [{"type": {"coding": [{"system": V2, "code": "PLAC"}]}, "system": "urn:bench",
                            "value": number}],
            "subject": {"reference": "#p"}, "code": {"coding": [{"code": "CT-NGUC"}]},
            "occurrenceDateTime": datetime.now().astimezone().isoformat()}  # fmt: skip


def place(url: str, token: str, kind: str, numbers: list[str], failures: list[str]) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for number in numbers:
        if kind == "json":
            answer = session.post(f"{url}/api/orders", json=json_order(number), timeout=60)
        else:
            answer = session.post(f"{url}/fhir/ServiceRequest", json=fhir_order(number), timeout=60,
                                  headers={"Content-Type": "application/fhir+json"})  # fmt: skip
        if answer.status_code != 201:
            failures.append(f"{number}: {answer.status_code} {answer.text[:200]}")


def rate(url: str, token: str, kind: str, prefix: str, count: int, clients: int) -> float:
    """Orders per second placing `count` orders from `clients` threads."""
    failures: list[str] = []
    share = [[f"{prefix}-{c}-{i}" for i in range(count // clients)] for c in range(clients)]
    threads = [threading.Thread(target=place, args=(url, token, kind, numbers, failures)) for numbers in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} orders failed, e.g. {failures[0]}")
    return sum(len(s) for s in share) / elapsed


def worklist_latency(url: str, queries: int) -> tuple[float, float, int]:
    session = requests.Session()
    session.auth = ("bench-tech", "bench password 1")
    times, steps = [], 0
    for _ in range(queries + 5):
        started = time.perf_counter()
        answer = session.get(f"{url}/api/worklist?modality=CT", timeout=60)  # the default page: 200 steps
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        steps = len(answer.json()["steps"])
    times = times[5:]  # the first requests warm the workers up
    return median(times), percentile(times, 95), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=400, help="orders per scenario (default 400)")
    parser.add_argument("--queries", type=int, default=200, help="worklist requests timed (default 200)")
    args = parser.parse_args()
    folder = run_folder("orders") / "data"
    folder.mkdir()
    print(describe_disk(folder), flush=True)
    token = make_token(folder)
    from archive import Archive, Origin

    archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
    archive.accounts.add_user("bench-tech", "technologist", "bench password 1", Origin("bench", "", "CLI"))
    archive.close()
    server: Server = start_minipacs(folder)
    url = f"http://127.0.0.1:{server.http_port}"
    try:
        wait_http(url)
        rows = []
        for kind, label in (("json", "POST /api/orders"), ("fhir", "POST /fhir/ServiceRequest")):
            for clients in (1, CLIENTS):
                per_second = rate(url, token, kind, f"{kind}{clients}", args.orders, clients)
                rows.append((f"{label}, {clients} client{'s' if clients > 1 else ''}", f"{per_second:.0f} orders/s"))
                print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
        p50, p95, steps = worklist_latency(url, args.queries)
        rows.append((f"GET /api/worklist?modality=CT ({steps} steps today)", f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"))
        print()
        for what, figure in rows:
            print(f"{what:<52} {figure}")
    finally:
        code = server.stop()
        if code != 0:
            print(f"minipacs exited with {code}; log: {server.log_path}")


if __name__ == "__main__":
    main()
