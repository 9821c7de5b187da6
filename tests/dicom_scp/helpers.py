"""Helpers for the DIMSE end-to-end tests.

Making test files (small CT-like studies, a streamed 1 GB multi-frame),
running dcmtk peers (storescu, findscu, storescp) and reading
their output, and looking at what a `minipacs serve` holds: the index, the
object files and the spool.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from sqlalchemy import text

from archive import InstanceRef, Level, Query
from tests.conftest import (
    CT_FILES,
    DX_FILE,
    ROOT,
    US_FILES,
    Server,
    Site,
    dcmtk,
    echo,
    free_port,
    require_private_network,
)

HOST = "127.0.0.1"

# --- the sample studies (sample_dicom/README.md) -------------------------------


@dataclass(frozen=True)
class SampleStudy:
    files: tuple[Path, ...]
    patient_id: str
    patient_name: str
    study_uid: str
    series_uids: tuple[str, ...]
    sop_uids: tuple[str, ...]


def _sample(files: Sequence[Path]) -> SampleStudy:
    headers = [dcmread(p, stop_before_pixels=True) for p in files]
    first = headers[0]
    return SampleStudy(
        tuple(files), str(first.PatientID), str(first.PatientName), str(first.StudyInstanceUID),
        tuple(sorted({str(h.SeriesInstanceUID) for h in headers})),
        tuple(str(h.SOPInstanceUID) for h in headers),
    )  # fmt: skip


CT = _sample(CT_FILES)
DX = _sample([DX_FILE])
US = _sample(US_FILES)


def stop_and_check(server: Server) -> None:
    """Stop a server a test started: it must exit cleanly and never have logged a traceback."""
    code = server.stop()
    assert code == 0, f"minipacs serve exited with {code} on SIGTERM:\n{server.log()}"
    assert "Traceback" not in server.log(), server.log()


# --- waiting ------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# --- Part 10 bytes -------------------------------------------------------------

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def dataset_offset(data: bytes) -> int:
    """Where the dataset starts: after the preamble, 'DICM' and the File Meta group.

    Written here rather than taken from the product (archive.part10) so the
    tests do not share the code they check.
    """
    assert data[128:132] == b"DICM", "not a Part 10 file"
    offset = 132
    while data[offset:offset + 2] == b"\x02\x00":
        vr = data[offset + 4:offset + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack("<I", data[offset + 8:offset + 12])
            offset += 12 + length
        else:
            (length,) = struct.unpack("<H", data[offset + 6:offset + 8])
            offset += 8 + length
    return offset


def dataset_bytes(source: Path | bytes) -> bytes:
    """The dataset of a Part 10 file (or of its bytes), without the File Meta group."""
    data = source.read_bytes() if isinstance(source, Path) else source
    return data[dataset_offset(data):]


def inflate(data: bytes) -> bytes:
    """The dataset inside a Deflated Explicit VR Little Endian stream (raw deflate, PS3.5 A.5)."""
    return zlib.decompress(data, -zlib.MAX_WBITS)


def transfer_syntax_of(path: Path) -> UID:
    return UID(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


# --- what the server holds ------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    ref: InstanceRef
    data: bytes

    @property
    def dataset(self) -> bytes:
        return dataset_bytes(self.data)


def stored_objects(server: Server) -> dict[str, StoredObject]:
    """Every indexed instance with its stored bytes, by SOP Instance UID."""
    archive = server.archive()
    try:
        result: dict[str, StoredObject] = {}
        for ref in archive.instances(Query(level=Level.IMAGE)):
            assert ref.sop_instance_uid not in result, f"{ref.sop_instance_uid} indexed twice"
            with archive.open_instance(ref) as stream:
                result[ref.sop_instance_uid] = StoredObject(ref, stream.read())
        return result
    finally:
        archive.close()


def index_rows(server: Server, sql: str, **params: object) -> list[dict[str, Any]]:
    """The rows of one SQL query on the server's index, SQLite or PostgreSQL alike."""
    archive = server.archive()
    try:
        with archive.db.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(sql), params)]
    finally:
        archive.close()


