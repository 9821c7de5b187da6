"""Matching and queries through Archive.find/count/instances, as C-FIND and QIDO-RS use them.

One small archive is built once for the module (queries change nothing):

=====  =========================  ==========  ========  ================  ==========================
pat.   PatientName                PatientID   study     date / time       series (modality: images)
=====  =========================  ==========  ========  ================  ==========================
P1     Nguyễn^Văn An              BN26001001  S1        20261120 101530   CT: 2, CT: 1
P1                                            S4        20261125 083000   US: 1
P2     Trần^Thị Đào               BN26001002  S2        20261120 140000   DX: 1 (with request item)
P3     Lê^Thị Hồng Nhung          BN26001003  S3        20261121 0915     US: 2 (two SOP classes)
P4     Nguyen^Van An              BN99000004  S5        20250101 (none)   CT: 1
P5     Nguyễn^Văn Anh             BN99000005  S6        20250102 235959   MR: 1
P6     SMITH^JOHN                 px-lower    S7        20250103 000000   OT: 1
=====  =========================  ==========  ========  ================  ==========================
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from archive import Archive, InvalidQuery, Level, Query, query_from_identifier, require_unique_key
from tests.archive.helpers import bare, find, identifier, ingest, make_dataset, other_ids, part10, uid
from tests.conftest import index_database

P1_CCCD, P1_BHYT = "080068001234", "GD4800123456789"
S1, S2, S3, S4, S5, S6, S7 = (uid(1, n) for n in range(1, 8))


def _request(rp: str, sps: str, accession: str) -> Sequence:
    item = Dataset()
    item.RequestedProcedureID = rp
    item.ScheduledProcedureStepID = sps
    item.AccessionNumber = accession
    return Sequence([item])


def _populate(archive: Archive) -> None:
    p1: dict[str, Any] = dict(patient_id="BN26001001", patient_name="Nguyễn^Văn An",
                              IssuerOfPatientID="BVDKCG",
                              OtherPatientIDsSequence=other_ids((P1_CCCD, "CCCD", "TEXT"),
                                                                (P1_BHYT, "BHYT", "TEXT")))  # fmt: skip
    s1: dict[str, Any] = dict(study=S1, StudyDate="20261120", StudyTime="101530",
                              AccessionNumber="CT2611200001", StudyID="1001",
                              StudyDescription="CT sọ não không tiêm thuốc",
                              ReferringPhysicianName="Phạm^Minh Đức")  # fmt: skip
    images = [
        make_dataset(1, series=uid(2, 1), SeriesNumber=1, SeriesDescription="Axial 5mm",
                     BodyPartExamined="HEAD", ContentDate="20261120", ContentTime="101600", **p1, **s1),
        make_dataset(2, series=uid(2, 1), SeriesNumber=1, SeriesDescription="Axial 5mm",
                     BodyPartExamined="HEAD", ContentDate="20261120", ContentTime="101700", **p1, **s1),
        make_dataset(3, series=uid(2, 2), SeriesNumber=2, SeriesDescription="Bone window", **p1, **s1),
        make_dataset(4, series=uid(2, 4), modality="US", sop_class=UltrasoundImageStorage, study=S4,
                     StudyDate="20261125", StudyTime="083000", AccessionNumber="US2611250004", **p1),
        make_dataset(5, series=uid(2, 5), modality="DX", sop_class=DigitalXRayImageStorageForPresentation,
                     patient_id="BN26001002", patient_name="Trần^Thị Đào", PatientSex="F",
                     PatientBirthDate="19750809", study=S2, StudyDate="20261120", StudyTime="140000",
                     AccessionNumber="DX2611200002",
                     RequestAttributesSequence=_request("RP002", "SPS002", "DX2611200002")),
        make_dataset(6, series=uid(2, 6), modality="US", sop_class=UltrasoundImageStorage,
                     patient_id="BN26001003", patient_name="Lê^Thị Hồng Nhung", PatientSex="F",
                     study=S3, StudyDate="20261121", StudyTime="0915", AccessionNumber="US2611210003"),
        make_dataset(7, series=uid(2, 6), modality="US", sop_class=UltrasoundMultiFrameImageStorage,
                     patient_id="BN26001003", patient_name="Lê^Thị Hồng Nhung", PatientSex="F",
                     study=S3, StudyDate="20261121", StudyTime="0915", AccessionNumber="US2611210003"),
        make_dataset(8, series=uid(2, 8), patient_id="BN99000004", patient_name="Nguyen^Van An",
                     charset=None, study=S5, StudyDate="20250101", StudyTime=None, AccessionNumber="A5"),
        make_dataset(9, series=uid(2, 9), modality="MR", sop_class=MRImageStorage,
                     patient_id="BN99000005", patient_name="Nguyễn^Văn Anh", study=S6,
                     StudyDate="20250102", StudyTime="235959", AccessionNumber="A6"),
        make_dataset(10, series=uid(2, 10), modality="OT", sop_class=SecondaryCaptureImageStorage,
                     patient_id="px-lower", patient_name="SMITH^JOHN", charset=None, study=S7,
                     StudyDate="20250103", StudyTime="000000", AccessionNumber="acc-lower",
                     StudyDescription="Chest"),
    ]  # fmt: skip
    for ds in images:
        # One instance arrives as a bare implicit VR dataset: its stored transfer syntax differs.
        data = bare(ds) if ds.InstanceNumber == 7 else part10(ds)
        ingest(archive, data)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def arc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    root: Path = tmp_path_factory.mktemp("query")
    with index_database(request, request.param, root) as url:
        archive = Archive.open(url, str(root / "objects"))
        _populate(archive)
        yield archive
        archive.close()


def studies(arc: Archive, patient_root: bool = False, **keys: Any) -> list[str]:
    """Sorted StudyInstanceUIDs of a STUDY level query."""
    return sorted(str(d.StudyInstanceUID) for d in find(arc, "STUDY", patient_root, **keys))


def as_list(value: object) -> list[str]:
    """A multi-valued element's value as a list (pydicom gives a single value bare)."""
    return [value] if isinstance(value, str) else [str(v) for v in value]  # type: ignore[attr-defined]


