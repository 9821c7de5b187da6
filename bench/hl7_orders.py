"""Orders per second through the HL7 v2 door: ORM^O01 NW over MLLP, each ACK awaited.

Against a fresh `minipacs serve` (default settings: one SQLite index, every
message logged and applied in one fsynced transaction before its ACK), or with
--in-process against a listener in this process (no subprocess, same code).
One connection, then 4 at once; every order has its own order number,
accession number and patient. Prints orders per second and the ACK latency.

    bench/hl7 [--orders 400] [--in-process]

(Not named bench/hl7.py: the script's folder comes first on sys.path, and a
module named hl7 there would hide the python-hl7 package the listener uses.)
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from pathlib import Path

from common import PYTHON, ROOT, describe_disk, free_port, median, percentile, run_folder
from servers import Server, _spawn, _wait_ready

CLIENTS = 4


def order(number: str) -> bytes:
    """An ORM^O01 NW in UTF-8 with a Vietnamese name, as a district HIS sends it."""
    segments = [
        f"MSH|^~\\&|HIS|BVHUYEN|MINIPACS|RAD|20261205101010||ORM^O01|{number}|P|2.5||||||UNICODE UTF-8",
        f"PID|1||BN{number}^^^BV^MR~0790{number}^^^CCCD^NI||Nguyễn^Văn An||19680315|M",
        "PV1|1|O||||||BS01^Trần^Thị^Bình",
        f"ORC|NW|{number}|||||^^^20261205143000^^R",
        f"OBR|1|{number}||CT-SONAO^CT sọ não không tiêm thuốc^LOCAL||||||||||||||A{number}",
    ]
    return ("\r".join(segments) + "\r").encode()


def place(port: int, numbers: list[str], latencies: list[float], failures: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for number in numbers:
            started = time.perf_counter()
            sock.sendall(b"\x0b" + order(number) + b"\x1c\x0d")
            answer = b""
            while not answer.endswith(b"\x1c\x0d"):
                chunk = sock.recv(65536)
                if not chunk:
                    failures.append(f"{number}: connection closed")
                    return
                answer += chunk
            latencies.append((time.perf_counter() - started) * 1000)
            if b"MSA|AA|" not in answer:
                failures.append(f"{number}: {answer[:300]!r}")


def rate(port: int, prefix: str, count: int, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    failures: list[str] = []
    share = [[f"{prefix}{c}{i:05d}" for i in range(count // clients)] for c in range(clients)]
    threads = [threading.Thread(target=place, args=(port, numbers, latencies, failures)) for numbers in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} orders failed, e.g. {failures[0]}")
    return sum(len(s) for s in share) / elapsed, latencies


def start_server(folder: Path) -> tuple[Server, int]:
    hl7_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPACS_")}
    env.update(MINIPACS_DICOM_HOST="127.0.0.1", MINIPACS_HL7_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
    port = free_port()
    argv = [str(PYTHON), "-m", "appliance.cli", "serve", "--data", str(folder), "--dicom-port", str(port),
            "--http-port", str(free_port()), "--hl7-port", str(hl7_port)]  # fmt: skip
    process, log_path = _spawn(folder, argv, env)
    server = _wait_ready(Server("minipacs", "MINIPACS", port, folder, process, log_path))
    deadline = time.monotonic() + 30
    while True:  # the HL7 listener starts after the DICOM one
        try:
            socket.create_connection(("127.0.0.1", hl7_port), timeout=1).close()
            return server, hl7_port
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise SystemExit(f"the HL7 listener never opened:\n{server.log()[-2000:]}")
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=400, help="orders per scenario (default 400)")
    parser.add_argument("--in-process", action="store_true", help="a listener in this process, not minipacs serve")
    args = parser.parse_args()
    folder = run_folder("hl7") / "data"
    folder.mkdir()
    print(describe_disk(folder), flush=True)
    stop: list[object] = []
    if args.in_process:
        from archive import Archive
        from worklist.message_log import Receiver
        from worklist.mllp import MllpConfig, MllpServer
        from worklist.service import Worklist

        archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
        listener = MllpServer(MllpConfig(host="127.0.0.1", port=0), Receiver(Worklist(archive)))
        listener.start()
        port = listener.address[1]
        stop = [listener.stop, archive.close]
        where = "in-process listener"
    else:
        server, port = start_server(folder)
        stop = [server.stop]
        where = "minipacs serve"
    try:
        rows = []
        for clients in (1, CLIENTS):
            per_second, latencies = rate(port, f"N{clients}", args.orders, clients)
            label = f"ORM^O01 NW over MLLP, {clients} connection{'s' if clients > 1 else ''} ({where})"
            rows.append((label, f"{per_second:.0f} orders/s, ACK p50 {median(latencies):.1f} ms, "
                                f"p95 {percentile(latencies, 95):.1f} ms"))  # fmt: skip
            print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
        print()
        for what, figure in rows:
            print(f"{what:<62} {figure}")
    finally:
        for action in stop:
            action()  # type: ignore[operator]


if __name__ == "__main__":
    main()
