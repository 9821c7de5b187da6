"""A 1 GB multi-frame object through WADO-RS (the instance, then its pixel data as bulk data),
without an HTTP worker holding it in memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest
import requests

from pydicom.dataset import Dataset

from archive import Archive, Origin, query_from_identifier
from tests.dicom_scp.helpers import stop_and_check, write_large_multiframe
from tests.viewer.helpers import start_web_server

GB = 2**30
#: What streaming may add to an HTTP worker's memory (the issue's budget: 100 MB).
GROWTH_LIMIT = 100 * 2**20


def http_workers(pid: int) -> list[psutil.Process]:
    """gunicorn's workers: children of the `python -m appliance.http` process under minipacs serve."""
    return [worker for child in psutil.Process(pid).children()
            if "appliance.http" in child.cmdline() for worker in child.children()]  # fmt: skip


@pytest.mark.slow
def test_one_gigabyte_object_streams_with_little_memory(tmp_path: Path) -> None:
    source = tmp_path / "xa_1gb.dcm"
    data = tmp_path / "data"
    try:
        frames, size = write_large_multiframe(source, GB)
        data.mkdir()
        archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
        try:
            with open(source, "rb") as f:
                result = archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
            archive.accounts.add_user("lan", "radiologist", "reading room 2026", Origin("cli:test", "", "CLI"))
            [ref] = archive.instances(query_from_identifier(_image(result.sop_instance_uid), patient_root=False))
        finally:
            archive.close()
        server, url = start_web_server(data)
        try:
            workers = http_workers(server.process.pid)
            assert workers
            before = {w.pid: w.memory_info().rss for w in workers}
            peak = dict(before)
            received = 0
            with requests.get(f"{url}/dicomweb/studies/{ref.study_instance_uid}", auth=("lan", "reading room 2026"),
                              headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                              stream=True, timeout=300) as response:  # fmt: skip
                assert response.status_code == 200
                for chunk in response.iter_content(1 << 20):
                    received += len(chunk)
                    for w in workers:
                        peak[w.pid] = max(peak[w.pid], w.memory_info().rss)
            pixels = 0
            bulk = (f"{url}/dicomweb/studies/{ref.study_instance_uid}/series/{ref.series_instance_uid}"
                    f"/instances/{ref.sop_instance_uid}/bulkdata/7FE00010")  # fmt: skip
            with requests.get(bulk, auth=("lan", "reading room 2026"), stream=True, timeout=300) as response:
                assert response.status_code == 200
                for chunk in response.iter_content(1 << 20):
                    pixels += len(chunk)
                    for w in workers:
                        peak[w.pid] = max(peak[w.pid], w.memory_info().rss)
            assert 0 < pixels - frames * 1024 * 1024 < 512  # the frames plus the multipart framing
            stored = data / "objects" / ref.storage_key
            assert stored.stat().st_size > GB
            assert 0 < received - stored.stat().st_size < 512  # the file plus the multipart framing
            growth = max(peak[pid] - before[pid] for pid in before)
            assert growth < GROWTH_LIMIT, f"an HTTP worker grew by {growth / 2**20:.0f} MB streaming {size / 2**20:.0f} MB"
        finally:
            stop_and_check(server)
    finally:
        source.unlink(missing_ok=True)
        shutil.rmtree(data, ignore_errors=True)


def _image(sop_instance_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.SOPInstanceUID = sop_instance_uid
    return ds
