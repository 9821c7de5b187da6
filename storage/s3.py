"""S3 object store (MinIO, Ceph RGW, AWS S3) through the `minio` client.

Why it looks the way it does:

* put() streams: the minio client reads the source in parts of `part_size`
  bytes (a multipart upload once the object is larger than one part), so a
  1 GB cine never sits in memory; the SHA-256 is computed on the way through.
  put() returns only after S3 answered the (final) PUT, so an acknowledged
  object is stored. A failed multipart upload is aborted by the client.
* Keys are never reused: put() refuses a key that already holds an object.
  The archive builds a fresh random key per write, so the check (a HEAD before
  the upload) guards against bugs, not against a concurrent writer.
* Transient faults (connection refused/reset, HTTP 500/502/503/504) are retried
  a few times with exponential backoff by the HTTP pool (urllib3 Retry); what
  is still failing after that becomes StorageError, which the archive reports
  as StorageUnavailable (DIMSE 0xA700, HTTP 503).
* open() returns a seekable, buffered stream made of ranged GETs, so pydicom
  can seek in it and a closed stream releases its HTTP connection.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any, BinaryIO, Callable, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

from storage.base import PutResult, Readable, StorageError, check_key

log = logging.getLogger(__name__)

#: Size of one multipart part: the most a put() holds in memory (S3's minimum is 5 MiB).
PART_SIZE = 8 * 1024 * 1024
#: Read-ahead of the streams open() returns.
READ_BUFFER = 256 * 1024
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    """An S3 access key pair. The secret never appears in repr() or logs."""

    access_key: str
    secret_key: str = field(repr=False)


class S3Store:
    """Objects in one bucket (below an optional key prefix) of an S3 server."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        credentials: Credentials,
        *,
        prefix: str = "",
        secure: bool = False,
        create_bucket: bool = True,
        region: str | None = None,
        attempts: int = 4,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.secure = secure
        # connect/read timeouts bound how long a dead server can hold an ingest;
        # Retry retries connection errors and 5xx answers with backoff 0.2, 0.4, 0.8 s.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=attempts - 1,
                backoff_factor=0.2,
                status_forcelist=[500, 502, 503, 504],
                raise_on_status=False,
            ),
        )
        self._client = Minio(
            endpoint,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        self._check_bucket(create_bucket)

    def __repr__(self) -> str:
        scheme = "s3+https" if self.secure else "s3"
        return f"S3Store({scheme}://{self.endpoint}/{self.bucket}/{self.prefix})"

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.clear()

    def _check_bucket(self, create: bool) -> None:
        exists = self._call("check the bucket", lambda: self._client.bucket_exists(self.bucket))
        if exists:
            return
        if not create:
            raise StorageError(f"bucket {self.bucket!r} does not exist on {self.endpoint}")
        try:
            self._client.make_bucket(self.bucket)
            log.info("created the bucket %s on %s", self.bucket, self.endpoint)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"cannot create the bucket {self.bucket!r}: {exc.code}") from exc
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            raise StorageError(f"cannot create the bucket {self.bucket!r}: {_describe(exc)}") from exc

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[[], T], key: str | None = None) -> T:
        """Run one client call, translating its errors to the port's."""
        try:
            return fn()
        except S3Error as exc:
            if exc.code in _MISSING and key is not None:
                raise FileNotFoundError(f"no object {key!r}") from None
            raise StorageError(f"cannot {what}: S3 error {exc.code}") from exc
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            raise StorageError(f"cannot {what}: {_describe(exc)}") from exc

    def put(self, key: str, stream: Readable) -> PutResult:
        name = self._name(key)
        if self.exists(key):
            raise StorageError(f"object {key!r} already exists; keys are never reused")
        source = _HashingReader(stream)
        try:
            self._client.put_object(self.bucket, name, source, length=-1, part_size=PART_SIZE)  # type: ignore[arg-type]
        except S3Error as exc:
            raise StorageError(f"cannot write {key!r}: S3 error {exc.code}") from exc
        except (MinioException, HTTPError) as exc:
            raise StorageError(f"cannot write {key!r}: {_describe(exc)}") from exc
        except OSError as exc:
            # Reading the source failed (a dropped association) or the socket did.
            raise StorageError(f"cannot write {key!r}: {exc.strerror or exc}") from exc
        return PutResult(key=key, size=source.size, sha256=source.digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        size = self.size(key)
        return io.BufferedReader(_RangeReader(self, key, size), READ_BUFFER)  # type: ignore[return-value]

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        if end == start:
            self.size(key)  # a missing key is still an error
            return b""
        return self._read(key, start, end - start)

    def _read(self, key: str, offset: int, length: int) -> bytes:
        name = self._name(key)

        def read() -> bytes:
            try:
                response = self._client.get_object(self.bucket, name, offset=offset, length=length)
            except S3Error as exc:
                if exc.code == "InvalidRange":  # starts at or past the end
                    return b""
                raise
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._call(f"read {key!r}", read, key)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call(f"delete {key!r}", lambda: self._client.remove_object(self.bucket, name))

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        start = self._name(prefix) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        skip = len(self.prefix) + 1 if self.prefix else 0
        listing = self._call("list the bucket", lambda: self._client.list_objects(self.bucket, prefix=start,
                                                                                   recursive=True))  # fmt: skip
        try:
            for item in listing:
                if item.object_name and not item.is_dir:
                    yield item.object_name[skip:]
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            raise StorageError(f"cannot list the bucket {self.bucket!r}: {_describe(exc)}") from exc

    def size(self, key: str) -> int:
        name = self._name(key)
        stat = self._call(f"stat {key!r}", lambda: self._client.stat_object(self.bucket, name), key)
        return int(stat.size or 0)


class _HashingReader:
    """Passes reads through, counting and hashing the bytes on their way to S3."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._stream.read(size)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk


class _RangeReader(io.RawIOBase):
    """A seekable read-only view of one object: reads are ranged GETs from the position."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self._store = store
        self._key = key
        self._size = size
        self._pos = 0
        # io.BufferedReader users (pydicom) expect a name, as an open file has.
        self.name = key

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readall(self) -> bytes:
        # RawIOBase.readall would fetch 8 KiB per request.
        if self._pos >= self._size:
            return b""
        data = self._store._read(self._key, self._pos, self._size - self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = self._store._read(self._key, self._pos, want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