def raw_identifier(level: str, *elements: tuple[int, bytes]) -> Dataset:
    """An identifier decoded from implicit VR bytes, as it arrives over the network.

    pydicom refuses to build some bad values in memory (IS "two"); a peer can
    still send them.
    """
    data = struct.pack("<HHI", 0x0008, 0x0052, len(level) + len(level) % 2) + level.encode()
    data += b" " * (len(level) % 2)
    for tag, value in elements:
        data += struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    return dcmread(io.BytesIO(data), force=True)


def patients(arc: Archive, **keys: Any) -> list[str]:
    return sorted(str(d.PatientID) for d in find(arc, "PATIENT", True, **keys))


# --- levels and simple matching ----------------------------------------------------------


def test_patient_level_in_patient_root(arc: Archive) -> None:
    result = find(arc, "PATIENT", True, PatientID="BN26001001", PatientName=None,
                  PatientBirthDate=None, NumberOfPatientRelatedStudies=None,
                  NumberOfPatientRelatedSeries=None, NumberOfPatientRelatedInstances=None)  # fmt: skip
    [p1] = result
    assert str(p1.PatientName) == "Nguyễn^Văn An"
    assert p1.PatientBirthDate == "19680315"
    assert (p1.NumberOfPatientRelatedStudies, p1.NumberOfPatientRelatedSeries,
            p1.NumberOfPatientRelatedInstances) == (2, 3, 4)  # fmt: skip
    assert "StudyInstanceUID" not in p1  # nothing below the query level
    assert len(find(arc, "PATIENT", True)) == 6


def test_patient_level_needs_patient_root(arc: Archive) -> None:
    with pytest.raises(InvalidQuery, match="Patient Root"):
        find(arc, "PATIENT", False, PatientID="BN26001001")


def test_study_level(arc: Archive) -> None:
    [s1] = find(arc, "STUDY", StudyInstanceUID=S1, StudyDescription=None, AccessionNumber=None,
                NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None,
                ModalitiesInStudy=None, PatientName=None)  # fmt: skip
    assert s1.StudyDescription == "CT sọ não không tiêm thuốc"
    assert s1.AccessionNumber == "CT2611200001"
    assert (s1.NumberOfStudyRelatedSeries, s1.NumberOfStudyRelatedInstances) == (2, 3)
    assert as_list(s1.ModalitiesInStudy) == ["CT"]
    assert str(s1.PatientName) == "Nguyễn^Văn An"
    assert studies(arc) == sorted([S1, S2, S3, S4, S5, S6, S7])


