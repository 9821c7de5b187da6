"""/healthz: each check on a real `minipacs serve`, and 503 (with what failed) for each kind of failure."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import requests

from archive import Archive
from tests.conftest import free_port
from tests.viewer.helpers import start_web_server
from viewer.app import create_app
from viewer.config import WebConfig


def test_a_running_node_is_healthy(tmp_path: Path) -> None:
    server, url = start_web_server(tmp_path / "data")
    try:
        answer = requests.get(f"{url}/healthz", timeout=30)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "ok", body
        checks = body["checks"]
        assert set(checks) == {"database", "storage", "dicom", "hl7"}
        assert checks["database"]["backend"] == "sqlite" and checks["storage"]["kind"] == "filesystem"
        assert checks["storage"]["free_bytes"] > 0 and checks["dicom"]["port"] == server.port
        assert all(c["ok"] and c["ms"] >= 0 for c in checks.values())
    finally:
        server.stop()


def test_a_listener_that_is_down_fails_the_node(tmp_path: Path) -> None:
    archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    try:
        with socket.socket() as up:
            up.bind(("127.0.0.1", 0))
            up.listen()
            config = WebConfig(health_listeners=(("dicom", "0.0.0.0", up.getsockname()[1]),
                                                 ("hl7", "127.0.0.1", free_port())))  # fmt: skip
            answer = create_app(archive, config).test_client().get("/healthz")
        assert answer.status_code == 503 and answer.json["status"] == "failing"
        assert answer.json["checks"]["dicom"]["ok"] and not answer.json["checks"]["hl7"]["ok"]
        assert "refused" in answer.json["checks"]["hl7"]["error"].lower()
    finally:
        archive.close()


def test_a_full_disk_fails_the_node(tmp_path: Path) -> None:
    archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    try:
        free = shutil.disk_usage(tmp_path).free
        answer = create_app(archive, WebConfig(storage_reserve_bytes=free + (10 << 30))).test_client().get("/healthz")
        assert answer.status_code == 503 and "below the reserve" in answer.json["checks"]["storage"]["error"]
    finally:
        archive.close()


def test_an_unreachable_database_fails_the_node(tmp_path: Path) -> None:
    archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    try:
        client = create_app(archive).test_client()
        assert client.get("/healthz").status_code == 200
        archive.db.engine.dispose()
        (tmp_path / "index.sqlite").unlink()
        (tmp_path / "index.sqlite").mkdir()  # SQLite cannot open a directory
        answer = client.get("/healthz")
        assert answer.status_code == 503 and not answer.json["checks"]["database"]["ok"]
        assert "unable to open database file" in answer.json["checks"]["database"]["error"]
        assert answer.json["checks"]["storage"]["ok"]
    finally:
        archive.db.engine.dispose()


def test_an_s3_store_is_checked_and_a_stopped_one_fails_the_node(tmp_path: Path) -> None:
    from tests.storage.s3_server import JuiceFSGateway

    gateway = JuiceFSGateway(tmp_path / "s3")
    gateway.start()
    endpoint = gateway.endpoint
    archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", endpoint.new_bucket_url("objects"),
                           access_key=endpoint.access_key, secret_key=endpoint.secret_key)  # fmt: skip
    try:
        client = create_app(archive).test_client()
        answer = client.get("/healthz")
        assert answer.status_code == 200 and answer.json["checks"]["storage"]["kind"] == "s3"
        gateway.stop()
        down = client.get("/healthz")
        assert down.status_code == 503 and not down.json["checks"]["storage"]["ok"]
        assert down.json["checks"]["database"]["ok"]
    finally:
        gateway.stop()
        archive.close()


def test_metrics_add_up_every_process_of_the_node(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import CT_FILES, dcmtk
    from tests.dicom_scp.helpers import findscu

    server, url = start_web_server(tmp_path / "data", env={"MINIPACS_DICOM_WORKERS": "2",
                                                           "MINIPACS_HTTP_ANONYMOUS_READ": "true"})  # fmt: skip
    try:
        dcmtk("storescu", "-aec", server.aet, "127.0.0.1", server.port, CT_FILES[0], CT_FILES[1])
        dcmtk("storescu", "-aec", server.aet, "127.0.0.1", server.port, CT_FILES[0])  # the same again
        findscu(server, tmp_path / "find", "QueryRetrieveLevel=STUDY", "StudyInstanceUID=")
        assert requests.get(f"{url}/dicomweb/studies", timeout=30).status_code == 200
        answer = requests.get(f"{url}/metrics", timeout=30)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(answer.text) for s in family.samples}  # fmt: skip
        assert samples[("minipacs_instances_received_total", (("outcome", "stored"), ("via", "DIMSE")))] == 2
        assert samples[("minipacs_instances_received_total", (("outcome", "already_stored"), ("via", "DIMSE")))] == 1
        assert samples[("minipacs_received_bytes_total", (("via", "DIMSE"),))] > 1_000_000
        assert samples[("minipacs_ingest_seconds_count", (("via", "DIMSE"),))] == 3
        assert samples[("minipacs_query_seconds_count", (("kind", "C-FIND"),))] == 1
        assert samples[("minipacs_query_seconds_count", (("kind", "QIDO"),))] == 1
        assert samples[("minipacs_archive_instances", ())] == 2 and samples[("minipacs_archive_studies", ())] == 1
        assert samples[("minipacs_disk_free_bytes", ())] > 0
        assert "PatientName" not in answer.text and "Nguy" not in answer.text
    finally:
        server.stop()
    restarted, url = start_web_server(tmp_path / "data")
    try:  # a new run counts from zero; what is in the archive stays
        text_ = requests.get(f"{url}/metrics", timeout=30).text
        assert "minipacs_instances_received_total{" not in text_ and "minipacs_archive_instances 2.0" in text_
    finally:
        restarted.stop()


def test_scripts_styles_and_json_are_compressed_pages_and_images_are_not(tmp_path: Path) -> None:
    archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    try:
        client = create_app(archive, WebConfig(secret_file=tmp_path / "key")).test_client()
        gzip_only = {"Accept-Encoding": "gzip"}
        script = client.get("/assets/ui/ui.js", headers=gzip_only)
        assert script.status_code == 200 and script.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in script.headers["Vary"]
        import gzip

        assert gzip.decompress(script.data) == (Path(__file__).parents[2] / "viewer/static/ui/ui.js").read_bytes()
        assert client.get("/assets/ui/ui.css", headers={"Accept-Encoding": "br, gzip"}).headers["Content-Encoding"] == "br"
        page = client.get("/login-page", headers=gzip_only)
        assert page.status_code == 200 and "Content-Encoding" not in page.headers  # HTML holds a CSRF token: never
        plain = client.get("/assets/ui/ui.js")
        assert "Content-Encoding" not in plain.headers  # a client that did not ask gets it plain
    finally:
        archive.close()


def test_metrics_are_made_once_when_threads_ask_at_the_same_moment() -> None:
    """In a fresh process (this one may have made them already): eight threads store their first instance."""
    import subprocess
    import sys

    script = """
import threading
from archive.metrics import metrics, observe_ingest, _made
start = threading.Barrier(8)
failures = []
def first_store():
    start.wait()
    try:
        metrics()
    except BaseException as exc:
        failures.append(exc)
threads = [threading.Thread(target=first_store) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
observe_ingest("DIMSE", "stored", 10, 0.01)
print(len(failures), len(_made))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])  # fmt: skip
    assert done.stdout.split() == ["0", "1"], done.stdout + done.stderr
