"""Object storage behind one small interface (see storage.base.ObjectStore)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from storage.base import (
    InvalidKeyError,
    ObjectStore,
    PutResult,
    Readable,
    StorageError,
    StorageFullError,
    check_key,
)
from storage.filesystem import FilesystemStore

__all__ = [
    "FilesystemStore",
    "InvalidKeyError",
    "ObjectStore",
    "PutResult",
    "Readable",
    "StorageError",
    "StorageFullError",
    "check_key",
    "open_store",
]


def open_store(url: str, reserve_bytes: int = 0) -> ObjectStore:
    """Open the store named by `url`: ``file:///path`` or a plain directory path."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            # file://data/objects means host "data", path /objects: not what was meant.
            raise ValueError(
                f"storage URL {url!r} names host {parsed.netloc!r}; "
                "use file:///absolute/path or a plain path"
            )
        if not path:
            raise ValueError(f"storage URL {url!r} names no directory")
        return FilesystemStore(Path(path), reserve_bytes=reserve_bytes)
    raise ValueError(
        f"storage URL {url!r}: unsupported scheme {parsed.scheme!r} "
        "(this version supports file:// directories)"
    )
