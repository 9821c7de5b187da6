"""HL7 v2 messages to worklist actions, field by field (docs/hl7.md), and the ACKs built for them."""

from __future__ import annotations

import hl7 as python_hl7
import pytest

from worklist import hl7
from worklist.types import StepStatus
from tests.worklist.hl7_helpers import adt, latin1_orm, msh, orm, parse_ack, pid, segment


def actions(message: str | bytes) -> list[hl7.Action]:
    return hl7.actions(hl7.parse(message.encode() if isinstance(message, str) else message))


def refused(message: str | bytes) -> hl7.Hl7Error:
    with pytest.raises(hl7.Hl7Error) as info:
        actions(message)
    return info.value


def test_orm_new_order_maps_every_field() -> None:
    patient = pid(others="079123456789^^^CCCD^NI~HS4010123456789^^^BHYT^HC~X9^^^BV^PN")
    obx = segment("OBX", {1: "1", 2: "CE", 3: "11449-6^Pregnancy status^LN", 5: "LA26683-5^Not pregnant^LN"})
    message = orm("M1", patient=patient, start="202612051430+0700",
                  orc={3: "F77"}, obr={5: "S", 13: "Đau đầu kéo dài", 24: "CT", 34: "KTV1&Lê&Văn&Cường"},
                  extra=obx)  # fmt: skip
    [action] = actions(message)
    assert action.kind == "create"
    order = action.order
    assert order is not None
    assert (order.placer_issuer, order.placer_order_number, order.filler_order_number) == ("HIS", "ORD1", "F77")
    p = order.patient
    assert (p.patient_id, p.issuer, p.name, p.birth_date, p.sex) == ("BN001", "", "Nguyễn^Văn An", "19680315", "M")
    assert [(o.value, o.issuer) for o in p.other_ids] == [
        ("079123456789", "CCCD"), ("HS4010123456789", "BHYT"), ("X9", "BV")]
    assert (order.accession_number, order.procedure_code, order.procedure_scheme) == ("ACC1", "CT-SONAO", "LOCAL")
    assert order.procedure_description == "CT sọ não không tiêm thuốc"
    assert (order.start_date, order.start_time) == ("20261205", "143000")
    assert (order.modality, order.priority, order.pregnancy_status) == ("CT", "STAT", 1)
    assert order.referring_physician == "Trần^Thị Bình"
    assert order.performing_physician == "Lê^Văn Cường"
    assert order.reason == "Đau đầu kéo dài"
    assert order.attrs == {"00380010": {"vr": "LO", "Value": ["VV123"]}}


def test_primary_id_is_the_mr_repetition_and_names_are_nfc() -> None:
    decomposed = "Nguye\u0302\u0303n^Va\u0306n An"  # NFD, as some Windows HIS products send
    patient = pid(patient_id="079123456789^^^CCCD^NI~BN9^^^BV^MR", name=decomposed)
    [action] = actions(orm("M1", patient=patient))
    assert action.order is not None
    assert action.order.patient.patient_id == "BN9"
    assert action.order.patient.name == "Nguyễn^Văn An"
    assert [(o.value, o.issuer) for o in action.order.patient.other_ids] == [("079123456789", "CCCD")]


@pytest.mark.parametrize("section,modality", [("CT", "CT"), ("us", "US"), ("RAD", ""), ("", "")])
def test_modality_from_obr24_or_left_to_the_catalogue(section: str, modality: str) -> None:
    [action] = actions(orm("M1", obr={24: section}))
    assert action.order is not None and action.order.modality == modality


@pytest.mark.parametrize("field,value,priority", [
    ({5: "A"}, "obr", "HIGH"), ({5: "R"}, "obr", "ROUTINE"), ({}, "orc", "STAT"), ({5: "P"}, "obr", "ROUTINE"),
])  # fmt: skip
def test_priority(field: dict[int, str], value: str, priority: str) -> None:
    orc = {7: "^^^20261205143000^^S"} if value == "orc" else None
    [action] = actions(orm("M1", obr=field, orc=orc))
    assert action.order is not None and action.order.priority == priority


