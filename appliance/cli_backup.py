"""`minipacs backup`, `restore` and `migrate`: the index and the images, copied consistently.

A backup is a folder (a USB disk, a NAS mount) or an S3 bucket URL, holding:

- ``index/<time>.sqlite``: a snapshot of the whole index taken in one
  transaction (a SQLite file whatever the database, so a PostgreSQL site can
  be restored on a box without PostgreSQL, and the other way round);
- ``objects/<key>``: every image and report PDF, copied once: later backups
  copy only what is new (keys are never reused);
- (the key of browser sessions, patient links and IID tokens is in the
  index, archive/site_keys.py; backups made before it was kept there hold
  it as ``http-session.key``, which `restore` still puts back);
- ``snapshots/<time>.json``: written last, so a backup that was cut off does
  not count; `restore` takes the newest (or ``--snapshot TIME``).

`migrate` moves a running site to PostgreSQL and/or S3: images first (long,
resumable: run it again and it copies what is missing), then the index in
one transaction. Stop `minipacs serve` before the final run so nothing
arrives in between, then point `database.url` and `storage.url` at the new
places.

Backups and checks run unattended from systemd timers (appliance/systemd/),
on every node of a scaled-out site: a lease through the database lets one
`minipacs backup` run at a time; another one exits with ALREADY_RUNNING.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from appliance.services import ServiceError, open_archive
from appliance.settings import Settings, SettingsError

SNAPSHOTS = "snapshots"

#: Exit status of a backup or fsck that did not start because another one holds its lease (on this
#: node or another): EX_TEMPFAIL of sysexits.h, "try again later". The systemd units count it as
#: success (SuccessExitStatus=75), so a node that stood by is not listed by `systemctl --failed`.
ALREADY_RUNNING = 75


class BackupError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = ("S3 destinations take their key pair from {prefix}_ACCESS_KEY and {prefix}_SECRET_KEY "
            "(else the archive's own storage keys).")  # fmt: skip
    backup = sub.add_parser("backup", parents=[common], help="back up the index and the images",
                            description="Copy a consistent snapshot of the index and every image not yet backed up "
                            "to DEST: a folder or s3://HOST:PORT/BUCKET[/PREFIX] (s3+https:// for TLS); without "
                            "DEST, to the setting backup.destination. Safe while `minipacs serve` runs. One backup "
                            f"runs at a time across all nodes; another one exits with status {ALREADY_RUNNING} "
                            "and copies nothing. " + keys.format(prefix="MINIPACS_BACKUP"),
                            epilog="examples:\n  minipacs backup /mnt/usb/minipacs-backup\n"
                            "  minipacs backup                  (to backup.destination, as the nightly timer does)\n"
                            "  MINIPACS_BACKUP_ACCESS_KEY=... MINIPACS_BACKUP_SECRET_KEY=... "
                            "minipacs backup s3+https://nas.local:9000/pacs-backup",
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    backup.add_argument("destination", metavar="DEST", nargs="?",
                        help="a folder or an S3 URL (default: the setting backup.destination)")  # fmt: skip
    backup.add_argument("--no-progress", action="store_true", help="no progress bar (for scripts)")
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser("restore", parents=[common], help="restore the index and the images from a backup",
                             description="Restore the newest snapshot of SOURCE (or --snapshot TIME) into this "
                             "site's database and store, which must be empty (a new box, a new database). Images "
                             "are copied first and checked against their SHA-256, then the index. "
                             + keys.format(prefix="MINIPACS_BACKUP"),
                             epilog="examples:\n  minipacs restore /mnt/usb/minipacs-backup --data /srv/minipacs\n"
                             "  minipacs restore /mnt/usb/minipacs-backup --list",
                             formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    restore.add_argument("source", metavar="SOURCE", help="the backup's folder or S3 URL")
    restore.add_argument("--snapshot", metavar="TIME", help="which snapshot (as --list shows it); default: the newest")
    restore.add_argument("--list", action="store_true", help="list the snapshots and stop")
    restore.add_argument("--no-progress", action="store_true", help="no progress bar (for scripts)")
    restore.set_defaults(func=cmd_restore)

    migrate = sub.add_parser("migrate", parents=[common], help="move the index and images to PostgreSQL and/or S3",
                             description="Copy this site's images to --to-storage and its index to --to-database. "
                             "Images are copied once (run again to resume after an interruption); the index is "
                             "copied in one transaction and replaces what the target holds. Run it once while "
                             "serving, stop `minipacs serve`, run it again (quick: only what is new), then set "
                             "database.url and storage.url to the new places. "
                             + keys.format(prefix="MINIPACS_TO_STORAGE"),
                             epilog="example:\n  minipacs migrate --to-database "
                             "postgresql+psycopg://minipacs:PASS@db/minipacs --to-storage s3://minio:9000/pacs",
                             formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    migrate.add_argument("--to-database", metavar="URL", help="the new index database (default: keep this one)")
    migrate.add_argument("--to-storage", metavar="URL", help="the new object store (default: keep this one)")
    migrate.add_argument("--no-progress", action="store_true", help="no progress bar (for scripts)")
    migrate.set_defaults(func=cmd_migrate)


def _metadata() -> Any:
    import reports.models  # noqa: F401  (registers the reports' tables)
    import worklist.models  # noqa: F401  (and the worklist's)
    from archive.models import Base

    return Base.metadata


def _references(db: Any) -> list[Any]:
    from archive.integrity import instance_references
    from reports.stored_objects import pdf_references

    with db.read() as conn:
        return [*instance_references(conn), *pdf_references(conn)]


def _open_store(url: str, prefix: str, settings: Settings) -> Any:
    from storage import StorageError, StorageURLError, open_store

    try:
        return open_store(url, access_key=os.environ.get(f"{prefix}_ACCESS_KEY", settings["storage.access_key"]),
                          secret_key=os.environ.get(f"{prefix}_SECRET_KEY", settings["storage.secret_key"]))  # fmt: skip
    except (StorageError, StorageURLError, OSError) as exc:
        raise BackupError(f"cannot use {url}: {exc}") from exc


def _bar(args: argparse.Namespace, total: int, desc: str) -> Any:
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=args.no_progress, file=sys.stderr)


def _archive(settings: Settings) -> Any:
    try:
        return open_archive(settings)
    except ServiceError as exc:
        raise BackupError(str(exc)) from exc


def already_running(command: str) -> int:
    """Say that another `minipacs COMMAND` holds the lease, in one line; the exit status to return."""
    print(f"minipacs: {command}: already running (another `minipacs {command}` on this or another node); "
          "nothing done this time", file=sys.stderr)  # fmt: skip
    return ALREADY_RUNNING


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from archive.lease import Lease

    destination: str = args.destination or settings["backup.destination"]
    if not destination:  # before the archive is opened: nothing is created anywhere
        raise SettingsError("no backup destination: give one (minipacs backup /mnt/usb/minipacs-backup) or set "
                            "backup.destination in minipacs.toml (or MINIPACS_BACKUP_DESTINATION)")  # fmt: skip
    archive = _archive(settings)
    try:
        lease = Lease(archive.db, "backup")
        if not lease.held():
            return already_running("backup")
        try:
            return _backup(args, settings, archive, destination)
        finally:
            lease.release()
    finally:
        archive.close()


def _backup(args: argparse.Namespace, settings: Settings, archive: Any, destination: str) -> int:
    from archive.db import Database
    from archive.transfer import TransferError, copy_index, copy_objects

    dest = _open_store(destination, "MINIPACS_BACKUP", settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        with tempfile.TemporaryDirectory(prefix="minipacs-backup-") as scratch:
            snapshot_path = Path(scratch) / "index.sqlite"
            snapshot = Database.open(f"sqlite:///{snapshot_path}")
            try:
                counts = copy_index(archive.db, snapshot, _metadata())
                references = _references(snapshot)  # what this snapshot needs: taken from it, not from the live index
            finally:
                snapshot.engine.dispose()
            with snapshot_path.open("rb") as f:
                dest.put(f"index/{stamp}.sqlite", f)
        existing = set(dest.keys("objects"))
        with _bar(args, sum(r.size or 0 for r in references), "images") as bar:
            copied, skipped = copy_objects(archive.objects, dest, references, target_prefix="objects/",
                                           existing=existing, progress=bar.update)  # fmt: skip
        manifest = {"time": stamp, "index": f"index/{stamp}.sqlite", "rows": counts,
                    "objects": len(references), "copied": copied, "already_backed_up": skipped,
                    "bytes": sum(r.size or 0 for r in references)}  # fmt: skip
        dest.put(f"{SNAPSHOTS}/{stamp}.json", _bytes(json.dumps(manifest, indent=1)))
    except (TransferError, OSError) as exc:
        raise BackupError(f"backup not complete: {getattr(exc, 'message', exc)}") from exc
    print(f"Backup {stamp} in {destination}: index ({counts.get('instance', 0)} instances, "
          f"{counts.get('report', 0)} reports, {counts.get('user_account', 0)} users), "
          f"{copied} objects copied, {skipped} already there.")  # fmt: skip
    return 0


def _bytes(text: str) -> Any:
    import io

    return io.BytesIO(text.encode())


def _snapshots(source: Any) -> list[str]:
    return sorted(k.rsplit("/", 1)[-1].removesuffix(".json") for k in source.keys(SNAPSHOTS) if k.endswith(".json"))


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from archive.db import Database
    from archive.transfer import TransferError, copy_index, copy_objects

    source = _open_store(args.source, "MINIPACS_BACKUP", settings)
    stamps = _snapshots(source)
    if args.list:
        for stamp in stamps:
            with source.open(f"{SNAPSHOTS}/{stamp}.json") as f:
                info = json.load(f)
            print(f"{stamp}  {info['rows'].get('instance', 0)} instances, {info['objects']} objects, "
                  f"{info['bytes'] / 2**20:.1f} MB")  # fmt: skip
        return 0
    if not stamps:
        raise BackupError(f"no complete backup in {args.source} (no {SNAPSHOTS}/*.json)")
    stamp = args.snapshot or stamps[-1]
    if stamp not in stamps:
        raise BackupError(f"no snapshot {stamp} in {args.source}; --list shows them")
    archive = _archive(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="minipacs-restore-") as scratch:
            snapshot_path = Path(scratch) / "index.sqlite"
            with source.open(f"index/{stamp}.sqlite") as f, snapshot_path.open("wb") as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
            snapshot = Database.open(f"sqlite:///{snapshot_path}")  # an older backup is brought up to date here
            try:
                from archive.transfer import row_counts

                if any(row_counts(archive.db, _metadata()).values()):
                    raise BackupError("this site's index is not empty: restore into a new data directory "
                                      "(--data) or an empty database")  # fmt: skip
                references = _references(snapshot)
                existing = set(archive.objects.keys())
                with _bar(args, sum(r.size or 0 for r in references), "images") as bar:
                    copied, skipped = copy_objects(source, archive.objects, references, source_prefix="objects/",
                                                   existing=existing, progress=bar.update)  # fmt: skip
                counts = copy_index(snapshot, archive.db, _metadata())
            finally:
                snapshot.engine.dispose()
        key_file = settings.data_dir / "http-session.key"
        if source.exists("http-session.key") and not key_file.exists():
            with source.open("http-session.key") as f:
                key_file.write_bytes(f.read())
            key_file.chmod(0o600)
    except TransferError as exc:
        raise BackupError(f"restore not complete: {exc.message}") from exc
    finally:
        archive.close()
    print(f"Restored {stamp}: {counts.get('instance', 0)} instances, {counts.get('report', 0)} reports, "
          f"{counts.get('user_account', 0)} users; {copied} objects copied, {skipped} already there.")  # fmt: skip
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from archive.db import Database
    from archive.transfer import TransferError, copy_index, copy_objects

    if not args.to_database and not args.to_storage:
        raise BackupError("say where to: --to-database URL and/or --to-storage URL")
    archive = _archive(settings)
    target_db = archive.db
    target_store = archive.objects
    try:
        if args.to_database:
            try:
                target_db = Database.open(args.to_database)
            except Exception as exc:  # a wrong URL, an unreachable server: say which and stop
                raise BackupError(f"cannot use the database {args.to_database.split('@')[-1]}: "
                                  f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from None  # fmt: skip
        if args.to_storage:
            target_store = _open_store(args.to_storage, "MINIPACS_TO_STORAGE", settings)
        if args.to_storage:
            references = _references(archive.db)
            existing = set(target_store.keys())
            with _bar(args, sum(r.size or 0 for r in references), "images") as bar:
                copied, skipped = copy_objects(archive.objects, target_store, references, existing=existing,
                                               progress=bar.update)  # fmt: skip
            print(f"Images: {copied} copied, {skipped} already there.")
        if args.to_database:
            with tqdm(desc="index rows", unit=" rows", disable=args.no_progress, file=sys.stderr) as bar:
                counts = copy_index(archive.db, target_db, _metadata(), replace=True,
                                    progress=lambda _table, n: bar.update(n))  # fmt: skip
            print(f"Index: {sum(counts.values())} rows ({counts.get('instance', 0)} instances) copied.")
        if args.to_storage and args.to_database:
            late = copy_objects(archive.objects, target_store, _references(target_db), existing=set(target_store.keys()))
            if late[0]:
                print(f"Images that arrived meanwhile: {late[0]} copied.")
    except TransferError as exc:
        raise BackupError(f"migration not complete: {exc.message}; run the same command again to resume") from exc
    finally:
        if target_db is not archive.db:
            target_db.engine.dispose()
        archive.close()
    print("Now set" + (f" database.url = {args.to_database.split('@')[-1]!r} (with its user and password)"
                       if args.to_database else "")
          + (" and" if args.to_database and args.to_storage else "")
          + (f" storage.url = {args.to_storage!r}" if args.to_storage else "")
          + " in minipacs.toml and start `minipacs serve` again.")  # fmt: skip
    return 0
