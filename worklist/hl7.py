"""HL7 v2 orders and patient updates from the HIS: parse, map to worklist calls, build the ACK.

Versions 2.3, 2.3.1, 2.4 and 2.5(.1) (HL7 v2.5 chapter 2 control, chapter 3
ADT, chapter 4 orders). Messages: ORM^O01 and OMI^O23 (ORC-1 NW, XO, CA, DC,
SC), ADT^A08/A31 (update patient) and ADT^A40 (merge). Every field we read,
and where it goes, is in one table: docs/hl7.md (the ACK codes too). Segments are split by
python-hl7 (`hl7.parse`); components are read by :func:`_part`, which also
undoes the escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\, chapter 2.7).

This module makes no business decision: it turns a message into
:class:`Action` values for worklist.service, and the service's errors (their
``hl7_ack``/``hl7_code``) back into an ACK with an ERR segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import hl7

from archive import Origin
from archive.matching import is_date
from archive.patients import OtherId, PatientDemographics
from archive.text import nfc
from worklist.hl7_encoding import escape
from worklist.types import OrderRequest, StepStatus

#: Our MSH-3 in ACKs.
OUR_APPLICATION = "MINIPACS"

VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
SUPPORTED = {"ORM": ("O01",), "OMI": ("O23",), "ADT": ("A08", "A31", "A40")}

#: MSH-18 (HL7 table 0211) -> Python codec. "" and ASCII: UTF-8, else Latin-1 (see decode()).
CHARSETS = {"": "", "ASCII": "", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "8859/1": "latin-1"}

#: HL7 table 0357, message error condition codes.
ERROR_TEXT = {
    "0": "Message accepted", "100": "Segment sequence error", "101": "Required field missing",
    "102": "Data type error", "103": "Table value not found", "200": "Unsupported message type",
    "201": "Unsupported event code", "202": "Unsupported processing id", "203": "Unsupported version id",
    "204": "Unknown key identifier", "205": "Duplicate key identifier", "206": "Application record locked",
    "207": "Application internal error",
}  # fmt: skip

#: OBR-24 diagnostic service sections that name a DICOM modality; others ("RAD", "IMG") leave it to the catalogue.
MODALITIES = frozenset({"CT", "DX", "CR", "US", "MR", "MG", "XA", "RF", "NM", "PT"})
PRIORITY = {"S": "STAT", "A": "HIGH", "R": "ROUTINE"}
#: ORC-5 order status (HL7 table 0038) of an SC message -> the step's status.
ORDER_STATUS = {"IP": StepStatus.IN_PROGRESS, "CM": StepStatus.COMPLETED,
                "DC": StepStatus.DISCONTINUED, "CA": StepStatus.CANCELLED}  # fmt: skip
#: OBX-5 answers to LOINC 11449-6 (pregnancy status) -> Pregnancy Status (0010,21C0).
PREGNANCY = {"LA15173-0": 3, "Y": 3, "PREGNANT": 3, "LA26683-5": 1, "N": 1, "NOT PREGNANT": 1,
             "LA4489-6": 4, "U": 4, "UNKNOWN": 4, "POSSIBLE": 2, "POSSIBLY PREGNANT": 2}  # fmt: skip
#: PID-3 identifier types / assigning authorities -> the Other Patient ID's issuer.
OTHER_ID_ISSUERS = {"CCCD": "CCCD", "NNVNM": "CCCD", "NI": "CCCD", "BHYT": "BHYT", "HC": "BHYT", "INS": "BHYT"}


class Hl7Error(Exception):
    """The message cannot be used as sent; `ack` and `code` (table 0357) go into the ACK.

    ``location`` is (segment, field) for ERR-2, ("", 0) when it is the whole message.
    """

    def __init__(self, message: str, code: str = "102", ack: str = "AE",
                 location: tuple[str, int] = ("", 0)) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.code = code
        self.ack = ack
        self.location = location


class NoHeader(Exception):
    """No readable MSH segment: there is nothing to address an ACK to (and nothing is stored)."""


@dataclass(frozen=True)
class Header:
    """MSH, read from the raw bytes (before the character set is known; its fields are ASCII)."""

    field_sep: str
    encoding: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    message_code: str
    trigger: str
    processing_id: str
    version: str
    charset: str

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code


def normalise(raw: bytes) -> bytes:
    """Segments end in CR (HL7 2.5 2.5.4); senders that end them in LF or CRLF, or leave blank lines,
    are read the same."""
    return re.sub(rb"[\r\n]+", b"\r", raw.strip(b" \t\r\n\x00"))


def read_header(raw: bytes) -> Header:
    """MSH from the raw bytes: enough to answer (and log) whatever else is wrong with the message.

    Raises NoHeader when the message does not start with a usable MSH, and
    Hl7Error (with the header readable for the ACK) when only MSH-2 is wrong
    -- the caller then reads the header with :func:`read_header_loosely`.
    """
    header = read_header_loosely(raw)
    enc = header.encoding
    if len(enc) not in (4, 5) or len(set(enc + header.field_sep)) != len(enc) + 1 or any(
        c.isalnum() or c.isspace() for c in enc
    ):
        raise Hl7Error(f"MSH-2 encoding characters {enc!r} are not four distinct delimiters like ^~\\&",
                       "102", "AR", ("MSH", 2))  # fmt: skip
    return header


def read_header_loosely(raw: bytes) -> Header:
    """MSH split on its field separator only (MSH-2 unchecked); raises NoHeader."""
    data = normalise(raw)
    if not data.startswith(b"MSH") or len(data) < 8:
        raise NoHeader("the message does not start with an MSH segment")
    sep = data[3:4]
    if sep.isalnum() or sep.isspace() or sep in (b"\r", b"\x0b", b"\x1c") or sep[0] > 0x7E:
        raise NoHeader(f"MSH-1 field separator {sep!r} is not a delimiter")
    line = data.split(b"\r", 1)[0].decode("latin-1")
    fields = line.split(sep.decode("latin-1"))  # fields[n - 1] is MSH-n (MSH-1 is the separator itself)
    encoding = fields[1] if len(fields) > 1 else ""
    comp = encoding[0] if encoding and not encoding[0].isalnum() else "^"
    rep = encoding[1] if len(encoding) > 1 and not encoding[1].isalnum() else "~"

    def get(n: int, component: int = 1) -> str:
        value = fields[n - 1].split(rep)[0] if len(fields) >= n else ""
        parts = value.split(comp)
        return parts[component - 1].strip() if len(parts) >= component else ""

    return Header(
        field_sep=sep.decode("latin-1"), encoding=encoding, sending_application=get(3),
        sending_facility=get(4), receiving_application=get(5), receiving_facility=get(6),
        control_id=get(10), message_code=get(9).upper(), trigger=get(9, 2).upper(),
        processing_id=get(11), version=get(12), charset=get(18).upper(),
    )  # fmt: skip


def decode(raw: bytes, header: Header) -> str:
    """The message as text, in the character set MSH-18 names.

    MSH-18 empty or ASCII: strict UTF-8 first (what Vietnamese HIS products
    send when they leave MSH-18 empty), then Latin-1 -- Latin-1 text that
    happens to be valid UTF-8 is practically never seen, so the guess is safe.
    Character sets we do not support are refused (AR) rather than guessed.
    """
    if header.charset not in CHARSETS:
        raise Hl7Error(f"MSH-18 character set {header.charset!r} is not supported "
                       "(send UNICODE UTF-8, 8859/1 or ASCII)", "103", "AR", ("MSH", 18))  # fmt: skip
    codec = CHARSETS[header.charset]
    data = normalise(raw)
    if codec:
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            raise Hl7Error(f"the message is not valid {header.charset} (MSH-18): byte {exc.start}",
                           "102", "AR", ("MSH", 18)) from exc  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# --- reading fields ---------------------------------------------------------------


class Message:
    """A parsed message: segments by name, fields read as text."""

    def __init__(self, text: str, header: Header) -> None:
        self.header = header
        try:
            parsed = hl7.parse(text)
        except Exception as exc:  # python-hl7 raises several kinds on broken structure
            raise Hl7Error(f"the message cannot be parsed: {exc}", "102", "AR") from exc
        enc = header.encoding
        self.comp, self.rep, self.esc, self.sub = enc[0], enc[1], enc[2], enc[3]
        self.segments: list[tuple[str, list[str]]] = []
        for segment in parsed:
            fields = [str(f) for f in segment]
            name = fields[0].strip().upper() if fields else ""
            if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
                raise Hl7Error(f"segment {len(self.segments) + 1} has no valid segment name: {name[:10]!r}",
                               "100", "AR")  # fmt: skip
            # For MSH too fields[n] is field n: python-hl7 keeps MSH-1 (the separator) at index 1.
            self.segments.append((name, fields))

    def all(self, name: str) -> list[list[str]]:
        return [f for n, f in self.segments if n == name]

    def first(self, name: str) -> list[str] | None:
        found = self.all(name)
        return found[0] if found else None

    def part(self, fields: list[str] | None, n: int, component: int = 1, repetition: int = 1,
             sub: int = 0) -> str:  # fmt: skip
        """Field n (1-based), one repetition and component, unescaped; sub > 0: one subcomponent."""
        if fields is None or len(fields) <= n:
            return ""
        reps = fields[n].split(self.rep)
        if len(reps) < repetition:
            return ""
        comps = reps[repetition - 1].split(self.comp)
        value = comps[component - 1] if len(comps) >= component else ""
        if sub:
            subs = value.split(self.sub)
            value = subs[sub - 1] if len(subs) >= sub else ""
        return self.unescape(value).strip()

    def repetitions(self, fields: list[str] | None, n: int) -> int:
        if fields is None or len(fields) <= n or not fields[n]:
            return 0
        return len(fields[n].split(self.rep))

    def unescape(self, value: str) -> str:
        if self.esc not in value:
            return value
        e = re.escape(self.esc)
        table = {"F": self.header.field_sep, "S": self.comp, "T": self.sub, "R": self.rep, "E": self.esc}
        return re.sub(f"{e}([FSTRE]|\\.br|X[0-9A-Fa-f]*|H|N){e}",
                      lambda m: table.get(m.group(1), "\r" if m.group(1) == ".br" else ""), value)  # fmt: skip


# --- what a message asks for -------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One worklist call: NW/XO carry an order, CA/DC/SC an order number, ADT a patient."""

    kind: Literal["create", "change", "cancel", "discontinue", "status", "update_patient", "merge_patient"]
    order: OrderRequest | None = None
    placer_issuer: str = ""
    placer_order_number: str = ""
    status: StepStatus | None = None
    patient: PatientDemographics | None = None
    prior_id: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse(raw: bytes) -> Message:
    """Header checks, character set, structure. Raises NoHeader or Hl7Error."""
    header = read_header(raw)
    if not header.control_id:
        raise Hl7Error("MSH-10 message control ID is missing", "101", "AR", ("MSH", 10))
    if header.version not in VERSIONS:
        raise Hl7Error(f"HL7 version {header.version!r} (MSH-12) is not supported: send 2.3.1 to 2.5",
                       "203", "AR", ("MSH", 12))  # fmt: skip
    if header.message_code not in SUPPORTED:
        raise Hl7Error(f"message type {header.message_type!r} is not supported: send ORM^O01, OMI^O23, "
                       "ADT^A08, ADT^A31 or ADT^A40", "200", "AR", ("MSH", 9))  # fmt: skip
    if header.trigger not in SUPPORTED[header.message_code]:
        raise Hl7Error(f"event {header.message_type!r} is not supported (for {header.message_code}: "
                       f"{', '.join(SUPPORTED[header.message_code])})", "201", "AR", ("MSH", 9))  # fmt: skip
    return Message(decode(raw, header), header)


