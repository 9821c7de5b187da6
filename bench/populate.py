"""Fill a fresh minipacs index with a synthetic district-hospital archive, fast.

For bench/find: C-FIND answers from the index alone, so only index rows are
made, no objects (their storage keys point nowhere). The rows are the ones
ingest makes: each series' first instance is a small pydicom header run
through ``archive.attributes.index_record``; the series' other instances copy
that record with their own UID, number and position; every instance goes
through ``archive.index_writer.add_instance``, the function ingest calls.
bench/web takes the headers of its small archive from the same Generator.

The archive is what a district hospital collects over three years: many CR/DX
studies of 1-2 images, ultrasound of 5-20, some CT of 100-300; Vietnamese
patients (family names at their real frequencies) whose names arrive with or
without diacritics and in the layouts modalities use; hospital ID, citizen ID
(CCCD) and health-insurance number (BHYT).

    .venv/bin/python bench/populate.py DATA_DIR [--instances 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from archive.attributes import IndexRecord, index_record
from archive.db import Database
from archive.index_writer import StoredInstance, add_instance
from archive.origin import Origin
from archive.text import fold
from common import OUT, ROOT

#: The last day of the synthetic archive; studies spread over the 3 years before it.
END = date(2026, 11, 20)
DAYS = 3 * 365

# Family names with their approximate share of the Vietnamese population (%).
FAMILY = {"Nguyễn": 38.4, "Trần": 11.0, "Lê": 9.5, "Phạm": 7.0, "Hoàng": 3.2, "Huỳnh": 2.5,
          "Phan": 4.5, "Vũ": 2.2, "Võ": 1.8, "Đặng": 2.1, "Bùi": 2.0, "Đỗ": 1.4, "Hồ": 1.3,
          "Ngô": 1.3, "Dương": 1.0, "Lý": 0.5}  # fmt: skip
MIDDLE = {"M": ["Văn"] * 6 + ["Hữu", "Đức", "Minh", "Quốc", "Công", "Thành", "Xuân", "Ngọc", "Thanh", "Đình"],
          "F": ["Thị"] * 7 + ["Ngọc", "Thu", "Thanh", "Kim", "Mỹ", "Hồng", "Phương", "Bích", "Thuỳ"]}  # fmt: skip
GIVEN = {
    "M": ["An", "Bình", "Cường", "Dũng", "Đạt", "Hải", "Hùng", "Huy", "Khánh", "Long", "Minh",
          "Nam", "Phong", "Phúc", "Quang", "Sơn", "Tài", "Thắng", "Trung", "Tuấn", "Việt",
          "Vinh", "Hoà", "Lộc", "Tâm", "Thịnh", "Toàn", "Khoa", "Bảo", "Hiếu"],
    "F": ["Anh", "Châu", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hoa", "Hương", "Lan", "Linh",
          "Mai", "Nga", "Ngân", "Nhung", "Oanh", "Phương", "Quyên", "Thảo", "Trang", "Tuyết",
          "Vân", "Yến", "Hiền", "Loan", "Thuỷ", "Diệp", "Ánh", "Ngọc", "Xuân"],
}  # fmt: skip
DOCTORS = ["Phạm^Minh Tuấn", "Võ^Thị Mai", "Đặng^Quốc Huy", "Nguyễn^Thanh Sơn", "Lê^Văn Tám",
           "Trần^Thị Bích Ngọc", "Hồ^Văn Lợi", "Bùi^Thị Hạnh", "Ngô^Đức Trí", "Dương^Minh Châu",
           "Huỳnh^Văn Phát", "Phan^Thị Lệ", "", ""]  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """A kind of study: modality, share of studies, images, SOP class, object size."""

    modality: str
    share: float
    images: tuple[int, int]
    sop_class: str
    size: int
    station: str
    descriptions: tuple[tuple[str, str], ...]  # (study description, body part)


KINDS = [
    Kind("CR", 0.40, (1, 2), "1.2.840.10008.5.1.4.1.1.1", 8_400_000, "CR_FCR_CAPSULA",
         (("X-quang ngực thẳng", "CHEST"), ("X-quang cột sống thắt lưng thẳng nghiêng", "LSPINE"),
          ("X-quang khớp gối thẳng nghiêng", "KNEE"), ("X-quang xương cẳng tay", "ARM"),
          ("X-quang sọ thẳng nghiêng", "SKULL"), ("X-quang khung chậu thẳng", "PELVIS"))),
    Kind("DX", 0.32, (1, 2), "1.2.840.10008.5.1.4.1.1.1.1", 10_000_000, "DR_CXDI_710C",
         (("X-quang ngực thẳng (PA)", "CHEST"), ("X-quang cột sống cổ thẳng nghiêng", "CSPINE"),
          ("X-quang khớp vai", "SHOULDER"), ("X-quang bàn tay", "HAND"),
          ("X-quang bụng không chuẩn bị", "ABDOMEN"))),
    Kind("US", 0.21, (5, 20), "1.2.840.10008.5.1.4.1.1.6.1", 921_600, "US_LOGIQ_P9",
         (("Siêu âm ổ bụng tổng quát", "ABDOMEN"), ("Siêu âm tuyến giáp", "THYROID"),
          ("Siêu âm thai", "PELVIS"), ("Siêu âm tim", "HEART"), ("Siêu âm tuyến vú", "BREAST"))),
    Kind("CT", 0.07, (100, 300), "1.2.840.10008.5.1.4.1.1.2", 527_000, "CT_SOMATOM_GO",
         (("CT sọ não không tiêm thuốc", "HEAD"), ("CT ngực", "CHEST"),
          ("CT bụng có tiêm thuốc", "ABDOMEN"), ("CT cột sống thắt lưng", "LSPINE"))),
]  # fmt: skip


@dataclass
class Summary:
    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    by_modality: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


class Generator:
    """Draws patients, studies and series; all randomness from one seeded Random."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.patient_seq = 0
        self.accession_seq: dict[str, int] = {}

    def uid(self) -> str:
        return f"2.25.{uuid.UUID(int=self.rng.getrandbits(128), version=4).int}"

    def patient(self) -> Dataset:
        rng = self.rng
        sex = rng.choice("MF")
        family = rng.choices(list(FAMILY), weights=list(FAMILY.values()))[0]
        middle, given = rng.choice(MIDDLE[sex]), rng.choice(GIVEN[sex])
        # As modalities send it: UTF-8 "Family^Middle Given" from worklist-fed
        # consoles, folded ASCII from older ones, one component, or split three ways.
        layout = rng.random()
        if layout < 0.55:
            name = f"{family}^{middle} {given}"
        elif layout < 0.85:
            name = fold(f"{family}^{middle} {given}")
        elif layout < 0.95:
            name = fold(f"{family} {middle} {given}")
        else:
            name = f"{family}^{given}^{middle}"
        age = int(min(95, max(0, rng.gauss(48, 20))))
        birth = END - timedelta(days=age * 365 + rng.randrange(365))
        self.patient_seq += 1
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = name
        ds.PatientID = f"BN{rng.choice((23, 24, 25, 26))}{self.patient_seq:06d}"
        ds.IssuerOfPatientID = "BVDK"
        ds.PatientBirthDate = birth.strftime("%Y%m%d")
        ds.PatientSex = sex
        items = []
        if age >= 14 and rng.random() < 0.9:
            items.append(_other_id(f"0{rng.randrange(10**10, 10**11)}", "CCCD"))
        if rng.random() < 0.75:
            items.append(_other_id(f"{rng.choice(('GD', 'HT', 'CN', 'TE', 'HC'))}4{rng.randrange(10**13):013d}", "BHYT"))
        if items:
            ds.OtherPatientIDsSequence = Sequence(items)
        return ds

    def study(self, patient: Dataset, kind: Kind) -> Dataset:
        rng = self.rng
        while True:
            day = END - timedelta(days=rng.randrange(DAYS))
            # Fewer studies at weekends.
            if rng.random() < (0.3 if day.weekday() == 6 else 0.6 if day.weekday() == 5 else 1.0):
                break
        hour = rng.randrange(24) if rng.random() < 0.1 else rng.randrange(7, 17)
        stamp = day.strftime("%y%m%d")
        seq = self.accession_seq[stamp + kind.modality] = self.accession_seq.get(stamp + kind.modality, 0) + 1
        description, body_part = rng.choice(kind.descriptions)
        ds = Dataset()
        ds.update(patient)
        ds.StudyInstanceUID = self.uid()
        ds.StudyDate = day.strftime("%Y%m%d")
        ds.StudyTime = f"{hour:02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        ds.AccessionNumber = f"{kind.modality}{stamp}{seq:04d}"
        ds.StudyID = f"{seq}"
        ds.ReferringPhysicianName = rng.choice(DOCTORS)
        ds.StudyDescription = description
        ds.BodyPartExamined = body_part
        ds.InstitutionName = "Bệnh viện Đa khoa huyện"
        ds.PatientAge = f"{int(ds.StudyDate[:4]) - int(patient.PatientBirthDate[:4]):03d}Y"
        return ds

    def series(self, study: Dataset, kind: Kind, number: int, images: int) -> Dataset:
        ds = Dataset()
        ds.update(study)
        ds.SeriesInstanceUID = self.uid()
        ds.Modality = kind.modality
        ds.SeriesNumber = number
        ds.SeriesDate = study.StudyDate
        ds.SeriesTime = study.StudyTime
        ds.SeriesDescription = "Topogram" if kind.modality == "CT" and images <= 2 else study.StudyDescription
        ds.StationName = kind.station
        ds.Manufacturer = {"CR": "FUJIFILM", "DX": "Canon Inc.", "US": "GE Healthcare", "CT": "SIEMENS"}[kind.modality]
        ds.PerformedProcedureStepStartDate = study.StudyDate
        ds.PerformedProcedureStepStartTime = study.StudyTime
        request = Dataset()
        request.RequestedProcedureID = study.AccessionNumber
        request.ScheduledProcedureStepID = study.AccessionNumber + "1"
        request.AccessionNumber = study.AccessionNumber
        ds.RequestAttributesSequence = Sequence([request])
        # The first instance: what index_record reads at instance level.
        ds.SOPClassUID = kind.sop_class
        ds.SOPInstanceUID = self.uid()
        ds.InstanceNumber = 1
        ds.ContentDate = study.StudyDate
        ds.ContentTime = study.StudyTime
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        rows, columns, bits = {"CR": (2500, 2000, 16), "DX": (2236, 2236, 16),
                               "US": (480, 640, 8), "CT": (512, 512, 16)}[kind.modality]  # fmt: skip
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored = rows, columns, bits, min(bits, 12)
        ds.SamplesPerPixel = 3 if kind.modality == "US" else 1
        ds.PhotometricInterpretation = "RGB" if kind.modality == "US" else "MONOCHROME2"
        if kind.modality == "CT":
            ds.SliceThickness = "1"
            ds.ImagePositionPatient = ["-190", "-190", "0"]
            ds.SliceLocation = "0"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
            ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        return ds

    def visits(self) -> Iterator[tuple[Dataset, Kind, Dataset]]:
        """Patients and their 1-8 visits, without end: (patient, kind of study, study).

        A patient's visits come one after the other; a new patient Dataset
        object starts the next one's.
        """
        while True:
            patient = self.patient()
            visits = min(8, 1 + int(self.rng.expovariate(1.4)))
            for _ in range(visits):
                kind = self.rng.choices(KINDS, weights=[k.share for k in KINDS])[0]
                yield patient, kind, self.study(patient, kind)

    def images_of(self, kind: Kind) -> list[int]:
        """Images per series of one study of `kind`."""
        low, high = kind.images
        if kind.modality == "CT":
            total = self.rng.randint(low, high)
            scout = self.rng.choice((1, 2))
            axial = total - scout
            if self.rng.random() < 0.4:  # with contrast: a second axial series
                return [scout, axial // 2, axial - axial // 2]
            return [scout, axial]
        if kind.modality in ("CR", "DX"):
            return [1] * (1 if self.rng.random() < 0.65 else 2)  # one series per view
        return [self.rng.randint(low, high)]


def _other_id(value: str, issuer: str) -> Dataset:
    item = Dataset()
    item.PatientID = value
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    return item


def instance_records(gen: Generator, first: IndexRecord, count: int, modality: str) -> list[IndexRecord]:
    """`first` and the series' other instances, as index_record would give them."""
    records = [first]
    for number in range(2, count + 1):
        uid = gen.uid()
        attrs: dict[str, Any] = dict(first.instance.attrs)
        attrs["00080018"] = {"vr": "UI", "Value": [uid]}
        attrs["00200013"] = {"vr": "IS", "Value": [number]}
        if modality == "CT":
            attrs["00200032"] = {"vr": "DS", "Value": [-190.0, -190.0, float(number)]}
            attrs["00201041"] = {"vr": "DS", "Value": [float(number)]}
        instance = dataclasses.replace(first.instance, sop_instance_uid=uid, instance_number=number)
        instance.__dict__["attrs"] = attrs  # the cached property, worked out above
        record = dataclasses.replace(first, sop_instance_uid=uid)
        # The levels above are the first instance's (decoded once, cached on the record).
        record.__dict__.update({k: v for k, v in first.__dict__.items() if k in _SHARED_LEVELS})
        record.__dict__["instance"] = instance
        records.append(record)
    return records


_SHARED_LEVELS = ("patient", "other_ids", "study", "series")


def populate(data_dir: Path, instances: int = 100_000, seed: int = 1, progress: bool = True) -> Summary:
    """Add about `instances` instances (whole studies) to the index in `data_dir`."""
    started = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.open(f"sqlite:///{data_dir / 'index.sqlite'}")
    gen = Generator(seed)
    summary = Summary()
    batch: list[tuple[IndexRecord, StoredInstance, Origin, datetime]] = []
    last_patient = None
    try:
        for patient, kind, study in gen.visits():
            if patient is not last_patient:  # whole patients: stop only between two
                if len(batch) >= 5000:
                    _write(db, batch)
                    batch.clear()
                    if progress:
                        print(f"\r  populated {summary.instances:,} instances", end="", file=sys.stderr, flush=True)
                if summary.instances >= instances:
                    break
                last_patient = patient
                summary.patients += 1
            summary.studies += 1
            summary.by_modality[kind.modality] = summary.by_modality.get(kind.modality, 0) + 1
            origin = Origin(kind.station, f"192.168.10.{KINDS.index(kind) + 21}", "DIMSE", "populate")
            received = datetime.strptime(study.StudyDate + study.StudyTime, "%Y%m%d%H%M%S")
            received = received.replace(tzinfo=UTC) - timedelta(hours=7) + timedelta(minutes=12)
            for number, count in enumerate(gen.images_of(kind), start=1):
                header = gen.series(study, kind, number, count)
                summary.series += 1
                for record in instance_records(gen, index_record(header), count, kind.modality):
                    i = record.instance
                    key = f"{study.StudyInstanceUID}/{header.SeriesInstanceUID}/{i.sop_instance_uid}.{gen.rng.getrandbits(32):08x}.dcm"
                    stored = StoredInstance(key, kind.size, f"{gen.rng.getrandbits(256):064x}",
                                            "1.2.840.10008.1.2.1")  # fmt: skip
                    batch.append((record, stored, origin, received))
                    summary.instances += 1
        _write(db, batch)
    finally:
        db.dispose()
    if progress:
        print(file=sys.stderr)
    summary.seconds = time.perf_counter() - started
    return summary


def _write(db: Database, batch: list[tuple[IndexRecord, StoredInstance, Origin, datetime]]) -> None:
    with db.write() as conn:
        for record, stored, origin, received in batch:
            add_instance(conn, record, stored, origin, received)


#: The 100k-instance index bench/find --reuse keeps (and bench/query_plans reads by default).
OUT_INDEX = OUT / "find-index-100000-seed1"


@contextmanager
def bench_database(kind: str) -> Iterator[str]:
    """An empty database of `kind` ("postgresql"): its URL, dropped afterwards.

    MINIPACS_BENCH_DATABASE_URL (a postgresql+psycopg:// URL to a role that may
    CREATE DATABASE) names a server to use; otherwise Debian's PostgreSQL is
    started in a temporary directory as the tests do (tests/pg.py).
    """
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.pg import LocalPostgres, PostgresServer

    given = os.environ.get("MINIPACS_BENCH_DATABASE_URL")
    local = None if given else LocalPostgres()
    # A benchmark stopped with SIGTERM still stops its server (the finally clauses below run).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server = PostgresServer(given) if given else local.start()  # type: ignore[union-attr]
        url = server.create_database()
        try:
            yield url
        finally:
            server.drop_database(url)
    finally:
        if local is not None:
            local.stop()
        signal.signal(signal.SIGTERM, previous)


def copy_index_to(source: Database, url: str) -> dict[str, int]:
    """Copy a populated index (every table) into the empty database at `url`, schema made first."""
    import reports.models  # noqa: F401  (registers the reports' tables)
    import worklist.models  # noqa: F401  (and the worklist's)
    from sqlalchemy import MetaData, inspect

    from archive.models import Base
    from archive.transfer import copy_index

    # The tables the source has: a reused index may predate a table added since (the target's is empty).
    present = set(inspect(source.engine).get_table_names())
    tables = MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name in present:
            table.to_metadata(tables)
    target = Database.open(url)
    try:
        counts = copy_index(source, target, tables)
        if not target.is_sqlite:
            with target.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")  # fresh statistics, as autovacuum would have soon
        return counts
    finally:
        target.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="a minipacs data directory (index.sqlite is created in it)")
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if (args.data_dir / "index.sqlite").exists():
        parser.error(f"{args.data_dir} already has an index; populate needs a fresh one")
    s = populate(args.data_dir, args.instances, args.seed)
    print(f"{s.instances:,} instances, {s.series:,} series, {s.studies:,} studies "
          f"({', '.join(f'{m} {n:,}' for m, n in sorted(s.by_modality.items()))}), "
          f"{s.patients:,} patients in {s.seconds:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
