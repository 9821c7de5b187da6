"""One object-store contract, run against every adapter: the filesystem and a real S3 server."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import InvalidKeyError, ObjectStore, StorageError, open_store
from storage.s3 import PART_SIZE, Credentials, S3Store
from tests.storage.s3_server import JuiceFSGateway, S3Endpoint
from tests.storage.test_filesystem import BAD_KEYS, KEY, Chunks, Failing


def open_s3(url: str, endpoint: S3Endpoint, **kwargs: bool) -> S3Store:
    store = open_store(url, access_key=endpoint.access_key, secret_key=endpoint.secret_key, **kwargs)
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "filesystem":
        yield open_store(str(tmp_path / "objects"))
        return
    endpoint: S3Endpoint = request.getfixturevalue("s3")
    s3_store = open_s3(endpoint.new_bucket_url("objects"), endpoint)
    yield s3_store
    s3_store.close()


def test_keys_lists_every_object_below_a_prefix(store: ObjectStore) -> None:
    assert list(store.keys()) == []
    for key in ("2026/11/20/a.dcm", "2026/11/21/b.dcm", "quarantine/2026/11/20/c.dcm", "top.dcm"):
        store.put(key, io.BytesIO(b"x"))
    assert sorted(store.keys()) == ["2026/11/20/a.dcm", "2026/11/21/b.dcm", "quarantine/2026/11/20/c.dcm", "top.dcm"]
    assert sorted(store.keys("quarantine")) == ["quarantine/2026/11/20/c.dcm"]
    assert sorted(store.keys("2026/11")) == ["2026/11/20/a.dcm", "2026/11/21/b.dcm"]
    assert list(store.keys("nothing/here")) == []
    store.delete("top.dcm")
    assert "top.dcm" not in set(store.keys())


def test_put_open_get_range_size_exists_delete(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4096 + b"tail"  # > one chunk
    result = store.put(KEY, io.BytesIO(data))
    assert (result.key, result.size) == (KEY, len(data))
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert store.exists(KEY)
    assert store.size(KEY) == len(data)
    with store.open(KEY) as f:
        assert f.read(4) == data[:4]
        f.seek(1000)
        assert f.read(300) == data[1000:1300]
        f.seek(0)
        assert f.read() == data
    assert store.get_range(KEY, 0, 4) == data[:4]
    assert store.get_range(KEY, 1000, 1300) == data[1000:1300]
    assert store.get_range(KEY, len(data) - 4, len(data)) == b"tail"
    assert store.get_range(KEY, len(data) - 2, len(data) + 100) == b"il"  # clipped at the end
    assert store.get_range(KEY, len(data) + 5, len(data) + 100) == b""
    assert store.get_range(KEY, 10, 10) == b""
    store.delete(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)  # deleting a missing key is not an error


def test_short_reads_and_empty_objects(store: ObjectStore) -> None:
    data = os.urandom(10_000)
    assert store.put("a/short.dcm", Chunks(data, 7)).sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_range("a/short.dcm", 0, 10_000) == data
    empty = store.put("a/empty.dcm", io.BytesIO(b""))
    assert (empty.size, empty.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert store.exists("a/empty.dcm") and store.size("a/empty.dcm") == 0
    with store.open("a/empty.dcm") as f:
        assert f.read() == b""


def test_missing_keys(store: ObjectStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.open("no/such.dcm")
    with pytest.raises(FileNotFoundError):
        store.size("no/such.dcm")
    for start, end in ((0, 1), (0, 0)):
        with pytest.raises(FileNotFoundError):
            store.get_range("no/such.dcm", start, end)
    assert not store.exists("no/such.dcm")


def test_bad_ranges(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b"0123456789"))
    for start, end in ((-1, 4), (5, 4)):
        with pytest.raises(ValueError):
            store.get_range(KEY, start, end)


def test_a_key_prefix_is_not_an_object(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b"x"))
    assert not store.exists("1.2.3")
    assert not store.exists("1.2.3/1.2.3.4")


def test_put_never_overwrites(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b"first"))
    with pytest.raises(StorageError):
        store.put(KEY, io.BytesIO(b"second"))
    assert store.get_range(KEY, 0, 100) == b"first"


@pytest.mark.parametrize("exc", [RuntimeError("sender went away"), OSError(104, "Connection reset by peer")],
                         ids=["error", "oserror"])  # fmt: skip
def test_failing_stream_leaves_no_object(store: ObjectStore, exc: BaseException) -> None:
    with pytest.raises(StorageError if isinstance(exc, OSError) else type(exc)):
        store.put(KEY, Failing(b"x" * 5000, exc))
    assert not store.exists(KEY)
    store.put(KEY, io.BytesIO(b"complete"))  # the key is still free
    assert store.get_range(KEY, 0, 100) == b"complete"


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_everywhere(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put(key, io.BytesIO(b"x"))
    for call in (store.open, store.exists, store.size, store.delete):
        with pytest.raises(InvalidKeyError):
            call(key)
    with pytest.raises(InvalidKeyError):
        store.get_range(key, 0, 1)


class Generated:
    """`total` pseudo-random bytes made on demand, recording the largest read asked for."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.digest = hashlib.sha256()
        self.largest_read = 0
        self._block = os.urandom(1 << 20)

    def read(self, size: int = -1) -> bytes:
        self.largest_read = max(self.largest_read, size)
        n = min(self.left, len(self._block) if size < 0 else min(size, len(self._block)))
        self.left -= n
        chunk = self._block[:n]
        self.digest.update(chunk)
        return chunk