def instance_rows(server: Server) -> list[tuple[str, str, int, str]]:
    """(SOP Instance UID, storage key, size, sha256) of every instance row."""
    rows = index_rows(server, "SELECT sop_instance_uid, storage_key, size_bytes, sha256 FROM instance")
    return [(r["sop_instance_uid"], r["storage_key"], r["size_bytes"], r["sha256"]) for r in rows]


def sha256_of(path: Path, start: int = 0) -> str:
    """SHA-256 of a file from `start` on, read in chunks (for objects of any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def assert_index_matches_objects(server: Server) -> list[tuple[str, str, int, str]]:
    """Every instance row's object exists (on disk or in the bucket) with the recorded size and SHA-256."""
    rows = instance_rows(server)
    archive = server.archive()
    try:
        for uid, key, size, sha in rows:
            assert archive.objects.exists(key), f"{uid}: object {key} is missing"
            assert archive.objects.size(key) == size, f"{uid}: object size differs from the index"
            digest = hashlib.sha256()
            with archive.objects.open(key) as stream:
                while chunk := stream.read(8 * 2**20):
                    digest.update(chunk)
            assert digest.hexdigest() == sha, f"{uid}: object SHA-256 differs from the index"
    finally:
        archive.close()
    return rows


def object_keys(server: Server) -> list[str]:
    """Every object in the server's store by key; in a folder store, hidden temporary files too."""
    site = server.site or Site(server.data)
    if not site.storage_url:
        root = server.data / "objects"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []
    archive = server.archive()
    try:
        return sorted(archive.objects.keys())
    finally:
        archive.close()


def object_bytes(server: Server, key: str) -> bytes:
    archive = server.archive()
    try:
        with archive.objects.open(key) as stream:
            return stream.read()
    finally:
        archive.close()


def delete_object(server: Server, key: str) -> None:
    """Take an object away behind the index's back (a disk fault, an operator's mistake)."""
    archive = server.archive()
    try:
        archive.objects.delete(key)
    finally:
        archive.close()


def spool_files(server: Server) -> list[Path]:
    root = server.data / "spool"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def spool_bytes(server: Server) -> int:
    """Bytes in the spool (files that vanish while counted count as 0)."""
    total = 0
    for path in spool_files(server):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def index_counts(server: Server) -> tuple[int, int, int, int]:
    """(patients, studies, series, instances) in the index."""
    archive = server.archive()
    try:
        s = archive.statistics()
        return s.patients, s.studies, s.series, s.instances
    finally:
        archive.close()


