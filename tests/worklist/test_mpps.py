"""MPPS N-CREATE / N-SET against a real `minipacs serve`, sent by pynetdicom (PS3.4 F.7)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from archive.audit import search
from archive.uids import uid_problem
from tests.conftest import Server, start_server
from tests.dicom_scp.helpers import stop_and_check
from tests.worklist.mwl_helpers import accessions, associate, identifier, mwl_find, populate
from worklist.mpps import PerformedSteps
from worklist.service import Worklist

MPPS = ModalityPerformedProcedureStep


@pytest.fixture(scope="module")
def mpps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("mpps") / "data", env={"MINIPACS_DICOM_WORKERS": "1"})
    try:
        populate(server)
        yield server
    finally:
        stop_and_check(server)


@pytest.fixture
def assoc(mpps_server: Server) -> Iterator[Association]:
    association = associate(mpps_server, calling="CT1")
    yield association
    if association.is_established:
        association.release()


def study_uid(server: Server, accession: str) -> str:
    archive = server.archive()
    try:
        return Worklist(archive).get(accession).study_instance_uid
    finally:
        archive.close()


def step(server: Server, accession: str) -> tuple[str, list[dict[str, Any]]]:
    archive = server.archive()
    try:
        wl = Worklist(archive)
        return wl.get(accession).status, wl.history(accession)
    finally:
        archive.close()


def performed(server: Server, uid: str) -> dict[str, Any]:
    archive = server.archive()
    try:
        return PerformedSteps(Worklist(archive)).get(uid)
    finally:
        archive.close()


def performed_uids(server: Server) -> list[str]:
    with closing(sqlite3.connect(server.data / "index.sqlite")) as db:
        return [r[0] for r in db.execute("SELECT sop_instance_uid FROM performed_step")]


def create_attrs(accession: str = "", study: str = "", sps_id: str = "", **changes: Any) -> Dataset:
    """An N-CREATE attribute list as a CT console sends it (PS3.4 Table F.7.2-1)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    item = Dataset()
    item.StudyInstanceUID = study or generate_uid()
    item.AccessionNumber = accession
    item.ScheduledProcedureStepID = sps_id
    item.RequestedProcedureID = accession
    item.ScheduledProcedureStepDescription = ""
    item.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientName = "Nguyễn^Văn An"
    ds.PatientID = "BN0001"
    ds.PatientBirthDate = "19680315"
    ds.PatientSex = "M"
    ds.ReferencedPatientSequence = Sequence()
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedStationName = "CT phòng 1"
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20261205"
    ds.PerformedProcedureStepStartTime = "081500"
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = "CT sọ não"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = Sequence()
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence()
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def final_attrs(status: str = "COMPLETED", series: int = 2, **changes: Any) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261205"
    ds.PerformedProcedureStepEndTime = "083000"
    items = []
    for n in range(series):
        item = Dataset()
        item.PerformingPhysicianName = ""
        item.OperatorsName = "KTV^Hoa"
        item.ProtocolName = "Head"
        item.SeriesInstanceUID = generate_uid()
        item.SeriesDescription = f"series {n + 1}"
        item.RetrieveAETitle = ""
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = generate_uid()
        item.ReferencedImageSequence = Sequence([ref])
        item.ReferencedNonImageCompositeSOPInstanceSequence = Sequence()
        items.append(item)
    ds.PerformedSeriesSequence = Sequence(items)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def n_create(assoc: Association, attrs: Dataset, uid: str | None = None) -> tuple[Dataset, Dataset | None]:
    status, reply = assoc.send_n_create(attrs, MPPS, uid)
    assert status is not None and "Status" in status, "no N-CREATE answer"
    return status, reply


def n_set(assoc: Association, uid: str, changes: Dataset) -> Dataset:
    status, _ = assoc.send_n_set(changes, MPPS, uid)
    assert status is not None and "Status" in status, "no N-SET answer"
    return status


