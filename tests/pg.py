"""A real PostgreSQL for the tests: Debian's server in a temporary directory.

``initdb`` + ``pg_ctl`` run as the ``postgres`` user when the tests run as
root (PostgreSQL refuses to run as root); the server listens on 127.0.0.1 on
a free port with its unix socket inside the temporary directory, and is
stopped after the session. ``MINIPACS_TEST_DATABASE_URL`` (a
``postgresql+psycopg://`` URL to a role that may CREATE DATABASE) uses an
existing server instead. Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (tests/setup.sh installs Debian's postgresql)")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    """A server the tests may create databases on (`url` names its maintenance db)."""

    url: str  # postgresql+psycopg://user@127.0.0.1:port/postgres

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        u = make_url(self.url)
        return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                               dbname=u.database or "postgres", autocommit=True)  # fmt: skip

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


class LocalPostgres:
    """Debian's PostgreSQL started with initdb + pg_ctl in a temporary directory.

    The directory is made with mkdtemp, not under pytest's tmp_path: that one
    is private to root, and the server runs as ``postgres``.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="minipacs-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.port = _free_port()
        self.bindir = _bindir()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}{done.stdout}")

    def start(self) -> PostgresServer:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            shutil.chown(self.directory, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        self._start()
        return PostgresServer(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres")

    def _start(self) -> None:
        self.pg_ctl("start", "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
                    "-c fsync=off -c full_page_writes=off -c max_connections=300",
                    "-l", str(self.directory / "server.log"))  # fmt: skip

    def down_for(self, seconds: float) -> None:
        """Stop (cutting every connection), stay down `seconds`, start again."""
        self.pg_ctl("stop", "-w", "-m", "fast")
        time.sleep(seconds)
        self._start()

    def pg_ctl(self, action: str, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), action, "-D", str(self.data), *args)

    def restart(self) -> None:
        """Restart with fast shutdown: every open connection is cut."""
        # The options of the first start are kept (postmaster.opts); the log
        # file is not, and without one the server would hold our stdout pipe.
        self.pg_ctl("restart", "-w", "-m", "fast", "-l", str(self.directory / "server.log"))

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-w", "-m", "immediate")
        except RuntimeError:
            pass
        deadline = time.monotonic() + 10
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.directory, ignore_errors=True)
