"""Filesystem object store: the embedded default.

A put writes a temporary file in the destination directory, fsyncs it,
renames it into place and fsyncs the directory, so a power cut leaves either
the whole object or nothing under its key (plus, at worst, a hidden
``.tmp-*`` file for fsck to sweep).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from collections.abc import Iterator
from typing import BinaryIO

from storage.base import PutResult, Readable, StorageError, StorageFullError, check_key

CHUNK_SIZE = 1024 * 1024
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# link() failing for these means the filesystem has no hard links (FAT, some network mounts).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


class FilesystemStore:
    """Objects as files below `root`; keys map to relative paths."""

    def __init__(self, root: Path | str, reserve_bytes: int = 0) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # Refuse new objects while less than this is free, so the disk never
        # fills completely (the index database lives on it too).
        self.reserve_bytes = reserve_bytes

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, stream: Readable) -> PutResult:
        path = self._path(key)
        if path.exists():
            raise StorageError(f"object {key!r} already exists; keys are never reused")
        if self.reserve_bytes and self.free_bytes() < self.reserve_bytes:
            raise StorageFullError(
                f"less than {self.reserve_bytes // 2**20} MiB free in {self.root}"
            )
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        size = 0
        try:
            self._make_dirs(path.parent)
            with open(tmp, "xb") as out:
                while chunk := stream.read(CHUNK_SIZE):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            try:
                _publish(tmp, path)
            except FileExistsError:
                # Another writer took the key between the check above and now.
                raise StorageError(f"object {key!r} already exists; keys are never reused") from None
            _fsync_dir(path.parent)
        except OSError as exc:
            _remove_quietly(tmp)
            if exc.errno in _NO_SPACE:
                raise StorageFullError(f"no space left in {self.root}") from exc
            raise StorageError(f"cannot write {key!r}: {exc.strerror or exc}") from exc
        except BaseException:
            _remove_quietly(tmp)
            raise
        return PutResult(key=key, size=size, sha256=digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        with open(self._path(key), "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc.strerror or exc}") from exc
        _fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def keys(self, prefix: str = "") -> Iterator[str]:
        top = self._path(prefix) if prefix else self.root
        for directory, folders, files in os.walk(top):
            folders[:] = [f for f in folders if not f.startswith(".")]
            relative = Path(directory).relative_to(self.root)
            for name in files:
                if not name.startswith("."):  # .tmp-* files are puts in progress
                    yield (relative / name).as_posix()

    def free_bytes(self) -> int:
        """Space left for new objects on the store's filesystem."""
        return shutil.disk_usage(self.root).free

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` and make every new directory entry durable."""
        if directory.is_dir():
            return
        missing: list[Path] = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # another writer made it first
                pass
            _fsync_dir(d.parent)


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished temporary file its key's name, never replacing an existing object.

    rename() silently replaces; link() refuses with FileExistsError, so two
    writers racing for one key cannot overwrite each other.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "object exists", str(path)) from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
