"""Object storage behind one small interface (see storage.base.ObjectStore)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from storage.base import (
    InvalidKeyError,
    ObjectStore,
    PutResult,
    Readable,
    StorageError,
    StorageFullError,
    StorageURLError,
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
    "StorageURLError",
    "check_key",
    "open_store",
]

#: S3 URL schemes: plain HTTP, and HTTPS (TLS).
S3_SCHEMES = {"s3": False, "s3+http": False, "s3+https": True}
# S3 bucket naming rules (3-63 lower-case letters, digits, dots and hyphens).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def open_store(
    url: str,
    reserve_bytes: int = 0,
    *,
    access_key: str = "",
    secret_key: str = "",
    create_bucket: bool = True,
) -> ObjectStore:
    """Open the store named by `url`.

    ``file:///path`` or a plain directory path: the filesystem.
    ``s3://HOST[:PORT]/BUCKET[/PREFIX]`` (HTTP) or ``s3+https://...`` (TLS):
    an S3 bucket, with the given key pair; the bucket is made if missing
    unless `create_bucket` is False. Raises StorageURLError (a ValueError) for a bad URL and
    StorageError when the server cannot be reached.
    """
    parsed = urlparse(url)
    if parsed.scheme in S3_SCHEMES:
        return _open_s3(url, S3_SCHEMES[parsed.scheme], access_key, secret_key, create_bucket)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            # file://data/objects means host "data", path /objects: not what was meant.
            raise StorageURLError(
                f"storage URL {url!r} names host {parsed.netloc!r}; "
                "use file:///absolute/path or a plain path"
            )
        if not path:
            raise StorageURLError(f"storage URL {url!r} names no directory")
        return FilesystemStore(Path(path), reserve_bytes=reserve_bytes)
    raise StorageURLError(
        f"storage URL {url!r}: unsupported scheme {parsed.scheme!r} "
        "(use file:///directory, s3://host:port/bucket or s3+https://host:port/bucket)"
    )


def _open_s3(url: str, secure: bool, access_key: str, secret_key: str, create_bucket: bool) -> ObjectStore:
    from storage.s3 import Credentials, S3Store  # the minio client loads only when used

    parsed = urlparse(url)
    bucket, _, prefix = parsed.path.lstrip("/").partition("/")
    try:
        port = parsed.port
    except ValueError:
        port = None
        bad_port = True
    else:
        bad_port = False
    if not parsed.hostname or bad_port or parsed.username or parsed.query or parsed.fragment:
        raise StorageURLError(
            f"storage URL {url!r}: expected s3://HOST[:PORT]/BUCKET[/PREFIX] "
            "(credentials go in storage.access_key and storage.secret_key, not the URL)"
        )
    if not bucket:
        raise StorageURLError(f"storage URL {url!r} names no bucket: s3://HOST[:PORT]/BUCKET[/PREFIX]")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise StorageURLError(f"storage URL {url!r}: {bucket!r} is not a valid S3 bucket name")
    if not access_key or not secret_key:
        raise StorageURLError(f"storage URL {url!r} needs storage.access_key and storage.secret_key")
    endpoint = parsed.hostname if port is None else f"{parsed.hostname}:{port}"
    if ":" in parsed.hostname:  # IPv6 literal
        endpoint = f"[{parsed.hostname}]" + (f":{port}" if port is not None else "")
    try:
        return S3Store(endpoint, bucket, Credentials(access_key, secret_key), prefix=prefix,
                       secure=secure, create_bucket=create_bucket)  # fmt: skip
    except (ValueError, InvalidKeyError) as exc:  # the client's bucket-name check, a bad prefix
        raise StorageURLError(f"storage URL {url!r}: {exc}") from None
