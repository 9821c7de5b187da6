"""The C-FIND identifier fast path encodes exactly what pydicom would.

Every comparison is against pynetdicom's own encoder (pydicom's writer) on the
dataset the archive's JSON describes; the end-to-end C-FIND tests with dcmtk's
findscu check the same bytes on the wire.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID,
)
from pynetdicom import service_class
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import encode as pydicom_encode

from archive import Archive, query_from_identifier
from archive.query import dataset_from_json
from dicom_scp import responses
from dicom_scp.responses import EncodedIdentifier, Unencodable, encode
from tests.archive.helpers import identifier, ingest_ds, make_dataset, other_ids, uid
from tests.conftest import SAMPLES


def reference(attrs: dict[str, Any], implicit: bool) -> bytes:
    data = pydicom_encode(dataset_from_json(attrs), implicit, True)
    assert data is not None
    return data


def decoded(data: bytes, implicit: bool) -> Dataset:
    return read_dataset(DicomBytesIO(data), implicit, True)


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


FLAT_SHAPES: list[dict[str, Any]] = [
    {"00100020": element("LO", "BN1")},  # odd length: space padded
    {"0020000D": element("UI", "1.2.3")},  # odd UI: NUL padded
    {"00080061": element("CS", "CT", "SR", "US")},  # multi-valued
    {"00201208": element("IS", 1234), "00201206": element("IS", 7)},
    {"00180050": element("DS", 0.625), "00281050": element("DS", 40.0, -1000.5)},
    {"00280010": element("US", 512), "00280011": element("US", 512)},
    {"00100010": element("PN", {"Alphabetic": "NGUYEN^VAN AN"})},
    {"00100010": element("PN", {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}),
     "00080005": element("CS", "ISO_IR 192")},  # fmt: skip
    {"00100010": element("PN", {"Alphabetic": "Nguyễn^Văn An"}), "00080005": element("CS", "ISO_IR 192"),
     "00081030": element("LO", "CT sọ não không tiêm thuốc")},  # fmt: skip
    {"00100010": element("PN"), "00100020": element("LO"), "00080020": element("DA")},  # empty keys
    {"00080020": element("DA", "20261123"), "00080030": element("TM", "101010.5"),
     "00080050": element("SH", "A2026"), "00321060": element("LO", "Chụp X-quang"),
     "00080005": element("CS", "ISO_IR 192"), "00081010": element("SH", "CT01")},  # fmt: skip
    {"00400275": element("SQ")},  # empty sequence
]


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("attrs", FLAT_SHAPES)
def test_flat_identifiers_match_pydicom_byte_for_byte(attrs: dict[str, Any], implicit: bool) -> None:
    attrs = dict(sorted(attrs.items()))
    assert encode(attrs, implicit) == reference(attrs, implicit)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_sequences_decode_to_the_same_dataset(implicit: bool) -> None:
    attrs = {
        "00080005": element("CS", "ISO_IR 192"),
        "00101002": element("SQ", {"00100020": element("LO", "079123456789"),
                                   "00100021": element("LO", "CCCD")},
                            {"00100020": element("LO", "DN4790123456789"),
                             "00100021": element("LO", "BHYT"),
                             "00100022": element("CS")}),  # fmt: skip
        "00400275": element("SQ", {"00401001": element("SH", "RP1"),
                                   "00321060": element("LO", "Siêu âm ổ bụng")}),  # fmt: skip
    }
    ours = decoded(encode(attrs, implicit), implicit)
    theirs = decoded(reference(attrs, implicit), implicit)
    assert ours == theirs
    assert ours.OtherPatientIDsSequence[1].IssuerOfPatientID == "BHYT"
    assert ours.RequestAttributesSequence[0].RequestedProcedureDescription == "Siêu âm ổ bụng"


@pytest.mark.parametrize(
    "attrs",
    [
        {"7FE00010": {"vr": "OB", "InlineBinary": "AAAA"}},
        {"00091001": element("OB", "AAAA")},
        {"00209165": element("AT", "00100020")},
        {"00100010": element("PN", {"Alphabetic": "Trần^Thị Đào"})},  # non-ASCII, no ISO_IR 192
        {"00081030": element("LO", "x" * 70000)},  # longer than a 16-bit length
    ],
    ids=["inline-binary", "binary", "attribute-tag", "non-ascii-without-charset", "too-long"],
)
def test_shapes_outside_the_fast_path_are_left_to_pydicom(attrs: dict[str, Any]) -> None:
    with pytest.raises(Unencodable):
        encode(attrs, False)
    ds = responses.identifier(attrs, UID(ExplicitVRLittleEndian))
    assert not isinstance(ds, EncodedIdentifier)
    assert isinstance(ds, Dataset)


def test_big_endian_and_deflate_contexts_get_a_plain_dataset() -> None:
    attrs = {"00100020": element("LO", "BN1")}
    for syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        ds = responses.identifier(attrs, UID(syntax))
        assert not isinstance(ds, EncodedIdentifier)
        assert ds.PatientID == "BN1"
    assert isinstance(responses.identifier(attrs, UID(ImplicitVRLittleEndian)), EncodedIdentifier)


def test_installed_encoder_sends_the_bytes_as_they_are_and_passes_others_through() -> None:
    responses.install()
    responses.install()  # idempotent: wraps once
    pynetdicom_encode = getattr(service_class, "encode")
    assert getattr(pynetdicom_encode, "_minipacs", False)
    attrs = {"00100010": element("PN", {"Alphabetic": "Nguyễn^Văn An"}), "00080005": element("CS", "ISO_IR 192")}
    fast = EncodedIdentifier(attrs, implicit_vr=False)
    assert pynetdicom_encode(fast, False, True) is fast.encoded
    # Asked for another encoding than the one it carries: pydicom encodes it.
    assert pynetdicom_encode(fast, True, True) == reference(attrs, True)
    assert pynetdicom_encode(fast, False, False) == pydicom_encode(dataset_from_json(attrs), False, False)
    plain = dataset_from_json(attrs)
    assert pynetdicom_encode(plain, True, True) == reference(attrs, True)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_every_sample_study_answer_at_every_level_matches_pydicom(
    archive: Archive, implicit: bool
) -> None:
    from pydicom import dcmread

    for path in sorted(Path(SAMPLES).rglob("*.dcm")):
        ds = dcmread(path, stop_before_pixels=True)
        ingest_ds(archive, ds)
    ingest_ds(archive, make_dataset(1, study=uid(1, 1), series=uid(2, 1), sop=uid(3, 1),
                                    OtherPatientIDsSequence=other_ids(("079123456789", "CCCD", "TEXT"))))  # fmt: skip
    checked = 0
    for level, root, extra in [
        ("PATIENT", True, {"NumberOfPatientRelatedStudies": "", "OtherPatientIDsSequence": [Dataset()]}),
        ("STUDY", False, {"ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": "",
                          "SOPClassesInStudy": "", "StudyDescription": ""}),
        ("SERIES", False, {"Modality": "", "SeriesNumber": "", "NumberOfSeriesRelatedInstances": "",
                           "BodyPartExamined": ""}),
        ("IMAGE", False, {"InstanceNumber": "", "SOPClassUID": "", "Rows": "", "Columns": "",
                          "AvailableTransferSyntaxUID": "", "NumberOfFrames": ""}),
    ]:  # fmt: skip
        query = query_from_identifier(identifier(level, PatientName="", PatientID="", **extra), root)
        for attrs in archive.find_json(query):
            ours = encode(attrs, implicit)  # what the index holds always takes the fast path
            checked += 1
            if any(e["vr"] == "SQ" and e.get("Value") for e in attrs.values()):
                assert decoded(ours, implicit) == decoded(reference(attrs, implicit), implicit)
            else:
                assert ours == reference(attrs, implicit), attrs
    assert checked > 30


def pynetdicom_pdata(primitive: C_FIND, context_id: int, max_pdu: int) -> list[list[tuple[int, bytes]]]:
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    return [p.presentation_data_value_list for p in message.encode_msg(context_id, max_pdu)]


@pytest.mark.parametrize("max_pdu", [0, 16382, 64], ids=["unlimited", "16k", "tiny-fragments"])
@pytest.mark.parametrize("status", [0xFF00, 0xFF01])
@pytest.mark.parametrize("sop_class", [
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root FIND: odd length, padded
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
])  # fmt: skip
def test_pending_responses_are_the_p_data_pynetdicom_would_send(max_pdu: int, status: int, sop_class: str) -> None:
    attrs = {"00080005": element("CS", "ISO_IR 192"),
             "00100010": element("PN", {"Alphabetic": "Trần^Thị Đào"}), "00100020": element("LO", "BN26001002")}  # fmt: skip
    encoded = encode(attrs, True)
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = sop_class
    primitive.Status = status
    primitive.Identifier = BytesIO(encoded)
    command = responses.find_pending_command(sop_class, 7, status)
    ours = [p.presentation_data_value_list for p in responses.pending_pdata(command, encoded, 3, max_pdu)]
    assert ours == pynetdicom_pdata(primitive, 3, max_pdu)
    assert len(ours) > 2 if max_pdu == 64 else len(ours) == 2


def find_response(status: int, identifier: bytes | None) -> C_FIND:
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 2
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Status = status
    if identifier is not None:
        primitive.Identifier = BytesIO(identifier)
    return primitive


def test_only_pending_find_responses_with_an_identifier_take_the_fast_path() -> None:
    data = encode({"00100020": element("LO", "BN1")}, True)
    assert responses.fast_identifier(find_response(0xFF00, data)) == data
    assert responses.fast_identifier(find_response(0xFF01, data)) == data
    assert responses.fast_identifier(find_response(0x0000, None)) is None
    assert responses.fast_identifier(find_response(0xFE00, None)) is None
    assert responses.fast_identifier(find_response(0xA700, None)) is None
    assert responses.fast_identifier(find_response(0xFF00, b"")) is None
    request = C_FIND()
    request.MessageID = 2
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    request.Identifier = BytesIO(data)
    assert responses.fast_identifier(request) is None
    store = C_STORE()
    store.MessageIDBeingRespondedTo = 2
    store.Status = 0xFF00
    assert responses.fast_identifier(store) is None


def test_install_wraps_pynetdicom_once() -> None:
    responses.install()
    responses.install()
    assert getattr(DIMSEServiceProvider.send_msg, "_minipacs", False)
    assert not getattr(getattr(DIMSEServiceProvider.send_msg, "__wrapped__", None), "_minipacs", False)