def actions(msg: Message) -> list[Action]:
    """What the message asks the worklist to do, in order. Raises Hl7Error for a field we cannot use."""
    if msg.header.message_code == "ADT":
        patient = patient_of(msg)
        if msg.header.trigger == "A40":
            mrg = msg.first("MRG")
            prior = msg.part(mrg, 1)
            if not prior:
                raise Hl7Error("MRG-1 prior patient ID is missing", "101", location=("MRG", 1))
            return [Action("merge_patient", patient=patient, prior_id=prior)]
        return [Action("update_patient", patient=patient)]
    patient = patient_of(msg)
    out = []
    for orc, obr, group in _order_groups(msg):
        out.append(_order_action(msg, patient, orc, obr, group))
    if not out:
        raise Hl7Error("the message holds no ORC segment", "100", location=("ORC", 0))
    return out


def _order_groups(msg: Message) -> list[tuple[list[str], list[str] | None, dict[str, list[str]]]]:
    """Each ORC with the OBR, TQ1, IPC, PV1 and OBX segments that follow it (before the next ORC)."""
    groups: list[tuple[list[str], list[str] | None, dict[str, list[str]]]] = []
    pv1 = msg.first("PV1")
    for name, fields in msg.segments:
        if name == "ORC":
            groups.append((fields, None, {"PV1": pv1} if pv1 else {}))
        elif groups and name == "OBR" and groups[-1][1] is None:
            groups[-1] = (groups[-1][0], fields, groups[-1][2])
        elif groups and name in ("TQ1", "IPC", "OBX") and name not in groups[-1][2]:
            groups[-1][2][name] = fields
        elif name == "OBX" and not groups:  # OBX of the patient (pregnancy) before the order
            continue
    return groups


