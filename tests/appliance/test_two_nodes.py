"""Two `minipacs serve` nodes on one PostgreSQL and one S3 server: the scale-out promise, end to end.

Node A takes images over DIMSE while node B takes others over STOW-RS at
the same time; then each node finds and retrieves everything, whichever node
stored it; a browser session and a rendered image's ETag made on one node
hold on the other; no patient, study or series is stored twice; one node
sends the outbox while the other stands by.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from archive import Archive, Origin
from tests.conftest import CT_FILES, Server, dcmtk
from tests.dicom_scp.helpers import findscu
from tests.pg import PostgresServer
from tests.storage.s3_server import S3Endpoint
from tests.viewer.helpers import start_web_server

PASSWORD = "hai may chu 2026"
STUDY = str(dcmread(CT_FILES[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.mark.slow
def test_two_nodes_store_at_once_and_each_serves_everything(
    tmp_path: Path, postgres: PostgresServer, s3: S3Endpoint
) -> None:
    db_url, store_url = postgres.create_database(), s3.new_bucket_url("objects")
    shared = {"MINIPACS_DATABASE_URL": db_url, "MINIPACS_STORAGE_URL": store_url,
              "MINIPACS_STORAGE_ACCESS_KEY": s3.access_key, "MINIPACS_STORAGE_SECRET_KEY": s3.secret_key,
              "MINIPACS_DICOM_WORKERS": "2"}  # fmt: skip
    setup = Archive.open(db_url, store_url, access_key=s3.access_key, secret_key=s3.secret_key)
    setup.accounts.add_user("ky", "technologist", PASSWORD, Origin("cli:test", "", "CLI"))
    setup.close()
    node_a, url_a = start_web_server(tmp_path / "a", env=shared)
    node_b, url_b = start_web_server(tmp_path / "b", env=shared)
    try:
        dimse, stow = CT_FILES[:10], CT_FILES[10:]
        errors: list[BaseException] = []

        def send_dimse() -> None:
            try:
                dcmtk("storescu", "-aec", node_a.aet, "127.0.0.1", node_a.port, *dimse)
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        def send_stow() -> None:
            try:
                client = client_of(url_b)
                for path in stow:
                    answer = client.store_instances([dcmread(path)], study_instance_uid=STUDY)
                    assert "FailedSOPSequence" not in answer
            except BaseException as exc:
                errors.append(exc)

        senders = [threading.Thread(target=send_dimse), threading.Thread(target=send_stow)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        assert not errors, errors

        all_uids = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in CT_FILES)
        for name, node, url in (("a", node_a, url_a), ("b", node_b, url_b)):
            found, _ = findscu(node, tmp_path / f"find-{name}", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY}",
                               "SOPInstanceUID=")  # fmt: skip
            assert sorted(str(d.SOPInstanceUID) for d in found) == all_uids, name
            client = client_of(url)
            assert sorted(i["00080018"]["Value"][0] for i in client.search_for_instances(STUDY)) == all_uids
            # Retrieve what the other node stored, byte for byte.
            other_file = stow[0] if name == "a" else dimse[0]
            other = dcmread(other_file)
            got = client.retrieve_instance(STUDY, str(other.SeriesInstanceUID), str(other.SOPInstanceUID))
            assert got.PixelData == other.PixelData
            received = tmp_path / f"get-{name}"
            received.mkdir()
            done = dcmtk("getscu", "-v", "-S", "-aec", node.aet, "+B", "-od", received, "-k", "QueryRetrieveLevel=STUDY",
                         "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1", node.port)  # fmt: skip
            assert "Number of Completed Suboperations : 20" in done.stdout + done.stderr
            assert len(list(received.iterdir())) == 20

        # Behind a load balancer any node may get the next request: a browser session made on A
        # holds on B, and a rendered image has one ETag (and cache key) whichever node made it.
        browser = requests.Session()
        assert browser.post(f"{url_a}/login", data={"username": "ky", "password": PASSWORD}, timeout=30).ok
        assert browser.get(f"{url_b}/session", timeout=30).json()["username"] == "ky"
        first = dcmread(dimse[0], stop_before_pixels=True)
        rendered = (f"/dicomweb/studies/{STUDY}/series/{first.SeriesInstanceUID}"
                    f"/instances/{first.SOPInstanceUID}/rendered")  # fmt: skip
        from_a, from_b = (browser.get(url + rendered, timeout=30) for url in (url_a, url_b))
        assert from_a.status_code == from_b.status_code == 200
        assert from_a.headers["ETag"] == from_b.headers["ETag"] and from_a.content == from_b.content
        again = browser.get(url_b + rendered, headers={"If-None-Match": from_a.headers["ETag"]}, timeout=30)
        assert again.status_code == 304

        check = Archive.open(db_url, store_url, access_key=s3.access_key, secret_key=s3.secret_key)
        try:
            stats = check.statistics()
            assert (stats.patients, stats.studies, stats.series, stats.instances) == (1, 1, 1, 20)
        finally:
            check.close()
    finally:
        codes = node_a.stop(), node_b.stop()
    assert codes == (0, 0)
    logs = node_a.log() + node_b.log()
    assert "Traceback" not in logs, logs
    # One sender for both nodes: one took the lease, the other stood by (and took over when A stopped first).
    leader, standby = (node_a, node_b) if "lease outbox: taken" in node_a.log().split("stopped")[0] else (node_b, node_a)
    assert "lease outbox: taken" in leader.log() and "standing by" in standby.log()
    postgres.drop_database(db_url)


def client_of(url: str) -> DICOMwebClient:
    session = requests.Session()
    session.auth = ("ky", PASSWORD)
    return DICOMwebClient(url=f"{url}/dicomweb", session=session)


__all__ = ["Server"]
