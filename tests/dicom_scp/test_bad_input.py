"""Hostile input through every DIMSE service: a clear failure status, nothing changed.

C-STORE datasets are sent with pynetdicom's chunked sender, which puts a
file's raw bytes on the wire without decoding them, so malformed bytes reach
the server as they are. After each refusal: no new index row, no new object
file, an empty spool, and the next valid study is still stored; the servers'
logs must hold no traceback when they stop (tests/dicom_scp/conftest.py).
"""

from __future__ import annotations

import io
import itertools
import random
import re
import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, UID, generate_uid
from pynetdicom import _config, build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.conftest import CT_FILES, Server, echo, start_server
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.conftest import testdata as pydicom_file
from tests.dicom_scp.helpers import (
    CT,
    HOST,
    assert_stored_as_received,
    associate,
    dataset_bytes,
    index_counts,
    make_instances,
    object_keys,
    register_ae,
    spool_bytes,
    spool_files,
    stop_and_check,
    storescp,
    storescu,
    storescu_results,
    wait_for,
    write_large_multiframe,
)

# --- building and sending raw objects ------------------------------------------------


def part10(body: bytes, sop_class: str, sop_instance: str,
           transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:  # fmt: skip
    """A File Meta group (what the sender's command will announce) followed by `body` as is."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID("1.2.3.4")
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue() + body


def encoded(ds: Dataset) -> bytes:
    """`ds` as Explicit VR Little Endian dataset bytes, values written as they are."""
    buffer = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=True)
    return dataset_bytes(buffer.getvalue())


@contextmanager
def lenient_sender() -> Iterator[None]:
    """pynetdicom sending raw bytes, and letting malformed UIDs through, for this block only."""
    chunked, validator = _config.STORE_SEND_CHUNKED_DATASET, _config.VALIDATORS["UI"]
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.VALIDATORS["UI"] = lambda value: (True, "")
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        _config.VALIDATORS["UI"] = validator


_files = itertools.count()


def send_raw(server: Server, tmp_path: Path, data: bytes) -> int:
    """Send a Part 10 file's raw bytes with C-STORE (in the context its File Meta names);
    the response status."""
    path = tmp_path / f"hostile-{next(_files)}.dcm"
    path.write_bytes(data)
    meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
    with lenient_sender():
        assoc = associate(server, [build_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])])
        assert assoc.is_established
        try:
            response = assoc.send_c_store(path)
        finally:
            assoc.release()
    assert "Status" in response, "the server sent no response"
    return int(response.Status)


_seeds = itertools.count(100)


@contextmanager
def changes_nothing(server: Server) -> Iterator[None]:
    """The block adds no index row, no object file and leaves nothing in the spool; then the
    server still stores the next valid study."""
    counts, objects = index_counts(server), object_keys(server)
    yield
    assert index_counts(server) == counts
    assert object_keys(server) == objects
    # pynetdicom removes a spooled dataset once the handler has answered, the
    # server an interrupted one when its connection closes.
    wait_for(lambda: spool_files(server) == [], timeout=10, what="an empty spool")
    files = make_instances(server.data.parent / f"next-{next(_seeds)}", 2, seed=next(_seeds))
    result = storescu(server, *files, args=["-R", "-xe"])
    assert set(storescu_results(result.stdout + result.stderr).values()) == {"Success"}
    assert index_counts(server)[3] == counts[3] + 2
    for path in files:
        assert_stored_as_received(server, path)


# --- C-STORE -------------------------------------------------------------------------

CT_BODY = dataset_bytes(CT_FILES[0])
CT_UIDS = (str(dcmread(CT_FILES[0], stop_before_pixels=True).SOPClassUID),
           str(dcmread(CT_FILES[0], stop_before_pixels=True).SOPInstanceUID))  # fmt: skip


def _replace_vr(body: bytes, keyword_tag: tuple[int, int], vr: bytes) -> bytes:
    """`body` with the VR of the element `keyword_tag` replaced (explicit VR little endian)."""
    tag = struct.pack("<HH", *keyword_tag)
    at = body.index(tag)
    return body[:at + 4] + vr + body[at + 6:]


def _with_uid(keyword: str, value: str) -> bytes:
    ds = dcmread(pydicom_file("CT_small.dcm"))
    setattr(ds, keyword, value)
    return part10(encoded(ds), CTImageStorage,
                  value if keyword == "SOPInstanceUID" else str(ds.SOPInstanceUID))  # fmt: skip


def _pixel_length(body: bytes, length: int) -> bytes:
    """`body` with the length of its (explicit VR, OW) Pixel Data element changed."""
    at = body.index(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
    return body[:at] + struct.pack("<I", length) + body[at + 4:]


def _empty_ct() -> bytes:
    return part10(b"", *CT_UIDS)


HOSTILE: dict[str, Callable[[], bytes]] = {
    "truncated in the pixel data": lambda: part10(CT_BODY[:300_000], *CT_UIDS),
    "truncated in an element header": lambda: part10(CT_BODY[:CT_BODY.index(b"\xe0\x7f\x10\x00") + 5], *CT_UIDS),
    "truncated inside a sequence": lambda: part10(
        CT_BODY[:CT_BODY.index(struct.pack("<HH", 0x0010, 0x1002)) + 40], *CT_UIDS),
    "invalid VR bytes": lambda: part10(_replace_vr(CT_BODY, (0x0010, 0x0010), b"\x01\x02"), *CT_UIDS),
    "lower-case VR": lambda: part10(_replace_vr(CT_BODY, (0x0008, 0x0060), b"cs"), *CT_UIDS),
    "garbage bytes": lambda: part10(random.Random(1).randbytes(20_000), *CT_UIDS),
    "garbage that looks like elements": lambda: part10(
        b"".join(struct.pack("<HH2sH", 0x0008, 0x1000 + i, b"LO", 4) + b"ABCD" for i in range(50))
        + random.Random(2).randbytes(999), *CT_UIDS),
    "zero-length dataset": _empty_ct,
    "length past the end": lambda: part10(_pixel_length(CT_BODY, 0x7FFFFFF0), *CT_UIDS),
    "SOP Instance UID with a slash": lambda: _with_uid("SOPInstanceUID", "1.2.840.99/../../1"),
    "Study Instance UID with dot-dot": lambda: _with_uid("StudyInstanceUID", "../../../../tmp/owned"),
    "Series Instance UID with a space": lambda: _with_uid("SeriesInstanceUID", "1.2.840.99 1"),
    "Study Instance UID with non-ASCII": lambda: _with_uid("StudyInstanceUID", "1.2.840.99.99").replace(
        b"1.2.840.99.99\x00", "1.2.840.99.Đ".encode() + b"\x00"),
    "SOP Instance UID over 64 characters": lambda: _with_uid("SOPInstanceUID", "1.2." + "3" * 70),
    "missing Study Instance UID": lambda: part10(
        dataset_bytes(pydicom_file("JPEGLSNearLossless_08.dcm")), "1.2.840.10008.5.1.4.1.1.7",
        str(dcmread(pydicom_file("JPEGLSNearLossless_08.dcm"), stop_before_pixels=True).SOPInstanceUID),
        "1.2.840.10008.1.2.4.81"),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE)
def test_malformed_store_is_refused_and_changes_nothing(module_server: Server, tmp_path: Path,
                                                        case: str) -> None:  # fmt: skip
    refusals = re.compile(r"C-STORE \S+ from PYNETDICOM@127.0.0.1 refused \(0xC000\): ")
    before = len(refusals.findall(module_server.log()))
    with changes_nothing(module_server):
        status = send_raw(module_server, tmp_path, HOSTILE[case]())
        assert 0xC000 <= status <= 0xCFFF, f"{case}: 0x{status:04X}"
    assert len(refusals.findall(module_server.log())) == before + 1  # with its reason


def test_dataset_of_another_sop_class_is_a900(module_server: Server, tmp_path: Path) -> None:
    with changes_nothing(module_server):
        # The command (and context) say MR Image Storage; the dataset is a CT.
        status = send_raw(module_server, tmp_path, part10(CT_BODY, MRImageStorage, CT_UIDS[1]))
        assert status == 0xA900
        # The command names another SOP Instance than the dataset holds.
        status = send_raw(module_server, tmp_path, part10(CT_BODY, CT_UIDS[0], generate_uid()))
        assert status == 0xA900


def test_interrupted_transfer_leaves_nothing_behind(module_server: Server, tmp_path: Path) -> None:
    """A modality that dies halfway through a dataset (storescu killed): no row, no object,
    and its partial dataset does not stay in the spool."""
    server = module_server
    path = tmp_path / "big.dcm"
    write_large_multiframe(path, 192 * 2**20)
    with changes_nothing(server):
        sender = subprocess.Popen(["storescu", "-aec", server.aet, "-R", "-xe", HOST, str(server.port),
                                   str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for(lambda: sender.poll() is not None or spool_bytes(server) > 4 * 2**20,
                     timeout=60, what="the server spooling the dataset")  # fmt: skip
            assert sender.poll() is None, "the transfer finished before it could be interrupted"
            sender.kill()
        finally:
            sender.wait()
    assert "removed the partial dataset of an interrupted C-STORE" in server.log()


# --- C-FIND --------------------------------------------------------------------------


def _find_statuses(server: Server, identifier: Dataset, model: str) -> list[int]:
    assoc = associate(server, [build_context(model)])
    assert assoc.is_established
    try:
        return [int(s.Status) for s, _ in assoc.send_c_find(identifier, model) if "Status" in s]
    finally:
        assoc.release()


def _query(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _with_element(ds: Dataset, tag: int, vr: str, value: object) -> Dataset:
    """`ds` with an element of the given VR, whatever the dictionary says it should be."""
    ds.add_new(tag, vr, value)
    return ds


BAD_QUERIES = {
    "date with dashes": _query(QueryRetrieveLevel="STUDY", StudyDate="2026-11-20", StudyInstanceUID=""),
    "date of letters": _query(QueryRetrieveLevel="STUDY", StudyDate="yesterday"),
    "unknown level": _query(QueryRetrieveLevel="VISIT", PatientID=""),
    "no level": _query(PatientID="BN26001001"),
    "patient level in study root": _query(QueryRetrieveLevel="PATIENT", PatientID=""),
    "wildcard in a UID": _query(QueryRetrieveLevel="STUDY", StudyInstanceUID="2.25.*"),
    "UID with a slash": _query(QueryRetrieveLevel="SERIES", SeriesInstanceUID="1.2/3"),
    "time of letters": _query(QueryRetrieveLevel="STUDY", StudyTime="noon"),
    "huge series number": _query(QueryRetrieveLevel="SERIES", StudyInstanceUID=CT.study_uid,
                                 SeriesNumber="99999999999999999999"),
    "huge series number sent as LO": _with_element(
        _query(QueryRetrieveLevel="SERIES", StudyInstanceUID=CT.study_uid), 0x00200011, "LO",
        "99999999999999999999"),
    "instance number sent as LO": _with_element(
        _query(QueryRetrieveLevel="IMAGE", StudyInstanceUID=CT.study_uid, SeriesInstanceUID=CT.series_uids[0]),
        0x00200013, "LO", "one"),
    "text return key sent as a sequence": _with_element(
        _query(QueryRetrieveLevel="STUDY", StudyInstanceUID=CT.study_uid), 0x00081030, "SQ",
        [_query(CodeValue="")]),
    "two levels": _query(QueryRetrieveLevel=["STUDY", "SERIES"], StudyInstanceUID=""),
    "name too long": _query(QueryRetrieveLevel="STUDY", PatientName="NGUYEN^" + "A" * 400),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_QUERIES)
def test_bad_find_identifier_is_a_failure(samples_server: Server, case: str) -> None:
    statuses = _find_statuses(samples_server, BAD_QUERIES[case], StudyRootQueryRetrieveInformationModelFind)
    assert statuses == [0xA900], f"{case}: {[hex(s) for s in statuses]}"


def test_patient_root_bad_identifier_is_a_failure(samples_server: Server) -> None:
    query = _query(QueryRetrieveLevel="PATIENT", PatientBirthDate="1968-03-15", PatientID="")
    assert _find_statuses(samples_server, query, PatientRootQueryRetrieveInformationModelFind) == [0xA900]


# --- C-MOVE / C-GET ------------------------------------------------------------------

NO_UNIQUE_KEY = {
    "study level with a patient ID only": _query(QueryRetrieveLevel="STUDY", PatientID=CT.patient_id),
    "study level with an empty UID": _query(QueryRetrieveLevel="STUDY", StudyInstanceUID=""),
    "series level without a series UID": _query(QueryRetrieveLevel="SERIES", StudyInstanceUID=CT.study_uid),
    "image level without a SOP UID": _query(QueryRetrieveLevel="IMAGE", StudyInstanceUID=CT.study_uid,
                                            SeriesInstanceUID=CT.series_uids[0]),
    "wildcard study UID": _query(QueryRetrieveLevel="STUDY", StudyInstanceUID="*"),
    "unknown level": _query(QueryRetrieveLevel="EVERYTHING", StudyInstanceUID=CT.study_uid),
}  # fmt: skip


@pytest.fixture(scope="module")
def move_destination_scp(samples_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with storescp(tmp_path_factory.mktemp("bad-move"), aet="BADMOVEDEST") as scp:
        register_ae(samples_server, scp.aet, HOST, scp.port)
        yield scp.directory


@pytest.fixture
def move_destination(move_destination_scp: Path) -> Path:
    """The registered BADMOVEDEST storescp's folder, emptied."""
    for path in move_destination_scp.iterdir():
        path.unlink()
    return move_destination_scp


@pytest.mark.parametrize("case", NO_UNIQUE_KEY)
def test_c_move_without_a_unique_key_is_a_failure(samples_server: Server, move_destination: Path,
                                                  case: str) -> None:  # fmt: skip
    model = StudyRootQueryRetrieveInformationModelMove
    assoc = associate(samples_server, [build_context(model)])
    assert assoc.is_established
    try:
        statuses = [s for s, _ in assoc.send_c_move(NO_UNIQUE_KEY[case], "BADMOVEDEST", model)]
    finally:
        assoc.release()
    # One final response: Identifier does not match SOP Class, with the reason.
    assert [s.Status for s in statuses] == [0xA900], f"{case}: {[hex(s.Status) for s in statuses]}"
    assert "ErrorComment" in statuses[0]
    assert list(move_destination.iterdir()) == []


@pytest.mark.parametrize("case", NO_UNIQUE_KEY)
def test_c_get_without_a_unique_key_is_a_failure(samples_server: Server, case: str) -> None:
    model = StudyRootQueryRetrieveInformationModelGet
    received: list[object] = []
    from pynetdicom import build_role, evt

    def on_store(event: object) -> int:
        received.append(event)
        return 0x0000

    assoc = associate(samples_server, [build_context(model), build_context(CTImageStorage)],
                      ext_neg=[build_role(CTImageStorage, scp_role=True)],
                      evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    assert assoc.is_established
    try:
        statuses = [s for s, _ in assoc.send_c_get(NO_UNIQUE_KEY[case], model)]
    finally:
        assoc.release()
    assert [s.Status for s in statuses] == [0xA900], f"{case}: {[hex(s.Status) for s in statuses]}"
    assert "ErrorComment" in statuses[0]
    assert received == []


@pytest.mark.parametrize("patient_id", ["BN*", "BN2600100?", "*"])
def test_c_move_of_patients_by_wildcard_is_a_failure(samples_server: Server, move_destination: Path,
                                                     patient_id: str) -> None:  # fmt: skip
    """A retrieve names what it wants (PS3.4 C.4.2.2.1): a wildcard in the unique key would
    send every matching patient's studies."""
    model = PatientRootQueryRetrieveInformationModelMove
    assoc = associate(samples_server, [build_context(model)])
    assert assoc.is_established
    try:
        query = _query(QueryRetrieveLevel="PATIENT", PatientID=patient_id)
        statuses = [s for s, _ in assoc.send_c_move(query, "BADMOVEDEST", model)]
    finally:
        assoc.release()
    assert [s.Status for s in statuses] == [0xA900], [hex(s.Status) for s in statuses]
    assert list(move_destination.iterdir()) == []


# --- a full disk -----------------------------------------------------------------------


def test_a_full_disk_answers_out_of_resources_and_stores_nothing(tmp_path: Path) -> None:
    """Below storage.reserve_mb the modality gets 0xA700 (it keeps the image and
    retries later); nothing is written, and echo still works."""
    server = start_server(tmp_path / "data", env={"MINIPACS_STORAGE_RESERVE_MB": "1000000000"})
    try:
        result = storescu(server, CT_FILES[0], check=False)
        # dcmtk names the 0xA7xx statuses "Refused: OutOfResources".
        assert storescu_results(result.stdout + result.stderr) == {str(CT_FILES[0]): "Refused: OutOfResources"}
        assert re.search(r"C-STORE \S+ from STORESCU@\S+ refused \(0xA700\): the archive is full", server.log()), server.log()
        assert index_counts(server)[3] == 0
        assert object_keys(server) == []
        assert spool_files(server) == []
        assert echo(server.port)
    finally:
        stop_and_check(server)
