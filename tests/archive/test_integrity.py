"""fsck: missing, corrupt and orphan objects are found (filesystem and S3), and --repair quarantines, never deletes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from archive import Archive, Origin
from archive.audit import search
from archive.integrity import QUARANTINE, fsck
from archive.models import Instance
from tests.archive.helpers import make_dataset, part10
from tests.appliance.util import run_cli
from tests.conftest import CT_FILES
from tests.storage.s3_server import S3Endpoint

ORIGIN = Origin("TEST", "", "DIMSE")


@pytest.fixture(params=["filesystem", "s3"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """An archive with three instances, its objects on the filesystem or on a real S3 server."""
    if request.param == "filesystem":
        archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    else:
        endpoint: S3Endpoint = request.getfixturevalue("s3")
        archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", endpoint.new_bucket_url("objects"),
                               access_key=endpoint.access_key, secret_key=endpoint.secret_key)  # fmt: skip
    for n in range(3):
        archive.ingest(io.BytesIO(part10(make_dataset(n + 1, pixel_bytes=64))), ORIGIN)
    yield archive
    archive.close()


def keys(archive: Archive) -> list[str]:
    with archive.db.read() as conn:
        return [str(k) for k in conn.execute(select(Instance.storage_key)).scalars()]


def test_a_sound_archive_is_clean(stored: Archive) -> None:
    report = fsck(stored.db, stored.objects, stored.audit)
    assert report.clean and report.checked == 3 and report.checked_bytes > 0


def test_missing_corrupt_and_orphan_objects_are_reported_then_quarantined(stored: Archive) -> None:
    gone, damaged, _ = sorted(keys(stored))
    with stored.objects.open(damaged) as f:
        original = f.read()
    stored.objects.delete(gone)
    stored.objects.delete(damaged)
    stored.objects.put(damaged, io.BytesIO(original[:-1] + bytes([original[-1] ^ 1])))  # one bit flipped
    stored.objects.put("2026/12/06/stray.dcm", io.BytesIO(b"left by a crash"))

    report = fsck(stored.db, stored.objects, stored.audit)
    found = sorted((f.kind, f.key) for f in report.findings)
    assert found == sorted([("missing", gone), ("corrupt", damaged), ("orphan", "2026/12/06/stray.dcm")])
    assert not any(f.quarantined for f in report.findings)
    assert stored.objects.exists(damaged) and stored.objects.exists("2026/12/06/stray.dcm")  # a check changes nothing

    repaired = fsck(stored.db, stored.objects, stored.audit, repair=True)
    assert sorted(f.key for f in repaired.findings if f.quarantined) == sorted([damaged, "2026/12/06/stray.dcm"])
    assert sorted(stored.objects.keys(QUARANTINE)) == sorted([f"{QUARANTINE}/{damaged}",
                                                               f"{QUARANTINE}/2026/12/06/stray.dcm"])  # fmt: skip
    with stored.objects.open(f"{QUARANTINE}/{damaged}") as f:
        assert f.read()[:-1] == original[:-1]  # kept, not deleted
    again = fsck(stored.db, stored.objects, stored.audit)
    assert sorted((f.kind, f.key) for f in again.findings) == sorted([("missing", gone), ("missing", damaged)])
    stored.audit.flush()
    assert {e.uid for e in search(stored.db, action="QUARANTINE")} == {damaged, "2026/12/06/stray.dcm"}


def test_minipacs_fsck_command(tmp_path: Path) -> None:
    imported = run_cli("import", CT_FILES[0], CT_FILES[1], "--data", "data", "--no-progress", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    clean = run_cli("fsck", "--data", "data", "--no-progress", cwd=tmp_path)
    assert clean.returncode == 0 and "2 objects checked" in clean.stdout and "0 missing, 0 corrupt, 0 orphans" in clean.stdout
    (tmp_path / "data" / "objects" / "stray.dcm").write_bytes(b"x")
    found = run_cli("fsck", "--data", "data", "--no-progress", cwd=tmp_path)
    assert found.returncode == 1 and "ORPHAN   stray.dcm" in found.stdout and "--repair" in found.stdout
    repaired = run_cli("fsck", "--repair", "--data", "data", "--no-progress", cwd=tmp_path)
    assert repaired.returncode == 1 and "moved to quarantine/" in repaired.stdout
    assert (tmp_path / "data" / "objects" / QUARANTINE / "stray.dcm").read_bytes() == b"x"
    assert run_cli("fsck", "--data", "data", "--no-progress", cwd=tmp_path).returncode == 0
    bad = run_cli("fsck", "--data", "data", "--bogus", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_images_stored_or_deleted_while_fsck_reads_are_not_problems(stored: Archive, tmp_path: Path) -> None:
    """fsck runs weekly on a live archive: what arrives or is deleted meanwhile must not fail it (nor be quarantined)."""
    with stored.db.read() as conn:  # the last one read: still there when the index is read, gone by its turn
        victim = str(conn.execute(select(Instance.storage_key).order_by(Instance.pk.desc())).scalars().first())
    during: list[int] = []

    def meanwhile(_: int) -> None:
        if not during:  # after the index was read, before the store is listed
            during.append(1)
            stored.ingest(io.BytesIO(part10(make_dataset(9, pixel_bytes=64))), ORIGIN)
            with stored.db.write() as conn:
                conn.execute(Instance.__table__.delete().where(Instance.storage_key == victim))
            stored.objects.delete(victim)

    report = fsck(stored.db, stored.objects, stored.audit, repair=True, progress=meanwhile)
    assert report.clean, report.findings
    assert fsck(stored.db, stored.objects, stored.audit).clean and len(keys(stored)) == 3
