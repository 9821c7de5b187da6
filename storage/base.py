"""The object-store port: what the archive needs from any place that keeps bytes.

Shaped after S3 (keys, whole-object puts from a stream, ranged reads) so the
filesystem adapter and the S3 adapter are interchangeable; nothing here hands
out a filesystem path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

# Keys are built by the archive from validated UIDs; adapters check again so a
# bug upstream can never address a file outside the store. No segment may
# start with a dot, which rules out '.', '..' and hidden temporary files.
_KEY_RE = re.compile(r"^[0-9A-Za-z_-][0-9A-Za-z._-]*(/[0-9A-Za-z_-][0-9A-Za-z._-]*)*$")
MAX_KEY_LENGTH = 512
# Longest file name most filesystems allow (NAME_MAX): a longer segment could not be stored.
MAX_SEGMENT_LENGTH = 255


class StorageError(Exception):
    """The store could not complete the operation (I/O error, service down)."""


class StorageFullError(StorageError):
    """No space left: nothing was written."""


class StorageURLError(ValueError):
    """A storage URL (or its credentials) that names no usable store."""


class InvalidKeyError(ValueError):
    """A key that could address something outside the store."""


@dataclass(frozen=True)
class PutResult:
    """What a completed, durable put wrote."""

    key: str
    size: int
    sha256: str


class Readable(Protocol):
    """Anything with ``read(size)``: an open file, a socket stream, a chain of both."""

    def read(self, size: int = -1, /) -> bytes: ...


class ObjectStore(Protocol):
    """Durable object storage addressed by keys of the form ``a/b/c.dcm``."""

    def put(self, key: str, stream: Readable) -> PutResult:
        """Write `stream` to `key`; durable when it returns. Never overwrites."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open `key` for reading. Raises FileNotFoundError if it does not exist."""
        ...

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of `key`."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""
        ...

    def exists(self, key: str) -> bool:
        """True when `key` holds an object."""
        ...

    def size(self, key: str) -> int:
        """Size of `key` in bytes. Raises FileNotFoundError if missing."""
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key below `prefix` (a folder such as ``"quarantine"``; "" for all), in no set order.

        For integrity checks: finds objects no index row points at.
        """
        ...


def check_key(key: str) -> str:
    """Return `key` if it is a safe object key, else raise InvalidKeyError."""
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_LENGTH
        or _KEY_RE.fullmatch(key) is None  # '$' alone would let a trailing newline in
        or max(len(segment) for segment in key.split("/")) > MAX_SEGMENT_LENGTH
    ):
        raise InvalidKeyError(f"unsafe object key {key!r}")
    return key