def test_series_level(arc: Archive) -> None:
    result = find(arc, "SERIES", StudyInstanceUID=S1, Modality="CT", SeriesNumber=None,
                  SeriesDescription=None, NumberOfSeriesRelatedInstances=None)  # fmt: skip
    got = sorted((int(d.SeriesNumber), d.SeriesDescription, int(d.NumberOfSeriesRelatedInstances),
                  d.SeriesInstanceUID) for d in result)  # fmt: skip
    assert got == [(1, "Axial 5mm", 2, uid(2, 1)), (2, "Bone window", 1, uid(2, 2))]
    [two] = find(arc, "SERIES", StudyInstanceUID=S1, SeriesNumber="2")
    assert two.SeriesInstanceUID == uid(2, 2)
    assert sorted(d.SeriesInstanceUID for d in find(arc, "SERIES", Modality="US")) == [uid(2, 4), uid(2, 6)]
    assert sorted(d.SeriesInstanceUID for d in find(arc, "SERIES", BodyPartExamined="HEAD")) == [uid(2, 1)]


def test_image_level(arc: Archive) -> None:
    result = find(arc, "IMAGE", StudyInstanceUID=S3, SeriesInstanceUID=uid(2, 6), SOPClassUID=None,
                  InstanceNumber=None, AvailableTransferSyntaxUID=None)  # fmt: skip
    got = sorted((int(d.InstanceNumber), d.SOPClassUID, d.AvailableTransferSyntaxUID) for d in result)
    assert got == [(6, UltrasoundImageStorage, ExplicitVRLittleEndian),
                   (7, UltrasoundMultiFrameImageStorage, ImplicitVRLittleEndian)]  # fmt: skip
    [seven] = find(arc, "IMAGE", InstanceNumber="7")
    assert seven.SOPInstanceUID == uid(3, 7)
    [ct] = find(arc, "IMAGE", SOPClassUID=MRImageStorage)
    assert ct.SOPInstanceUID == uid(3, 9)
    assert len(find(arc, "IMAGE", ContentTime="1016-1016")) == 1
    assert len(find(arc, "IMAGE", ContentDate="20261120")) == 2
    # INSTANCE is accepted as another name for IMAGE.
    assert len(find(arc, "INSTANCE", SOPInstanceUID=uid(3, 1))) == 1


def test_image_level_in_patient_root(arc: Archive) -> None:
    result = find(arc, "IMAGE", True, PatientID="BN26001001", StudyInstanceUID=S1,
                  SeriesInstanceUID=uid(2, 1))  # fmt: skip
    assert sorted(d.SOPInstanceUID for d in result) == [uid(3, 1), uid(3, 2)]


def test_single_value_text_matching_is_exact_and_case_sensitive(arc: Archive) -> None:
    assert studies(arc, AccessionNumber="CT2611200001") == [S1]
    assert studies(arc, AccessionNumber="CT261120000") == []
    assert studies(arc, AccessionNumber="ct2611200001") == []
    assert studies(arc, AccessionNumber="acc-lower") == [S7]
    assert studies(arc, PatientID="PX-LOWER") == []
    assert studies(arc, StudyID="1001") == [S1]
    assert studies(arc, StudyID="100") == []


def test_wildcards(arc: Archive) -> None:
    assert studies(arc, AccessionNumber="CT26*") == [S1]
    assert studies(arc, AccessionNumber="*0002") == [S2]
    assert studies(arc, AccessionNumber="US26112?0003") == [S3]
    assert studies(arc, AccessionNumber="?S*") == [S3, S4]
    assert studies(arc, AccessionNumber="us26*") == []  # case-sensitive for non-PN
    assert studies(arc, AccessionNumber="acc-*") == [S7]
    assert studies(arc, AccessionNumber="ACC-*") == []
    assert studies(arc, PatientID="BN2600100?") == [S1, S2, S3, S4]
    assert studies(arc, StudyDescription="*sọ não*") == [S1]
    assert studies(arc, StudyDescription="*so nao*") == []  # only names are folded