def assert_stored_as_received(server: Server, path: Path, stored: StoredObject | None = None) -> StoredObject:
    """`path` is in the archive with its transfer syntax and its dataset bytes unchanged."""
    sent = dcmread(path, stop_before_pixels=True)
    uid = str(sent.SOPInstanceUID)
    if stored is None:
        stored = stored_objects(server)[uid]
    assert stored.ref.transfer_syntax_uid == sent.file_meta.TransferSyntaxUID, path.name
    meta = dcmread(io.BytesIO(stored.data), stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, path.name
    assert meta.MediaStorageSOPInstanceUID == uid
    assert meta.MediaStorageSOPClassUID == sent.SOPClassUID
    assert stored.ref.size_bytes == len(stored.data)
    if sent.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
        # storescu inflates the file and deflates it again: compare what was deflated.
        assert inflate(stored.dataset) == inflate(dataset_bytes(path)), f"{path.name}: differs"
    else:
        assert stored.dataset == dataset_bytes(path), f"{path.name}: stored dataset bytes differ"
    return stored


# --- dcmtk: storescu ----------------------------------------------------------------

#: storescu option that proposes each transfer syntax (with the uncompressed ones).
STORESCU_PROPOSE: dict[str, list[str]] = {
    ImplicitVRLittleEndian: ["-xi"],
    ExplicitVRLittleEndian: ["-xe"],
    ExplicitVRBigEndian: ["-xb"],
    DeflatedExplicitVRLittleEndian: ["-xd"],
    JPEGBaseline8Bit: ["-xy"],
    JPEGExtended12Bit: ["-xx"],
    JPEGLosslessSV1: ["-xs"],
    JPEGLSLossless: ["-xt"],
    JPEGLSNearLossless: ["-xu"],
    JPEG2000Lossless: ["-xv"],
    JPEG2000: ["-xw"],
    RLELossless: ["-xr"],
}


def storescu_config(directory: Path, pairs: Iterable[tuple[str, str]]) -> list[str]:
    """`-xf` options proposing exactly the given (SOP Class, Transfer Syntax) pairs.

    For the syntaxes storescu has no `-x` flag for (JPEG lossless process 14
    with another selection value than 1, say).
    """
    lines = ["[[TransferSyntaxes]]"]
    contexts = ["[[PresentationContexts]]", "[Contexts]"]
    for n, (sop_class, syntax) in enumerate(sorted(set(pairs)), start=1):
        lines += [f"[TS{n}]", f"TransferSyntax1 = {syntax}"]
        contexts.append(f"PresentationContext{n} = {sop_class}\\TS{n}")
    text = "\n".join(lines + contexts + ["[[Profiles]]", "[Exact]", "PresentationContexts = Contexts", ""])
    path = directory / f"storescu-{abs(hash(text))}.cfg"
    path.write_text(text)
    return ["-xf", str(path), "Exact"]


def as_storescu_sends(path: Path, directory: Path) -> Path:
    """`path`, or a copy encoded the way storescu puts it on the wire when that differs.

    storescu does not send a file's bytes: it re-encodes the dataset with
    explicit sequence and item lengths and without trailing padding
    (FFFC,FFFC). For a file that is encoded otherwise, the same re-encoding
    by dcmconv gives the bytes the server should have received and stored.
    """
    if transfer_syntax_of(path) == DeflatedExplicitVRLittleEndian:
        return path  # compared after inflating, see assert_stored_as_received
    copy = directory / f"wire-{path.name}"
    dcmtk("dcmconv", "+e", "-p", path, copy)
    if dataset_bytes(copy) == dataset_bytes(path):
        copy.unlink()
        return path
    return copy


def storescu(server: Server, *files: Path, args: Sequence[str] = (), aet: str = "STORESCU",
             check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Send `files` with dcmtk's storescu (verbose, so its per-file results can be parsed)."""
    return dcmtk("storescu", "-v", "-aet", aet, "-aec", server.aet, *args, HOST, server.port,
                 *files, check=check, timeout=timeout)  # fmt: skip


_SENDING = re.compile(r"^I: Sending file: (.+)$")
_RESPONSE = re.compile(r"^I: Received Store Response \(([^)]*)\)")
_FAILED = re.compile(r"^E: Store Failed, file: (.+?):?$")


def storescu_results(output: str) -> dict[str, str]:
    """File -> store response ("Success", "Warning: ...", or "failed") from `storescu -v` output."""
    results: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        if m := _SENDING.match(line):
            current = m.group(1)
        elif (m := _RESPONSE.match(line)) and current is not None:
            results[current] = m.group(1)
            current = None
        elif (m := _FAILED.match(line)):
            results[m.group(1)] = "failed"
            current = None
    return results


# --- dcmtk: findscu ---------------------------------------------------------------


def findscu(server: Server, out_dir: Path, *keys: str, model: str = "-S",
            extra: Sequence[str] = (), check: bool = True) -> tuple[list[Dataset], str]:  # fmt: skip
    """Run findscu with `-k` keys; return the responses (extracted with -X) and the log."""
    out_dir.mkdir(parents=True, exist_ok=False)
    args: list[str] = ["findscu", "-v", model, "-aec", server.aet, "-X", "-od", str(out_dir), *extra]
    for key in keys:
        args += ["-k", key]
    result = dcmtk(*args, HOST, server.port, check=check)
    responses = [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]
    return responses, result.stdout + result.stderr


# --- dcmtk: storescp as a C-MOVE destination ---------------------------------------


@dataclass
class StoreSCP:
    aet: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def storescp(tmp: Path, aet: str = "STORESCP", accept_all: bool = True) -> Iterator[StoreSCP]:
    """dcmtk's storescp on a free port, writing what it receives bit for bit into a folder.

    `accept_all`: every transfer syntax storescp knows (else only the
    uncompressed ones). storescp listens on every address, so only in a
    private network namespace.
    """
    require_private_network()
    port = free_port()
    directory = tmp / f"storescp-{aet}-{port}"
    directory.mkdir(parents=True)
    log_path = tmp / f"storescp-{aet}-{port}.log"
    with open(log_path, "wb") as log:
        # +xa: accept every transfer syntax it knows, so objects arrive as stored;
        # +B: write the dataset as received, no re-encoding.
        process = subprocess.Popen(
            ["storescp", "-v", "-aet", aet, *(["+xa"] if accept_all else []), "+B",
             "-od", str(directory), str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    scp = StoreSCP(aet, port, directory, process, log_path)
    try:
        wait_for(lambda: process.poll() is not None or _accepts(port), timeout=20, what="storescp")
        assert process.poll() is None, scp.log()
        assert echo(port, aet=aet), scp.log()
        yield scp
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def register_ae(server: Server | Path, title: str, host: str = "", port: int | str = "",
                cli: bool = False) -> None:  # fmt: skip
    """Register an AE in a server's (or a data directory's) index.

    `cli`: with the `minipacs ae add` command, as an administrator would
    (slower: a Python start); otherwise through the archive's registry.
    """
    site = (server.site or Site(server.data)) if isinstance(server, Server) else Site(server)
    site.data.mkdir(parents=True, exist_ok=True)
    if cli:
        args = [sys.executable, "-m", "appliance.cli", "ae", "add", title]
        args += [a for a in (host, str(port or "")) if a]
        result = subprocess.run(args + ["--data", str(site.data)], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, check=False, env={**os.environ, **site.env()})  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"registered {title}" in result.stdout
        return
    archive = site.open_archive()
    try:
        archive.registry.add(title, host, port or 0)
    finally:
        archive.close()


# --- pynetdicom SCU -----------------------------------------------------------------


def associate(server: Server, contexts: Sequence[PresentationContext], calling: str = "PYNETDICOM",
              **kwargs: Any) -> Association:  # fmt: skip
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate(HOST, server.port, contexts, ae_title=server.aet, **kwargs)


# --- test files ---------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    patient_id: str
    name: str


def make_instances(directory: Path, count: int, *, patient: Patient | None = None,
                   study_uid: str | None = None, series_uid: str | None = None,
                   rows: int = 64, columns: int = 64, seed: int = 0,
                   study_date: str = "20260101") -> list[Path]:  # fmt: skip
    """`count` small CT-like instances of one series, Explicit VR Little Endian."""
    directory.mkdir(parents=True, exist_ok=True)
    patient = patient or Patient(f"TEST{seed:05d}", f"TEST^PATIENT{seed}")
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = f"ACC{seed:05d}"
        ds.Modality = "CT"
        ds.PatientName = patient.name
        ds.PatientID = patient.patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = str(seed)
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = ["0", "0", str(i)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.5", "0.5"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = rng.integers(0, 4096, rows * columns, dtype=np.uint16).tobytes()
        paths.append(save(ds, directory / f"{seed:03d}_{i + 1:04d}.dcm", ExplicitVRLittleEndian))
    return paths


def save(ds: Dataset, path: Path, transfer_syntax: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def write_large_multiframe(path: Path, target_bytes: int, *, rows: int = 1024,
                           columns: int = 1024) -> tuple[int, int]:  # fmt: skip
    """An uncompressed 8-bit multi-frame XA-like object of about `target_bytes`, streamed to disk.

    The header is written by pydicom, then the Pixel Data element header and
    the frames are appended chunk by chunk, so the object is never in memory.
    Returns (number of frames, file size).
    """
    frame = rows * columns
    frames = max(1, target_bytes // frame)
    ds = Dataset()
    ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.12.1")  # X-Ray Angiographic Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = ds.ContentDate = "20260102"
    ds.StudyTime = ds.ContentTime = "101010"
    ds.Modality = "XA"
    ds.PatientName = "LARGE^CINE"
    ds.PatientID = "LARGE0001"
    ds.AccessionNumber = "LARGE1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameTime = "33.3"
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    save(ds, path, ExplicitVRLittleEndian)
    length = frames * frame
    chunk = np.random.default_rng(7).integers(0, 256, 8 * 2**20, dtype=np.uint8).tobytes()
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length))
        remaining = length
        while remaining:
            n = min(remaining, len(chunk))
            f.write(chunk[:n])
            remaining -= n
    return frames, path.stat().st_size
