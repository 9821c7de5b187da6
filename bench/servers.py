"""The servers the benchmarks run: `minipacs serve`, Debian's Orthanc and a bare pynetdicom SCP.

Each runs as its own process on 127.0.0.1 with a fresh folder, so its memory
can be measured alone and nothing is left from an earlier run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.uid import UID
from pynetdicom import AE

from common import PYTHON, ROOT, free_port

if TYPE_CHECKING:
    from archive import Archive

ORTHANC = Path("/usr/sbin/Orthanc")
VERIFICATION = UID("1.2.840.10008.1.1")
BARE_SCP = Path(__file__).with_name("bare_scp.py")
DICOMWEB_PLUGINS = (Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
                    Path("/usr/lib/orthanc/libOrthancDicomWeb.so.1.7"))  # fmt: skip


@dataclass
class Server:
    kind: str  # "minipacs", "orthanc" or "bare"
    aet: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0
    #: minipacs on a database and object store of its own choosing (bench/scaleout.py); else in `folder`.
    store_env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait; SIGKILL if it does not go. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def stored(self) -> int:
        """How many instances the server holds now (ask before stop() for Orthanc)."""
        if self.kind == "minipacs":
            archive = self._archive()
            try:
                return int(archive.statistics().instances)
            finally:
                archive.close()
        if self.kind == "orthanc":
            url = f"http://127.0.0.1:{self.http_port}/statistics"
            with urllib.request.urlopen(url, timeout=30) as response:
                statistics: dict[str, int] = json.load(response)
            return int(statistics["CountInstances"])
        return sum(1 for _ in (self.folder / "objects").glob("*.dcm"))

    def object_files(self) -> int:
        """Stored object files on disk or objects in the bucket (minipacs), not counting temporaries."""
        if not self.store_env:
            return sum(1 for p in (self.folder / "objects").rglob("*.dcm") if p.is_file())
        archive = self._archive()
        try:
            return sum(1 for key in archive.objects.keys() if key.endswith(".dcm"))
        finally:
            archive.close()

    def _archive(self) -> Archive:
        from archive import Archive

        if not self.store_env:
            return Archive.open(f"sqlite:///{self.folder / 'index.sqlite'}", str(self.folder / "objects"))
        env = self.store_env
        return Archive.open(env["MINIPACS_DATABASE_URL"], env["MINIPACS_STORAGE_URL"], upgrade=False,
                            access_key=env["MINIPACS_STORAGE_ACCESS_KEY"],
                            secret_key=env["MINIPACS_STORAGE_SECRET_KEY"])  # fmt: skip


def echo(port: int, aet: str, timeout: float = 5) -> bool:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.network_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return False
    try:
        return bool(assoc.send_c_echo().Status == 0)
    finally:
        assoc.release()


def wait_http(url: str, timeout: float = 60) -> None:
    """Until `url`/healthz answers 200 (gunicorn's workers boot after the DICOM side answers)."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"HTTP at {url} never answered")
        time.sleep(0.1)


def _wait_ready(server: Server, timeout: float = 60) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} exited with {server.process.returncode}:\n{server.log()[-3000:]}")
        try:
            if echo(server.port, server.aet, timeout=2):
                return server
        except OSError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.kind} did not answer C-ECHO within {timeout} s:\n{server.log()[-3000:]}")


def _spawn(folder: Path, argv: list[str], env: dict[str, str] | None = None,
           log_dir: Path | None = None) -> tuple[subprocess.Popen[bytes], Path]:  # fmt: skip
    """Start `argv` with its output in LOG_DIR/FOLDER.log (next to `folder` by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = (log_dir or folder.parent) / f"{folder.name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=folder.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, log_path


def start_minipacs(folder: Path, log_level: str = "INFO", log_dir: Path | None = None,
                   store_env: dict[str, str] | None = None) -> Server:  # fmt: skip
    """`minipacs serve` with its defaults, on a free loopback port, data in `folder`.

    `store_env` (MINIPACS_DATABASE_URL, MINIPACS_STORAGE_URL and the S3 key pair)
    puts its index and objects elsewhere, as bench/scaleout.py provides them.
    """
    port = free_port()
    # No MINIPACS_* from the caller's environment, and cwd without a minipacs.toml,
    # so every run uses the documented defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPACS_")}
    env["MINIPACS_DICOM_HOST"] = "127.0.0.1"
    env.update(store_env or {})
    http_port = free_port()
    argv = [str(PYTHON), "-m", "appliance.cli", "serve", "--data", str(folder),
            "--dicom-port", str(port), "--http-port", str(http_port),
            "--hl7-port", str(free_port()), "--log-level", log_level]  # fmt: skip
    env["PYTHONPATH"] = str(ROOT)
    process, log_path = _spawn(folder, argv, env, log_dir)
    return _wait_ready(Server("minipacs", "MINIPACS", port, folder, process, log_path, http_port,
                              dict(store_env or {})))  # fmt: skip


def orthanc_available() -> bool:
    return ORTHANC.is_file() and os.access(ORTHANC, os.X_OK)


def orthanc_dicomweb_plugin() -> Path | None:
    """Debian's orthanc-dicomweb plugin, if installed."""
    return next((p for p in DICOMWEB_PLUGINS if p.is_file()), None)


def start_orthanc(folder: Path, dicomweb: bool = False, log_dir: Path | None = None) -> Server:
    """Debian's Orthanc with its defaults except storage location, ports and compression.

    With `dicomweb`, it loads Debian's DICOMweb plugin (orthanc-dicomweb) at
    /dicom-web/, otherwise no plugins.
    """
    port, http_port = free_port(), free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "DicomCheckCalledAet": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "Plugins": [],
    }
    if dicomweb:
        plugin = orthanc_dicomweb_plugin()
        if plugin is None:
            raise RuntimeError("the Orthanc DICOMweb plugin is not installed (tests/setup.sh orthanc-dicomweb)")
        config["Plugins"] = [str(plugin)]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    process, log_path = _spawn(folder, [str(ORTHANC), str(config_path)], log_dir=log_dir)
    return _wait_ready(Server("orthanc", "ORTHANC", port, folder, process, log_path, http_port))


def start_bare(folder: Path) -> Server:
    """bench/bare_scp.py: receive, copy the spooled file, fsync, answer. Nothing else."""
    port = free_port()
    argv = [str(PYTHON), str(BARE_SCP), "--port", str(port), "--folder", str(folder)]
    process, log_path = _spawn(folder, argv)
    return _wait_ready(Server("bare", "BARE", port, folder, process, log_path))


START: dict[str, Callable[[Path], Server]] = {"minipacs": start_minipacs, "orthanc": start_orthanc, "bare": start_bare}


def remove(server: Server) -> None:
    shutil.rmtree(server.folder, ignore_errors=True)
    server.log_path.unlink(missing_ok=True)
