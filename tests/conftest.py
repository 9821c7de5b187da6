"""Shared fixtures: a temporary archive, a real `minipacs serve`, and dcmtk peers.

Everything runs on 127.0.0.1 (tests/run.sh also puts the whole suite in a
private network namespace, so listeners that bind every address, like
dcmtk's storescp, are reachable from loopback only).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from archive import Archive
from tests.pg import LocalPostgres, PostgresServer
from tests.storage.s3_server import S3Endpoint

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_dicom"
CT_FILES = sorted((SAMPLES / "ct").glob("*.dcm"))
DX_FILE = SAMPLES / "dx" / "DX_001.dcm"
US_FILES = sorted((SAMPLES / "us").glob("*.dcm"))
ALL_SAMPLES = CT_FILES + [DX_FILE] + US_FILES


def testdata(name: str) -> Path:
    """A file bundled with pydicom (never downloaded: the suite runs offline)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not bundled with this pydicom"
    return Path(str(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def network_is_private() -> bool:
    """True inside a network namespace that has only the loopback interface."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def require_private_network() -> None:
    if not network_is_private():
        pytest.skip("dcmtk SCPs listen on every address: run the suite with tests/run.sh, "
                    "which gives it a private network namespace")  # fmt: skip


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session (tests/pg.py), or MINIPACS_TEST_DATABASE_URL's."""
    configured = os.environ.get("MINIPACS_TEST_DATABASE_URL")
    if configured:
        yield PostgresServer(configured)
        return
    local = LocalPostgres()
    server = local.start()
    try:
        yield server
    finally:
        local.stop()


# Modules that run on both index backends override this fixture with
# `index_backend = both_index_backends` (a parametrized copy).
@pytest.fixture
def index_backend() -> str:
    return "sqlite"


@pytest.fixture(params=["sqlite", "postgresql"])
def both_index_backends(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def index_database(request: pytest.FixtureRequest, backend: str, directory: Path) -> Iterator[str]:
    """The URL of a fresh, empty index: a SQLite file in `directory`, or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'index.sqlite'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


#: The two ways a site keeps its index and objects: the embedded default (one box)
#: and the scale-out one (PostgreSQL + an S3 bucket), which the DIMSE and
#: DICOMweb suites run on too (`site_backend = both_site_backends` in a module).
SITE_BACKENDS = ("sqlite+fs", "postgresql+s3")


@dataclass(frozen=True)
class Site:
    """Where one archive keeps its index and objects; `minipacs serve` finds them through `env()`."""

    data: Path
    database_url: str = ""  # "": SQLite in data/index.sqlite
    storage_url: str = ""  # "": the folder data/objects
    access_key: str = ""
    secret_key: str = ""

    @property
    def index_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data / 'index.sqlite'}"

    @property
    def objects_url(self) -> str:
        return self.storage_url or str(self.data / "objects")

    def env(self) -> dict[str, str]:
        env = {"MINIPACS_DATABASE_URL": self.database_url} if self.database_url else {}
        if self.storage_url:
            env |= {"MINIPACS_STORAGE_URL": self.storage_url, "MINIPACS_STORAGE_ACCESS_KEY": self.access_key,
                    "MINIPACS_STORAGE_SECRET_KEY": self.secret_key}  # fmt: skip
        return env

    def open_archive(self) -> Archive:
        """The site's archive opened from the test, to fill it before a server starts or check what it holds."""
        keys = {"access_key": self.access_key, "secret_key": self.secret_key} if self.storage_url else {}
        return Archive.open(self.index_url, self.objects_url, **keys)


@pytest.fixture(scope="module")
def site_backend() -> str:
    return "sqlite+fs"


@pytest.fixture(scope="module", params=SITE_BACKENDS)
def both_site_backends(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def site_on(request: pytest.FixtureRequest, backend: str, data: Path) -> Iterator[Site]:
    """A fresh, empty site: `data` alone, or a new PostgreSQL database and S3 bucket of the session's servers."""
    data.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite+fs":
        yield Site(data)
        return
    assert backend == "postgresql+s3", backend
    postgres: PostgresServer = request.getfixturevalue("postgres")
    s3: S3Endpoint = request.getfixturevalue("s3")
    url = postgres.create_database()
    try:
        yield Site(data, url, s3.new_bucket_url("archive"), s3.access_key, s3.secret_key)
    finally:
        postgres.drop_database(url)


@pytest.fixture
def index_url(request: pytest.FixtureRequest, tmp_path: Path, index_backend: str) -> Iterator[str]:
    with index_database(request, index_backend, tmp_path) as url:
        yield url


@pytest.fixture
def archive(request: pytest.FixtureRequest, tmp_path: Path, index_url: str, index_backend: str) -> Iterator[Archive]:
    """A fresh archive: index on SQLite and objects in a folder, or (where a module asks for both
    backends) index on PostgreSQL and objects in an S3 bucket, as a scaled-out site keeps them."""
    if index_backend == "postgresql":
        s3: S3Endpoint = request.getfixturevalue("s3")
        arc = Archive.open(index_url, s3.new_bucket_url("archive"), access_key=s3.access_key, secret_key=s3.secret_key)
    else:
        arc = Archive.open(index_url, str(tmp_path / "objects"))
    yield arc
    arc.close()


def echo(port: int, aet: str = "MINIPACS", calling: str = "PYTEST") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return False
    try:
        return bool(assoc.send_c_echo().Status == 0)
    finally:
        assoc.release()


@dataclass
class Server:
    """A running `minipacs serve` subprocess."""

    port: int
    data: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    aet: str = "MINIPACS"
    site: Site | None = None  # None: the embedded default in `data`

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def archive(self) -> Archive:
        """Open the server's index and store from the test, to check what it holds."""
        return (self.site or Site(self.data)).open_archive()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_server(data: Path, *args: str, env: dict[str, str] | None = None,
                 port: int | None = None, timeout: float = 60, site: Site | None = None) -> Server:  # fmt: skip
    """Start `minipacs serve` (on `site`'s index and objects, if given) and wait until it answers C-ECHO."""
    port = port or free_port()
    data.mkdir(parents=True, exist_ok=True)
    log_path = data.parent / f"{data.name}-server-{port}.log"
    full_env = {**os.environ, "MINIPACS_DICOM_HOST": "127.0.0.1", **(site.env() if site else {}), **(env or {})}
    full_env.setdefault("MINIPACS_STORAGE_RESERVE_MB", "0")
    full_env.setdefault("MINIPACS_HTTP_PORT", str(free_port()))
    full_env.setdefault("MINIPACS_HL7_PORT", str(free_port()))
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve", "--data", str(data),
             "--dicom-port", str(port), *args],
            cwd=str(data.parent), env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(port, data, process, log_path, site=site)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"minipacs serve exited with {process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            if echo(port):
                return server
        except OSError:
            pass
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"minipacs serve did not answer within {timeout} s:\n{server.log()}")


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path, site_backend: str) -> Iterator[Server]:
    """A `minipacs serve` on a free port with an empty site (the module's `site_backend`)."""
    with site_on(request, site_backend, tmp_path / "data") as site:
        srv = start_server(tmp_path / "data", site=site)
        yield srv
        code = srv.stop()
    assert code == 0, f"minipacs serve exited with {code} on SIGTERM:\n{srv.log()}"
    assert "Traceback" not in srv.log(), srv.log()


def dcmtk(*args: str | Path, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool; returns the completed process with text output."""
    assert shutil.which(str(args[0])), f"{args[0]} is not installed (tests/run.sh installs dcmtk)"
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, check=check)  # fmt: skip


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A real S3 server on 127.0.0.1 for the session (tests/storage/s3_server.py)."""
    from tests.storage.s3_server import JuiceFSGateway, configured_endpoint

    endpoint = configured_endpoint()
    if endpoint is not None:
        yield endpoint
        return
    gateway = JuiceFSGateway(tmp_path_factory.mktemp("s3"))
    gateway.start()
    try:
        yield gateway.endpoint
    finally:
        gateway.stop()
