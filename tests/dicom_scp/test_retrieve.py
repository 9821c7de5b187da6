"""C-MOVE (movescu to a dcmtk storescp, movescu's own receiver, pynetdicom) and C-GET (getscu).

What arrives is compared byte for byte (dataset after the File Meta group)
with what the archive stored; storescp and getscu run bit-preserving (+B).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, build_context, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    UltrasoundImageStorage,
)

from tests.conftest import DX_FILE, US_FILES, Server, dcmtk, free_port, require_private_network
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.dicom_scp.helpers import (
    CT,
    DX,
    HOST,
    US,
    StoredObject,
    associate,
    dataset_bytes,
    delete_object,
    index_rows,
    make_instances,
    register_ae,
    stored_objects,
    storescp,
    storescu,
    storescu_results,
    wait_for,
)


@pytest.fixture(scope="module")
def stored(samples_server: Server) -> dict[str, StoredObject]:
    return stored_objects(samples_server)


@pytest.fixture(scope="module")
def destination(samples_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A registered storescp that accepts every transfer syntax: (AE title, its folder)."""
    with storescp(tmp_path_factory.mktemp("dest"), aet="STORESCP") as scp:
        register_ae(samples_server, scp.aet, HOST, scp.port, cli=True)
        yield scp.aet, scp.directory


def received(directory: Path) -> dict[str, bytes]:
    """The datasets in `directory` by SOP Instance UID (the folder is emptied)."""
    result = {}
    for path in sorted(directory.iterdir()):
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid not in result, f"{uid} arrived twice"
        result[uid] = dataset_bytes(path)
        path.unlink()
    return result


def movescu(server: Server, destination: str, *keys: str, model: str = "-S",
            extra: tuple[str, ...] = ()) -> str:  # fmt: skip
    args: list[str] = ["movescu", "-v", model, "-aec", server.aet, "-aem", destination, *extra]
    for key in keys:
        args += ["-k", key]
    result = dcmtk(*args, HOST, server.port)
    return result.stdout + result.stderr


def assert_moved(output: str, count: int) -> None:
    assert "Received Final Move Response (Success)" in output, output
    assert len(re.findall(r"Received Move Response \d+ \(Pending\)", output)) == count, output


@pytest.mark.parametrize("level, keys, expected", [
    ("STUDY", [f"StudyInstanceUID={CT.study_uid}"], CT.sop_uids),
    ("STUDY", [f"StudyInstanceUID={DX.study_uid}\\{US.study_uid}"], DX.sop_uids + US.sop_uids),
    ("SERIES", [f"StudyInstanceUID={US.study_uid}", f"SeriesInstanceUID={US.series_uids[0]}"],
     US.sop_uids),
    ("IMAGE", [f"StudyInstanceUID={CT.study_uid}", f"SeriesInstanceUID={CT.series_uids[0]}",
               f"SOPInstanceUID={CT.sop_uids[3]}\\{CT.sop_uids[7]}"], (CT.sop_uids[3], CT.sop_uids[7])),
])  # fmt: skip
def test_movescu_to_storescp_delivers_the_stored_bytes(
    samples_server: Server, stored: dict[str, StoredObject], destination: tuple[str, Path],
    level: str, keys: list[str], expected: tuple[str, ...],
) -> None:  # fmt: skip
    title, folder = destination
    output = movescu(samples_server, title, f"QueryRetrieveLevel={level}", *keys)
    assert_moved(output, len(expected))
    got = received(folder)
    assert sorted(got) == sorted(expected)
    for uid, data in got.items():
        assert data == stored[uid].dataset, f"{uid} arrived changed"


def test_movescu_patient_root_study_level(samples_server: Server, stored: dict[str, StoredObject],
                                          destination: tuple[str, Path]) -> None:  # fmt: skip
    title, folder = destination
    output = movescu(samples_server, title, "QueryRetrieveLevel=STUDY", f"PatientID={DX.patient_id}",
                     f"StudyInstanceUID={DX.study_uid}", model="-P")  # fmt: skip
    assert_moved(output, 1)
    assert received(folder) == {DX.sop_uids[0]: stored[DX.sop_uids[0]].dataset}