def test_a_large_put_streams(store: ObjectStore) -> None:
    total = 100 * 2**20 + 12345  # several multipart parts on S3
    source = Generated(total)
    # Python allocations, traced: the process's RSS late in a long test run also moves with heap
    # fragmentation left by earlier tests. The minio client holds five to six parts at its peak
    # (measured: 41-48 MiB for 60, 100 and 150 MiB objects alike): bounded, whatever the size,
    # and well below the object, which buffering it whole would hold at least once.
    tracemalloc.start()
    try:
        result = store.put("big/cine.dcm", source)
        grown = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.size, result.sha256) == (total, source.digest.hexdigest())
    assert store.size("big/cine.dcm") == total
    assert source.largest_read <= PART_SIZE + 1  # read in parts (+1: the client peeks for the end)
    assert grown < 7 * max(PART_SIZE, 8 * 2**20), f"{grown / 2**20:.0f} MiB held at once for a 100 MiB put"
    with store.open("big/cine.dcm") as f:
        f.seek(total - 5)
        assert len(f.read()) == 5
    tail = store.get_range("big/cine.dcm", total - 12345, total)
    assert len(tail) == 12345


# --- S3 only ------------------------------------------------------------------------------


def test_s3_bucket_creation_is_configurable(s3: S3Endpoint) -> None:
    url = s3.new_bucket_url()
    with pytest.raises(StorageError, match="does not exist"):
        open_s3(url, s3, create_bucket=False)
    open_s3(url, s3).close()  # made
    open_s3(url, s3, create_bucket=False).close()  # now there


def test_s3_prefixes_keep_stores_apart(s3: S3Endpoint) -> None:
    bucket = s3.new_bucket_url()
    a, b = open_s3(bucket + "/a", s3), open_s3(bucket + "/b", s3)
    a.put(KEY, io.BytesIO(b"in a"))
    assert not b.exists(KEY)
    assert a.get_range(KEY, 0, 10) == b"in a"
    a.close()
    b.close()


def test_s3_wrong_credentials_and_unreachable_servers(s3: S3Endpoint, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        open_store(s3.new_bucket_url(), access_key=s3.access_key, secret_key="wrong-secret")
    from tests.storage.s3_server import free_port

    with pytest.raises(StorageError, match="cannot check the bucket"):
        open_store(f"s3://127.0.0.1:{free_port()}/bucket", access_key="a", secret_key="b")


@pytest.mark.parametrize(
    "url",
    ["s3://127.0.0.1:9000", "s3://127.0.0.1:9000/", "s3://key:secret@127.0.0.1:9000/bucket",
     "s3://127.0.0.1:notaport/bucket", "s3:///bucket", "s3://127.0.0.1:9000/bucket?region=x",
     "s3://127.0.0.1:9000/Bad_Bucket", "s3://127.0.0.1:9000/bucket/../x"],
)  # fmt: skip
def test_bad_s3_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url, access_key="a", secret_key="b")


def test_s3_urls_need_credentials() -> None:
    with pytest.raises(ValueError, match="storage.access_key"):
        open_store("s3://127.0.0.1:9000/bucket")


def test_s3_https_urls_use_tls(s3: S3Endpoint) -> None:
    # The test server speaks plain HTTP, so a TLS handshake with it fails: the
    # client did try TLS. (Certificates: the system's, or SSL_CERT_FILE.)
    with pytest.raises(StorageError):
        open_store(f"s3+https://{s3.host}:{s3.port}/bucket", access_key=s3.access_key, secret_key=s3.secret_key)


def test_s3_credentials_never_show(s3: S3Endpoint) -> None:
    store = open_s3(s3.new_bucket_url(), s3)
    assert s3.secret_key not in repr(store)
    store.close()


def test_s3_server_stopped_mid_upload(tmp_path: Path) -> None:
    gateway = JuiceFSGateway(tmp_path / "s3")
    gateway.start()
    try:
        url = gateway.endpoint.new_bucket_url()
        store = open_s3(url, gateway.endpoint)

        class StopsTheServer(Generated):
            def read(self, size: int = -1) -> bytes:
                if self.left < 20 * 2**20 and gateway._process is not None:
                    gateway.stop()  # after two parts went up
                return super().read(size)

        with pytest.raises(StorageError):
            store.put(KEY, StopsTheServer(40 * 2**20))
        with pytest.raises(StorageError):
            store.exists(KEY)  # still down: an error, not "missing"
        gateway.start()
        assert not store.exists(KEY)  # nothing left behind
        store.close()
    finally:
        gateway.stop()


def test_s3_a_server_back_within_the_retries_is_no_error(tmp_path: Path) -> None:
    gateway = JuiceFSGateway(tmp_path / "s3")
    gateway.start()
    try:
        endpoint = gateway.endpoint
        store = S3Store(f"{endpoint.host}:{endpoint.port}", "restarts", Credentials(endpoint.access_key,
                        endpoint.secret_key), attempts=8)  # backoff 0.2, 0.4, ... 12.8 s  # fmt: skip
        store.put(KEY, io.BytesIO(b"before"))
        gateway.stop()
        restart = threading.Thread(target=gateway.start)
        restart.start()  # while the read below is being retried
        try:
            assert store.get_range(KEY, 0, 100) == b"before"
        finally:
            restart.join()
        store.close()
    finally:
        gateway.stop()
