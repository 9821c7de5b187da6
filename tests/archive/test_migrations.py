"""The Alembic migrations create exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from archive.db import Database, alembic_config, make_engine, migrate
from archive.models import Base
import worklist.models  # noqa: F401  (the worklist's tables are part of the one schema)
import reports.models  # noqa: F401  (and the reports')
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)

TABLES = {
    "alembic_version", "api_token", "application_entity", "audit_event", "duplicate_conflict", "instance",
    "name_token", "patient", "patient_identifier", "series", "series_request", "study", "user_account",
    "site_secret",
    # worklist/models.py
    "procedure_step", "step_event", "performed_step", "study_match", "hl7_message", "outbox_message",
    # reports/models.py
    "report", "report_version", "study_delivery", "device", "share_link", "signing_identity",
}  # fmt: skip


def test_upgrade_head_on_an_empty_database_creates_the_schema(index_url: str) -> None:
    engine = make_engine(index_url)
    try:
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        assert set(inspect(engine).get_table_names()) == TABLES
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
            assert MigrationContext.configure(conn).get_current_revision() == head
    finally:
        engine.dispose()


def test_models_match_the_migrations(index_url: str) -> None:
    engine = make_engine(index_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                             "compare_server_default": True})  # fmt: skip
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_compare_would_notice_a_difference(tmp_path: Path) -> None:
    # Guard for the test above: a schema that differs from the models is reported.
    engine = create_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_study_accession_number"))
            conn.execute(text("ALTER TABLE study ADD COLUMN extra TEXT"))
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in diffs)
        assert kinds == ["add_index", "remove_column"]
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(index_url: str) -> None:
    url = index_url
    first = Database.open(url)
    with first.write() as conn:
        conn.execute(text(
            "INSERT INTO application_entity (ae_title, host, port, description, created_at) "
            "VALUES ('CT1', '10.0.0.1', 104, '', '2026-11-20 10:00:00')"
        ))  # fmt: skip
    first.dispose()
    again = Database.open(url)  # migrates again: nothing to do, nothing lost
    try:
        migrate(again.engine)
        assert set(inspect(again.engine).get_table_names()) == TABLES
        with again.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
            assert conn.execute(text("SELECT ae_title FROM application_entity")).scalars().all() == ["CT1"]
    finally:
        again.dispose()


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            # case_sensitive_like cannot be read back: LIKE itself shows it.
            assert conn.exec_driver_sql("SELECT 'abc' LIKE 'ABC'").scalar_one() == 0
    finally:
        db.dispose()


def test_postgresql_connection_settings(index_url: str, index_backend: str) -> None:
    if index_backend != "postgresql":
        return
    db = Database.open(index_url)
    try:
        assert db.engine.pool.size() >= 4 and db.engine.pool._pre_ping  # type: ignore[attr-defined]
        with db.write() as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar_one() == "read committed"
            # DICOM wildcards need a case-sensitive LIKE: PostgreSQL's is.
            assert conn.exec_driver_sql("SELECT 'abc' LIKE 'ABC'").scalar_one() is False
    finally:
        db.dispose()