def _c_move(server: Server, identifier: Dataset, destination: str,
            model: object = StudyRootQueryRetrieveInformationModelMove,
            identifiers: list[Dataset | None] | None = None) -> list[Dataset]:  # fmt: skip
    """The response statuses; the response identifiers go into `identifiers` if given."""
    assoc = associate(server, [build_context(model)])
    assert assoc.is_established
    try:
        responses = []
        for status, response_identifier in assoc.send_c_move(identifier, destination, model):
            assert status is not None and "Status" in status, "no response from the server"
            responses.append(status)
            if identifiers is not None:
                identifiers.append(response_identifier)
        return responses
    finally:
        assoc.release()


def test_c_move_pending_responses_count_the_sub_operations(
    samples_server: Server, destination: tuple[str, Path],
) -> None:  # fmt: skip
    title, folder = destination
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = CT.study_uid
    responses = _c_move(samples_server, query, title)
    *pending, final = responses
    assert [r.Status for r in pending] == [0xFF00] * 20
    assert [r.NumberOfRemainingSuboperations for r in pending] == list(range(19, -1, -1))
    assert [r.NumberOfCompletedSuboperations for r in pending] == list(range(1, 21))
    assert all(r.NumberOfFailedSuboperations == 0 and r.NumberOfWarningSuboperations == 0
               for r in pending)  # fmt: skip
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (20, 0, 0)  # fmt: skip
    assert len(received(folder)) == 20


def test_c_move_to_an_unknown_destination_is_a801(samples_server: Server, tmp_path: Path) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = CT.study_uid
    responses = _c_move(samples_server, query, "NOBODY")
    assert [r.Status for r in responses] == [0xA801]

    output = dcmtk("movescu", "-v", "-S", "-aec", samples_server.aet, "-aem", "NOBODY",
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT.study_uid}",
                   HOST, samples_server.port, check=False)  # fmt: skip
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in output.stdout + output.stderr, \
        output.stdout + output.stderr


def test_c_move_to_a_registered_destination_that_is_down_is_a801(samples_server: Server) -> None:
    register_ae(samples_server, "DOWNSTAIRS", HOST, free_port())
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = CT.study_uid
    assert [r.Status for r in _c_move(samples_server, query, "DOWNSTAIRS")] == [0xA801]


def test_c_move_counts_refused_sub_operations(samples_server: Server) -> None:
    """A destination that does not take the DX and the ultrasound cine SOP classes at all
    (a pynetdicom SCP that only supports single-frame ultrasound): the final response counts
    those two as failed and lists their UIDs, and the one it takes arrives."""
    received_uids: list[str] = []

    def on_store(event: Event) -> int:
        received_uids.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="USONLY")
    ae.add_supported_context(UltrasoundImageStorage, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    scp = ae.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        register_ae(samples_server, "USONLY", HOST, port)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = [DX.study_uid, US.study_uid]
        identifiers: list[Dataset | None] = []
        *pending, final = _c_move(samples_server, query, "USONLY", identifiers=identifiers)
    finally:
        scp.shutdown()
    assert final.Status == 0xB000  # sub-operations complete, one or more failures
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (1, 2, 0)  # fmt: skip
    assert identifiers[-1] is not None
    assert sorted(identifiers[-1].FailedSOPInstanceUIDList) == sorted([DX.sop_uids[0], US.sop_uids[1]])
    assert len(pending) == 3
    assert received_uids == [US.sop_uids[0]]


def test_movescu_with_its_own_receiver(samples_server: Server, stored: dict[str, StoredObject],
                                       tmp_path: Path) -> None:  # fmt: skip
    require_private_network()  # movescu's receiver listens on every address
    port = free_port()
    register_ae(samples_server, "MOVESCU", HOST, port)
    folder = tmp_path / "movescu"
    folder.mkdir()
    output = movescu(samples_server, "MOVESCU", "QueryRetrieveLevel=STUDY",
                     f"StudyInstanceUID={US.study_uid}",
                     extra=("--port", str(port), "+xa", "-od", str(folder)))  # fmt: skip
    assert_moved(output, 2)
    got = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p)
           for p in folder.iterdir()}  # fmt: skip
    assert got == {uid: stored[uid].dataset for uid in US.sop_uids}