def test_wildcard_characters_of_sql_are_literal(arc: Archive) -> None:
    # '%' and '_' mean nothing in DICOM: they must not act as LIKE wildcards.
    assert studies(arc, AccessionNumber="CT%") == []
    assert studies(arc, AccessionNumber="CT_611200001") == []
    assert studies(arc, AccessionNumber="*%*") == []
    assert studies(arc, AccessionNumber="acc_lower") == []
    assert studies(arc, AccessionNumber="acc_*") == []


def test_universal_matching(arc: Archive) -> None:
    every = studies(arc)
    assert studies(arc, StudyDate="") == every
    assert studies(arc, AccessionNumber="*") == every
    assert studies(arc, StudyDate="-") == every
    result = find(arc, "STUDY", StudyDate=None, StudyTime=None)
    by_uid = {d.StudyInstanceUID: d for d in result}
    assert by_uid[S1].StudyDate == "20261120"
    assert by_uid[S1].StudyTime == "101530"
    assert by_uid[S5].StudyTime in ("", None)  # asked for, unknown: returned empty


# --- dates and times ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20261120", [S1, S2]),
        ("20261120-20261121", [S1, S2, S3]),
        ("20261121-", [S3, S4]),
        ("-20250102", [S5, S6]),
        ("20250102-20250102", [S6]),
        ("20261122-20261124", []),
    ],
)
def test_date_matching(arc: Archive, value: str, expected: list[str]) -> None:
    assert studies(arc, StudyDate=value) == sorted(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("101530", [S1]),
        ("1015", [S1]),  # a partial time stands for its whole minute
        ("10", [S1]),  # ... or hour
        ("101530.000", [S1]),
        ("10:15:30", [S1]),
        ("0800-1000", [S3, S4]),
        ("1400-", [S2, S6]),
        ("-0900", [S4, S7]),
        ("0000-0000", [S7]),
        ("235959", [S6]),
        ("1016-1359", []),
    ],
)
def test_time_matching(arc: Archive, value: str, expected: list[str]) -> None:
    # S5 has no StudyTime: a time range never matches an empty value.
    assert studies(arc, StudyTime=value) == sorted(expected)


def test_patient_attributes(arc: Archive) -> None:
    # Everyone but P2 has the helper's default birth date, 19680315.
    assert patients(arc, PatientBirthDate="19750809") == ["BN26001002"]
    assert patients(arc, PatientBirthDate="19700101-19800101") == ["BN26001002"]
    assert len(patients(arc, PatientBirthDate="-19691231")) == 5
    assert patients(arc, PatientSex="F") == ["BN26001002", "BN26001003"]
    assert patients(arc, IssuerOfPatientID="BVDKCG") == ["BN26001001"]
    assert studies(arc, StudyDescription="CT sọ não không tiêm thuốc") == [S1]


def test_date_and_time_combined(arc: Archive) -> None:
    assert studies(arc, StudyDate="20261120", StudyTime="1200-") == [S2]


# --- lists and computed keys ---------------------------------------------------------------


def test_uid_lists(arc: Archive) -> None:
    assert studies(arc, StudyInstanceUID=f"{S1}\\{S3}\\{uid(1, 999)}") == sorted([S1, S3])
    got = find(arc, "IMAGE", SOPInstanceUID=f"{uid(3, 1)}\\{uid(3, 9)}")
    assert sorted(d.SOPInstanceUID for d in got) == [uid(3, 1), uid(3, 9)]


def test_modalities_in_study(arc: Archive) -> None:
    assert studies(arc, ModalitiesInStudy="CT\\US") == sorted([S1, S3, S4, S5])
    assert studies(arc, ModalitiesInStudy="DX") == [S2]
    assert studies(arc, ModalitiesInStudy="C*") == sorted([S1, S5])
    assert studies(arc, ModalitiesInStudy="SR") == []
    # Series-level Modality and study-level ModalitiesInStudy do not tangle.
    got = find(arc, "SERIES", ModalitiesInStudy="CT", Modality="CT")
    assert sorted(d.SeriesInstanceUID for d in got) == [uid(2, 1), uid(2, 2), uid(2, 8)]


def test_sop_classes_in_study(arc: Archive) -> None:
    [s3] = find(arc, "STUDY", StudyInstanceUID=S3, SOPClassesInStudy=None)
    assert as_list(s3.SOPClassesInStudy) == sorted([UltrasoundImageStorage, UltrasoundMultiFrameImageStorage])