def patient_of(msg: Message) -> PatientDemographics:
    pid = msg.first("PID")
    if pid is None:
        raise Hl7Error("the message has no PID segment", "100", location=("PID", 0))
    ids = [(msg.part(pid, 3, 1, r), msg.part(pid, 3, 5, r).upper(), msg.part(pid, 3, 4, r).upper())
           for r in range(1, msg.repetitions(pid, 3) + 1)]  # fmt: skip
    ids = [i for i in ids if i[0]]
    if not ids:
        raise Hl7Error("PID-3 patient ID is missing", "101", location=("PID", 3))
    primary = next((i for i in ids if i[1] in ("PI", "MR")), ids[0])
    others = tuple(
        OtherId(value, OTHER_ID_ISSUERS.get(authority) or OTHER_ID_ISSUERS.get(kind) or authority or kind)
        for value, kind, authority in ids if (value, kind, authority) != primary
    )  # fmt: skip
    family = msg.part(pid, 5, 1, sub=1)
    given = " ".join(p for p in (msg.part(pid, 5, 2), msg.part(pid, 5, 3)) if p)
    name = f"{family}^{given}" if given else family
    return PatientDemographics(
        patient_id=primary[0], name=nfc(name), birth_date=_birth_date(msg.part(pid, 7)),
        sex=_sex(msg.part(pid, 8)), other_ids=others,
    )  # fmt: skip


