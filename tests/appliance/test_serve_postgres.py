"""`minipacs serve` with its index on a real PostgreSQL (database.url).

Every process uses it: the DICOM worker processes (C-STORE, C-FIND) and the
HTTP workers (QIDO-RS); no SQLite index appears in the data directory. A
restart of PostgreSQL costs at most the requests in flight: the next store
and query work without restarting minipacs (pool_pre_ping).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from archive import Archive, Origin
from archive.audit import search

from tests.conftest import CT_FILES, dcmtk, free_port, start_server
from tests.dicom_scp.helpers import findscu
from tests.pg import LocalPostgres, PostgresServer


@pytest.fixture
def own_postgres() -> Iterator[tuple[LocalPostgres, PostgresServer]]:
    """A PostgreSQL of this test's own, which it may restart."""
    if os.environ.get("MINIPACS_TEST_DATABASE_URL"):
        pytest.skip("restarts a local PostgreSQL; MINIPACS_TEST_DATABASE_URL names an external one")
    local = LocalPostgres()
    server = local.start()
    try:
        yield local, server
    finally:
        local.stop()


def qido_studies(http_port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/dicomweb/studies", timeout=30) as r:
        return [s["0020000D"]["Value"][0] for s in json.loads(r.read() or b"[]")]


def test_serve_on_postgresql_survives_a_database_restart(
    tmp_path: Path, own_postgres: tuple[LocalPostgres, PostgresServer]
) -> None:
    local, pg = own_postgres
    url = pg.create_database()
    http_port = free_port()
    server = start_server(tmp_path / "data", env={
        "MINIPACS_DATABASE_URL": url, "MINIPACS_DICOM_WORKERS": "2",
        "MINIPACS_HTTP_PORT": str(http_port), "MINIPACS_HTTP_ANONYMOUS_READ": "true",
    })  # fmt: skip
    try:
        dcmtk("storescu", "-aec", server.aet, "127.0.0.1", server.port, CT_FILES[0])
        study = str(__import__("pydicom").dcmread(CT_FILES[0], stop_before_pixels=True).StudyInstanceUID)
        found, _ = findscu(server, tmp_path / "find1", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
        assert [str(d.StudyInstanceUID) for d in found] == [study]
        assert qido_studies(http_port) == [study]

        local.restart()  # every pooled connection of every minipacs process is now cut

        dcmtk("storescu", "-aec", server.aet, "127.0.0.1", server.port, CT_FILES[1])
        found, _ = findscu(server, tmp_path / "find2", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
                           "SOPInstanceUID=")  # fmt: skip
        assert len(found) == 2
        assert qido_studies(http_port) == [study]
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
    assert not (tmp_path / "data" / "index.sqlite").exists()


def test_audit_events_wait_out_a_database_outage(
    tmp_path: Path, own_postgres: tuple[LocalPostgres, PostgresServer]
) -> None:
    local, pg = own_postgres
    archive = Archive.open(pg.create_database(), str(tmp_path / "objects"))
    try:
        down = threading.Thread(target=local.down_for, args=(2.0,))
        down.start()
        time.sleep(0.5)  # the server is going or gone when the event is written
        archive.audit.record(Origin("tester", via="CLI"), "TEST", "STUDY", "1.2.3", "ok", "during the outage")
        down.join()
        archive.audit.flush(timeout=60)
        assert [(e.action, e.detail) for e in search(archive.db, action="TEST")] == [("TEST", "during the outage")]
    finally:
        archive.close()
