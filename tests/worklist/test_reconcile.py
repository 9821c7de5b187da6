"""Reconciliation on ingest: studies matched to orders, patients corrected from the order, unmatched studies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from archive import Archive, NotFound, query_from_identifier
from archive.audit import search
from archive.index_writer import NewStudy
from tests.archive.helpers import find, identifier, ingest_ds, make_dataset, part10, table_rows, uid
from tests.conftest import dcmtk, start_server
from tests.worklist.helpers import HIS, TECH, order
from worklist.errors import OrderConflict, UnknownOrder
from worklist.service import Worklist, WorklistConfig
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)


@pytest.fixture
def worklist(archive: Archive) -> Iterator[Worklist]:
    wl = Worklist(archive)
    wl.reconcile_ingest()
    yield wl


def matches(archive: Archive) -> list[dict[str, Any]]:
    return table_rows(archive, "study_match")


def test_study_with_the_orders_accession_is_matched_and_the_step_starts(archive: Archive, worklist: Worklist) -> None:
    worklist.create(order(), HIS)
    seen: list[tuple[str, str]] = []
    worklist.status_listeners.append(lambda conn, step, previous, origin: seen.append((previous, step.status)))
    ingest_ds(archive, make_dataset(1))
    ingest_ds(archive, make_dataset(2))  # a second instance of the same study: nothing more happens
    [row] = matches(archive)
    assert row["matched_by"] == "accession" and row["step_pk"] is not None and row["actor"] == "MODALITY1"
    step = worklist.get("ACC001")
    assert step.status == "IN PROGRESS"
    assert seen == [("SCHEDULED", "IN PROGRESS")]
    actions = [e["action"] for e in worklist.history("ACC001")]
    assert actions == ["created", "matched", "status"]
    # Same patient as the order: nothing to correct, nothing audited as a correction.
    assert not [e for e in search(archive.db, action="RECONCILE")]
    assert worklist.unmatched_studies() == []


def test_a_mismatching_patient_is_filed_under_the_orders_patient_and_audited(
    archive: Archive, worklist: Worklist, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    worklist.create(order(), HIS)
    caplog.set_level("INFO")
    ingest_ds(archive, make_dataset(1, patient_id="TYPO01", patient_name="NGUYEN^VAN A", PatientSex="F"))
    # The index answers with the order's patient (C-FIND and QIDO share this matching engine) ...
    [study] = find(archive, "STUDY", PatientID="PID001", PatientName=None, PatientSex=None,
                   AccessionNumber="ACC001", StudyInstanceUID=None)  # fmt: skip
    assert str(study.PatientName) == "Nguyễn^Văn An" and study.PatientSex == "M"
    assert find(archive, "STUDY", PatientID="TYPO01", StudyInstanceUID=None) == []
    assert find(archive, "PATIENT", patient_root=True, PatientID="TYPO01") == []
    # ... the modality's patient row is gone (it had no other study) ...
    assert [p["patient_id"] for p in table_rows(archive, "patient")] == ["PID001"]
    # ... and the audit log says what the modality sent and what the order says.
    [event] = search(archive.db, action="RECONCILE")
    assert event.uid == uid(1, 1) and event.outcome == "corrected" and event.actor == "MODALITY1"
    assert "patient ID: modality 'TYPO01', order 'PID001'" in event.detail
    assert "name: modality 'NGUYEN^VAN A', order 'Nguyễn^Văn An'" in event.detail
    assert "sex: modality 'F', order 'M'" in event.detail
    assert "corrected from the order" in matches(archive)[0]["detail"]
    # Patient names stay out of INFO lines.
    assert "NGUYEN" not in caplog.text and "Nguyễn" not in caplog.text
    # The stored object itself is untouched.
    [ref] = archive.instances(query_from_identifier(identifier("STUDY", StudyInstanceUID=uid(1, 1)), False))
    assert archive.read_dataset(ref).PatientID == "TYPO01"


def test_later_images_of_a_corrected_study_store_without_a_warning(archive: Archive, worklist: Worklist) -> None:
    """The rest of the exam still says the modality's patient: that is the study's, not a conflict."""
    worklist.create(order(), HIS)
    first = ingest_ds(archive, make_dataset(1, patient_id="TYPO01", patient_name="NGUYEN^VAN A"))
    later = [ingest_ds(archive, make_dataset(n, patient_id="TYPO01", patient_name="NGUYEN^VAN A"))
             for n in (2, 3)]  # fmt: skip
    assert first.warnings == [] and [r.warnings for r in later] == [[], []]
    [study] = find(archive, "STUDY", PatientID="PID001", StudyInstanceUID=None, NumberOfStudyRelatedInstances=None)
    assert int(study.NumberOfStudyRelatedInstances) == 3
    # An instance naming a third patient for the same study is still reported.
    other = ingest_ds(archive, make_dataset(4, patient_id="SOMEONE", patient_name="Khác^Người"))
    assert other.warnings and "already filed under another patient" in other.warnings[0]


def test_a_modality_patient_with_other_studies_is_kept(archive: Archive, worklist: Worklist) -> None:
    ingest_ds(archive, make_dataset(1, study=uid(1, 9), series=uid(2, 9), patient_id="OTHER", AccessionNumber=""))
    worklist.create(order(), HIS)
    ingest_ds(archive, make_dataset(2, patient_id="OTHER"))
    assert sorted(p["patient_id"] for p in table_rows(archive, "patient")) == ["OTHER", "PID001"]
    assert [s.StudyInstanceUID for s in find(archive, "STUDY", PatientID="OTHER", StudyInstanceUID=None)] == [uid(1, 9)]


def test_correction_off_records_the_match_only(archive: Archive) -> None:
    worklist = Worklist(archive, WorklistConfig(correct_demographics=False))
    worklist.reconcile_ingest()
    worklist.create(order(), HIS)
    ingest_ds(archive, make_dataset(1, patient_id="TYPO01"))
    [row] = matches(archive)
    assert row["matched_by"] == "accession" and "not corrected" in row["detail"]
    assert find(archive, "STUDY", PatientID="TYPO01", StudyInstanceUID=None)
    assert not search(archive.db, action="RECONCILE")


def test_an_unknown_accession_lands_in_unmatched(archive: Archive, worklist: Worklist) -> None:
    ingest_ds(archive, make_dataset(1, AccessionNumber="NOSUCH"))
    ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 2), AccessionNumber=""))
    [row1, row2] = matches(archive)
    assert row1["step_pk"] is None and row1["matched_by"] == "unmatched"
    unmatched = worklist.unmatched_studies()
    assert [u["study_instance_uid"] for u in unmatched] == [uid(1, 2), uid(1, 1)]
    first = unmatched[1]
    assert first["accession_number"] == "NOSUCH" and first["patient_id"] == "PID001"
    assert first["modalities"] == "CT" and first["num_instances"] == 1 and first["study_date"] == "20261120"
    assert first["patient_name"] == "Nguyễn^Văn An" and first["received_at"]
    assert [u["study_instance_uid"] for u in worklist.unmatched_studies(limit=1, offset=1)] == [uid(1, 1)]


def test_the_pre_assigned_study_uid_matches_and_gives_the_study_its_accession(
    archive: Archive, worklist: Worklist
) -> None:  # fmt: skip
    worklist.create(order(study_instance_uid=uid(1, 1)), HIS)
    ingest_ds(archive, make_dataset(1, AccessionNumber=""))
    [row] = matches(archive)
    assert row["matched_by"] == "study_uid"
    [study] = find(archive, "STUDY", AccessionNumber="ACC001", StudyInstanceUID=None)
    assert study.StudyInstanceUID == uid(1, 1)
    [event] = search(archive.db, action="RECONCILE")
    assert "accession number: modality '', order 'ACC001'" in event.detail


def test_an_order_arriving_after_its_study_takes_it_over(archive: Archive, worklist: Worklist) -> None:
    ingest_ds(archive, make_dataset(1, patient_id="TYPO01", AccessionNumber="ACC777"))
    assert len(worklist.unmatched_studies()) == 1
    worklist.create(order(accession="ACC777"), HIS)
    assert worklist.unmatched_studies() == []
    [row] = matches(archive)
    assert row["matched_by"] == "accession" and row["actor"] == "HIS"
    assert worklist.get("ACC777").status == "IN PROGRESS"
    assert [s.PatientID for s in find(archive, "STUDY", AccessionNumber="ACC777", PatientID=None)] == ["PID001"]
    assert search(archive.db, action="RECONCILE")[0].outcome == "corrected"


def test_manual_match_moves_an_unmatched_study(archive: Archive, worklist: Worklist) -> None:
    worklist.create(order(), HIS)
    ingest_ds(archive, make_dataset(1, patient_id="XX9", AccessionNumber="TYPO"))
    result = worklist.match_study(uid(1, 1), "ACC001", TECH)
    assert result["changed"] and result["matched_by"] == "manual" and result["patient_id"] == "PID001"
    assert result["status"] == "IN PROGRESS"
    assert worklist.unmatched_studies() == []
    [study] = find(archive, "STUDY", AccessionNumber="ACC001", PatientID=None, StudyInstanceUID=None)
    assert study.PatientID == "PID001"
    audit = search(archive.db, action="RECONCILE")
    assert {e.outcome for e in audit} == {"matched by hand", "corrected"} and {e.actor for e in audit} == {"ktv.hoa"}
    # The same match again changes nothing.
    assert worklist.match_study(uid(1, 1), "ACC001", TECH)["changed"] is False
    assert len(search(archive.db, action="RECONCILE")) == 2


def test_manual_match_errors_change_nothing(archive: Archive, worklist: Worklist) -> None:
    worklist.create(order(), HIS)
    worklist.create(order("O2", accession="ACC002"), HIS)
    ingest_ds(archive, make_dataset(1))  # matched to ACC001
    ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 2), AccessionNumber="NONE"))
    before = matches(archive)
    with pytest.raises(NotFound):
        worklist.match_study("1.2.3.4", "ACC001", TECH)
    with pytest.raises(UnknownOrder):
        worklist.match_study(uid(1, 2), "NOSUCH", TECH)
    with pytest.raises(OrderConflict, match="already has study"):
        worklist.match_study(uid(1, 2), "ACC001", TECH)
    assert matches(archive) == before
    assert worklist.get("ACC002").status == "SCHEDULED"


def test_manual_rematch_of_a_wrong_automatic_match(archive: Archive, worklist: Worklist) -> None:
    """The technologist picked the wrong worklist item: the study moves to the right order and patient."""
    worklist.create(order(), HIS)
    worklist.create(order("O2", accession="ACC002", patient_id="PID002", name="Lê^Thị Hoa"), HIS)
    ingest_ds(archive, make_dataset(1))  # says ACC001 / PID001, but was Lê Thị Hoa's exam
    worklist.match_study(uid(1, 1), "ACC002", TECH)
    [study] = find(archive, "STUDY", StudyInstanceUID=uid(1, 1), PatientID=None, AccessionNumber=None)
    assert (study.PatientID, study.AccessionNumber) == ("PID002", "ACC002")
    assert "unmatched" in [e["action"] for e in worklist.history("ACC001")]
    assert worklist.get("ACC001").status == "IN PROGRESS"  # left for the technologist to settle


def test_the_hook_costs_nothing_for_known_studies_and_a_failing_hook_loses_no_image(archive: Archive) -> None:
    calls: list[NewStudy] = []

    def counting(conn: Connection, new: NewStudy) -> None:
        calls.append(new)

    def failing(conn: Connection, new: NewStudy) -> None:
        conn.exec_driver_sql("DELETE FROM patient_identifier")
        raise RuntimeError("bug in a hook")

    archive.add_study_hook(counting)
    archive.add_study_hook(failing)
    ingest_ds(archive, make_dataset(1))
    ingest_ds(archive, make_dataset(2))
    ingest_ds(archive, make_dataset(3, series=uid(2, 2)))
    assert [(c.study_pk, c.record.study_instance_uid, c.origin.actor) for c in calls] == [(1, uid(1, 1), "MODALITY1")]
    assert archive.statistics().instances == 3


def test_a_plain_archive_does_not_reconcile(archive: Archive) -> None:
    Worklist(archive).create(order(), HIS)  # no reconcile_ingest()
    ingest_ds(archive, make_dataset(1))
    assert matches(archive) == []


def test_storescu_to_minipacs_serve_is_reconciled(tmp_path: Path) -> None:
    """A real modality (dcmtk storescu) to a real `minipacs serve`: the order's patient wins."""
    files = []
    for n in (1, 2):
        path = tmp_path / f"img{n}.dcm"
        path.write_bytes(part10(make_dataset(n, patient_id="TYPO01", patient_name="NGUYEN^VAN AN")))
        files.append(path)
    server = start_server(tmp_path / "data")
    try:
        arc = server.archive()
        try:
            Worklist(arc).create(order(), HIS)
        finally:
            arc.close()
        dcmtk("storescu", "-aec", "MINIPACS", "-aet", "CT_ROOM1", "127.0.0.1", str(server.port), *files)
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
    arc = server.archive()
    try:
        [row] = matches(arc)
        assert row["matched_by"] == "accession" and row["actor"] == "CT_ROOM1"
        [study] = find(arc, "STUDY", PatientID="PID001", PatientName=None, NumberOfStudyRelatedInstances=None)
        assert str(study.PatientName) == "Nguyễn^Văn An" and int(study.NumberOfStudyRelatedInstances) == 2
        assert Worklist(arc).get("ACC001").status == "IN PROGRESS"
        assert search(arc.db, action="RECONCILE")[0].actor == "CT_ROOM1"
    finally:
        arc.close()


