"""C-FIND with dcmtk's findscu (responses extracted with -X and read back) and pynetdicom.

Patient Root and Study Root at every level, wildcards, date ranges, UID
lists, and Vietnamese names with and without diacritics (Đ counts as D).
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.conftest import ROOT, Server, start_server
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.dicom_scp.helpers import CT, DX, US, associate, findscu, stop_and_check

sys.path.insert(0, str(ROOT / "bench"))
import populate  # noqa: E402

UTF8 = "SpecificCharacterSet=ISO_IR 192"
_counter = itertools.count()


def find(server: Server, tmp_path: Path, *keys: str, model: str = "-S") -> list[Dataset]:
    responses, log = findscu(server, tmp_path / f"find{next(_counter)}", *keys, model=model)
    assert "Received Final Find Response (Success)" in log, log
    assert len(re.findall(r"Received Find Response \d+ \(Pending\)", log)) == len(responses), log
    return responses


def values(responses: list[Dataset], keyword: str) -> list[str]:
    return sorted("" if r.get(keyword) is None else str(r.get(keyword)) for r in responses)


# --- Patient Root ---------------------------------------------------------------


def test_patient_level_without_diacritics_finds_nguyen(samples_server: Server, tmp_path: Path) -> None:
    found = find(samples_server, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=nguyen*",
                 "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies",
                 "NumberOfPatientRelatedInstances", model="-P")  # fmt: skip
    assert len(found) == 1
    (patient,) = found
    assert patient.PatientID == CT.patient_id
    assert patient.PatientName == "Nguyễn^Văn An"
    assert patient.SpecificCharacterSet == "ISO_IR 192"
    assert patient.PatientBirthDate == "19680315"
    assert patient.PatientSex == "M"
    assert patient.NumberOfPatientRelatedStudies == 1
    assert patient.NumberOfPatientRelatedInstances == 20
    assert patient.QueryRetrieveLevel == "PATIENT"


@pytest.mark.parametrize("name, charset", [
    ("TRAN^THI^DAO", None),          # folded, each word its own component
    ("tran thi dao", None),          # lower case, one component
    ("Trần^Thị Đào", UTF8),          # exact, with Đ
    ("*đào", UTF8),                  # wildcard on the given name, lower-case đ
    ("DAO^TRAN^THI", None),          # any component order
    ("TR?N^*", None),                # single-character wildcard
])  # fmt: skip
def test_patient_name_matching_finds_tran_thi_dao(samples_server: Server, tmp_path: Path, name: str,
                                                  charset: str | None) -> None:  # fmt: skip
    keys = [charset] if charset else []
    found = find(samples_server, tmp_path, *keys, "QueryRetrieveLevel=PATIENT", f"PatientName={name}",
                 "PatientID", model="-P")  # fmt: skip
    assert values(found, "PatientID") == [DX.patient_id]
    assert str(found[0].PatientName) == "Trần^Thị Đào"


@pytest.mark.parametrize("name", ["NGUYEN^VAN^DAO", "Tran^Van^An", "Đào", "nguyen"])
def test_patient_name_matching_is_not_too_wide(samples_server: Server, tmp_path: Path, name: str) -> None:
    # Folding widens a search, but every word must still match (and the whole
    # name, without a wildcard).
    found = find(samples_server, tmp_path, UTF8, "QueryRetrieveLevel=PATIENT", f"PatientName={name}",
                 "PatientID", model="-P")  # fmt: skip
    assert found == []


def test_patient_root_study_series_and_image_levels(samples_server: Server, tmp_path: Path) -> None:
    studies = find(samples_server, tmp_path, "QueryRetrieveLevel=STUDY", f"PatientID={CT.patient_id}",
                   "StudyInstanceUID", "AccessionNumber", "NumberOfStudyRelatedInstances", model="-P")  # fmt: skip
    assert values(studies, "StudyInstanceUID") == [CT.study_uid]
    assert studies[0].AccessionNumber == "CT2611200001"
    assert studies[0].NumberOfStudyRelatedInstances == 20

    series = find(samples_server, tmp_path, "QueryRetrieveLevel=SERIES", f"PatientID={CT.patient_id}",
                  f"StudyInstanceUID={CT.study_uid}", "SeriesInstanceUID", "Modality", "SeriesNumber",
                  "NumberOfSeriesRelatedInstances", model="-P")  # fmt: skip
    assert values(series, "SeriesInstanceUID") == list(CT.series_uids)
    assert series[0].Modality == "CT"
    assert series[0].SeriesNumber == 2
    assert series[0].NumberOfSeriesRelatedInstances == 20

    images = find(samples_server, tmp_path, "QueryRetrieveLevel=IMAGE", f"PatientID={CT.patient_id}",
                  f"StudyInstanceUID={CT.study_uid}", f"SeriesInstanceUID={CT.series_uids[0]}",
                  "SOPInstanceUID", "SOPClassUID", "InstanceNumber", model="-P")  # fmt: skip
    assert values(images, "SOPInstanceUID") == sorted(CT.sop_uids)
    assert {str(i.SOPClassUID) for i in images} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert sorted(int(i.InstanceNumber) for i in images) == list(range(1, 21))


def test_other_patient_ids_sequence_finds_by_citizen_id(samples_server: Server, tmp_path: Path) -> None:
    # The CCCD (citizen ID) of Trần Thị Đào is an Other Patient ID.
    found = find(samples_server, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID",
                 "OtherPatientIDsSequence[0].PatientID=080175004321",
                 "OtherPatientIDsSequence[0].IssuerOfPatientID", model="-P")  # fmt: skip
    assert values(found, "PatientID") == [DX.patient_id]
    items = found[0].OtherPatientIDsSequence
    assert {(i.PatientID, i.IssuerOfPatientID) for i in items} == {
        ("080175004321", "CCCD"), ("HC4800987654321", "BHYT")}


# --- Study Root -------------------------------------------------------------------


def test_study_level_wildcard_returns_every_study_with_its_values(samples_server: Server,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    found = find(samples_server, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=BN2600100?",
                 "StudyInstanceUID", "PatientName", "StudyDescription", "StudyDate",
                 "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                 "NumberOfStudyRelatedInstances")  # fmt: skip
    by_uid = {r.StudyInstanceUID: r for r in found}
    assert sorted(by_uid) == sorted([CT.study_uid, DX.study_uid, US.study_uid])
    assert by_uid[CT.study_uid].StudyDescription == "CT sọ não không tiêm thuốc"
    assert by_uid[DX.study_uid].StudyDescription == "X-quang ngực thẳng (PA)"
    assert by_uid[US.study_uid].StudyDescription == "Siêu âm ổ bụng tổng quát"
    assert by_uid[US.study_uid].PatientName == "Lê^Thị Hồng Nhung"
    assert [by_uid[u].NumberOfStudyRelatedInstances for u in (CT.study_uid, DX.study_uid, US.study_uid)] == [20, 1, 2]
    assert [by_uid[u].ModalitiesInStudy for u in (CT.study_uid, DX.study_uid, US.study_uid)] == ["CT", "DX", "US"]
    assert all(r.NumberOfStudyRelatedSeries == 1 for r in found)
    assert all(r.SpecificCharacterSet == "ISO_IR 192" for r in found)


@pytest.mark.parametrize("dates, expected", [
    ("20261120-20261120", {"CT", "DX"}),
    ("20261121-", {"US"}),
    ("-20261120", {"CT", "DX"}),
    ("20261101-20261130", {"CT", "DX", "US"}),
    ("20261121", {"US"}),
    ("20250101-20251231", set()),
])  # fmt: skip
def test_study_date_ranges(samples_server: Server, tmp_path: Path, dates: str, expected: set[str]) -> None:
    found = find(samples_server, tmp_path, "QueryRetrieveLevel=STUDY", f"StudyDate={dates}",
                 "StudyInstanceUID", "ModalitiesInStudy")  # fmt: skip
    assert {str(r.ModalitiesInStudy) for r in found} == expected


def test_study_uid_list(samples_server: Server, tmp_path: Path) -> None:
    found = find(samples_server, tmp_path, "QueryRetrieveLevel=STUDY",
                 f"StudyInstanceUID={CT.study_uid}\\{US.study_uid}", "AccessionNumber")  # fmt: skip
    assert values(found, "StudyInstanceUID") == sorted([CT.study_uid, US.study_uid])
    assert values(found, "AccessionNumber") == ["CT2611200001", "US2611210003"]


@pytest.mark.parametrize("key, expected", [
    ("AccessionNumber=CT*", ["1001"]),
    ("AccessionNumber=*0003", ["1003"]),
    ("AccessionNumber=DX2611200002", ["1002"]),
    ("AccessionNumber=ct*", []),  # case-sensitive, unlike person names
    ("ModalitiesInStudy=DX", ["1002"]),
    ("ModalitiesInStudy=CT\\US", ["1001", "1003"]),
    ("StudyDescription=X-quang*", ["1002"]),
    ("StudyDescription=Siêu âm*", ["1003"]),
    ("ReferringPhysicianName=PHAM^MINH TUAN", ["1001"]),
    ("StudyTime=0900-1000", ["1002"]),
])  # fmt: skip
def test_study_level_matching_keys(samples_server: Server, tmp_path: Path, key: str,
                                   expected: list[str]) -> None:  # fmt: skip
    # (findscu: a later -k for the same attribute replaces an earlier one, so
    # the return key must be another attribute than the matching key.)
    found = find(samples_server, tmp_path, UTF8, "QueryRetrieveLevel=STUDY", key, "StudyID")
    assert values(found, "StudyID") == expected


def test_study_root_series_and_image_levels(samples_server: Server, tmp_path: Path) -> None:
    series = find(samples_server, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={US.study_uid}",
                  "SeriesInstanceUID", "Modality", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances")  # fmt: skip
    assert values(series, "SeriesInstanceUID") == list(US.series_uids)
    assert series[0].SeriesDescription == "Ổ bụng"
    assert series[0].NumberOfSeriesRelatedInstances == 2

    images = find(samples_server, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={US.study_uid}",
                  f"SeriesInstanceUID={US.series_uids[0]}", "SOPInstanceUID", "SOPClassUID",
                  "NumberOfFrames")  # fmt: skip
    assert values(images, "SOPInstanceUID") == sorted(US.sop_uids)
    assert values(images, "SOPClassUID") == ["1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6.1"]
    assert values(images, "NumberOfFrames") == ["", "30"]

    by_modality = find(samples_server, tmp_path, "QueryRetrieveLevel=SERIES", "Modality=DX",
                       "SeriesInstanceUID", "StudyInstanceUID")  # fmt: skip
    assert values(by_modality, "SeriesInstanceUID") == list(DX.series_uids)
    assert by_modality[0].StudyInstanceUID == DX.study_uid


# --- pynetdicom: exact keys and character set ---------------------------------------


def _c_find(server: Server, identifier: Dataset, model: object = StudyRootQueryRetrieveInformationModelFind,
            ) -> tuple[list[Dataset], int]:  # fmt: skip
    assoc = associate(server, [build_context(model)])
    assert assoc.is_established
    try:
        matches, final = [], None
        for status, ds in assoc.send_c_find(identifier, model):
            assert status is not None and "Status" in status, "no response from the server"
            if status.Status in (0xFF00, 0xFF01):
                matches.append(ds)
            else:
                final = status.Status
        assert final is not None
        return matches, final
    finally:
        assoc.release()


def test_response_holds_exactly_the_requested_keys(samples_server: Server) -> None:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "Nguyễn^Văn An"
    query.StudyInstanceUID = ""
    query.StudyDescription = ""
    query.ReferringPhysicianName = ""
    query.NumberOfStudyRelatedInstances = ""
    query.StudyComments = ""  # known to the index, absent from the study: returned empty
    query.add_new(0x00091001, "LO", "")  # a private key: returned empty, never matched
    matches, final = _c_find(samples_server, query)
    assert final == 0x0000
    assert len(matches) == 1
    (match,) = matches
    # Besides the requested keys: the Retrieve AE Title and the unique key of
    # the patient, which the archive always adds.
    allowed = {e.keyword or e.tag for e in query} | {"RetrieveAETitle", "PatientID"}
    assert {e.keyword or e.tag for e in match} <= allowed, match
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert match.QueryRetrieveLevel == "STUDY"
    assert match.RetrieveAETitle == samples_server.aet
    assert match.PatientName == "Nguyễn^Văn An"
    assert match.StudyInstanceUID == CT.study_uid
    assert match.StudyDescription == "CT sọ não không tiêm thuốc"
    assert match.ReferringPhysicianName == "Phạm^Minh Tuấn"
    assert match.NumberOfStudyRelatedInstances == 20
    assert match.StudyComments in ("", None)


def test_ascii_patient_query_and_utf8_answer(samples_server: Server) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientName = "LE^THI HONG NHUNG"
    query.PatientID = ""
    query.OtherPatientIDsSequence = [Dataset()]  # every item, every key
    matches, final = _c_find(samples_server, query, PatientRootQueryRetrieveInformationModelFind)
    assert final == 0x0000
    assert [m.PatientID for m in matches] == [US.patient_id]
    assert matches[0].SpecificCharacterSet == "ISO_IR 192"
    assert matches[0].PatientName == "Lê^Thị Hồng Nhung"
    ids = {(i.PatientID, i.IssuerOfPatientID) for i in matches[0].OtherPatientIDsSequence}
    assert ids == {("080192007788", "CCCD"), ("DN4800246813579", "BHYT")}


def test_no_match_is_success_with_no_pending(samples_server: Server) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3.4.5.6.7.8.9"
    assert _c_find(samples_server, query) == ([], 0x0000)



def test_image_level_returns_the_stored_transfer_syntax(samples_server: Server) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = DX.study_uid
    query.SeriesInstanceUID = DX.series_uids[0]
    query.SOPInstanceUID = ""
    query.AvailableTransferSyntaxUID = ""
    query.Rows = ""
    query.Columns = ""
    matches, final = _c_find(samples_server, query)
    assert final == 0x0000
    assert [(m.SOPInstanceUID, m.AvailableTransferSyntaxUID, m.Rows, m.Columns) for m in matches] == [
        (DX.sop_uids[0], "1.2.840.10008.1.2.4.90", 1536, 1536)]


# --- C-CANCEL ----------------------------------------------------------------------------


def test_c_cancel_stops_a_long_answer_with_status_fe00(tmp_path: Path) -> None:
    """A workstation that cancels a query (PS3.4 C.4.1.2.3) gets Cancel (0xFE00)
    at once instead of the remaining matches, and the association goes on."""
    data = tmp_path / "data"
    # The benchmark's synthetic index: thousands of instances in seconds.
    summary = populate.populate(data, instances=3000, seed=5, progress=False)
    server = start_server(data)
    try:
        assoc = associate(server, [build_context(StudyRootQueryRetrieveInformationModelFind)])
        assert assoc.is_established
        try:
            every_image = Dataset()
            every_image.QueryRetrieveLevel = "IMAGE"
            every_image.SOPInstanceUID = ""
            context_id = assoc.accepted_contexts[0].context_id
            statuses = []
            for status, _ in assoc.send_c_find(every_image, StudyRootQueryRetrieveInformationModelFind, msg_id=7):
                statuses.append(status.Status)
                if len(statuses) == 1:
                    assoc.send_c_cancel(7, context_id)
            assert statuses[0] == 0xFF00
            assert statuses[-1] == 0xFE00, [hex(s) for s in statuses[-3:]]
            assert len(statuses) - 1 < summary.instances
            # The association is still usable: the next query is answered in full.
            one = Dataset()
            one.QueryRetrieveLevel = "STUDY"
            one.StudyInstanceUID = ""
            answers = [s.Status for s, _ in assoc.send_c_find(one, StudyRootQueryRetrieveInformationModelFind)]
            assert answers.count(0xFF00) == summary.studies and answers[-1] == 0x0000
        finally:
            assoc.release()
        assert re.search(r"C-FIND from \S+ cancelled after \d+ matches", server.log()), server.log()
    finally:
        stop_and_check(server)
