"""backup, restore and migrate with real servers: a folder, a real S3 server, SQLite and PostgreSQL.

The site has images, users, an order and its history, a signed-off audit
trail; after each copy the target answers the same and `fsck` finds nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.cli_backup import ALREADY_RUNNING
from archive import Archive, Origin
from archive.db import Database
from archive.lease import Lease
from archive.site_keys import shared_key
from tests.appliance.util import assert_one_line_error, cli_env, instance_count, run_cli
from tests.conftest import CT_FILES, DX_FILE, US_FILES
from tests.pg import PostgresServer
from tests.storage.s3_server import S3Endpoint
from tests.worklist.helpers import HIS, order
from worklist.service import Worklist

ADMIN = Origin("cli:test", "", "CLI")
PASSWORD = "phong doc phim 2026"


def make_site(root: Path) -> Path:
    """A data directory with the sample images, a user, and an HIS order."""
    done = run_cli("import", CT_FILES[0], CT_FILES[1], DX_FILE, US_FILES[0], "--data", "data", "--no-progress",
                   cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    archive = Archive.open(f"sqlite:///{root / 'data' / 'index.sqlite'}", str(root / "data" / "objects"))
    try:
        archive.accounts.add_user("bs.lan", "radiologist", PASSWORD, ADMIN, display_name="BS. Trần Thị Lan")
        Worklist(archive).create(order("HIS-1", "ACC1"), HIS)
        shared_key(archive.db, "http-session")  # made as `minipacs serve` would
    finally:
        archive.close()
    return root / "data"


def summary(archive: Archive) -> tuple[int, int, list[str], bool, str]:
    stats = archive.statistics()
    user = archive.accounts.authenticate("bs.lan", PASSWORD)
    return (stats.studies, stats.instances, sorted(u.username for u in archive.accounts.users()), user is not None,
            Worklist(archive).get("ACC1").patient.name)  # fmt: skip


def test_backup_is_incremental_and_restores_into_a_new_box(tmp_path: Path) -> None:
    data = make_site(tmp_path)
    first = run_cli("backup", str(tmp_path / "usb"), "--data", "data", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0 and "4 objects copied, 0 already there" in first.stdout, first.stderr
    run_cli("import", CT_FILES[2], "--data", "data", "--no-progress", cwd=tmp_path)
    second = run_cli("backup", str(tmp_path / "usb"), "--data", "data", "--no-progress", cwd=tmp_path)
    assert second.returncode == 0 and "1 objects copied, 4 already there" in second.stdout
    listed = run_cli("restore", str(tmp_path / "usb"), "--list", "--data", "x", cwd=tmp_path)
    assert len(listed.stdout.splitlines()) == 2 and "5 instances" in listed.stdout.splitlines()[1]

    restored = run_cli("restore", str(tmp_path / "usb"), "--data", "new-box", "--no-progress", cwd=tmp_path)
    assert restored.returncode == 0 and "5 instances" in restored.stdout, restored.stderr
    fsck = run_cli("fsck", "--data", "new-box", "--no-progress", cwd=tmp_path)
    assert fsck.returncode == 0 and "5 objects checked" in fsck.stdout
    old = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    new = Archive.open(f"sqlite:///{tmp_path / 'new-box' / 'index.sqlite'}", str(tmp_path / "new-box" / "objects"))
    try:
        assert summary(new) == summary(old) and summary(new)[3]
        # The key of sessions and patient links came along: links sent before the disaster still open.
        assert shared_key(new.db, "http-session") == shared_key(old.db, "http-session")
    finally:
        old.close()
        new.close()

    older = listed.stdout.splitlines()[0].split()[0]
    again = run_cli("restore", str(tmp_path / "usb"), "--snapshot", older, "--data", "new-box", cwd=tmp_path)
    assert_one_line_error(again, 1)
    assert "not empty" in again.stderr
    bad = run_cli("restore", str(tmp_path / "usb"), "--snapshot", "19990101T000000Z", "--data", "other", cwd=tmp_path)
    assert_one_line_error(bad, 1)
    assert "--list" in bad.stderr


def test_a_backup_cut_off_before_its_manifest_does_not_count(tmp_path: Path) -> None:
    make_site(tmp_path)
    assert run_cli("backup", str(tmp_path / "usb"), "--data", "data", "--no-progress", cwd=tmp_path).returncode == 0
    [manifest] = (tmp_path / "usb" / "snapshots").iterdir()
    manifest.unlink()
    nothing = run_cli("restore", str(tmp_path / "usb"), "--data", "new-box", cwd=tmp_path)
    assert_one_line_error(nothing, 1)
    assert "no complete backup" in nothing.stderr


def test_a_damaged_image_stops_the_backup_and_says_run_fsck(tmp_path: Path) -> None:
    data = make_site(tmp_path)
    victim = next(p for p in (data / "objects").rglob("*.dcm"))
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    failed = run_cli("backup", str(tmp_path / "usb"), "--data", "data", "--no-progress", cwd=tmp_path)
    assert_one_line_error(failed, 1)
    assert "damaged" in failed.stderr and "fsck" in failed.stderr
    assert not (tmp_path / "usb" / "snapshots").exists() or not list((tmp_path / "usb" / "snapshots").iterdir())


def test_backup_to_s3_and_restore_from_it(tmp_path: Path, s3: S3Endpoint) -> None:
    make_site(tmp_path)
    url = s3.new_bucket_url("minipacs")
    env = cli_env(MINIPACS_BACKUP_ACCESS_KEY=s3.access_key, MINIPACS_BACKUP_SECRET_KEY=s3.secret_key)
    done = run_cli("backup", url, "--data", "data", "--no-progress", cwd=tmp_path, env=env)
    assert done.returncode == 0 and "4 objects copied" in done.stdout, done.stderr
    restored = run_cli("restore", url, "--data", "new-box", "--no-progress", cwd=tmp_path, env=env)
    assert restored.returncode == 0 and "4 instances" in restored.stdout, restored.stderr
    assert run_cli("fsck", "--data", "new-box", "--no-progress", cwd=tmp_path).returncode == 0
    wrong = run_cli("backup", url, "--data", "data", cwd=tmp_path,
                    env=cli_env(MINIPACS_BACKUP_ACCESS_KEY="nobody", MINIPACS_BACKUP_SECRET_KEY="wrong-secret-1"))  # fmt: skip
    assert_one_line_error(wrong, 1)


def test_migrate_to_postgresql_and_s3_then_back_up_and_restore_on_sqlite(
    tmp_path: Path, postgres: PostgresServer, s3: S3Endpoint
) -> None:
    data = make_site(tmp_path)
    db_url, store_url = postgres.create_database(), s3.new_bucket_url("objects")
    env = cli_env(MINIPACS_TO_STORAGE_ACCESS_KEY=s3.access_key, MINIPACS_TO_STORAGE_SECRET_KEY=s3.secret_key)
    moved = run_cli("migrate", "--to-database", db_url, "--to-storage", store_url, "--data", "data",
                    "--no-progress", cwd=tmp_path, env=env)  # fmt: skip
    assert moved.returncode == 0 and "Images: 4 copied" in moved.stdout, moved.stderr
    run_cli("import", CT_FILES[2], "--data", "data", "--no-progress", cwd=tmp_path)  # still arriving meanwhile
    again = run_cli("migrate", "--to-database", db_url, "--to-storage", store_url, "--data", "data",
                    "--no-progress", cwd=tmp_path, env=env)  # fmt: skip
    assert again.returncode == 0 and "Images: 1 copied, 4 already there" in again.stdout, again.stderr

    on_pg = cli_env(MINIPACS_DATABASE_URL=db_url, MINIPACS_STORAGE_URL=store_url,
                    MINIPACS_STORAGE_ACCESS_KEY=s3.access_key, MINIPACS_STORAGE_SECRET_KEY=s3.secret_key)  # fmt: skip
    fsck = run_cli("fsck", "--data", "pg-site", "--no-progress", cwd=tmp_path, env=on_pg)
    assert fsck.returncode == 0 and "5 objects checked" in fsck.stdout, fsck.stdout + fsck.stderr
    migrated = Archive.open(db_url, store_url, access_key=s3.access_key, secret_key=s3.secret_key)
    old = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        assert summary(migrated) == summary(old)
        migrated.accounts.add_user("ktv.hoa", "technologist", PASSWORD, ADMIN)  # sequences moved past the copied keys
    finally:
        migrated.close()
        old.close()

    backup = run_cli("backup", str(tmp_path / "nas"), "--data", "pg-site", "--no-progress", cwd=tmp_path,
                     env={**on_pg, "MINIPACS_BACKUP_ACCESS_KEY": "", "MINIPACS_BACKUP_SECRET_KEY": ""})  # fmt: skip
    assert backup.returncode == 0, backup.stderr
    [snapshot] = (tmp_path / "nas" / "index").iterdir()
    with sqlite3.connect(snapshot) as conn:  # a PostgreSQL site's backup is a SQLite file
        assert conn.execute("SELECT count(*) FROM user_account").fetchone() == (2,)
    home = run_cli("restore", str(tmp_path / "nas"), "--data", "home", "--no-progress", cwd=tmp_path)
    assert home.returncode == 0 and "5 instances" in home.stdout, home.stderr
    assert run_cli("fsck", "--data", "home", "--no-progress", cwd=tmp_path).returncode == 0
    postgres.drop_database(db_url)


def test_migrate_needs_a_destination_and_a_reachable_database(tmp_path: Path) -> None:
    make_site(tmp_path)
    nowhere = run_cli("migrate", "--data", "data", cwd=tmp_path)
    assert_one_line_error(nowhere, 1)
    assert "--to-database" in nowhere.stderr
    down = run_cli("migrate", "--to-database", "postgresql+psycopg://u:secret@127.0.0.1:1/x", "--data", "data",
                   cwd=tmp_path)  # fmt: skip
    assert_one_line_error(down, 1)
    assert "secret" not in down.stderr


# --- backup.destination: what the nightly timer runs (`minipacs backup`, no DEST) ---------------------


def test_backup_without_a_destination_says_what_to_set_and_writes_nothing(tmp_path: Path) -> None:
    data = make_site(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    nowhere = run_cli("backup", "--data", "data", "--no-progress", cwd=tmp_path)
    line = assert_one_line_error(nowhere, 2)
    assert "backup.destination" in line and "MINIPACS_BACKUP_DESTINATION" in line, line
    assert sorted(tmp_path.rglob("*")) == before  # no folder, no lease file, no index change
    assert instance_count(data) == 4


def test_backup_goes_to_backup_destination_from_the_file_or_the_environment(tmp_path: Path) -> None:
    make_site(tmp_path)
    (tmp_path / "minipacs.toml").write_text('data = "data"\n\n[backup]\ndestination = "nas"\n', encoding="utf-8")
    env = cli_env(MINIPACS_BACKUP_ACCESS_KEY="", MINIPACS_BACKUP_SECRET_KEY="")  # what backup.env may hold
    nightly = run_cli("backup", "--no-progress", cwd=tmp_path, env=env)
    assert nightly.returncode == 0 and "4 objects copied" in nightly.stdout, nightly.stderr
    assert "ignoring the environment variable" not in nightly.stderr  # the key pair is not an unknown setting
    assert len(list((tmp_path / "nas" / "snapshots").iterdir())) == 1
    usb = run_cli("backup", "--no-progress", cwd=tmp_path, env={**env, "MINIPACS_BACKUP_DESTINATION": "usb"})
    assert usb.returncode == 0 and "4 objects copied" in usb.stdout, usb.stderr
    given = run_cli("backup", "elsewhere", "--no-progress", cwd=tmp_path,
                    env={**env, "MINIPACS_BACKUP_DESTINATION": "usb"})  # fmt: skip
    assert given.returncode == 0 and "in elsewhere" in given.stdout, given.stderr  # DEST wins over the setting
    assert [len(list((tmp_path / d / "snapshots").iterdir())) for d in ("nas", "usb", "elsewhere")] == [1, 1, 1]


# --- one backup (and one fsck) at a time, across nodes ------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_backup_fsck_or_retention_stands_by_while_one_runs(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        data = make_site(tmp_path)
        db_url, env = f"sqlite:///{data / 'index.sqlite'}", cli_env()
    else:  # two nodes on one PostgreSQL: the lease is an advisory lock, not a file on either box
        postgres: PostgresServer = request.getfixturevalue("postgres")
        db_url = postgres.create_database()
        env = cli_env(MINIPACS_DATABASE_URL=db_url)
        assert run_cli("import", CT_FILES[0], "--data", "data", "--no-progress", cwd=tmp_path, env=env).returncode == 0
    env["MINIPACS_BACKUP_DESTINATION"] = str(tmp_path / "nas")
    env["MINIPACS_RETENTION_RULES"] = "*:100y"  # nothing is due; the lease is taken all the same
    other_node = Database.open(db_url)
    leases = [Lease(other_node, "backup"), Lease(other_node, "fsck"), Lease(other_node, "retention")]
    try:
        assert all(lease.held() for lease in leases)
        skipped = run_cli("backup", "--data", "data", "--no-progress", cwd=tmp_path, env=env)
        line = assert_one_line_error(skipped, ALREADY_RUNNING)
        assert "already running" in line and "backup" in line
        assert not (tmp_path / "nas").exists()  # nothing written
        fsck = run_cli("fsck", "--data", "data", "--no-progress", cwd=tmp_path, env=env)
        assert "already running" in assert_one_line_error(fsck, ALREADY_RUNNING) and "checked" not in fsck.stdout
        retention = run_cli("retention", "--data", "data", "--no-progress", cwd=tmp_path, env=env)
        assert "already running" in assert_one_line_error(retention, ALREADY_RUNNING)
        assert "deleted" not in retention.stdout
    finally:
        for lease in leases:
            lease.release()
        other_node.engine.dispose()
    done = run_cli("backup", "--data", "data", "--no-progress", cwd=tmp_path, env=env)
    assert done.returncode == 0 and "objects copied" in done.stdout, done.stderr  # the lease was the only reason
    assert run_cli("fsck", "--data", "data", "--no-progress", cwd=tmp_path, env=env).returncode == 0
    retention = run_cli("retention", "--data", "data", "--no-progress", cwd=tmp_path, env=env)
    assert retention.returncode == 0 and "deleted the images of 0 studies" in retention.stdout, retention.stderr
    if backend == "postgresql":
        postgres.drop_database(db_url)