def test_omi_o23_takes_the_ipc_identifiers_and_tq1_schedule() -> None:
    message = "\r".join([
        msh("OMI^O23", "M2"), pid(),
        segment("ORC", {1: "NW", 2: "ORD9", 3: "F9"}),
        segment("TQ1", {1: "1", 7: "20261206081500", 9: "S"}),
        segment("OBR", {1: "1", 2: "ORD9", 4: "XQ-NGUC^X-quang ngực thẳng^LOCAL"}),
        segment("IPC", {1: "ACC9", 2: "RP9", 3: "1.2.826.0.1.3680043.10.9999.1.77", 4: "SPS9", 5: "DX",
                        9: "DX_ROOM1"}),
    ]) + "\r"  # fmt: skip
    [action] = actions(message)
    order = action.order
    assert order is not None
    assert (order.accession_number, order.requested_procedure_id, order.sps_id) == ("ACC9", "RP9", "SPS9")
    assert order.study_instance_uid == "1.2.826.0.1.3680043.10.9999.1.77"
    assert (order.modality, order.station_ae_title, order.priority) == ("DX", "DX_ROOM1", "STAT")
    assert (order.start_date, order.start_time) == ("20261206", "081500")


@pytest.mark.parametrize("control,kind", [("CA", "cancel"), ("DC", "discontinue")])
def test_cancel_and_discontinue_need_only_the_order_number(control: str, kind: str) -> None:
    [action] = actions(orm("M1", control=control, procedure="", accession="", start=""))
    assert (action.kind, action.placer_issuer, action.placer_order_number) == (kind, "HIS", "ORD1")


@pytest.mark.parametrize("code,status", [("IP", StepStatus.IN_PROGRESS), ("CM", StepStatus.COMPLETED),
                                         ("DC", StepStatus.DISCONTINUED), ("CA", StepStatus.CANCELLED)])  # fmt: skip
def test_status_change_maps_orc5(code: str, status: StepStatus) -> None:
    [action] = actions(orm("M1", control="SC", orc={5: code}))
    assert (action.kind, action.status) == ("status", status)


def test_status_change_without_orc5_is_an_application_error() -> None:
    error = refused(orm("M1", control="SC"))
    assert (error.ack, error.code, error.location) == ("AE", "103", ("ORC", 5))


def test_placer_number_falls_back_to_obr2() -> None:
    [action] = actions(orm("M1", orc={2: ""}, obr={2: "OBR-ONLY"}))
    assert action.order is not None and action.order.placer_order_number == "OBR-ONLY"


def test_adt_update_and_merge() -> None:
    [update] = actions(adt("A08", "M3", pid(name="Nguyễn^Văn Ân")))
    assert update.kind == "update_patient" and update.patient is not None
    assert update.patient.name == "Nguyễn^Văn Ân"
    [a31] = actions(adt("A31", "M4", pid()))
    assert a31.kind == "update_patient"
    [merge] = actions(adt("A40", "M5", pid(patient_id="BN001"), mrg="BN-OLD^^^BV^MR"))
    assert (merge.kind, merge.prior_id) == ("merge_patient", "BN-OLD")
    assert merge.patient is not None and merge.patient.patient_id == "BN001"
    error = refused(adt("A40", "M6", pid()))
    assert (error.code, error.location) == ("101", ("MRG", 1))


def test_escape_sequences_are_undone() -> None:
    [action] = actions(orm("M1", patient=pid(name="O\\T\\Brien^Anna \\S\\ Maria")))
    assert action.order is not None and action.order.patient.name == "O&Brien^Anna ^ Maria"


def test_segments_ended_by_lf_or_crlf_are_read() -> None:
    for ending in ("\n", "\r\n", "\r\r\n"):
        [action] = actions(orm("M1").replace("\r", ending))
        assert action.order is not None and action.order.accession_number == "ACC1"


# --- character sets ------------------------------------------------------------------


def test_latin1_message() -> None:
    data = latin1_orm("M1", patient=pid(name="Müller^Zoë"))
    [action] = actions(data)
    assert action.order is not None and action.order.patient.name == "Müller^Zoë"


def test_no_charset_decodes_utf8_then_latin1() -> None:
    utf8 = orm("M1", charset="", patient=pid(name="Nguyễn^Văn An")).encode("utf-8")
    [action] = actions(utf8)
    assert action.order is not None and action.order.patient.name == "Nguyễn^Văn An"
    latin1 = latin1_orm("M1", patient=pid(name="Müller^Zoë")).replace(b"|8859/1", b"|")
    [action] = actions(latin1)
    assert action.order is not None and action.order.patient.name == "Müller^Zoë"
    ascii_only = latin1_orm("M1", patient=pid(name="NGUYEN^VAN AN")).replace(b"|8859/1", b"|ASCII")
    [action] = actions(ascii_only)
    assert action.order is not None and action.order.patient.name == "NGUYEN^VAN AN"


