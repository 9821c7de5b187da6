"""The filesystem adapter with real files (the shared contract: test_contract.py)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from storage import (
    FilesystemStore,
    InvalidKeyError,
    ObjectStore,
    StorageError,
    StorageFullError,
    check_key,
    open_store,
)
from storage.base import MAX_KEY_LENGTH, MAX_SEGMENT_LENGTH

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.0a1b2c3d.dcm"


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "objects")


def all_files(root: Path) -> list[str]:
    """Every file below `root` (hidden temporaries included), relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class Chunks:
    """A stream handing out `data` in short reads of at most `step` bytes."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._step = step

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        out, self._data = self._data[:n], self._data[n:]
        return out


class Failing:
    """A stream that breaks after handing out some bytes (a dropped association)."""

    def __init__(self, good: bytes, exc: BaseException) -> None:
        self._good = good
        self._exc = exc

    def read(self, size: int = -1) -> bytes:
        if self._good:
            out, self._good = self._good, b""
            return out
        raise self._exc


def test_filesystem_store_satisfies_the_port(store: FilesystemStore) -> None:
    port: ObjectStore = store  # checked by mypy; at runtime: the methods exist
    for name in ("put", "open", "get_range", "delete", "exists", "size"):
        assert callable(getattr(port, name))


def test_put_open_get_range_size_exists_delete(store: FilesystemStore) -> None:
    data = bytes(range(256)) * 4096 + b"tail"  # > one chunk
    result = store.put(KEY, io.BytesIO(data))
    assert result.key == KEY
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert store.exists(KEY)
    assert store.size(KEY) == len(data)
    with store.open(KEY) as f:
        assert f.read() == data
    assert store.get_range(KEY, 0, 4) == data[:4]
    assert store.get_range(KEY, 1000, 1300) == data[1000:1300]
    assert store.get_range(KEY, len(data) - 4, len(data)) == b"tail"
    assert store.get_range(KEY, len(data) - 2, len(data) + 100) == b"il"  # clipped at the end
    assert store.get_range(KEY, 10, 10) == b""
    assert (store.root / KEY).read_bytes() == data  # keys are relative paths below the root
    store.delete(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)  # deleting a missing key is not an error
    assert all_files(store.root) == []


def test_a_refused_overwrite_leaves_no_stray_file(store: FilesystemStore) -> None:
    # That put never overwrites is in the contract suite (test_contract.py); here, the disk.
    store.put(KEY, io.BytesIO(b"first"))
    with pytest.raises(StorageError):
        store.put(KEY, io.BytesIO(b"second"))
    assert all_files(store.root) == [KEY]


def test_put_never_overwrites_a_concurrent_writer(store: FilesystemStore) -> None:
    # Another writer creates the key while this put is still reading its stream.
    class Racing:
        def __init__(self) -> None:
            self.done = False

        def read(self, size: int = -1) -> bytes:
            if self.done:
                return b""
            self.done = True
            (store.root / KEY).write_bytes(b"the other writer")
            return b"this writer"

    with pytest.raises(StorageError):
        store.put(KEY, Racing())
    assert store.get_range(KEY, 0, 100) == b"the other writer"
    assert all_files(store.root) == [KEY]  # and no temporary left behind


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("sender went away"), OSError(104, "Connection reset by peer"), KeyboardInterrupt()],
    ids=["error", "oserror", "interrupt"],
)
def test_failing_stream_leaves_no_temporary_and_no_object(store: FilesystemStore, exc: BaseException) -> None:
    # An I/O error while reading is reported as the store's failure; anything
    # else (including an interrupt) goes through unchanged.
    with pytest.raises(StorageError if isinstance(exc, OSError) else type(exc)):
        store.put(KEY, Failing(b"x" * 5000, exc))
    assert all_files(store.root) == []
    assert not store.exists(KEY)
    # The key is still free for a later, complete put.
    store.put(KEY, io.BytesIO(b"complete"))
    assert store.get_range(KEY, 0, 100) == b"complete"


def test_reserve_bytes(tmp_path: Path) -> None:
    full = FilesystemStore(tmp_path / "objects", reserve_bytes=10**18)
    with pytest.raises(StorageFullError):
        full.put(KEY, io.BytesIO(b"data"))
    assert isinstance(StorageFullError("x"), StorageError)
    assert all_files(full.root) == []
    roomy = FilesystemStore(tmp_path / "objects", reserve_bytes=1)
    assert roomy.put(KEY, io.BytesIO(b"data")).size == 4
    assert 0 < roomy.free_bytes()


BAD_KEYS = [
    "",
    "..",
    "../x.dcm",
    "a/../../x.dcm",
    "a/./b.dcm",
    "/etc/passwd",
    "a//b.dcm",
    "a/b/",
    ".hidden",
    "a/.tmp-0123456789abcdef",
    "a\\b.dcm",
    "..\\..\\x",
    "a/b c.dcm",
    "a/b\n",
    "a/b\x00.dcm",
    "a/bệnh.dcm",
    "a:b",
    "~/x",
    "x" * (MAX_KEY_LENGTH + 1),
    "a/" + "x" * (MAX_SEGMENT_LENGTH + 1),  # one segment longer than a file name may be
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_everywhere(store: FilesystemStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(key)
    with pytest.raises(InvalidKeyError):
        store.put(key, io.BytesIO(b"x"))
    for call in (store.open, store.exists, store.size, store.delete):
        with pytest.raises(InvalidKeyError):
            call(key)
    with pytest.raises(InvalidKeyError):
        store.get_range(key, 0, 1)
    assert all_files(store.root) == []
    assert isinstance(InvalidKeyError("x"), ValueError)


LONGEST = "x" * MAX_SEGMENT_LENGTH + "/" + "y" * MAX_SEGMENT_LENGTH  # 511 characters


@pytest.mark.parametrize("key", [KEY, "a", "A-b_c.d", LONGEST, "2.25.1/2.25.2/3.dcm"])
def test_safe_keys(store: FilesystemStore, key: str) -> None:
    assert check_key(key) == key
    store.put(key, io.BytesIO(b"ok"))
    assert store.exists(key)


def test_non_string_keys_are_refused() -> None:
    for key in (None, b"a/b", 5):
        with pytest.raises(InvalidKeyError):
            check_key(key)  # type: ignore[arg-type]


# --- open_store ----------------------------------------------------------------------------


def test_open_store_file_url(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/objects", reserve_bytes=123)
    assert isinstance(store, FilesystemStore)
    assert store.root == (tmp_path / "objects").resolve()
    assert store.reserve_bytes == 123
    assert store.root.is_dir()


def test_open_store_file_url_with_escapes_and_localhost(tmp_path: Path) -> None:
    store = open_store(f"file://localhost{tmp_path}/my%20objects")
    assert isinstance(store, FilesystemStore)
    assert store.root == (tmp_path / "my objects").resolve()


def test_open_store_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(str(tmp_path / "abs"))
    assert isinstance(absolute, FilesystemStore) and absolute.root == (tmp_path / "abs").resolve()
    monkeypatch.chdir(tmp_path)
    relative = open_store("data/objects")
    assert isinstance(relative, FilesystemStore) and relative.root == (tmp_path / "data/objects").resolve()
    # A plain path is taken literally: no URL unescaping.
    literal = open_store(str(tmp_path / "a%20b"))
    assert isinstance(literal, FilesystemStore) and literal.root.name == "a%20b"


@pytest.mark.parametrize(
    "url",
    ["http://example.com/objects", "ftp://host/x", "minio://host/bucket"],
)
def test_open_store_unsupported_scheme(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        open_store(url)


@pytest.mark.parametrize("url", ["file://", ""])
def test_open_store_without_a_directory(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError):
        open_store(url)


def test_open_store_file_url_with_a_host_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # file://data/objects names host "data", path "/objects": storing in /objects
    # instead of ./data/objects would be a surprise, so it is refused.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError):
        open_store("file://data/objects")
