"""Small DICOM datasets made in memory, and ways to look into an archive's index.

Everything here builds real bytes (pydicom's writer) and reads the real
SQLite index; nothing is mocked.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    UID,
)
from sqlalchemy import select

from archive import Archive, Expected, Origin, StoreResult, query_from_identifier
from archive.models import Base
from storage.filesystem import FilesystemStore

ORIGIN = Origin("MODALITY1", "127.0.0.1", "DIMSE", "assoc-1")

# Deterministic UIDs so failures are readable: 1.2.826.0.1.3680043.10.9999.<kind>.<n>
ROOT = "1.2.826.0.1.3680043.10.9999"


def uid(kind: int, n: int) -> str:
    return f"{ROOT}.{kind}.{n}"


def make_dataset(
    n: int = 1,
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    sop_class: str = CTImageStorage,
    patient_id: str | None = "PID001",
    patient_name: str | None = "Nguyễn^Văn An",
    charset: str | None = "ISO_IR 192",
    modality: str = "CT",
    pixel_bytes: int = 0,
    **extra: Any,
) -> Dataset:
    """A small image-like dataset; `extra` sets further attributes by keyword.

    Attributes given the value None are left out.
    """
    ds = Dataset()
    values: dict[str, Any] = {
        "SpecificCharacterSet": charset,
        "SOPClassUID": sop_class,
        "SOPInstanceUID": sop or uid(3, n),
        "StudyDate": "20261120",
        "StudyTime": "101530",
        "AccessionNumber": "ACC001",
        "Modality": modality,
        "PatientName": patient_name,
        "PatientID": patient_id,
        "PatientBirthDate": "19680315",
        "PatientSex": "M",
        "StudyInstanceUID": study or uid(1, 1),
        "SeriesInstanceUID": series or uid(2, 1),
        "SeriesNumber": 1,
        "InstanceNumber": n,
    }
    values.update(extra)
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    if pixel_bytes:
        ds.Rows = 1
        ds.Columns = pixel_bytes // 2
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(range(256)) * (pixel_bytes // 256) + bytes(pixel_bytes % 256)
    return ds


def other_ids(*items: tuple[str, str, str]) -> Sequence:
    """An OtherPatientIDsSequence from (PatientID, IssuerOfPatientID, TypeOfPatientID)."""
    seq = Sequence()
    for value, issuer, kind in items:
        item = Dataset()
        item.PatientID = value
        item.IssuerOfPatientID = issuer
        item.TypeOfPatientID = kind
        seq.append(item)
    return seq


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """`ds` as a Part 10 file (preamble, DICM, File Meta) in `transfer_syntax`."""
    ds = ds.copy()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", CTImageStorage)
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", uid(3, 0))
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(f"{ROOT}.99")
    ds.file_meta = meta
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def bare(ds: Dataset, implicit: bool = True, little: bool = True) -> bytes:
    """Only the encoded dataset: no preamble, no DICM, no File Meta."""
    out = DicomBytesIO()
    out.is_little_endian = little
    out.is_implicit_VR = implicit
    write_dataset(out, ds)
    return out.getvalue()


def dataset_bytes(data: bytes) -> bytes:
    """The bytes after the File Meta group of a Part 10 file (the dataset proper)."""
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def ingest(
    archive: Archive, data: bytes, origin: Origin = ORIGIN, expected: Expected | None = None
) -> StoreResult:
    return archive.ingest(io.BytesIO(data), origin, expected)


def ingest_ds(archive: Archive, ds: Dataset, **kwargs: Any) -> StoreResult:
    return ingest(archive, part10(ds), **kwargs)


def table_rows(archive: Archive, table: str) -> list[dict[str, Any]]:
    """Every row of `table` in the archive's index, as dicts, in primary-key order."""
    t = Base.metadata.tables[table]
    with archive.db.read() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(t.c.pk)).mappings()]


def stored_files(root: Path) -> list[Path]:
    """Every file below an object-store root, hidden ones (temporaries) included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def stored_keys(archive: Archive) -> list[str]:
    """Every object in the archive's store: files below a folder store (temporaries included), keys in a bucket."""
    if isinstance(archive.objects, FilesystemStore):
        root = archive.objects.root
        return [p.relative_to(root).as_posix() for p in stored_files(root)]
    return sorted(archive.objects.keys())


def identifier(level: str, **keys: Any) -> Dataset:
    """A C-FIND identifier: QueryRetrieveLevel plus keys by keyword (None = empty return key)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, "" if value is None else value)
    return ds


def find(archive: Archive, level: str, patient_root: bool = False, **keys: Any) -> list[Dataset]:
    return list(archive.find(query_from_identifier(identifier(level, **keys), patient_root)))


def values(results: Iterable[Dataset], keyword: str) -> list[Any]:
    """The value of `keyword` in each result, sorted (as str) for order-free comparison."""
    return sorted(str(r.get(keyword, "")) for r in results)


def reread(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


__all__ = [
    "ORIGIN",
    "bare",
    "dataset_bytes",
    "find",
    "identifier",
    "ingest",
    "ingest_ds",
    "make_dataset",
    "other_ids",
    "part10",
    "reread",
    "stored_files",
    "table_rows",
    "uid",
    "values",
]