def test_other_patient_ids(arc: Archive) -> None:
    assert studies(arc, OtherPatientIDs=P1_CCCD) == [S1, S4]
    assert studies(arc, OtherPatientIDs="0800*") == [S1, S4]
    assert patients(arc, OtherPatientIDs=P1_BHYT) == ["BN26001001"]
    assert studies(arc, OtherPatientIDs="999") == []


def test_sequence_matching_on_other_patient_ids(arc: Archive) -> None:
    def seq(**keys: str) -> Sequence:
        item = Dataset()
        for k, v in keys.items():
            setattr(item, k, v)
        return Sequence([item])

    assert studies(arc, OtherPatientIDsSequence=seq(PatientID=P1_CCCD)) == [S1, S4]
    assert studies(arc, OtherPatientIDsSequence=seq(PatientID="GD48*", IssuerOfPatientID="BHYT")) == [S1, S4]
    # Both conditions must hold in the same item.
    assert studies(arc, OtherPatientIDsSequence=seq(PatientID=P1_CCCD, IssuerOfPatientID="BHYT")) == []
    assert studies(arc, OtherPatientIDsSequence=seq(TypeOfPatientID="TEXT")) == [S1, S4]
    # An empty item is universal matching: everything, with the item keys returned.
    assert studies(arc, OtherPatientIDsSequence=seq()) == studies(arc)


def test_sequence_matching_on_request_attributes(arc: Archive) -> None:
    item = Dataset()
    item.ScheduledProcedureStepID = "SPS002"
    item.RequestedProcedureID = ""
    got = find(arc, "SERIES", RequestAttributesSequence=Sequence([item]))
    [dx] = got
    assert dx.SeriesInstanceUID == uid(2, 5)
    [returned] = dx.RequestAttributesSequence
    # Only the item keys asked for come back, filled in.
    assert returned.ScheduledProcedureStepID == "SPS002"
    assert returned.RequestedProcedureID == "RP002"
    assert "AccessionNumber" not in returned
    item.ScheduledProcedureStepID = "SPS999"
    assert find(arc, "SERIES", RequestAttributesSequence=Sequence([item])) == []
    by_accession = Dataset()
    by_accession.AccessionNumber = "DX26*"
    assert len(find(arc, "SERIES", RequestAttributesSequence=Sequence([by_accession]))) == 1


def test_sequence_return_keys(arc: Archive) -> None:
    only_id = Dataset()
    only_id.PatientID = ""
    [p1] = find(arc, "PATIENT", True, PatientID="BN26001001",
                OtherPatientIDsSequence=Sequence([only_id]))  # fmt: skip
    assert [i.PatientID for i in p1.OtherPatientIDsSequence] == [P1_CCCD, P1_BHYT]
    assert all(set(i.dir()) == {"PatientID"} for i in p1.OtherPatientIDsSequence)
    [p1] = find(arc, "PATIENT", True, PatientID="BN26001001", OtherPatientIDsSequence=Sequence())
    assert [(i.PatientID, i.IssuerOfPatientID, i.TypeOfPatientID) for i in p1.OtherPatientIDsSequence] == [
        (P1_CCCD, "CCCD", "TEXT"), (P1_BHYT, "BHYT", "TEXT")]  # fmt: skip
    [p2] = find(arc, "PATIENT", True, PatientID="BN26001002", OtherPatientIDsSequence=Sequence())
    assert len(p2.OtherPatientIDsSequence) == 0  # requested, unknown: an empty sequence


# --- person names -----------------------------------------------------------------------------

AN_SPELLINGS = ["NGUYEN VAN AN", "nguyen^van^an", "Nguyễn Văn An", "an nguyen van", "Nguyễn^Văn An",
                "NGUYỄN^VĂN^AN", "van an nguyen"]  # fmt: skip


