"""Durability: SIGKILL `minipacs serve` in the middle of a storescu run.

Every instance storescu was told was stored must be there after a restart on
the same data directory, byte for byte, and the index and the object store
must agree. (A SIGKILL keeps the page cache, so this checks the order of
work before the acknowledgement, not the fsyncs themselves.)
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.dicom_scp.helpers import (
    HOST,
    assert_index_matches_objects,
    assert_stored_as_received,
    make_instances,
    object_keys,
    spool_files,
    stop_and_check,
    stored_objects,
    storescu,
    storescu_results,
    wait_for,
)


@pytest.mark.slow
def test_sigkill_during_storescu_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    # 300 instances of ~100 KB (224 x 224 x 16 bit), in three studies.
    files = [p for n in range(3) for p in make_instances(tmp_path / f"s{n}", 100, seed=500 + n,
                                                         rows=224, columns=224)]  # fmt: skip
    data = tmp_path / "data"
    server = start_server(data)
    log = tmp_path / "storescu.log"
    with open(log, "w") as out:
        sender = subprocess.Popen(["storescu", "-v", "-aec", server.aet, "-R", "-xe", HOST,
                                   str(server.port), *map(str, files)],
                                  stdout=out, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for(lambda: sender.poll() is not None
                 or log.read_text().count("Received Store Response (Success)") >= 120,
                 timeout=120, what="storescu to be a third of the way")  # fmt: skip
        assert sender.poll() is None, "storescu finished before the server could be killed"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        sender.wait(60)
    output = log.read_text()
    results = storescu_results(output)
    acknowledged = [Path(f) for f, status in results.items() if status == "Success"]
    assert 120 <= len(acknowledged) < 300, output[-2000:]
    assert sender.returncode != 0  # it lost its peer

    restarted = start_server(data)
    try:
        assert spool_files(restarted) == []  # what was in flight is swept at start
        rows = assert_index_matches_objects(restarted)
        stored = stored_objects(restarted)
        assert len(stored) == len(rows) >= len(acknowledged)
        for path in acknowledged:
            assert_stored_as_received(restarted, path, stored[_uid(path)])
        # At most the one instance in flight was written but not yet indexed.
        indexed = {key for _, key, _, _ in rows}
        orphans = [key for key in object_keys(restarted) if key not in indexed]
        assert len(orphans) <= 1, orphans

        # The modality sends everything again: all stored, each once.
        again = storescu(restarted, *files, args=["-R", "-xe"])
        assert set(storescu_results(again.stdout + again.stderr).values()) == {"Success"}
        assert len(assert_index_matches_objects(restarted)) == 300
        stored = stored_objects(restarted)
        for path in files:
            assert_stored_as_received(restarted, path, stored[_uid(path)])
    finally:
        stop_and_check(restarted)


def _uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