def test_stow_to_minipacs_serve_is_reconciled_and_cfind_and_qido_answer_with_the_order(tmp_path: Path) -> None:
    """STOW-RS (the HTTP workers) reconciles too; C-FIND and QIDO-RS then show the order's patient."""
    import requests
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    from tests.viewer.helpers import start_web_server

    data = tmp_path / "data"
    data.mkdir()
    arc = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        arc.accounts.add_user("ktv.hoa", "technologist", "may chup CT 2026", TECH)
        Worklist(arc).create(order(), HIS)
    finally:
        arc.close()
    server, url = start_web_server(data)
    try:
        body = (b"--b0\r\nContent-Type: application/dicom\r\n\r\n"
                + part10(make_dataset(1, patient_id="TYPO01", patient_name="NGUYEN^VAN A")) + b"\r\n--b0--\r\n")  # fmt: skip
        answer = requests.post(f"{url}/dicomweb/studies", data=body, auth=("ktv.hoa", "may chup CT 2026"),
                               headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0'},
                               timeout=60)  # fmt: skip
        assert answer.status_code == 200, answer.text
        qido = requests.get(f"{url}/dicomweb/studies", params={"AccessionNumber": "ACC001"},
                            auth=("ktv.hoa", "may chup CT 2026"), timeout=30).json()  # fmt: skip
        assert [(s["00100020"]["Value"][0], s["00100010"]["Value"][0]["Alphabetic"]) for s in qido] == [
            ("PID001", "Nguyễn^Văn An")]
        ae = AE(ae_title="WORKSTATION")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", server.port, ae_title="MINIPACS")
        assert assoc.is_established
        try:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.PatientID = "TYPO01"
            identifier.StudyInstanceUID = ""
            typo = [ds for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
                    if ds is not None and status.Status == 0xFF00]  # fmt: skip
            identifier.PatientID = "PID001"
            identifier.PatientName = ""
            found = [ds for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
                     if ds is not None and status.Status == 0xFF00]  # fmt: skip
        finally:
            assoc.release()
        assert typo == []
        assert [(ds.StudyInstanceUID, str(ds.PatientName)) for ds in found] == [(uid(1, 1), "Nguyễn^Văn An")]
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
    arc = server.archive()
    try:
        assert matches(arc)[0]["actor"] == "ktv.hoa"
        assert search(arc.db, action="RECONCILE")[0].outcome == "corrected"
    finally:
        arc.close()