def test_getscu_study_level_files_arrive_identical(samples_server: Server,
                                                   stored: dict[str, StoredObject],
                                                   tmp_path: Path) -> None:  # fmt: skip
    result = dcmtk("getscu", "-v", "-S", "-aec", samples_server.aet, "+B", "-od", tmp_path,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT.study_uid}",
                   HOST, samples_server.port)  # fmt: skip
    output = result.stdout + result.stderr
    assert "Received C-GET Response (Success)" in output, output
    assert len(re.findall(r"Sending C-STORE Response \(Success\)", output)) == 20, output
    assert "Number of Completed Suboperations : 20\n" in output, output
    got = received(tmp_path)
    assert sorted(got) == sorted(CT.sop_uids)
    for uid, data in got.items():
        assert data == stored[uid].dataset, f"{uid} arrived changed"


def test_c_get_of_compressed_studies_with_their_own_syntaxes(samples_server: Server,
                                                           stored: dict[str, StoredObject]) -> None:  # fmt: skip
    """A C-GET requestor that offers each stored syntax in a context of its own gets the
    JPEG 2000 DX and the JPEG cine unchanged (the archive never transcodes)."""
    arrived: dict[str, bytes] = {}

    def on_store(event: Event) -> int:
        arrived[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    classes = {(r.sop_class_uid, r.transfer_syntax_uid) for r in (stored[u].ref for u in DX.sop_uids + US.sop_uids)}
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)]
    contexts += [build_context(c, [ts]) for c, ts in sorted(classes)]
    roles = [build_role(c, scp_role=True) for c in sorted({c for c, _ in classes})]
    assoc = associate(samples_server, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = [DX.study_uid, US.study_uid]
        responses = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    final = responses[-1]
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 0)
    assert arrived == {uid: stored[uid].dataset for uid in DX.sop_uids + US.sop_uids}


def test_movescu_cancel_stops_the_sub_operations(samples_server: Server, destination: tuple[str, Path]) -> None:
    title, folder = destination
    output = movescu(samples_server, title, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={CT.study_uid}",
                     extra=("--cancel", "3"))  # fmt: skip
    assert "Sending Cancel Request" in output, output
    assert re.search(r"Received Final Move Response \(Cancel", output), output
    assert 3 <= len(received(folder)) < 20


def test_movescu_patient_level_moves_every_study_of_the_patient(
    samples_server: Server, stored: dict[str, StoredObject], destination: tuple[str, Path],
) -> None:  # fmt: skip
    title, folder = destination
    output = movescu(samples_server, title, "QueryRetrieveLevel=PATIENT", f"PatientID={US.patient_id}",
                     model="-P")  # fmt: skip
    assert_moved(output, 2)
    assert received(folder) == {uid: stored[uid].dataset for uid in US.sop_uids}


def test_c_move_with_a_missing_object_fails_that_one_and_sends_the_rest(server: Server, tmp_path: Path) -> None:
    files = make_instances(tmp_path / "study", 3, seed=9)
    result = storescu(server, *files, args=["-R", "-xe"])
    assert set(storescu_results(result.stdout + result.stderr).values()) == {"Success"}
    objects = stored_objects(server)
    lost_uid, lost = sorted(objects.items())[0]
    delete_object(server, lost.ref.storage_key)  # a disk fault, say
    with storescp(tmp_path, aet="AFTERLOSS") as scp:
        register_ae(server, scp.aet, HOST, scp.port)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = lost.ref.study_instance_uid
        identifiers: list[Dataset | None] = []
        *_, final = _c_move(server, query, scp.aet, identifiers=identifiers)
        assert final.Status == 0xB000
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 0 + 1)
        assert identifiers[-1] is not None
        assert identifiers[-1].FailedSOPInstanceUIDList == lost_uid  # one value
        got = received(scp.directory)
    assert got == {uid: o.dataset for uid, o in objects.items() if uid != lost_uid}
    assert f"cannot read {lost_uid}" in server.log()


