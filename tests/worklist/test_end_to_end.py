"""The issue's story end to end, through real peers only, against one `minipacs serve`.

The HIS sends an order over MLLP; the CT console sees it on its worklist
(dcmtk findscu -W, UTF-8) and an old console sees it in ASCII (pynetdicom);
the technologist starts and finishes the exam (MPPS), and the HIS hears each
status change; the images arrive with the patient typed differently and are
filed under the order's patient; a cancelled order leaves the worklist; a study
nobody ordered lands in the unmatched list.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from tests.conftest import CT_FILES, Server, dcmtk, free_port, require_private_network, start_server
from tests.dicom_scp.helpers import stop_and_check
from tests.worklist.helpers import MllpPeer
from tests.worklist.hl7_helpers import orm, send
from tests.worklist.mwl_helpers import associate, findscu_w, identifier, mwl_find
from tests.worklist.test_mpps import create_attrs, final_attrs, n_create, n_set
from worklist.service import Worklist

pytestmark = pytest.mark.slow


def wait_for(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def study_of(server: Server, accession: str) -> Dataset | None:
    """The study with this accession number as C-FIND (Study Root) answers it."""
    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.aet)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.AccessionNumber = accession
    query.PatientID = ""
    query.PatientName = ""
    query.StudyInstanceUID = ""
    try:
        found = [ds for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                 if status is not None and status.Status in (0xFF00, 0xFF01)]  # fmt: skip
    finally:
        assoc.release()
    assert len(found) <= 1
    return found[0] if found else None


def ct_study(tmp_path: Path, accession: str, patient_id: str, name: str, study_uid: str = "") -> Path:
    """The sample CT rewritten as a new study, as a console that typed the patient itself would send it."""
    folder = tmp_path / f"study-{accession or 'none'}"
    folder.mkdir()
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for path in CT_FILES[:3]:
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber, ds.PatientID, ds.PatientName = accession, patient_id, name
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.save_as(folder / path.name)
    return folder


def test_order_to_worklist_to_mpps_to_images(tmp_path: Path) -> None:
    require_private_network()
    his = MllpPeer(answers=["AA"])
    hl7_port = free_port()
    server = start_server(tmp_path / "data", env={
        "MINIPACS_HL7_PORT": str(hl7_port),
        "MINIPACS_HL7_STATUS_UPDATES": f"127.0.0.1:{his.port}",
        "MINIPACS_WORKLIST_ASCII_STATIONS": "OLD_CT",
    })  # fmt: skip
    address = ("127.0.0.1", hl7_port)
    today = datetime.now().strftime("%Y%m%d")
    try:
        # 1. The HIS orders "CT sọ não không tiêm thuốc" for Nguyễn Văn An.
        ack = send(address, orm("E2E-1", "PH001", accession="E2E1", start=f"{today}0900",
                                obr={24: "CT"}))  # fmt: skip
        assert ack.code == "AA", ack.raw

        # 2. The CT console's worklist (dcmtk, UTF-8) shows the patient, with diacritics.
        found, _ = findscu_w(server, tmp_path / "findscu", "PatientName", "PatientID", "AccessionNumber",
                             "ScheduledProcedureStepSequence[0].Modality=CT",
                             f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={today}",
                             "RequestedProcedureDescription", "StudyInstanceUID")  # fmt: skip
        assert [(str(d.PatientName), d.PatientID, d.AccessionNumber) for d in found] == [
            ("Nguyễn^Văn An", "BN001", "E2E1")]
        study_uid = str(found[0].StudyInstanceUID)
        assert found[0].RequestedProcedureDescription.startswith("CT sọ não")

        # ... and an old console that cannot show UTF-8 gets it in ASCII.
        assoc = associate(server, calling="OLD_CT")
        try:
            matches, final = mwl_find(assoc, identifier(AccessionNumber="E2E1"))
        finally:
            assoc.release()
        assert final.Status == 0 and len(matches) == 1
        assert str(matches[0].PatientName) == "NGUYEN^VAN AN" and "SpecificCharacterSet" not in matches[0]

        # 3. The technologist starts the exam (MPPS IN PROGRESS) ...
        assoc = associate(server, calling="CT1")
        mpps_uid = generate_uid()
        try:
            status, _ = n_create(assoc, create_attrs("E2E1", study_uid, "E2E1", PatientID="BN001"), mpps_uid)
            assert status.Status == 0, status
        finally:
            assoc.release()

        # 4. ... the images arrive, the patient typed without diacritics and with the console's own ID ...
        dcmtk("storescu", "-aec", server.aet, "127.0.0.1", server.port, "+sd",
              ct_study(tmp_path, "E2E1", "CT-0007", "NGUYEN VAN AN", study_uid))  # fmt: skip
        study = study_of(server, "E2E1")
        assert study is not None
        assert (study.PatientID, str(study.PatientName)) == ("BN001", "Nguyễn^Văn An")

        # 5. ... and the exam is finished (MPPS COMPLETED).
        assoc = associate(server, calling="CT1")
        try:
            assert n_set(assoc, mpps_uid, final_attrs("COMPLETED")).Status == 0
            # A completed exam is no longer on the worklist.
            matches, _ = mwl_find(assoc, identifier(AccessionNumber="E2E1"))
            assert matches == []
        finally:
            assoc.release()

        # 6. A second order, cancelled by the HIS, disappears from the worklist.
        assert send(address, orm("E2E-2", "PH002", accession="E2E2", start=f"{today}1000")).code == "AA"
        assoc = associate(server)
        try:
            assert len(mwl_find(assoc, identifier(AccessionNumber="E2E2"))[0]) == 1
            assert send(address, orm("E2E-3", "PH002", control="CA", accession="E2E2")).code == "AA"
            assert mwl_find(assoc, identifier(AccessionNumber="E2E2"))[0] == []
        finally:
            assoc.release()

        # 7. A study nobody ordered is listed as unmatched.
        dcmtk("storescu", "-aec", server.aet, "127.0.0.1", server.port, "+sd",
              ct_study(tmp_path, "NOORDER9", "X9", "Le^Van Khach"))  # fmt: skip

        archive = server.archive()
        try:
            worklist = Worklist(archive)
            step = worklist.get("E2E1")
            assert step.status == "COMPLETED"
            assert [e["status"] for e in worklist.history("E2E1") if e["action"] == "status"][-2:] == [
                "IN PROGRESS", "COMPLETED"]
            assert worklist.get("E2E2").status == "CANCELLED"
            assert [s["accession_number"] for s in worklist.unmatched_studies()] == ["NOORDER9"]
            with archive.db.read() as conn:
                reconciled = conn.exec_driver_sql(
                    "SELECT detail FROM audit_event WHERE action = 'RECONCILE'").scalars().all()
            assert any("CT-0007" in d for d in reconciled), reconciled
        finally:
            archive.close()

        # 8. The HIS heard the exam start and finish (ORM^O01, ORC-1 SC) through the outbox.
        def statuses() -> list[str]:
            return [m.decode().split("ORC|SC|")[1].split("\r")[0] for m in his.received if b"ORC|SC|" in m]

        wait_for(lambda: len([s for s in statuses() if "|CM" in s]) >= 1)
        first_order = [s.split("|")[3] for s in statuses() if s.startswith("PH001^")]
        assert first_order == ["IP", "CM"], statuses()
    finally:
        his.close()
        stop_and_check(server)
