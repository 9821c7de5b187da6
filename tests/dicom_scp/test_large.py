"""A 1 GB multi-frame object through C-STORE, without the server holding it in memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.dicom_scp.helpers import (
    dataset_offset,
    instance_rows,
    sha256_of,
    spool_files,
    stop_and_check,
    storescu,
    storescu_results,
    write_large_multiframe,
)

GB = 2**30
RSS_LIMIT = 400 * 2**20


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.slow
def test_one_gigabyte_cine_is_stored_with_little_memory(tmp_path: Path) -> None:
    source = tmp_path / "xa_1gb.dcm"
    data = tmp_path / "data"
    try:
        frames, size = write_large_multiframe(source, GB)
        assert size > GB
        with open(source, "rb") as f:
            offset = dataset_offset(f.read(4096))
        source_dataset_sha = sha256_of(source, offset)

        server = start_server(data)
        try:
            result = storescu(server, source, args=["-R", "-xe"], timeout=900)
            assert storescu_results(result.stdout + result.stderr) == {str(source): "Success"}
            peak = peak_rss(server.process.pid)
            (row,) = instance_rows(server)
            uid, key, stored_size, stored_sha = row
            stored = data / "objects" / key
            assert stored.stat().st_size == stored_size
            assert sha256_of(stored) == stored_sha
            with open(stored, "rb") as f:
                stored_offset = dataset_offset(f.read(4096))
            assert stored_size - stored_offset == size - offset  # the same dataset length
            assert sha256_of(stored, stored_offset) == source_dataset_sha
            assert spool_files(server) == []
            assert peak < RSS_LIMIT, f"server peak RSS {peak / 2**20:.0f} MB for a {size / 2**20:.0f} MB object"
        finally:
            stop_and_check(server)
    finally:
        source.unlink(missing_ok=True)
        shutil.rmtree(data, ignore_errors=True)