@pytest.mark.parametrize("spelling", AN_SPELLINGS)
def test_person_name_without_diacritics_in_any_order(arc: Archive, spelling: str) -> None:
    # Two patients fold to the same name: the search finds both, they stay two.
    assert patients(arc, PatientName=spelling) == ["BN26001001", "BN99000004"]
    assert studies(arc, PatientName=spelling) == sorted([S1, S4, S5])


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("nguy*", ["BN26001001", "BN99000004", "BN99000005"]),
        ("*VAN*", ["BN26001001", "BN99000004", "BN99000005"]),
        ("NGUYEN^VAN A*", ["BN26001001", "BN99000004", "BN99000005"]),
        ("NGUYEN^VAN AN?", ["BN99000005"]),
        ("TRAN THI DAO", ["BN26001002"]),
        ("tran^thi d*", ["BN26001002"]),
        ("Đào*", ["BN26001002"]),
        ("ÐAO", []),  # exact: a single word is not the whole name
        ("dao trần thị", ["BN26001002"]),
        ("*hồng*", ["BN26001003"]),
        ("le thi hong nhung", ["BN26001003"]),
        # each query word needs a word of its own: N* cannot reuse Nguyễn
        ("NGUYEN^N*", []),
        ("nguyen a*", ["BN26001001", "BN99000004", "BN99000005"]),
        ("an* an*", []),  # Anh and An are two words only in no name here
        ("van* nguy*", ["BN26001001", "BN99000004", "BN99000005"]),
        ("T* T*", ["BN26001002"]),  # Trần and Thị
        ("T* T* T*", []),
        ("smith^john", ["px-lower"]),
        ("SM?TH*", ["px-lower"]),
    ],
)
def test_person_name_patterns(arc: Archive, pattern: str, expected: list[str]) -> None:
    assert patients(arc, PatientName=pattern) == expected


def test_exact_person_name_does_not_match_a_longer_or_shorter_name(arc: Archive) -> None:
    assert patients(arc, PatientName="Nguyễn^Văn Anh") == ["BN99000005"]
    assert patients(arc, PatientName="Nguyễn^Văn") == []
    assert patients(arc, PatientName="Trần^Thị") == []
    assert patients(arc, PatientName="Trần^Thị Đào Xuân") == []


def test_referring_physician_name(arc: Archive) -> None:
    assert studies(arc, ReferringPhysicianName="PHAM MINH DUC") == [S1]
    assert studies(arc, ReferringPhysicianName="pham*") == [S1]
    assert studies(arc, ReferringPhysicianName="NGUYEN*") == []  # the patient's name is not the doctor's


# --- return keys -----------------------------------------------------------------------------------


def test_requested_keys_present_and_empty_when_unknown(arc: Archive) -> None:
    [s2] = find(arc, "STUDY", StudyInstanceUID=S2, PatientComments=None, StudyDescription=None,
                Occupation=None, InstitutionName=None)  # fmt: skip
    for keyword in ("PatientComments", "StudyDescription", "Occupation", "InstitutionName"):
        assert keyword in s2
        assert s2[keyword].value in ("", None)
    # Nothing that was not asked for, apart from the unique keys.
    assert set(s2.dir()) == {"StudyInstanceUID", "PatientID", "PatientComments", "StudyDescription",
                             "Occupation", "InstitutionName"}  # fmt: skip


def test_unique_keys_of_the_level_and_above_always_present(arc: Archive) -> None:
    [image] = find(arc, "IMAGE", SOPInstanceUID=uid(3, 5))
    assert image.SOPInstanceUID == uid(3, 5)
    assert image.SeriesInstanceUID == uid(2, 5)
    assert image.StudyInstanceUID == S2
    assert image.PatientID == "BN26001002"
    [series] = find(arc, "SERIES", Modality="DX")
    assert (series.SeriesInstanceUID, series.StudyInstanceUID) == (uid(2, 5), S2)
    assert "SOPInstanceUID" not in series


def test_specific_character_set_only_when_not_ascii(arc: Archive) -> None:
    [s7] = find(arc, "STUDY", StudyInstanceUID=S7, PatientName=None, StudyDescription=None)
    assert "SpecificCharacterSet" not in s7
    [s1] = find(arc, "STUDY", StudyInstanceUID=S1, PatientName=None)
    assert s1.SpecificCharacterSet == "ISO_IR 192"
    # The same Vietnamese study without any non-ASCII key asked for: plain ASCII answer.
    [s1] = find(arc, "STUDY", StudyInstanceUID=S1, AccessionNumber=None)
    assert "SpecificCharacterSet" not in s1


