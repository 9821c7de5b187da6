"""Database engine, connection settings and schema migrations.

SQLite is the embedded default: WAL so readers never wait for the writer,
``synchronous=FULL`` so a committed row survives a power cut (the promise
that a success means durable), and ``case_sensitive_like`` so LIKE behaves as
DICOM wildcard matching requires (case-sensitive) and can use indexes.
PostgreSQL (``postgresql+psycopg://``, psycopg 3) is the scaled-out index:
its LIKE is case-sensitive already and it takes several writers at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    """The default index location inside the data directory."""
    return f"sqlite:///{(data_dir / 'index.sqlite').resolve()}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine for `url` with the settings each backend needs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            pool_size=16,
            max_overflow=16,
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    # PostgreSQL (postgresql+psycopg://): several writers at once, each at
    # READ COMMITTED; races between them end in a unique-constraint error
    # that the ingest resolves (archive/ingest.py IngestService._index). pool_pre_ping
    # replaces connections a database restart has cut before they are used.
    options: dict[str, Any] = {
        "pool_size": 5,
        "max_overflow": 15,
        "pool_pre_ping": True,
        "pool_recycle": 3600,
        "isolation_level": "READ COMMITTED",
    }
    return create_engine(url, **{**options, **kwargs})


class UnsuitableDatabase(Exception):
    """A database minipacs must not use as it is; the message says how to make one it can."""


#: Comparisons that hold when text is ordered byte by byte (C, C.UTF-8 and POSIX collations),
#: and fail under a language's rules (en_US, vi_VN, ICU): case first, punctuation ignored, é near e.
_BYTEWISE_PROBE = "SELECT 'B' < 'a' AND 'a-c' < 'ab' AND 'z' < 'é'"


def _check_text_order(engine: Engine) -> None:
    """Refuse a PostgreSQL database whose collation is not byte order.

    DICOM matching is byte for byte, and a prefix wildcard (``BN23*``) is sent
    as the range ``>= 'BN23' AND < 'BN24'`` so that a B-tree serves it. Under
    a language's collation that range also holds ``bn23x`` and ``BN2-3`` and
    can miss ``BN2-9`` for ``BN2-*``: C-FIND and QIDO would answer with the
    wrong patients. Debian's `createdb` takes the server's locale (often
    en_US.UTF-8), so say how to make a suitable database.
    """
    with engine.connect() as conn:
        bytewise = conn.exec_driver_sql(_BYTEWISE_PROBE).scalar()
        row = conn.exec_driver_sql("SELECT * FROM pg_database WHERE datname = current_database()").mappings().one()
    name = row["datname"]
    collation = f"ICU {row['daticulocale']}" if row.get("datlocprovider") == "i" else row["datcollate"]
    if not bytewise:
        raise UnsuitableDatabase(
            f"the PostgreSQL database {name!r} sorts text by a language's rules (collation {collation}), "
            "so DICOM wildcard searches would find the wrong patients. Create it with byte order instead "
            f"(it must be empty): dropdb {name}; createdb -O OWNER --locale=C.UTF-8 --template=template0 {name}"
        )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        "foreign_keys=ON",
        "busy_timeout=60000",
        "case_sensitive_like=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # A writer takes the write lock up front (BEGIN IMMEDIATE): a deferred
    # transaction that later upgrades can fail with SQLITE_BUSY mid-way.
    # Readers issue no BEGIN: each SELECT then sees one consistent snapshot of
    # its own, which is all a single query needs, at one round trip less.
    if conn.get_execution_options().get("write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine plus the one rule for writing: one writer at a time on SQLite.

    SQLite allows a single writer. Writers queue on a lock before
    ``BEGIN IMMEDIATE``: a thread lock within the process, and an flock on a
    file beside the database across processes (DICOM worker processes, a CLI
    import). SQLite's own busy handler would also serialise them, but it
    polls with sleeps of up to 100 ms; a blocked flock wakes as soon as the
    lock is free.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._lock_file: int | None = None
        database = engine.url.database if self.is_sqlite else None
        if database and database != ":memory:":
            self._lock_file = os.open(f"{database}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)

    @classmethod
    def open(cls, url: str, upgrade: bool = True) -> Database:
        """Connect to `url` and (unless told not to) bring its schema up to date.

        DICOM worker processes pass ``upgrade=False``: the supervisor has
        upgraded the schema before starting them, and they need not load Alembic.
        """
        db = cls(make_engine(url))
        try:
            if not db.is_sqlite:
                _check_text_order(db.engine)
            if upgrade:
                migrate(db.engine)
        except BaseException:
            db.engine.dispose()
            raise
        return db

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on error."""
        with self._write_lock or nullcontext():
            if self._lock_file is not None:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                with self.engine.connect().execution_options(write=True) as conn:
                    with conn.begin():
                        yield conn
            finally:
                if self._lock_file is not None:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def read(self) -> Connection:
        """A connection for reading (use as a context manager)."""
        return self.engine.connect()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # loaded only to migrate: it costs ~10 MB per process

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    before = set(inspect(engine).get_table_names())
    from alembic import command

    command.upgrade(alembic_config(engine), "head")
    if "alembic_version" not in before:
        log.info("created the index schema in %s", engine.url.render_as_string())