def audit_events(server: Server, action: str) -> list[dict[str, Any]]:
    return index_rows(server, "SELECT * FROM audit_event WHERE action = :action ORDER BY pk", action=action)


def test_queries_and_retrieves_are_audited(samples_server: Server, tmp_path: Path) -> None:
    """Every read of patient data by a system is in the audit log: who, from where, what."""
    before_queries = len(audit_events(samples_server, "QUERY"))
    before_retrieves = len(audit_events(samples_server, "RETRIEVE"))
    dcmtk("findscu", "-S", "-aet", "AUDITFIND", "-aec", samples_server.aet,
          "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=BN26001001", "-k", "StudyInstanceUID",
          HOST, samples_server.port)  # fmt: skip
    dcmtk("getscu", "-S", "-aet", "AUDITGET", "-aec", samples_server.aet, "-od", tmp_path,
          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT.study_uid}",
          HOST, samples_server.port)  # fmt: skip
    queries = wait_for(lambda: audit_events(samples_server, "QUERY")[before_queries:] or None,
                       what="the query's audit event")  # fmt: skip
    assert [(q["actor"], q["address"], q["level"], q["outcome"], q["detail"]) for q in queries] == [
        ("AUDITFIND", "127.0.0.1", "STUDY", "1 matches", "PatientID=BN26001001")]
    retrieves = wait_for(lambda: audit_events(samples_server, "RETRIEVE")[before_retrieves:] or None,
                         what="the retrieve's audit event")  # fmt: skip
    assert [(r["actor"], r["level"], r["uid"]) for r in retrieves] == [
        ("AUDITGET", "STUDY", CT.study_uid)]


def test_compressed_objects_reach_a_peer_that_only_takes_uncompressed(
    samples_server: Server, tmp_path: Path
) -> None:
    """dcmtk's storescp by default accepts only uncompressed syntaxes, as do many older
    workstations: the JPEG 2000 DX and the JPEG baseline cine arrive decompressed, with
    their SOP Instance UIDs, pixel for pixel what the stored objects decode to."""
    with storescp(tmp_path, aet="PLAINSCP", accept_all=False) as scp:
        register_ae(samples_server, scp.aet, HOST, scp.port)
        output = movescu(samples_server, scp.aet, "QueryRetrieveLevel=STUDY",
                         f"StudyInstanceUID={DX.study_uid}\\{US.study_uid}")  # fmt: skip
        assert_moved(output, len(DX.sop_uids) + len(US.sop_uids))
        arrived = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.files()}
    assert sorted(arrived) == sorted(DX.sop_uids + US.sop_uids)
    originals = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in [DX_FILE, *US_FILES]}
    for uid, ds in arrived.items():
        assert not ds.file_meta.TransferSyntaxUID.is_compressed, uid
        original = originals[uid]
        assert (ds.pixel_array == original.pixel_array).all(), f"{uid}: pixels changed"
        assert ds.SOPClassUID == original.SOPClassUID and ds.PatientName == original.PatientName
    assert "decompressed" in samples_server.log()


def test_getscu_offering_uncompressed_gets_compressed_objects_decompressed(
    samples_server: Server, tmp_path: Path
) -> None:
    """getscu proposes JPEG 2000 and the uncompressed syntaxes in one context; the server
    takes the uncompressed one and decompresses the JPEG 2000 DX for it."""
    result = dcmtk("getscu", "-v", "-S", "-aec", samples_server.aet, "+xv", "-od", tmp_path,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={DX.study_uid}",
                   HOST, samples_server.port)  # fmt: skip
    output = result.stdout + result.stderr
    assert "Received C-GET Response (Success)" in output, output
    [path] = [p for p in tmp_path.iterdir() if p.is_file()]
    got, original = dcmread(path), dcmread(DX_FILE)
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert (got.pixel_array == original.pixel_array).all()