def _birth_date(value: str) -> str:
    """PID-7 (TS): the first 8 digits. Year or month precision only (elderly patients often
    know only their birth year) gives no DICOM date, so it is left empty."""
    digits = value.split("^")[0]
    if not digits:
        return ""
    if re.fullmatch(r"\d{4}(\d{2})?", digits):
        return ""
    if not re.match(r"\d{8}", digits) or not is_date(digits[:8]):
        raise Hl7Error(f"PID-7 birth date {value!r} is not a date YYYYMMDD", "102", location=("PID", 7))
    return digits[:8]


def _sex(value: str) -> str:
    value = value.upper()
    return value if value in ("M", "F", "O") else ""


def _datetime(value: str, where: tuple[str, int]) -> tuple[str, str]:
    """An HL7 TS/DTM -> (YYYYMMDD, HHMMSS); the time zone (+0700) is dropped: steps are local time."""
    if not value:
        return "", ""
    m = re.fullmatch(r"(\d{8})(\d{2,6})?(\.\d+)?([+-]\d{4})?", value)
    if m is None or not is_date(m.group(1)):
        raise Hl7Error(f"{where[0]}-{where[1]} date/time {value!r} is not YYYYMMDD[HHMM[SS]]", "102",
                       location=where)  # fmt: skip
    time = (m.group(2) or "")
    if time:
        time = time.ljust(6, "0")[:6]
        if int(time[:2]) > 23 or int(time[2:4]) > 59 or int(time[4:6]) > 59:
            raise Hl7Error(f"{where[0]}-{where[1]} time in {value!r} is not a time of day", "102", location=where)
    return m.group(1), time


def _person(msg: Message, fields: list[str] | None, n: int) -> str:
    """An XCN (id^family^given^middle) as DICOM PN "Family^Given Middle"; a bare text name as is."""
    family, given, middle = msg.part(fields, n, 2, sub=1), msg.part(fields, n, 3), msg.part(fields, n, 4)
    if not family:
        text = msg.part(fields, n, 1)
        return "" if text.isdigit() else nfc(text)
    first = " ".join(p for p in (given, middle) if p)
    return nfc(f"{family}^{first}" if first else family)


