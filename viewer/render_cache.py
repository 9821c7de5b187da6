"""A bounded disk cache of rendered images: previews and thumbnails a viewer asks for again.

Scrolling back through a CT or reopening a study list asks for the same JPEGs
many times; decoding and windowing them again costs 10-200 ms each, reading a
cached file well under one. The key is a hash of the stored object's storage
key (a new object under the same SOP Instance UID gets a new key, so a changed
instance is never served from an old picture) and of everything that shapes
the image (frame, window, viewport, quality, media type). The hash is also
the ETag. Entries are plain files written under a temporary name and renamed,
so every gunicorn worker (and, on shared storage, every node) can read what
another wrote, and a crash never leaves half an image.

The size is bounded: each process counts what it writes, and when the total
passes the limit it deletes the least recently used files (by mtime, touched
on every hit) down to 80 % of it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_SWEEP_TO = 0.8


def cache_key(storage_key: str, *parts: object) -> str:
    """The entry name (and ETag) for an image of one stored object made with these parameters."""
    text = "\0".join([storage_key, *map(repr, parts)])
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class RenderCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._max = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # counted from the directory on the first write

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            os.utime(path)  # recently used: swept last
        except OSError:
            pass
        return data

    def put(self, key: str, data: bytes) -> None:
        """Keep `data` under `key`; a failure to write only costs the next request a render."""
        path = self._path(key)
        scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch.write_bytes(data)
            os.replace(scratch, path)
        except OSError as exc:
            log.warning("could not cache a rendered image in %s: %s", self._dir, exc)
            scratch.unlink(missing_ok=True)
            return
        with self._lock:
            if self._total is None:
                self._total = self._size()
            else:
                self._total += len(data)
            over = self._total > self._max
        if over:
            self.sweep()

    def sweep(self) -> None:
        """Delete the least recently used entries until the cache is at 80 % of its limit."""
        started = time.monotonic()
        entries = []
        for path in self._dir.glob("*/*"):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in sorted(entries):
            if total <= self._max * _SWEEP_TO:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        with self._lock:
            self._total = total
        log.info("render cache: removed %d least recently used images in %.0f ms, %.1f MB left",
                 removed, (time.monotonic() - started) * 1000, total / 1e6)  # fmt: skip

    def _size(self) -> int:
        total = 0
        for path in self._dir.glob("*/*"):
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def _path(self, key: str) -> Path:
        return self._dir / key[:2] / key