def test_keys_below_the_level_are_returned_empty_and_not_matched(arc: Archive) -> None:
    # A SERIES key in a STUDY query neither filters nor gets a value.
    result = find(arc, "STUDY", Modality="XA", SOPInstanceUID=uid(3, 1))
    assert len(result) == 7
    assert all(d.Modality in ("", None) and d.SOPInstanceUID in ("", None) for d in result)


# --- invalid queries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "level"),
    [
        ({"StudyDate": "2026-11-20"}, "STUDY"),
        ({"StudyDate": "2026112"}, "STUDY"),
        ({"StudyDate": "20261320"}, "STUDY"),
        ({"StudyDate": "20260230"}, "STUDY"),
        ({"StudyDate": "yesterday"}, "STUDY"),
        ({"StudyDate": "20261120-2026"}, "STUDY"),
        ({"StudyTime": "2561"}, "STUDY"),
        ({"StudyTime": "1060"}, "STUDY"),
        ({"StudyTime": "noon"}, "STUDY"),
        ({"StudyInstanceUID": "1.2.*"}, "STUDY"),
        ({"StudyInstanceUID": "1.2.3?"}, "STUDY"),
        ({"StudyInstanceUID": "1.2/3"}, "STUDY"),
        ({"AccessionNumber": "A" * 17}, "STUDY"),
        ({"PatientID": "A" * 65}, "STUDY"),
        ({}, "FOO"),
        ({}, ""),
    ],
)
def test_invalid_query_values(arc: Archive, keys: dict[str, Any], level: str) -> None:
    with pytest.raises(InvalidQuery):
        find(arc, level, False, **keys)


@pytest.mark.parametrize(
    "element",
    [
        (0x00200011, b"two "),  # SeriesNumber IS
        (0x00080020, b"20261320"),  # StudyDate DA
        (0x0020000D, b"1.2.*\x00"),  # StudyInstanceUID UI
    ],
)
def test_invalid_values_as_received(arc: Archive, element: tuple[int, bytes]) -> None:
    with pytest.raises(InvalidQuery):
        query_from_identifier(raw_identifier("SERIES", element), patient_root=False)


def test_invalid_query_error_codes() -> None:
    exc = InvalidQuery("x")
    assert (exc.http_status, exc.dimse_status) == (400, 0xA900)


def test_missing_query_retrieve_level() -> None:
    ds = Dataset()
    ds.PatientID = "BN26001001"
    with pytest.raises(InvalidQuery, match="QueryRetrieveLevel"):
        query_from_identifier(ds, patient_root=True)


