"""The benchmarks' own tools work: the synthetic index is the index ingest
would write, findscu's log is read as findscu writes it, the XA cine written
by hand is a valid file, and bench/web's cold renders never reuse an instance.

The figures themselves are the benchmarks' business (bench/README.md).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from archive import Archive, query_from_identifier
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import data  # noqa: E402
import find  # noqa: E402
import populate  # noqa: E402
import web  # noqa: E402


def test_populate_writes_the_rows_ingest_would(tmp_path: Path) -> None:
    summary = populate.populate(tmp_path, instances=1500, seed=3, progress=False)
    archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    try:
        stats = archive.statistics()
        assert (stats.patients, stats.studies, stats.series, stats.instances) == (
            summary.patients, summary.studies, summary.series, summary.instances)
        assert summary.instances >= 1500
        # Every instance of a series has its own UID and number, and C-FIND finds them.
        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.SOPInstanceUID = ""
        ident.InstanceNumber = ""
        found = list(archive.find(query_from_identifier(ident, patient_root=False)))
        assert len({d.SOPInstanceUID for d in found}) == summary.instances
        # Names are searchable folded, as the bench's name queries ask them.
        values = find.Values(tmp_path / "index.sqlite")
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.PatientName = values.name_prefix(random.Random(1))
        assert list(archive.find(query_from_identifier(ident, patient_root=False)))
    finally:
        archive.close()


def test_findscu_log_gives_latency_matches_and_status_per_query() -> None:
    log = b"\n".join([
        b"1795463304.373.871 Requesting Association",
        b"1795463304.407.073 Sending Find Request (MsgID 1)",
        b"1795463304.407.092 (0008,0020) DA [20240101-20240131 ]  #  18, 1 StudyDate",
        b"1795463304.420.000 Find Response: 1 (Pending)",
        b"1795463304.430.500 Find Response: 2 (Pending)",
        b"1795463304.459.186 Received Final Find Response (Success)",
        b"1795463304.459.288 Sending Find Request (MsgID 2)",
        b"1795463305.001.288 Received Final Find Response (Failed: Unable to Process)",
        b"1795463305.001.300 Releasing Association",
    ])  # fmt: skip
    parsed = find.parse_findscu_log(log)
    assert [(round(t * 1000, 3), n, s) for t, n, s in parsed] == [
        (52.113, 2, "Success"), (542.0, 0, "Failed: Unable to Process")]


def test_xa_cine_writes_its_pixel_data_frame_by_frame_into_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "XA.dcm"
    data.xa_cine(path, data.new_study("t", data.PATIENTS[0], "test"), 3, np.random.default_rng(1), size=64)
    ds = dcmread(path)
    assert (ds.NumberOfFrames, ds.Rows, ds.Columns) == (3, 64, 64)
    assert ds.pixel_array.shape == (3, 64, 64)
    assert path.stat().st_size > 3 * 64 * 64


def test_web_cold_renders_use_instances_nothing_else_touched() -> None:
    instances = [web.Instance("1", "2", str(n)) for n in range(16)]
    pools = web.pools(instances, warm=2, cold=30)
    cold = pools.cold["rendered"] + pools.cold["thumbnail"]
    assert len(pools.cold["rendered"]) == len(pools.cold["thumbnail"]) == 7
    assert len(set(cold)) == len(cold) and not set(cold) & set(pools.warm)
