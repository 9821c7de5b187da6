"""PostgreSQL + S3 behind `minipacs serve` for the benchmarks: the scale-out deployment on one machine.

The same real servers the tests use (tests/pg.py, tests/storage/s3_server.py),
but with their data on the repository's disk (under the run's folder in
bench/out/runs, like every other benchmark file) and PostgreSQL with its
default durability: the tests run it with fsync=off, which would compare an
index that never waits for the disk with SQLite, which does. The JuiceFS S3
gateway keeps its objects as files in a local folder, so what it measures is
the S3 protocol's cost on this machine, not a MinIO cluster's network and disks.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from common import ROOT

sys.path.insert(0, str(ROOT))

from tests.pg import LocalPostgres, PostgresServer  # noqa: E402
from tests.storage.s3_server import JuiceFSGateway  # noqa: E402


class BenchPostgres(LocalPostgres):
    """Debian's PostgreSQL in `directory`, fsync and full-page writes on (the server's defaults)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        shutil.rmtree(self.directory, ignore_errors=True)  # the mkdtemp folder in /tmp: not used
        self.directory = directory = directory.resolve()
        self.data = directory / "data"
        self.socket_dir = directory / "socket"
        directory.mkdir(parents=True, exist_ok=True)

    def _start(self) -> None:
        self.pg_ctl("start", "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=300",
                    "-l", str(self.directory / "server.log"))  # fmt: skip

    def stop(self) -> None:
        """Stop the server but keep its folder (and log): the run's folder goes, or stays, as a whole."""
        try:
            self.pg_ctl("stop", "-w", "-m", "fast")
        except RuntimeError:
            pass

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class Service:
    name: str
    pid: int


class Backing:
    """A PostgreSQL and an S3 gateway in `folder`, one fresh database and bucket; stop() removes nothing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._postgres = BenchPostgres(folder / "postgresql")
        self._gateway: JuiceFSGateway | None = None
        self.database_url = ""
        self.storage_url = ""
        self.access_key = self.secret_key = ""

    def start(self) -> Backing:
        try:
            server: PostgresServer = self._postgres.start()
            self.database_url = server.create_database()
            self._gateway = JuiceFSGateway(self.folder / "s3")
            self._gateway.start()
            endpoint = self._gateway.endpoint
            self.storage_url = endpoint.new_bucket_url("objects")
            self.access_key, self.secret_key = endpoint.access_key, endpoint.secret_key
            # Make the schema and the bucket once, before any node starts: two nodes
            # migrating an empty database at the same moment would race.
            from archive import Archive

            Archive.open(self.database_url, self.storage_url, access_key=self.access_key,
                         secret_key=self.secret_key).close()  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def env(self) -> dict[str, str]:
        """What `minipacs serve` needs to use them."""
        return {"MINIPACS_DATABASE_URL": self.database_url,
                "MINIPACS_STORAGE_URL": self.storage_url,
                "MINIPACS_STORAGE_ACCESS_KEY": self.access_key,
                "MINIPACS_STORAGE_SECRET_KEY": self.secret_key}  # fmt: skip

    def services(self) -> list[Service]:
        """The processes to measure: the postmaster (its backends are its children) and the gateway."""
        found = [Service("PostgreSQL", self._postgres.postmaster_pid())]
        process = self._gateway._process if self._gateway else None
        if process is not None:
            found.append(Service("S3 gateway", process.pid))
        return found

    def stop(self) -> None:
        if self._gateway is not None:
            self._gateway.stop()
        self._postgres.stop()


def cpu_with_reaped(pid: int) -> float:
    """User + system CPU of a process, its live children and the children it has reaped.

    PostgreSQL runs a backend per connection; one that ends during a run takes
    its CPU time with it unless the postmaster's reaped-children times count.
    """
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for i, process in enumerate(tree):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += float(times.user + times.system)
        if i == 0:
            total += float(times.children_user + times.children_system)
    return total