def test_charset_is_read_before_decoding_and_unsupported_ones_are_refused() -> None:
    error = refused(orm("M1", charset="UNICODE UTF-16").encode("utf-8"))
    assert (error.ack, error.code, error.location) == ("AR", "103", ("MSH", 18))
    bad_utf8 = latin1_orm("M1", patient=pid(name="Müller^Zoë")).replace(b"|8859/1", b"|UNICODE UTF-8")
    error = refused(bad_utf8)
    assert (error.ack, error.location) == ("AR", ("MSH", 18))


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("message,ack,code,location", [
    (orm("M1").replace("ORM^O01", "ORU^R01"), "AR", "200", ("MSH", 9)),
    (orm("M1").replace("ORM^O01", "ORM^O02"), "AR", "201", ("MSH", 9)),
    (orm("M1", version="2.9"), "AR", "203", ("MSH", 12)),
    (orm("M1").replace("|^~\\&|", "|ABCD|", 1), "AR", "102", ("MSH", 2)),
    (orm("M1").replace("|M1|", "||", 1), "AR", "101", ("MSH", 10)),
    (orm("M1", patient=pid(patient_id="")), "AE", "101", ("PID", 3)),
    (orm("M1", patient=segment("EVN", {1: "x"})), "AE", "100", ("PID", 0)),
    (orm("M1", patient=pid(birth="19681345")), "AE", "102", ("PID", 7)),
    (orm("M1", patient=pid(birth="tomorrow")), "AE", "102", ("PID", 7)),
    (orm("M1", start="20261305143000"), "AE", "102", ("ORC", 7)),
    (orm("M1", start="2026120525"), "AE", "102", ("ORC", 7)),
    (orm("M1", control="RP"), "AE", "103", ("ORC", 1)),
    (orm("M1", orc={2: ""}, obr={2: ""}), "AE", "101", ("ORC", 2)),
])  # fmt: skip
def test_refusals_say_what_is_wrong(message: str, ack: str, code: str, location: tuple[str, int]) -> None:
    error = refused(message)
    assert (error.ack, error.code, error.location) == (ack, code, location), error.message


def test_year_only_birth_date_is_left_empty() -> None:
    [action] = actions(orm("M1", patient=pid(birth="1950")))
    assert action.order is not None and action.order.patient.birth_date == ""


@pytest.mark.parametrize("raw", [b"", b"hello", b"PID|1||X\r", b"MSHA^~\\&|x", b"\x00\xff\xfe" * 20])
def test_no_msh_no_header(raw: bytes) -> None:
    with pytest.raises(hl7.NoHeader):
        hl7.read_header_loosely(raw)


# --- ACKs --------------------------------------------------------------------------------


def test_ack_swaps_sender_and_receiver_and_keeps_version_and_charset() -> None:
    header = hl7.read_header(orm("M77").encode())
    raw = hl7.ack(header, "AA", "order ORD1: created ACC1")
    ack = parse_ack(raw)
    m = ack.segments["MSH"]
    assert (m[2], m[3], m[4], m[5]) == ("MINIPACS", "RAD", "HIS", "BVHUYEN")
    assert m[8] == "ACK^O01^ACK" and m[10] == "P" and m[11] == "2.5" and m[17] == "UNICODE UTF-8"
    assert ack.segments["MSA"][:3] == ["MSA", "AA", "M77"]
    assert "ERR" not in ack.segments
    parsed = python_hl7.parse(raw.decode())  # another HL7 reader accepts it
    assert str(parsed.segment("MSA")[2]) == "M77"


def test_error_ack_has_err_segment_25_style() -> None:
    header = hl7.read_header(orm("M78").encode())
    ack = parse_ack(hl7.ack(header, "AE", "PID-3 patient ID | is missing", "101", ("PID", 3)))
    err = ack.segments["ERR"]
    assert ack.code == "AE"
    assert err[1] == "" and err[2] == "PID^1^3" and err[3] == "101^Required field missing^HL70357"
    assert err[4] == "E" and err[8] == "PID-3 patient ID \\F\\ is missing"


def test_error_ack_for_231_also_fills_err1() -> None:
    header = hl7.read_header(latin1_orm("M79", version="2.3.1"))
    raw = hl7.ack(header, "AR", "bad", "200", ("MSH", 9))
    ack = parse_ack(raw, "latin-1")
    assert ack.segments["MSH"][8] == "ACK^O01" and ack.segments["MSH"][11] == "2.3.1"
    assert ack.segments["MSH"][17] == "8859/1"
    assert ack.segments["ERR"][1] == "MSH^1^9^200&Unsupported message type&HL70357"


def test_ack_without_header() -> None:
    ack = parse_ack(hl7.ack(None, "AR", "the message does not start with an MSH segment", "100"))
    assert ack.segments["MSA"][1:3] == ["AR", ""]
    assert ack.segments["MSH"][11] == "2.5"
