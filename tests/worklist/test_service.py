"""The worklist service on a real SQLite index: orders, changes, states, patients."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from archive import Archive
from archive.audit import search
from archive.patients import OtherId, PatientDemographics
from tests.archive.helpers import find, ingest_ds, make_dataset, table_rows, uid
from tests.worklist.helpers import HIS, TECH, order
from worklist.errors import InvalidOrder, InvalidTransition, OrderConflict, UnknownOrder
from worklist.service import Outcome, Worklist, WorklistConfig, next_accession
from worklist.types import StepStatus
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)


@pytest.fixture
def wl(archive: Archive) -> Worklist:
    return Worklist(archive)


def test_create_fills_in_what_the_order_leaves_out(wl: Worklist) -> None:
    result = wl.create(order(accession="", procedure_description="", modality="", procedure_code="CT-SONAO"), HIS)
    step = result.step
    assert result.outcome is Outcome.CREATED
    assert step.status == "SCHEDULED" and step.modality == "CT"
    assert step.procedure_description == "CT sọ não không tiêm thuốc cản quang"
    assert step.service_code == "18.0001.0001" and step.procedure_scheme == "LOCAL"
    today = datetime.now().astimezone()
    assert step.accession_number == today.strftime("%y%m%d") + "0001"
    assert step.start_date == today.strftime("%Y%m%d") and len(step.start_time) == 6
    assert step.study_instance_uid and step.sps_id == step.accession_number
    assert step.filler_order_number == step.accession_number
    assert wl.create(order("O2", accession=""), HIS).step.accession_number.endswith("0002")
    assert [e["action"] for e in wl.history(step.accession_number)] == ["created"]
    assert {e.action for e in search(wl.db, action="PATIENT CREATE")} == {"PATIENT CREATE"}


def test_the_same_order_again_is_a_resend(wl: Worklist) -> None:
    first = wl.create(order(), HIS)
    again = wl.create(order(), HIS)
    assert again.outcome is Outcome.UNCHANGED and again.step == first.step
    assert len(table_rows(wl.archive, "procedure_step")) == 1
    with pytest.raises(OrderConflict, match="send it as a change"):
        wl.create(order(priority="STAT"), HIS)


def test_change_and_its_limits(wl: Worklist) -> None:
    wl.create(order(), HIS)
    changed = wl.change(order(priority="STAT", start_date="20261224", start_time="0930"), HIS)
    assert changed.outcome is Outcome.CHANGED and changed.step.priority == "STAT"
    assert changed.step.start_date == "20261224" and any("priority" in c for c in changed.changes)
    assert wl.change(order(priority="STAT"), HIS).outcome is Outcome.UNCHANGED
    with pytest.raises(UnknownOrder):
        wl.change(order("NOPE"), HIS)
    wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)
    with pytest.raises(InvalidTransition, match="can no longer be changed"):
        wl.change(order(priority="LOW"), HIS)
    assert wl.get("ACC001").priority == "STAT"


def test_status_transitions(wl: Worklist) -> None:
    wl.create(order(), HIS)
    wl.create(order("O2", accession="ACC002"), HIS)
    assert wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH).status == "IN PROGRESS"
    wl.set_status("ACC001", StepStatus.IN_PROGRESS, TECH)  # a resend: no second event
    assert wl.set_status("ACC001", StepStatus.COMPLETED, TECH).status == "COMPLETED"
    assert [e["status"] for e in wl.history("ACC001")] == ["SCHEDULED", "IN PROGRESS", "COMPLETED"]
    with pytest.raises(InvalidTransition):
        wl.cancel("HIS", "O1", HIS)
    assert wl.cancel("HIS", "O2", HIS, "patient went home").status == "CANCELLED"
    with pytest.raises(InvalidTransition):
        wl.set_status("ACC002", StepStatus.IN_PROGRESS, TECH)
    with pytest.raises(UnknownOrder):
        wl.cancel("HIS", "O9", HIS)
    with pytest.raises(UnknownOrder):
        wl.set_status("NOPE", StepStatus.COMPLETED, TECH)
    wl.create(order("O3", accession="ACC003"), HIS)
    wl.set_status("ACC003", StepStatus.IN_PROGRESS, TECH)
    assert wl.discontinue("HIS", "O3", HIS).status == "DISCONTINUED"


@pytest.mark.parametrize("bad, message", [
    ({"patient": PatientDemographics("")}, "patient ID is missing"),
    ({"patient": PatientDemographics("P1", birth_date="19681332")}, "birth date"),
    ({"patient": PatientDemographics("P1", sex="X")}, "sex"),
    ({"placer_order_number": " "}, "placer order number is missing"),
    ({"accession_number": "A" * 17}, "longer than 16"),
    ({"study_instance_uid": "1.2.abc"}, "study instance UID"),
    ({"start_date": "20261301"}, "scheduled date"),
    ({"start_time": "25h"}, "scheduled time"),
    ({"priority": "URGENT"}, "priority"),
    ({"pregnancy_status": 7}, "pregnancy status"),
    ({"modality": "", "procedure_code": "NOT-IN-CATALOGUE"}, "no modality"),
    ({"modality": "C T"}, "not a DICOM modality"),
    ({"station_ae_title": "S" * 17}, "station AE title"),
])  # fmt: skip
def test_validation_errors_change_nothing(wl: Worklist, bad: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOrder, match=message):
        wl.create(replace(order(), **bad), HIS)  # type: ignore[arg-type]
    assert table_rows(wl.archive, "procedure_step") == [] and table_rows(wl.archive, "patient") == []


def test_accession_and_uid_belong_to_one_order(wl: Worklist) -> None:
    wl.create(order(study_instance_uid=uid(1, 1)), HIS)
    with pytest.raises(OrderConflict, match="accession number ACC001"):
        wl.create(order("O2"), HIS)
    with pytest.raises(OrderConflict, match="study instance UID"):
        wl.create(order("O2", accession="ACC002", study_instance_uid=uid(1, 1)), HIS)


def test_accession_pattern() -> None:
    from sqlalchemy import create_engine

    from archive.db import migrate

    engine = create_engine("sqlite://")
    migrate(engine)
    now = datetime(2026, 12, 5, 9, 0).astimezone()
    with engine.connect() as conn:
        assert next_accession(conn, "CT{date}-{seq:3}", now) == "CT261205-001"
        assert next_accession(conn, "{seq:6}", now) == "000001"
        with pytest.raises(InvalidOrder, match="longer than 16"):
            next_accession(conn, "VERYLONGPREFIX{date}{seq:4}", now)
    engine.dispose()


def test_walk_in_gets_an_order_number_of_ours(archive: Archive) -> None:
    wl = Worklist(archive, WorklistConfig(accession_pattern="WI{seq:4}"))
    result = wl.walk_in(replace(order(accession=""), placer_issuer="", placer_order_number=""), TECH)
    assert result.step.placer_issuer == "WALKIN" and result.step.placer_order_number.startswith("WALKIN-")
    assert result.step.accession_number == "WI0001"


def test_update_patient_corrects_every_edge(archive: Archive, wl: Worklist) -> None:
    wl.create(order(), HIS)
    ingest_ds(archive, make_dataset(1))
    changed = wl.update_patient(PatientDemographics("PID001", name="Nguyễn^Văn Anh", other_ids=(
        OtherId("079068000123", "CCCD"),)), HIS)  # fmt: skip
    assert any(c.startswith("name") for c in changed) and "other ids added: 079068000123" in changed
    [study] = find(archive, "STUDY", PatientID="PID001", PatientName=None, StudyInstanceUID=None)
    assert str(study.PatientName) == "Nguyễn^Văn Anh"
    assert find(archive, "STUDY", PatientName="NGUYEN VAN ANH", StudyInstanceUID=None)
    assert wl.get("ACC001").patient.birth_date == "19680315"  # not blanked by omission
    assert search(archive.db, action="PATIENT UPDATE")[0].outcome == "corrected"
    with pytest.raises(UnknownOrder):
        wl.update_patient(PatientDemographics("NOBODY"), HIS)


def test_merge_moves_studies_and_orders(archive: Archive, wl: Worklist) -> None:
    wl.create(order("O1", patient_id="OLD1"), HIS)
    ingest_ds(archive, make_dataset(1, patient_id="OLD1"))
    moved = wl.merge_patient(PatientDemographics("NEW1", name="Nguyễn^Văn An"), "OLD1", "", HIS)
    assert moved == 1
    assert wl.get("ACC001").patient.patient_id == "NEW1"
    assert [p["patient_id"] for p in table_rows(archive, "patient")] == ["NEW1"]
    # The prior ID still finds them, as an Other Patient ID.
    assert find(archive, "PATIENT", patient_root=True, OtherPatientIDs="OLD1", PatientID=None)[0].PatientID == "NEW1"
    assert search(archive.db, action="MERGE")[0].detail.startswith("merged OLD1 into NEW1")
    with pytest.raises(UnknownOrder):
        wl.merge_patient(PatientDemographics("NEW1"), "OLD1", "", HIS)
    with pytest.raises(InvalidOrder):
        wl.merge_patient(PatientDemographics("NEW1"), " ", "", HIS)


def test_priors_are_the_patients_other_studies(archive: Archive, wl: Worklist) -> None:
    wl.create(order(study_instance_uid=uid(1, 1)), HIS)
    ingest_ds(archive, make_dataset(1, study=uid(1, 1), AccessionNumber="ACC001"))
    ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 2), AccessionNumber="OLD", StudyDate="20250101"))
    ingest_ds(archive, make_dataset(3, study=uid(1, 3), series=uid(2, 3), patient_id="SOMEONE_ELSE"))
    assert [p["study_instance_uid"] for p in wl.priors("ACC001")] == [uid(1, 2)]
    with pytest.raises(UnknownOrder):
        wl.priors("NOPE")


def test_steps_listing(wl: Worklist) -> None:
    wl.create(order("O1", accession="A1", start_date="20261205", start_time="0800"), HIS)
    wl.create(order("O2", accession="A2", start_date="20261205", start_time="0700", modality="DX"), HIS)
    wl.create(order("O3", accession="A3", start_date="20261205", start_time="0900", priority="STAT"), HIS)
    wl.create(order("O4", accession="A4", start_date="20261206"), HIS)
    assert [s.accession_number for s in wl.steps(start_date="20261205")] == ["A3", "A2", "A1"]
    assert [s.accession_number for s in wl.steps(modality="dx")] == ["A2"]
    assert [s.accession_number for s in wl.steps(patient_id="PID001", limit=2, offset=1)] == ["A2", "A1"]