def test_require_unique_key() -> None:
    ok = query_from_identifier(identifier("STUDY", StudyInstanceUID=S1), False)
    require_unique_key(ok)
    for ident in (
        identifier("STUDY", PatientID="BN26001001"),
        identifier("STUDY", StudyInstanceUID="*"),
        identifier("STUDY", StudyInstanceUID=""),
        identifier("SERIES", StudyInstanceUID=S1),
        identifier("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=uid(2, 1)),
    ):
        with pytest.raises(InvalidQuery):
            require_unique_key(query_from_identifier(ident, False))
    patient = query_from_identifier(identifier("PATIENT", PatientID="BN26001001"), True)
    require_unique_key(patient)


# --- retrieve, count, paging ---------------------------------------------------------------------


def test_instances_for_retrieve(arc: Archive) -> None:
    refs = arc.instances(query_from_identifier(identifier("STUDY", StudyInstanceUID=S1), False))
    assert [r.sop_instance_uid for r in refs] == [uid(3, 1), uid(3, 2), uid(3, 3)]
    assert {r.study_instance_uid for r in refs} == {S1}
    assert [r.series_instance_uid for r in refs] == [uid(2, 1), uid(2, 1), uid(2, 2)]
    assert all(arc.objects.exists(r.storage_key) and arc.objects.size(r.storage_key) == r.size_bytes
               for r in refs)  # fmt: skip
    patient = arc.instances(query_from_identifier(identifier("PATIENT", PatientID="BN26001001"), True))
    assert sorted(r.sop_instance_uid for r in patient) == [uid(3, 1), uid(3, 2), uid(3, 3), uid(3, 4)]
    series = arc.instances(query_from_identifier(
        identifier("SERIES", StudyInstanceUID=S3, SeriesInstanceUID=uid(2, 6)), False))  # fmt: skip
    assert [(r.sop_instance_uid, r.transfer_syntax_uid) for r in series] == [
        (uid(3, 6), ExplicitVRLittleEndian), (uid(3, 7), ImplicitVRLittleEndian)]  # fmt: skip


def test_count_and_paging(arc: Archive) -> None:
    query = query_from_identifier(identifier("STUDY", StudyDate="20261120-"), False)
    assert arc.count(query) == 4
    everything = [d.StudyInstanceUID for d in arc.find(query)]
    assert sorted(everything) == sorted([S1, S2, S3, S4])
    query.limit, query.offset = 2, 1
    page = [d.StudyInstanceUID for d in arc.find(query)]
    assert page == everything[1:3]
    assert arc.count(query) == 4  # limit and offset do not change the count
    query.limit, query.offset = None, 3
    assert [d.StudyInstanceUID for d in arc.find(query)] == everything[3:]
    query.limit, query.offset = 10, 10
    assert list(arc.find(query)) == []


def test_query_object_directly(arc: Archive) -> None:
    assert arc.count(Query(Level.PATIENT)) == 6
    assert arc.count(Query(Level.SERIES)) == 8
    assert arc.count(Query(Level.IMAGE)) == 10


# --- keyset paging past one page -------------------------------------------------------------------

MANY = 523


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def big(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    root: Path = tmp_path_factory.mktemp("big")
    with index_database(request, request.param, root) as url:
        yield from _big(url, root)


def _big(url: str, root: Path) -> Iterator[Archive]:
    archive = Archive.open(url, str(root / "objects"))
    for n in range(1, MANY + 1):
        # Three studies, so study- and image-level paging both cross page boundaries.
        study = uid(1, 1000 + n % 3)
        ingest(archive, bare(make_dataset(n, study=study, series=uid(2, 1000 + n % 3), charset=None,
                                          patient_name="DOE^JANE", InstanceNumber=n)))  # fmt: skip
    yield archive
    archive.close()


def test_keyset_paging_past_500_rows(big: Archive) -> None:
    query = query_from_identifier(identifier("IMAGE", InstanceNumber=None), False)
    result = list(big.find(query))
    numbers = [int(d.InstanceNumber) for d in result]
    assert len(result) == MANY == big.count(query)
    assert numbers == list(range(1, MANY + 1))  # in insertion (pk) order, none repeated or lost
    assert len({d.SOPInstanceUID for d in result}) == MANY


def test_limit_offset_past_500_rows(big: Archive) -> None:
    query = query_from_identifier(identifier("IMAGE", InstanceNumber=None), False)
    query.limit, query.offset = 10, 505
    assert [int(d.InstanceNumber) for d in big.find(query)] == list(range(506, 516))
    query.limit, query.offset = None, 520
    assert [int(d.InstanceNumber) for d in big.find(query)] == [521, 522, 523]


def test_filtered_paging_past_500_rows(big: Archive) -> None:
    query = query_from_identifier(identifier("IMAGE", StudyInstanceUID=uid(1, 1001)), False)
    result = list(big.find(query))
    expected = [n for n in range(1, MANY + 1) if n % 3 == 1]
    assert sorted(int(d.SOPInstanceUID.rsplit(".", 1)[1]) for d in result) == expected
    [study] = find(big, "STUDY", StudyInstanceUID=uid(1, 1001), NumberOfStudyRelatedInstances=None)
    assert study.NumberOfStudyRelatedInstances == len(expected)
    assert len(big.instances(query)) == len(expected)


def test_dataset_from_json_agrees_with_pydicom_on_every_sample() -> None:
    from pydicom import dcmread

    from archive.attributes import index_record
    from archive.query import dataset_from_json
    from tests.conftest import ALL_SAMPLES, testdata

    files = [*ALL_SAMPLES, testdata("CT_small.dcm"), testdata("MR_small_implicit.dcm")]
    for path in files:
        record = index_record(dcmread(path, stop_before_pixels=True))
        for level in (record.patient, record.study, record.series, record.instance):
            ours = dataset_from_json(level.attrs)
            theirs = Dataset.from_json(level.attrs)
            assert ours == theirs, (path, level)
            assert [e.VR for e in ours] == [e.VR for e in theirs]
