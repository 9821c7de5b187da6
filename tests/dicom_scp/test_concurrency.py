"""Concurrent C-STORE: eight storescu processes at once, every instance stored exactly once."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import Server
from tests.dicom_scp.helpers import (
    HOST,
    Patient,
    index_counts,
    make_instances,
    object_keys,
    spool_files,
    stored_objects,
    storescu_results,
    assert_stored_as_received,
)


def _run_concurrently(server: Server, batches: list[list[Path]]) -> list[dict[str, str]]:
    """Start one `storescu -v` per batch at the same time; their per-file results."""
    processes = [
        subprocess.Popen(["storescu", "-v", "-aet", f"MODALITY{n}", "-aec", server.aet, "-R", "-xe",
                          HOST, str(server.port), *map(str, files)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for n, files in enumerate(batches)
    ]  # fmt: skip
    results = []
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        results.append(storescu_results(output))
    return results


def test_eight_concurrent_storescu_store_every_instance_once(server: Server, tmp_path: Path) -> None:
    # Eight studies of four patients: two associations at a time create (or
    # find) the same patient, and the index must still hold each patient once.
    batches = [
        make_instances(tmp_path / f"study{n}", 20, seed=n,
                       patient=Patient(f"CONC{n // 2:03d}", f"NGUYEN^THI^{n // 2}"))
        for n in range(8)
    ]  # fmt: skip
    results = _run_concurrently(server, batches)
    for files, result in zip(batches, results):
        assert result == {str(p): "Success" for p in files}

    assert index_counts(server) == (4, 8, 8, 160)
    stored = stored_objects(server)  # fails if a SOP Instance UID has two rows
    sent = {p for files in batches for p in files}
    assert len(stored) == len(sent) == 160
    for path in sent:
        assert_stored_as_received(server, path)
    keys = {s.ref.storage_key for s in stored.values()}
    found = object_keys(server)
    assert len(found) == 160 and set(found) == keys
    assert spool_files(server) == []


def test_the_same_study_sent_four_times_at_once_is_stored_once(server: Server, tmp_path: Path) -> None:
    files = make_instances(tmp_path / "same", 20, seed=42)
    results = _run_concurrently(server, [files] * 4)
    for result in results:
        assert result == {str(p): "Success" for p in files}
    assert index_counts(server) == (1, 1, 1, 20)
    assert len(object_keys(server)) == 20
    for path in files:
        assert_stored_as_received(server, path)
    assert spool_files(server) == []
