"""Results for the EMR: how fast it finds a report by accession number, and how long signing takes.

An index of a district hospital's three years (bench/populate.py, 100,000
instances by default) gets a report on `--reports` of its studies (drafts made
through the report service) of which `--signed` are signed for real (PAdES with
a certificate made here, as a CA would issue it). Then against `minipacs serve`:

- GET /api/studies?accession=... (study, report text, links, claim values) as the EMR (token role emr),
- GET /api/reports?accession=..., GET /fhir/DiagnosticReport?identifier=...,
- POST /api/reports/<accession>/sign as a radiologist (PDF made, signed, stored; ORU and SR queued).

    bench/results [--instances 100000] [--reports 5000] [--signed 50] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from common import describe_disk, median, percentile, run_folder
from populate import populate
from servers import Server, start_minipacs, wait_http

PIN = "bench-pin-2026"
PASSWORD = "bench password 1"


def signing_pkcs12() -> bytes:
    """A self-signed signing certificate in a PKCS#12, as a radiologist gets one from a CA."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Bench Radiologist")])  # fmt: skip
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip
    return pkcs12.serialize_key_and_certificates(b"bench", key, cert, None,
                                                 serialization.BestAvailableEncryption(PIN.encode()))  # fmt: skip


def prepare(folder: Path, reports: int, signed: int) -> tuple[str, list[str], list[tuple[str, int]]]:
    """Users, an emr token, drafts on `reports` studies, `signed` of them signed. Returns the token,
    the signed accession numbers and (accession, revision) of drafts left to sign over HTTP."""
    from sqlalchemy import select

    from archive import Archive, Origin
    from archive.models import Study
    from reports.identities import SigningIdentities
    from reports.service import Reports
    from reports.signoff import PadesSigner
    from reports.types import Hospital, ReportDraft

    admin = Origin("bench", "", "CLI")
    archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
    try:
        archive.accounts.add_user("bench-rad", "radiologist", PASSWORD, admin, display_name="BS. Bench")
        archive.accounts.set_practising_certificate("bench-rad", "000001/BENCH-CCHN", admin)
        identities = SigningIdentities(archive.db, archive.audit)
        identities.install("bench-rad", signing_pkcs12(), PIN, admin)
        token = archive.accounts.create_token("bench-emr", admin, role="emr").secret
        with archive.db.read() as conn:
            uids = list(conn.execute(select(Study.study_instance_uid, Study.accession_number)
                                     .where(Study.accession_number != "")).all())  # fmt: skip
        picked = random.Random(1).sample(uids, min(reports, len(uids)))
        service = Reports(archive, signer=PadesSigner(identities, Hospital(name="Bệnh viện Bench")))
        started = time.perf_counter()
        drafts = []
        for n, (uid, accession) in enumerate(picked, start=1):
            view = service.create(uid, ReportDraft(sections={"findings": "Mô tả " * 40, "conclusion": "Bình thường."}),
                                  "bench-rad")  # fmt: skip
            drafts.append((accession, view.revision))
            if n % 500 == 0:
                print(f"\r  {n:,} report drafts", end="", file=sys.stderr, flush=True)
        print(f"\r  {len(drafts):,} report drafts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        done = []
        for accession, revision in drafts[:signed]:
            service.sign(accession, "bench-rad", PIN, revision)
            done.append(accession)
        return token, done, drafts[signed:]
    finally:
        archive.close()


def latency(session: requests.Session, urls: list[str]) -> tuple[float, float]:
    times = []
    for url in urls:
        started = time.perf_counter()
        answer = session.get(url, timeout=60)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{url}: {answer.status_code} {answer.text[:200]}")
    times = times[5:]  # the first requests warm the workers up
    return median(times), percentile(times, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000, help="instances in the index (default 100,000)")
    parser.add_argument("--reports", type=int, default=5000, help="studies with a report (default 5,000)")
    parser.add_argument("--signed", type=int, default=50, help="reports signed before the lookups (default 50)")
    parser.add_argument("--queries", type=int, default=200, help="lookups timed per endpoint (default 200)")
    parser.add_argument("--signatures", type=int, default=20, help="signatures timed over HTTP (default 20)")
    args = parser.parse_args()
    folder = run_folder("results") / "data"
    folder.mkdir()
    print(describe_disk(folder), flush=True)
    summary = populate(folder, args.instances)
    print(f"  index: {summary.instances:,} instances, {summary.studies:,} studies", flush=True)
    token, signed, drafts = prepare(folder, args.reports, args.signed)
    server: Server = start_minipacs(folder)
    url = f"http://127.0.0.1:{server.http_port}"
    try:
        wait_http(url)
        emr = requests.Session()
        emr.headers["Authorization"] = f"Bearer {token}"
        wanted = [random.Random(2).choice(signed) for _ in range(args.queries + 5)]
        rows = []
        for label, template in (("GET /api/studies?accession=", "{url}/api/studies?accession={a}"),
                                ("GET /api/reports?accession=", "{url}/api/reports?accession={a}"),
                                ("GET /fhir/DiagnosticReport?identifier=", "{url}/fhir/DiagnosticReport?identifier={a}")):  # fmt: skip
            p50, p95 = latency(emr, [template.format(url=url, a=a) for a in wanted])
            rows.append((f"{label} (emr)", f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"))
            print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
        radiologist = requests.Session()
        radiologist.auth = ("bench-rad", PASSWORD)
        times = []
        for accession, revision in drafts[:args.signatures]:
            started = time.perf_counter()
            answer = radiologist.post(f"{url}/api/reports/{accession}/sign", json={"pin": PIN, "revision": revision},
                                      timeout=60)  # fmt: skip
            times.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200:
                raise SystemExit(f"sign {accession}: {answer.status_code} {answer.text[:200]}")
        rows.append(("POST /api/reports/<accession>/sign", f"p50 {median(times):.0f} ms, max {max(times):.0f} ms"))
        print()
        print(f"{summary.instances:,} instances, {summary.studies:,} studies, {args.reports:,} reports "
              f"({args.signed + args.signatures} signed)")  # fmt: skip
        for what, figure in rows:
            print(f"{what:<52} {figure}")
    finally:
        code = server.stop()
        if code != 0:
            print(f"minipacs exited with {code}; log: {server.log_path}")


if __name__ == "__main__":
    main()