def _technician(msg: Message, obr: list[str] | None) -> str:
    """OBR-34 (NDL in 2.5, CM in 2.3.1): the name is component 1 as subcomponents id&family&given&middle."""
    family = msg.part(obr, 34, 1, sub=2)
    if not family:
        return _person(msg, obr, 34)
    first = " ".join(p for p in (msg.part(obr, 34, 1, sub=3), msg.part(obr, 34, 1, sub=4)) if p)
    return nfc(f"{family}^{first}" if first else family)


def _order_action(msg: Message, patient: PatientDemographics, orc: list[str], obr: list[str] | None,
                  group: dict[str, list[str]]) -> Action:  # fmt: skip
    control = msg.part(orc, 1).upper()
    issuer = msg.header.sending_application
    if not issuer:
        raise Hl7Error("MSH-3 sending application is missing: it names the order numbers' issuer", "101",
                       location=("MSH", 3))  # fmt: skip
    number = msg.part(orc, 2) or msg.part(obr, 2)
    if not number:
        raise Hl7Error("ORC-2 placer order number is missing (and OBR-2 too)", "101", location=("ORC", 2))
    if control in ("CA", "DC"):
        reason = msg.part(orc, 16, 2) or msg.part(orc, 16, 1)
        kind: Literal["cancel", "discontinue"] = "cancel" if control == "CA" else "discontinue"
        return Action(kind, placer_issuer=issuer, placer_order_number=number, detail=reason)
    if control == "SC":
        code = msg.part(orc, 5).upper()
        status = ORDER_STATUS.get(code)
        if status is None:
            raise Hl7Error(f"ORC-5 order status {code!r} of a status change (SC) is not IP, CM, DC or CA", "103",
                           location=("ORC", 5))  # fmt: skip
        return Action("status", placer_issuer=issuer, placer_order_number=number, status=status,
                      detail=f"HIS order status {code}")  # fmt: skip
    if control not in ("NW", "XO"):
        raise Hl7Error(f"ORC-1 order control {control!r} is not supported (NW, XO, CA, DC, SC)", "103",
                       location=("ORC", 1))  # fmt: skip
    if obr is None:
        raise Hl7Error(f"order {number}: no OBR segment (the procedure)", "100", location=("OBR", 0))
    order = OrderRequest(placer_issuer=issuer, placer_order_number=number, patient=patient,
                         **_order_fields(msg, orc, obr, group))  # fmt: skip
    return Action("create" if control == "NW" else "change", order=order)


def _order_fields(msg: Message, orc: list[str], obr: list[str], group: dict[str, list[str]]) -> dict[str, Any]:
    ipc, tq1, pv1, obx = group.get("IPC"), group.get("TQ1"), group.get("PV1"), group.get("OBX")
    start = msg.part(tq1, 7) or msg.part(obr, 27, 4) or msg.part(orc, 7, 4)
    where = ("TQ1", 7) if msg.part(tq1, 7) else ("OBR", 27) if msg.part(obr, 27, 4) else ("ORC", 7)
    start_date, start_time = _datetime(start, where)
    priority_code = (msg.part(obr, 5) or msg.part(orc, 7, 6) or msg.part(tq1, 9) or msg.part(obr, 27, 6)).upper()
    section = msg.part(obr, 24).upper()
    modality = (msg.part(ipc, 5) or (section if section in MODALITIES else "")).upper()
    pregnancy = None
    for segment in msg.all("OBX"):
        if msg.part(segment, 3) == "11449-6":
            answer = (msg.part(segment, 5, 1) or "").upper()
            pregnancy = PREGNANCY.get(answer) or PREGNANCY.get(msg.part(segment, 5, 2).upper())
    del obx
    visit = msg.part(pv1, 19)
    return {
        "filler_order_number": msg.part(orc, 3) or msg.part(obr, 3),
        "accession_number": msg.part(ipc, 1) or msg.part(obr, 18) or msg.part(obr, 19),
        "requested_procedure_id": msg.part(ipc, 2),
        "study_instance_uid": msg.part(ipc, 3),
        "sps_id": msg.part(ipc, 4),
        "procedure_code": msg.part(obr, 4, 1),
        "procedure_description": nfc(msg.part(obr, 4, 2)),
        "procedure_scheme": msg.part(obr, 4, 3),
        "modality": modality,
        "station_ae_title": msg.part(ipc, 9),
        "start_date": start_date,
        "start_time": start_time,
        "priority": PRIORITY.get(priority_code, "ROUTINE"),
        "referring_physician": _person(msg, pv1, 8) or _person(msg, obr, 16) or _person(msg, orc, 12),
        "performing_physician": _technician(msg, obr),
        "reason": nfc(msg.part(obr, 13) or msg.part(obr, 31, 2) or msg.part(obr, 31, 1)),
        "pregnancy_status": pregnancy,
        "attrs": {"00380010": {"vr": "LO", "Value": [visit]}} if visit else {},
    }


