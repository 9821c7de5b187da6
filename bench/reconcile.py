"""What reconciliation costs on ingest: archive.ingest in process, with and without the worklist hook.

Scenarios, each on a fresh archive in bench/out/reconcile (the repository's disk):

- existing: instances added to a study already in the index (the common path; the hook is never called)
- new-unmatched: one new study per instance, no order for it (a study_match row)
- new-matched: one new study per instance, each matched to its order by accession number with the
  patient corrected from the order (study moved, the modality's patient row removed, audit, step
  event, SCHEDULED -> IN PROGRESS)

Each runs without the hook ("plain") and with it ("reconcile"), alternating in rounds so the disk's
drifting fsync speed hits both alike. Times are per instance, median and p95 over all rounds.

    .venv/bin/python bench/reconcile.py [--instances 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import OUT, describe_disk, median, percentile  # noqa: E402

from archive import Archive, Origin  # noqa: E402
from archive.patients import PatientDemographics  # noqa: E402
from tests.archive.helpers import make_dataset, part10  # noqa: E402
from worklist.service import Worklist  # noqa: E402
from worklist.types import OrderRequest  # noqa: E402

ORIGIN = Origin("BENCH", "127.0.0.1", "DIMSE")
HIS = Origin("HIS", "127.0.0.1", "HL7")
PREFIX = "1.2.826.0.1.3680043.10.9998"


def files(scenario: str, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        if scenario == "existing":
            ds = make_dataset(i + 1, study=f"{PREFIX}.1.1", series=f"{PREFIX}.2.1", sop=f"{PREFIX}.3.{i + 1}",
                              AccessionNumber="B0")  # fmt: skip
        else:
            ds = make_dataset(i + 1, study=f"{PREFIX}.1.{i + 2}", series=f"{PREFIX}.2.{i + 2}",
                              sop=f"{PREFIX}.3.{i + 1}", AccessionNumber=f"B{i + 1}", patient_id=f"TYPO{i}")  # fmt: skip
        out.append(part10(ds))
    return out


def run(scenario: str, reconcile: bool, data: list[bytes], folder: Path) -> list[float]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = Archive.open(f"sqlite:///{folder / 'index.sqlite'}", str(folder / "objects"))
    try:
        worklist = Worklist(archive)
        if reconcile:
            worklist.reconcile_ingest()
        if scenario == "new-matched":
            for i in range(len(data)):
                worklist.create(OrderRequest("HIS", f"O{i + 1}", PatientDemographics(f"BN{i}", name="Trần^Thị Lan"),
                                             accession_number=f"B{i + 1}", modality="CT"), HIS)  # fmt: skip
        if scenario == "existing":
            archive.ingest(io.BytesIO(part10(make_dataset(0, study=f"{PREFIX}.1.1", series=f"{PREFIX}.2.1",
                                                          sop=f"{PREFIX}.3.0"))), ORIGIN)  # fmt: skip
        times = []
        for blob in data:
            started = time.perf_counter()
            archive.ingest(io.BytesIO(blob), ORIGIN)
            times.append(time.perf_counter() - started)
        return times
    finally:
        archive.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = OUT / "reconcile"
    folder.mkdir(parents=True, exist_ok=True)
    print(describe_disk(folder))
    results: dict[tuple[str, bool], list[float]] = {}
    scenarios = ("existing", "new-unmatched", "new-matched")
    data = {s: files(s, args.instances) for s in scenarios}
    for r in range(args.rounds):
        for scenario in scenarios:
            order: list[bool] = [False, True] if r % 2 == 0 else [True, False]
            for reconcile in order:
                results.setdefault((scenario, reconcile), []).extend(
                    run(scenario, reconcile, data[scenario], folder / "run"))
    shutil.rmtree(folder / "run", ignore_errors=True)
    ms: Callable[[float], str] = lambda s: f"{s * 1000:6.2f}"  # noqa: E731
    print(f"{'scenario':<15} {'hook':<10} {'median ms':>9} {'p95 ms':>7}  instances")
    for scenario in scenarios:
        for reconcile in (False, True):
            t = results[(scenario, reconcile)]
            print(f"{scenario:<15} {'reconcile' if reconcile else 'plain':<10} {ms(median(t)):>9} "
                  f"{ms(percentile(t, 95)):>7}  {len(t)}")  # fmt: skip


if __name__ == "__main__":
    main()