def test_a_second_study_and_a_cancelled_order_are_matched_without_a_status_change(
    archive: Archive, worklist: Worklist
) -> None:  # fmt: skip
    worklist.create(order(), HIS)
    worklist.create(order("O2", accession="ACC002"), HIS)
    worklist.cancel("HIS", "O2", HIS)
    ingest_ds(archive, make_dataset(1))
    ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 2)))  # ACC001 again, another study
    ingest_ds(archive, make_dataset(3, study=uid(1, 3), series=uid(2, 3), AccessionNumber="ACC002"))
    steps = {s.accession_number: s for s in worklist.steps()}
    rows = matches(archive)
    assert [r["matched_by"] for r in rows] == ["accession"] * 3
    assert rows[0]["step_pk"] == rows[1]["step_pk"] != rows[2]["step_pk"]
    assert steps["ACC001"].status == "IN PROGRESS" and steps["ACC002"].status == "CANCELLED"
    assert [e["action"] for e in worklist.history("ACC001")].count("matched") == 2


@pytest.mark.parametrize("accession", ["ACC001' OR '1'='1", "%", "ACC00_", "A" * 64, "\\ACC001"])
def test_hostile_accession_numbers_match_nothing(archive: Archive, worklist: Worklist, accession: str) -> None:
    worklist.create(order(), HIS)
    ingest_ds(archive, make_dataset(1, AccessionNumber=accession))
    assert [r["matched_by"] for r in matches(archive)] == ["unmatched"]
    assert worklist.get("ACC001").status == "SCHEDULED"
    assert archive.statistics().instances == 1
