"""Copy an index from one database to another, and objects from one store to another.

The engine of `minipacs backup`, `restore` and `migrate`. The index copy
reads every table inside one transaction of the source (a consistent
snapshot, also while `minipacs serve` keeps writing) and writes them in one
transaction of the target, parents before children: the target has all of it
or, if anything fails, none of it, so running the command again is the way to
resume. Object copies are incremental (keys are never reused: a key already
at the target is that object) and checked: the SHA-256 computed while writing
must be the one the index recorded.

The tables come from a MetaData the caller gives (the archive's, with the
worklist and reports tables registered), so archive/ imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, MetaData, Table, delete, func, insert, select, text

from archive.db import Database
from archive.errors import ArchiveError
from archive.integrity import Reference
from storage.base import ObjectStore, StorageError

log = logging.getLogger(__name__)

_BATCH = 2000


class TransferError(ArchiveError):
    """A copy that cannot go on; the message says what to do."""

    http_status = 409


def index_tables(metadata: MetaData) -> list[Table]:
    """Every table of the index, parents before children (alembic's own table is the target's business)."""
    return [t for t in metadata.sorted_tables if t.name != "alembic_version"]


def row_counts(db: Database, metadata: MetaData) -> dict[str, int]:
    with db.read() as conn:
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in index_tables(metadata)}  # fmt: skip


def copy_index(source: Database, target: Database, metadata: MetaData, *, replace: bool = False,
               progress: Callable[[str, int], None] | None = None) -> dict[str, int]:  # fmt: skip
    """Copy every row of every table; returns rows per table.

    The target's schema must be current (Database.open migrates it). It must
    be empty unless `replace`, which deletes its rows first, in the same transaction.
    """
    tables = index_tables(metadata)
    copied: dict[str, int] = {}
    with _snapshot(source) as src, target.write() as dst:
        present = {t.name: int(dst.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables}
        if any(present.values()) and not replace:
            filled = ", ".join(f"{name} ({n} rows)" for name, n in present.items() if n)
            raise TransferError(f"the target index is not empty: {filled}; use an empty database")
        for table in reversed(tables):
            if present[table.name]:
                dst.execute(delete(table))
        for table in tables:
            copied[table.name] = 0
            timestamps = [c.name for c in table.columns if isinstance(c.type, DateTime) and c.type.timezone]
            order = list(table.primary_key.columns) or list(table.columns)[:1]
            result = src.execution_options(yield_per=_BATCH).execute(select(table).order_by(*order))
            for chunk in result.partitions(_BATCH):
                rows = [_utc_rows(dict(r._mapping), timestamps) for r in chunk]
                dst.execute(insert(table), rows)
                copied[table.name] += len(rows)
                if progress:
                    progress(table.name, len(rows))
        if target.engine.dialect.name == "postgresql":
            _advance_sequences(dst, tables)
    log.info("copied the index: %d rows in %d tables", sum(copied.values()), len(copied))
    return copied


class _snapshot:  # noqa: N801 - a context manager, used like a function
    """A read transaction on `db` that sees one moment (REPEATABLE READ on PostgreSQL; SQLite's reads do)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn: Any = None

    def __enter__(self) -> Any:
        self.conn = self.db.engine.connect()
        if self.db.engine.dialect.name == "postgresql":
            self.conn = self.conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            self.conn.exec_driver_sql("BEGIN")  # one SQLite read transaction: one snapshot across tables
        return self.conn

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


def _utc_rows(row: dict[str, Any], timestamps: list[str]) -> dict[str, Any]:
    # SQLite gives back naive times (stored as UTC); PostgreSQL would read them in its session's zone.
    for name in timestamps:
        value = row.get(name)
        if isinstance(value, datetime) and value.tzinfo is None:
            row[name] = value.replace(tzinfo=UTC)
    return row


def _advance_sequences(conn: Any, tables: Iterable[Table]) -> None:
    """Rows came with their keys: move each serial sequence past the largest, or the next insert collides."""
    for table in tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        column = keys[0].name  # names from our own metadata, quoted
        conn.execute(text(f'SELECT setval(pg_get_serial_sequence(:t, :c), '
                          f'COALESCE((SELECT MAX("{column}") FROM "{table.name}"), 0) + 1, false)'),
                     {"t": table.name, "c": column})  # fmt: skip


def copy_objects(source: ObjectStore, target: ObjectStore, references: Iterable[Reference], *,
                 source_prefix: str = "", target_prefix: str = "", existing: set[str] | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[int, int]:  # fmt: skip
    """Copy each referenced object not already at the target; returns (copied, already there).

    `existing` (keys at the target, listed once by the caller) saves a round
    trip per object on S3. A copy whose SHA-256 differs from the index's is
    removed from the target and reported: the source is damaged (run fsck).
    """
    copied = skipped = 0
    for ref in references:
        src_key = f"{source_prefix}{ref.key}"
        dst_key = f"{target_prefix}{ref.key}"
        if (existing is not None and dst_key in existing) or (existing is None and target.exists(dst_key)):
            skipped += 1
            if progress:
                progress(ref.size or 0)
            continue
        try:
            with source.open(src_key) as stream:
                put = target.put(dst_key, stream)
        except FileNotFoundError:
            raise TransferError(f"{ref.what}: its object {src_key} is missing from the source; "
                                "run `minipacs fsck` there") from None  # fmt: skip
        except (OSError, StorageError) as exc:
            raise TransferError(f"{ref.what}: cannot copy {src_key}: {exc}; run the command again to resume") from exc
        if ref.sha256 and put.sha256 != ref.sha256:
            target.delete(dst_key)
            raise TransferError(f"{ref.what}: {src_key} does not match the SHA-256 in the index (damaged); "
                                "run `minipacs fsck` on the source")  # fmt: skip
        copied += 1
        if progress:
            progress(put.size)
    return copied, skipped
