"""The archive on a real S3 server: ingest, read back, and the S3 server failing mid-upload."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from archive import Archive, StorageUnavailable, StoreStatus
from archive.query import Level, Query
from storage.s3 import S3Store
from tests.archive.helpers import ORIGIN, ingest, make_dataset, part10, table_rows
from tests.conftest import CT_FILES
from tests.storage.s3_server import JuiceFSGateway, S3Endpoint

INDEX_TABLES = ("patient", "study", "series", "instance")


def open_archive(tmp_path: Path, endpoint: S3Endpoint, url: str | None = None) -> Archive:
    return Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", url or endpoint.new_bucket_url("objects"),
                        access_key=endpoint.access_key, secret_key=endpoint.secret_key)  # fmt: skip


@pytest.fixture
def s3_archive(tmp_path: Path, s3: S3Endpoint) -> Iterator[Archive]:
    archive = open_archive(tmp_path, s3)
    yield archive
    archive.close()


def test_ingest_and_read_back(s3_archive: Archive) -> None:
    assert isinstance(s3_archive.objects, S3Store)
    for path in CT_FILES[:3]:
        assert ingest(s3_archive, path.read_bytes()).status is StoreStatus.STORED
    refs = s3_archive.instances(Query(Level.STUDY, {}))
    assert len(refs) == 3
    rows = {row["storage_key"]: row for row in table_rows(s3_archive, "instance")}
    for ref in refs:
        with s3_archive.open_instance(ref) as stream:
            stored = stream.read()
        row = rows[ref.storage_key]
        # What the index recorded is what S3 holds.
        assert (row["size_bytes"], row["sha256"]) == (len(stored), hashlib.sha256(stored).hexdigest())
        assert s3_archive.objects.size(ref.storage_key) == len(stored)
        ds = s3_archive.read_dataset(ref)  # pydicom seeks in the ranged stream
        assert ds.SOPInstanceUID == ref.sop_instance_uid
        received = dcmread(next(p for p in CT_FILES if dcmread(p).SOPInstanceUID == ref.sop_instance_uid))
        assert ds.PixelData == received.PixelData
    # A resend is stored once, and leaves no second object behind.
    assert ingest(s3_archive, CT_FILES[0].read_bytes()).status is StoreStatus.ALREADY_STORED
    assert len(table_rows(s3_archive, "instance")) == 3


class StopsTheServerWhileRead(io.BytesIO):
    """The sender's bytes; the S3 server goes down once the upload is `after` bytes in."""

    def __init__(self, data: bytes, gateway: JuiceFSGateway, after: int) -> None:
        super().__init__(data)
        self._gateway = gateway
        self._after = after

    def read(self, size: int | None = -1, /) -> bytes:
        if self.tell() > self._after:
            self._gateway.stop()
        return super().read(size)


def test_s3_down_before_and_during_an_upload(tmp_path: Path) -> None:
    gateway = JuiceFSGateway(tmp_path / "s3")
    gateway.start()
    archive = open_archive(tmp_path, gateway.endpoint)
    try:
        large = make_dataset(1, pixel_bytes=40 * 2**20)  # five multipart parts
        large.Rows, large.Columns = 640, 32768
        big = part10(large)
        with pytest.raises(StorageUnavailable) as failed:
            archive.ingest(StopsTheServerWhileRead(big, gateway, 20 * 2**20), ORIGIN)
        assert failed.value.dimse_status == 0xA700
        for table in INDEX_TABLES:
            assert table_rows(archive, table) == [], table
        # Still down: the next instance is refused the same way.
        small = part10(make_dataset(2))
        with pytest.raises(StorageUnavailable):
            ingest(archive, small)
        gateway.start()
        objects = archive.objects
        assert isinstance(objects, S3Store)
        assert list(objects._client.list_objects(objects.bucket, recursive=True)) == []  # nothing left behind
        # Back up: the same instances go in.
        assert ingest(archive, big).status is StoreStatus.STORED
        assert ingest(archive, small).status is StoreStatus.STORED
    finally:
        archive.close()
        gateway.stop()
