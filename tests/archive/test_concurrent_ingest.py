"""Several writers ingesting the same new study at once end with one row per entity.

Each writer has its own Archive (its own engine and connection pool), as
separate `minipacs serve` nodes or DICOM worker processes have. On
PostgreSQL they really run at the same time, and the losers of an insert race
are resolved by the ingest (archive/ingest.py `_index`); SQLite serialises them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from archive import Archive
from tests.archive.helpers import ingest_ds, make_dataset, table_rows, uid
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)

WRITERS = 4
STUDIES = 4
PER_WRITER = 6


def test_concurrent_writers_of_one_new_study_create_each_row_once(index_url: str, tmp_path: Path) -> None:
    archives = [Archive.open(index_url, str(tmp_path / "objects")) for _ in range(WRITERS)]
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for s in range(STUDIES):
                barrier.wait(timeout=30)  # every round starts a new study from all writers at once
                for i in range(PER_WRITER):
                    n = 1000 * s + 100 * w + i
                    # Each writer also sends its first instance to a second series, and
                    # writer 0's first image is sent by every writer (one SOP Instance UID).
                    sop = uid(3, 1000 * s) if i == 0 else None
                    series = uid(2, 10 * s + (i % 2))
                    ingest_ds(archives[w], make_dataset(n, sop=sop, study=uid(1, s), series=series,
                                                        patient_id=f"PID{s}", modality="CT"))  # fmt: skip
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors
        arc = archives[0]
        assert len(table_rows(arc, "patient")) == STUDIES
        studies = table_rows(arc, "study")
        assert len(studies) == STUDIES
        assert len(table_rows(arc, "series")) == 2 * STUDIES
        per_study = 1 + WRITERS * (PER_WRITER - 1)  # the shared first image counts once
        assert len(table_rows(arc, "instance")) == STUDIES * per_study
        for study in studies:
            assert study["num_instances"] == per_study and study["num_series"] == 2
            assert study["modalities_in_study"] == "CT"
        series_counts = sorted(r["num_instances"] for r in table_rows(arc, "series"))
        assert sum(series_counts) == STUDIES * per_study
    finally:
        for a in archives:
            a.close()
