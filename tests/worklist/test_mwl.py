"""The Modality Worklist over DIMSE: a real `minipacs serve`, dcmtk findscu -W and a pynetdicom SCU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from tests.conftest import Server, site_on, start_server
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.dicom_scp.helpers import stop_and_check
from tests.worklist.mwl_helpers import (
    ASCII_STATION,
    SPS_KEYS,
    TOP_KEYS,
    accessions,
    associate,
    findscu_w,
    identifier,
    mwl_find,
    populate,
)


@pytest.fixture(scope="module")
def mwl_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               site_backend: str) -> Iterator[Server]:  # fmt: skip
    data = tmp_path_factory.mktemp("mwl") / "data"
    with site_on(request, site_backend, data) as site:
        server = start_server(data, site=site, env={
            "MINIPACS_DICOM_WORKERS": "1", "MINIPACS_WORKLIST_ASCII_STATIONS": f"XRAY9, {ASCII_STATION}"})
        try:
            populate(server)
            yield server
        finally:
            stop_and_check(server)


def test_every_required_key_with_its_value(mwl_server: Server) -> None:
    assoc = associate(mwl_server)
    try:
        matches, final = mwl_find(assoc, identifier(AccessionNumber="MWL1"))
    finally:
        assoc.release()
    assert final.Status == 0x0000 and len(matches) == 1
    found = matches[0]
    for keyword in (*TOP_KEYS, "SpecificCharacterSet", "ScheduledProcedureStepSequence"):
        assert keyword in found, keyword
    sps = found.ScheduledProcedureStepSequence[0]
    for keyword in SPS_KEYS:
        assert keyword in sps, keyword
    assert found.SpecificCharacterSet == "ISO_IR 192"
    assert str(found.PatientName) == "Nguyễn^Văn An" and found.PatientID == "BN0001"
    assert found.PatientBirthDate == "19680315" and found.PatientSex == "M"
    assert {(i.PatientID, i.IssuerOfPatientID) for i in found.OtherPatientIDsSequence} == {
        ("001068012345", "CCCD"), ("DN4010123456789", "BHYT")}
    assert found.PregnancyStatus == 4 and found.RequestedProcedurePriority == "STAT"
    assert found.RequestedProcedureDescription == "CT sọ não không tiêm thuốc cản quang"
    code = found.RequestedProcedureCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("CT-SONAO", "LOCAL")
    assert code.CodeMeaning == found.RequestedProcedureDescription
    assert str(found.ReferringPhysicianName) == "Lê^Văn Cường" == str(found.RequestingPhysician)
    assert found.StudyInstanceUID and found.RequestedProcedureID == "MWL1"
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledStationName) == ("CT", "CT1", "CT phòng 1")
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == ("20261205", "080000")
    assert str(sps.ScheduledPerformingPhysicianName) == "Trần^Thị Bình"
    assert sps.ScheduledProcedureStepID == "MWL1" and sps.ScheduledProcedureStepStatus == "SCHEDULED"
    assert sps.ScheduledProtocolCodeSequence[0].CodeValue == "CT-SONAO"
    # Type 2 keys we know nothing about are there, empty.
    assert found.AdmissionID == "" and found.CurrentPatientLocation == "" and found.PatientWeight is None


def test_only_the_keys_asked_for(mwl_server: Server) -> None:
    query = Dataset()
    query.PatientName = ""
    query.AccessionNumber = "MWL2"
    item = Dataset()
    item.Modality = ""
    query.ScheduledProcedureStepSequence = [item]
    assoc = associate(mwl_server)
    try:
        matches, final = mwl_find(assoc, query)
    finally:
        assoc.release()
    assert final.Status == 0 and len(matches) == 1
    assert {e.keyword for e in matches[0]} == {"SpecificCharacterSet", "PatientName", "AccessionNumber",
                                               "ScheduledProcedureStepSequence"}  # fmt: skip
    assert [e.keyword for e in matches[0].ScheduledProcedureStepSequence[0]] == ["Modality"]
    assert matches[0].ScheduledProcedureStepSequence[0].Modality == "DX"


def test_findscu_sees_the_item_in_utf8(mwl_server: Server, tmp_path: Path) -> None:
    keys = [f"{k}=" for k in TOP_KEYS if not k.endswith("Sequence")]
    keys += [f"ScheduledProcedureStepSequence[0].{k}=" for k in SPS_KEYS if not k.endswith("Sequence")]
    keys += ["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT1", "PatientName=nguyen*"]
    found, log = findscu_w(mwl_server, tmp_path / "rsp", *keys)
    assert sorted(str(f.AccessionNumber) for f in found) == ["MWL1", "MWL3"], log
    first = next(f for f in found if f.AccessionNumber == "MWL1")
    assert first.SpecificCharacterSet == "ISO_IR 192" and str(first.PatientName) == "Nguyễn^Văn An"
    assert first.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "SCHEDULED"
    # STAT first.
    assert found[0].AccessionNumber == "MWL1"


def test_an_ascii_console_gets_transliterated_text(mwl_server: Server, tmp_path: Path) -> None:
    keys = ["AccessionNumber=MWL1", "PatientName=", "RequestedProcedureDescription=", "SpecificCharacterSet=",
            "ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName=",
            "ScheduledProcedureStepSequence[0].ScheduledStationName="]  # fmt: skip
    found, log = findscu_w(mwl_server, tmp_path / "rsp", *keys, calling=ASCII_STATION)
    assert len(found) == 1, log
    item = found[0]
    assert "SpecificCharacterSet" not in item
    assert str(item.PatientName) == "NGUYEN^VAN AN"
    assert item.RequestedProcedureDescription == "CT so nao khong tiem thuoc can quang"
    sps = item.ScheduledProcedureStepSequence[0]
    assert str(sps.ScheduledPerformingPhysicianName) == "TRAN^THI BINH" and sps.ScheduledStationName == "CT phong 1"
    assoc = associate(mwl_server, calling=ASCII_STATION)
    try:
        matches, _ = mwl_find(assoc, identifier(PatientID="BN0002"))
    finally:
        assoc.release()
    assert str(matches[0].PatientName) == "TRAN^THI HOA" and "SpecificCharacterSet" not in matches[0]


@pytest.mark.parametrize(("top", "sps", "expected"), [
    ({}, {"ScheduledStationAETitle": "CT1"}, {"MWL1", "MWL3"}),
    ({}, {"Modality": "DX"}, {"MWL2"}),
    ({}, {"Modality": "CT", "ScheduledStationAETitle": "DX1"}, set()),
    ({}, {"ScheduledProcedureStepStartDate": "20261206"}, {"MWL2", "MWL3"}),
    ({}, {"ScheduledProcedureStepStartDate": "20261201-20261205"}, {"MWL1"}),
    ({}, {"ScheduledProcedureStepStartDate": "20261206-"}, {"MWL2", "MWL3"}),
    ({}, {"ScheduledProcedureStepStartTime": "0900-1500"}, {"MWL2", "MWL3"}),
    # One date-time range: from 5 Dec 09:00 to 6 Dec 10:00 (PS3.4 C.2.2.2.5.1).
    ({}, {"ScheduledProcedureStepStartDate": "20261205-20261206",
          "ScheduledProcedureStepStartTime": "0900-1000"}, {"MWL2"}),
    ({}, {"ScheduledProcedureStepStartDate": "20261205", "ScheduledProcedureStepStartTime": "07-09"}, {"MWL1"}),
    ({}, {"ScheduledPerformingPhysicianName": "tran*"}, {"MWL1"}),
    ({}, {"ScheduledPerformingPhysicianName": "BINH TRAN THI"}, {"MWL1"}),
    ({}, {"ScheduledProcedureStepID": "MWL3"}, {"MWL3"}),
    ({"PatientName": "nguyen*"}, {}, {"MWL1", "MWL3"}),
    ({"PatientName": "NGUYEN VAN AN"}, {}, {"MWL1"}),
    ({"PatientName": "Trần^Thị*"}, {}, {"MWL2"}),
    ({"PatientID": "BN0003"}, {}, {"MWL3"}),
    ({"AccessionNumber": "MWL2"}, {}, {"MWL2"}),
    ({"AccessionNumber": "MWL*"}, {}, {"MWL1", "MWL2", "MWL3"}),
    ({"RequestedProcedureID": "MWL1"}, {}, {"MWL1"}),
    # The cancelled step is off the worklist unless asked for by status.
    ({"AccessionNumber": "MWL4"}, {}, set()),
    ({}, {"ScheduledProcedureStepStatus": "CANCELLED"}, {"MWL4"}),
    ({}, {"ScheduledProcedureStepStatus": "SCHEDULED"}, {"MWL1", "MWL2", "MWL3"}),
])  # fmt: skip
def test_matching(mwl_server: Server, top: dict[str, str], sps: dict[str, str], expected: set[str]) -> None:
    assoc = associate(mwl_server)
    try:
        matches, final = mwl_find(assoc, identifier(sps, **top))
    finally:
        assoc.release()
    assert final.Status == 0x0000
    assert accessions(matches) == expected


def test_study_uid_matching(mwl_server: Server) -> None:
    assoc = associate(mwl_server)
    try:
        first, _ = mwl_find(assoc, identifier(AccessionNumber="MWL3"))
        uid = str(first[0].StudyInstanceUID)
        matches, final = mwl_find(assoc, identifier(StudyInstanceUID=uid))
    finally:
        assoc.release()
    assert final.Status == 0 and accessions(matches) == {"MWL3"}


@pytest.mark.parametrize(("top", "sps", "why"), [
    ({}, {"ScheduledProcedureStepStartDate": "2026-12-01"}, "date"),
    ({}, {"ScheduledProcedureStepStartDate": "20261301"}, "date"),
    ({}, {"ScheduledProcedureStepStartTime": "2560"}, "time"),
    ({"StudyInstanceUID": "1.2.840.*"}, {}, "UID"),
    ({"PatientID": "X" * 70}, {}, "at most 64"),
    ({"AccessionNumber": "A" * 17}, {}, "at most 16"),
])  # fmt: skip
def test_bad_queries_get_a_status_and_the_next_query_is_answered(
    mwl_server: Server, top: dict[str, str], sps: dict[str, str], why: str
) -> None:
    assoc = associate(mwl_server)
    try:
        matches, final = mwl_find(assoc, identifier(sps, **top))
        assert matches == [] and final.Status == 0xA900
        assert why in str(final.get("ErrorComment", ""))
        again, final = mwl_find(assoc, identifier(AccessionNumber="MWL1"))
        assert final.Status == 0 and accessions(again) == {"MWL1"}
    finally:
        assoc.release()


def test_an_undecodable_identifier_is_refused(mwl_server: Server) -> None:
    query = identifier()
    query.ScheduledProcedureStepSequence = [Dataset(), Dataset()]  # one item only in a query
    assoc = associate(mwl_server)
    try:
        matches, final = mwl_find(assoc, query)
        assert matches == [] and final.Status == 0xA900
        assert mwl_find(assoc, identifier(AccessionNumber="MWL2"))[1].Status == 0
    finally:
        assoc.release()


def test_worker_processes_serve_the_worklist(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"MINIPACS_DICOM_WORKERS": "2"})
    try:
        populate(server)
        for _ in range(4):  # associations land on either worker
            assoc = associate(server)
            try:
                matches, final = mwl_find(assoc, identifier({"ScheduledStationAETitle": "CT1"}))
            finally:
                assoc.release()
            assert final.Status == 0 and accessions(matches) == {"MWL1", "MWL3"}
    finally:
        stop_and_check(server)


def test_transliteration_for_ascii_consoles() -> None:
    from worklist.mwl import ascii_name, ascii_text, transliterated

    assert ascii_name("Nguyễn^Văn An") == "NGUYEN^VAN AN"
    assert ascii_name("Đặng^Thị Đào=阮") == "DANG^THI DAO=?"
    assert ascii_text("Siêu âm ổ bụng – Đà Nẵng") == "Sieu am o bung ? Da Nang"
    attrs = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Lê^Văn Tám"}]},
             "00321060": {"vr": "LO", "Value": ["CT sọ não"]},
             "00400100": {"vr": "SQ", "Value": [{"00400006": {"vr": "PN", "Value": [{"Alphabetic": "Võ^Mai"}]}}]},
             "001021C0": {"vr": "US", "Value": [4]}}  # fmt: skip
    out = transliterated(attrs)
    assert out["00100010"]["Value"] == [{"Alphabetic": "LE^VAN TAM"}]
    assert out["00321060"]["Value"] == ["CT so nao"] and out["001021C0"]["Value"] == [4]
    assert out["00400100"]["Value"][0]["00400006"]["Value"] == [{"Alphabetic": "VO^MAI"}]


def test_physician_names_match_by_the_engines_rules() -> None:
    from archive.matching import parse_value
    from worklist.mwl import name_matches

    assert name_matches(parse_value("PN", "tran thi binh"), "Trần^Thị Bình")
    assert not name_matches(parse_value("PN", "TRAN^THI"), "Trần^Thị Bình")
    assert name_matches(parse_value("PN", "b*^tr*"), "Trần^Thị Bình")
    # Each query word needs a word of its own: N* cannot match Nguyễn twice.
    assert not name_matches(parse_value("PN", "NGUYEN^N*"), "Nguyễn^Công Tuấn")
    assert name_matches(parse_value("PN", "[x]*"), "[X]YZ^A")