def apply(worklist: Any, todo: list[Action], origin: Origin) -> str:
    """Make the worklist calls; returns a short summary for MSA-3. Raises OrderError."""
    done = []
    for a in todo:
        if a.kind == "create" and a.order is not None:
            result = worklist.create(a.order, origin)
            done.append(f"order {a.order.placer_order_number}: {result.outcome.value} {result.step.accession_number}")
        elif a.kind == "change" and a.order is not None:
            result = worklist.change(a.order, origin)
            done.append(f"order {a.order.placer_order_number}: {result.outcome.value} {result.step.accession_number}")
        elif a.kind == "cancel":
            worklist.cancel(a.placer_issuer, a.placer_order_number, origin, a.detail)
            done.append(f"order {a.placer_order_number}: cancelled")
        elif a.kind == "discontinue":
            worklist.discontinue(a.placer_issuer, a.placer_order_number, origin, a.detail)
            done.append(f"order {a.placer_order_number}: discontinued")
        elif a.kind == "status" and a.status is not None:
            worklist.order_status(a.placer_issuer, a.placer_order_number, a.status, origin, a.detail)
            done.append(f"order {a.placer_order_number}: {a.status.value}")
        elif a.kind == "update_patient" and a.patient is not None:
            changed = worklist.update_patient(a.patient, origin)
            done.append(f"patient {a.patient.patient_id}: {len(changed)} changes")
        elif a.kind == "merge_patient" and a.patient is not None:
            moved = worklist.merge_patient(a.patient, a.prior_id, "", origin)
            done.append(f"patient {a.prior_id} merged into {a.patient.patient_id}: {moved} studies moved")
    return "; ".join(done)


# --- the ACK -----------------------------------------------------------------------


def ack(header: Header | None, code: str, text: str = "", error: str = "0",
        location: tuple[str, int] = ("", 0)) -> bytes:  # fmt: skip
    """An ACK (HL7 v2.5 2.9.2, 2.14.1) to `header`, encoded in the message's character set.

    AE/AR carry an ERR segment: ERR-2 location, ERR-3 the table 0357 code,
    ERR-4 severity E, ERR-8 what was wrong; before 2.5 the location and code
    also go into ERR-1, the only ERR field those versions have.
    """
    fs, enc = "|", "^~\\&"
    if header is not None and header.field_sep == "|" and header.encoding[:4] == "^~\\&":
        fs, enc = header.field_sep, header.encoding[:4]
    version = header.version if header is not None and header.version in VERSIONS else "2.5"
    charset = header.charset if header is not None and header.charset in CHARSETS else ""
    trigger = header.trigger if header is not None else ""
    now = datetime.now().astimezone()
    control = f"ACK{now.strftime('%Y%m%d%H%M%S%f')}"[:20]

    h = header
    msh = ["MSH", enc, OUR_APPLICATION, escape(h.receiving_facility) if h else "",
           escape(h.sending_application) if h else "", escape(h.sending_facility) if h else "",
           now.strftime("%Y%m%d%H%M%S%z"), "",
           f"ACK^{trigger}^ACK" if trigger and version >= "2.4" else (f"ACK^{trigger}" if trigger else "ACK"),
           control, (h.processing_id if h and h.processing_id else "P"), version]  # fmt: skip
    if charset:
        msh += [""] * 5 + [charset]
    segments = [fs.join(msh), fs.join(["MSA", code, escape(h.control_id) if h else "", escape(text[:200])])]
    if code != "AA":
        seg, position = location
        loc = f"{seg}^1^{position}" if seg else ""
        err_text = ERROR_TEXT.get(error, "")
        err1 = f"{loc or '^^'}^{error}&{err_text}&HL70357" if version < "2.5" else ""
        segments.append(fs.join(["ERR", err1, loc, f"{error}^{err_text}^HL70357", "E", "", "", "", escape(text)]))
    body = "\r".join(segments) + "\r"
    codec = CHARSETS.get(charset) or ("ascii" if charset == "ASCII" else "utf-8")
    return body.encode(codec, "replace")
