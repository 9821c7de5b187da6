"""`minipacs serve` with its objects in a real S3 server: storescu in, getscu out, S3 failing.

Needs the private network namespace (dcmtk's getscu receiver listens on every
address): run with tests/run.sh.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydicom import dcmread

from archive import Archive
from archive.query import Level, Query
from tests.conftest import CT_FILES, Server, dcmtk, free_port, require_private_network, start_server
from tests.dicom_scp.helpers import CT, HOST, dataset_bytes, stop_and_check, storescu, storescu_results
from tests.storage.s3_server import JuiceFSGateway, S3Endpoint


def s3_env(endpoint: S3Endpoint, url: str) -> dict[str, str]:
    return {"MINIPACS_STORAGE_URL": url, "MINIPACS_STORAGE_ACCESS_KEY": endpoint.access_key,
            "MINIPACS_STORAGE_SECRET_KEY": endpoint.secret_key}  # fmt: skip


def open_index(data: Path, endpoint: S3Endpoint, url: str) -> Archive:
    return Archive.open(f"sqlite:///{data / 'index.sqlite'}", url,
                        access_key=endpoint.access_key, secret_key=endpoint.secret_key)  # fmt: skip


def sent(server: Server, path: Path) -> str:
    result = storescu(server, path, check=False)
    return storescu_results(result.stdout + result.stderr).get(str(path), result.stdout + result.stderr)


def test_storescu_then_getscu_through_s3(s3: S3Endpoint, tmp_path: Path) -> None:
    require_private_network()
    url = s3.new_bucket_url("archive")
    server = start_server(tmp_path / "data", env=s3_env(s3, url))
    try:
        result = storescu(server, *CT_FILES)
        assert set(storescu_results(result.stdout + result.stderr).values()) == {"Success"}
        assert not (tmp_path / "data" / "objects").exists()  # nothing on the local disk
        out = tmp_path / "got"
        out.mkdir()
        got = dcmtk("getscu", "-v", "-S", "-aec", server.aet, "+B", "-od", out,
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT.study_uid}",
                    HOST, server.port)  # fmt: skip
        assert "Number of Completed Suboperations : 20\n" in got.stdout + got.stderr
        arrived = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in out.iterdir()}
        assert arrived == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p)
                           for p in CT_FILES}  # fmt: skip
    finally:
        stop_and_check(server)
    assert s3.secret_key not in server.log()


def test_c_store_fails_with_a700_while_s3_is_down(tmp_path: Path) -> None:
    require_private_network()
    gateway = JuiceFSGateway(tmp_path / "s3")
    gateway.start()
    url = gateway.endpoint.new_bucket_url()
    server = start_server(tmp_path / "data", env=s3_env(gateway.endpoint, url))
    try:
        assert sent(server, CT_FILES[0]) == "Success"
        gateway.stop()
        assert sent(server, CT_FILES[1]) == "Refused: OutOfResources"  # 0xA7xx; the archive's 0xA700
        gateway.start()
        archive = open_index(tmp_path / "data", gateway.endpoint, url)
        try:
            refs = archive.instances(Query(level=Level.IMAGE))
            assert [r.sop_instance_uid for r in refs] == [CT.sop_uids[0]]  # no row for the failed one
        finally:
            archive.close()
        assert sent(server, CT_FILES[1]) == "Success"
    finally:
        server.stop()
        gateway.stop()


def test_serve_refuses_to_start_without_its_s3_server(tmp_path: Path) -> None:
    url = f"s3://127.0.0.1:{free_port()}/archive"
    env = {"MINIPACS_STORAGE_URL": url, "MINIPACS_STORAGE_ACCESS_KEY": "key",
           "MINIPACS_STORAGE_SECRET_KEY": "the-secret", "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "appliance.cli", "serve", "--data", str(tmp_path / "data"),
                           "--dicom-port", str(free_port())], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode != 0
    assert "storage.url" in done.stderr and url in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "the-secret" not in done.stderr + done.stdout
    bad = subprocess.run([sys.executable, "-m", "appliance.cli", "serve", "--data", str(tmp_path / "data")],
                         env={**env, "MINIPACS_STORAGE_URL": "s3://127.0.0.1:9000"}, capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert bad.returncode != 0 and "storage.url" in bad.stderr and "names no bucket" in bad.stderr, bad.stderr