def test_in_progress_then_completed_moves_the_step(mpps_server: Server, assoc: Association) -> None:
    uid = generate_uid()
    status, _ = n_create(assoc, create_attrs("MWL1", study_uid(mpps_server, "MWL1")), uid)
    assert status.Status == 0x0000
    assert step(mpps_server, "MWL1")[0] == "IN PROGRESS"
    # The modality's worklist still shows it, now IN PROGRESS.
    matches, _ = mwl_find(assoc, identifier(AccessionNumber="MWL1"))
    assert matches[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "IN PROGRESS"
    status = n_set(assoc, uid, final_attrs("COMPLETED", series=2))
    assert status.Status == 0x0000
    current, history = step(mpps_server, "MWL1")
    assert current == "COMPLETED"
    assert [(e["status"], e["actor"], e["via"]) for e in history if e["action"] == "status"] == [
        ("IN PROGRESS", "CT1", "DIMSE"), ("COMPLETED", "CT1", "DIMSE")]
    assert uid in history[-1]["detail"]
    pps = performed(mpps_server, uid)
    assert pps["status"] == "COMPLETED" and pps["accession_number"] == "MWL1" and pps["calling_ae"] == "CT1"
    assert len(pps["attrs"]["00400340"]["Value"]) == 2  # PerformedSeriesSequence recorded
    assert pps["attrs"]["00400254"]["Value"] == ["CT sọ não"]
    # Completed: off the worklist.
    assert mwl_find(assoc, identifier(AccessionNumber="MWL1"))[0] == []
    # Once COMPLETED, no further N-SET (PS3.4 F.7.2.2.4).
    status = n_set(assoc, uid, final_attrs("DISCONTINUED"))
    assert status.Status == 0x0110 and status.ErrorID == 0xA710
    assert status.ErrorComment == "Performed Procedure Step Object may no longer be updated"
    assert performed(mpps_server, uid)["status"] == "COMPLETED"
    # The association is still usable.
    assert assoc.send_c_echo().Status == 0
    archive = mpps_server.archive()
    try:
        archive.audit.flush()
        assert {e.outcome for e in search(archive.db, action="MPPS")} >= {"IN PROGRESS", "COMPLETED"}
    finally:
        archive.close()


def test_discontinued(mpps_server: Server, assoc: Association) -> None:
    uid = generate_uid()
    # Found by the Scheduled Procedure Step ID alone.
    assert n_create(assoc, create_attrs(sps_id="MWL2"), uid)[0].Status == 0
    assert step(mpps_server, "MWL2")[0] == "IN PROGRESS"
    assert n_set(assoc, uid, final_attrs("DISCONTINUED", series=0)).Status == 0
    assert step(mpps_server, "MWL2")[0] == "DISCONTINUED"


def test_attribute_updates_while_in_progress(mpps_server: Server, assoc: Association) -> None:
    uid = generate_uid()
    assert n_create(assoc, create_attrs(study=study_uid(mpps_server, "MWL3")), uid)[0].Status == 0
    changes = Dataset()
    changes.SpecificCharacterSet = "ISO_IR 192"
    changes.PerformedProcedureStepDescription = "CT sọ não, thêm lát mỏng"
    assert n_set(assoc, uid, changes).Status == 0
    pps = performed(mpps_server, uid)
    assert pps["status"] == "IN PROGRESS" and pps["accession_number"] == "MWL3"
    assert pps["attrs"]["00400254"]["Value"] == ["CT sọ não, thêm lát mỏng"]
    assert step(mpps_server, "MWL3")[0] == "IN PROGRESS"
    # N-SET may not change what N-CREATE set.
    changes = Dataset()
    changes.Modality = "MR"
    status = n_set(assoc, uid, changes)
    assert status.Status == 0x0106 and status.AttributeIdentifierList == 0x00080060
    # Bad status values and an end without its date and time.
    assert n_set(assoc, uid, final_attrs("FINISHED")).Status == 0x0106
    assert n_set(assoc, uid, final_attrs(PerformedProcedureStepEndTime="")).Status == 0x0121
    assert n_set(assoc, uid, final_attrs(PerformedProcedureStepEndDate="2026-12-05")).Status == 0x0106
    assert performed(mpps_server, uid)["status"] == "IN PROGRESS"
    assert n_set(assoc, uid, final_attrs()).Status == 0
    assert step(mpps_server, "MWL3")[0] == "COMPLETED"


def test_unscheduled_exam_is_recorded_without_a_step(mpps_server: Server, assoc: Association) -> None:
    uid = generate_uid()
    assert n_create(assoc, create_attrs(accession=""), uid)[0].Status == 0
    pps = performed(mpps_server, uid)
    assert pps["status"] == "IN PROGRESS" and pps["accession_number"] is None
    assert n_set(assoc, uid, final_attrs()).Status == 0
    assert performed(mpps_server, uid)["status"] == "COMPLETED"


def test_the_scp_assigns_the_instance_uid_when_none_is_sent(mpps_server: Server, assoc: Association) -> None:
    before = set(performed_uids(mpps_server))
    status, _ = n_create(assoc, create_attrs(accession=""), None)
    assert status.Status == 0
    (uid,) = set(performed_uids(mpps_server)) - before
    assert not uid_problem(uid) and performed(mpps_server, uid)["status"] == "IN PROGRESS"


# N-CREATE-RSP has no Attribute Identifier List (PS3.7 10.3.5): the comment names the attribute.
@pytest.mark.parametrize(("changes", "expected", "attribute"), [
    ({"PerformedProcedureStepStatus": "COMPLETED"}, 0x0106, "PerformedProcedureStepStatus"),
    ({"Modality": None}, 0x0120, "Modality"),
    ({"PerformedProcedureStepID": ""}, 0x0121, "PerformedProcedureStepID"),
    ({"ScheduledStepAttributesSequence": Sequence()}, 0x0121, "ScheduledStepAttributesSequence"),
    ({"PerformedProcedureStepStartDate": "5/12/2026"}, 0x0106, "PerformedProcedureStepStartDate"),
    ({"PerformedProcedureStepStartTime": "256000"}, 0x0106, "PerformedProcedureStepStartTime"),
])  # fmt: skip
def test_bad_n_create_changes_nothing(mpps_server: Server, assoc: Association, changes: dict[str, Any],
                                      expected: int, attribute: str) -> None:  # fmt: skip
    uid = generate_uid()
    status, _ = n_create(assoc, create_attrs("MWL1", **changes), uid)
    assert status.Status == expected and status.ErrorComment.startswith(attribute[:40])
    with pytest.raises(Exception, match="no performed procedure step"):
        performed(mpps_server, uid)
    assert assoc.send_c_echo().Status == 0


def test_duplicates_unknown_instances_and_invalid_transitions(mpps_server: Server, assoc: Association) -> None:
    uid = generate_uid()
    assert n_create(assoc, create_attrs(accession=""), uid)[0].Status == 0
    assert n_create(assoc, create_attrs(accession=""), uid)[0].Status == 0x0111
    assert n_set(assoc, generate_uid(), final_attrs()).Status == 0x0112
    # The cancelled order cannot be started: refused, nothing recorded.
    other = generate_uid()
    status, _ = n_create(assoc, create_attrs("MWL4"), other)
    assert status.Status == 0x0110 and "CANCELLED" in status.ErrorComment
    assert step(mpps_server, "MWL4")[0] == "CANCELLED"
    with pytest.raises(Exception, match="no performed procedure step"):
        performed(mpps_server, other)
    # A malformed instance UID.
    assert n_create(assoc, create_attrs(accession=""), "1.2.abc")[0].Status == 0x0117
    assert accessions(mwl_find(assoc, identifier(AccessionNumber="MWL4"))[0]) == set()
    assert assoc.send_c_echo().Status == 0
