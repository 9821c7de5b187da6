"""Writing HL7 v2 messages: escaping, composite fields, names, timestamps and the MSH segment.

Shared by every message minipacs sends (the ACK in worklist.hl7, the order
status updates in worklist.status_updates, the ORU^R01 results in
reports.oru), so they escape and stamp alike. We always write the standard
delimiters ``|^~\\&`` and UTF-8 (MSH-18 ``UNICODE UTF-8``): python-hl7's own
``escape`` turns every non-ASCII character into ``\\X..\\`` hex, which
Vietnamese text does not need and many receivers do not undo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

FIELD, COMPONENT, REPETITION, ESCAPE, SUBCOMPONENT = "|", "^", "~", "\\", "&"
ENCODING_CHARACTERS = COMPONENT + REPETITION + ESCAPE + SUBCOMPONENT
UTF8 = "UNICODE UTF-8"

_DELIMITERS = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: C0 controls other than tab: a 0x0B or 0x1C in text would end an MLLP frame early.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape(value: str) -> str:
    """A value with the delimiters escaped (HL7 v2.5 2.7.4); line breaks become spaces."""
    return _CONTROLS.sub("", _LINE_BREAK.sub(" ", value)).translate(_DELIMITERS)


def escape_text(value: str) -> str:
    """Multi-line text for an FT value: delimiters escaped, each line break ``\\.br\\`` (2.7.6)."""
    lines = [_CONTROLS.sub("", line).translate(_DELIMITERS) for line in _LINE_BREAK.split(value)]
    return "\\.br\\".join(lines)


def components(*values: str) -> str:
    """Escaped values joined as components, trailing empty ones left out."""
    return COMPONENT.join(escape(v) for v in values).rstrip(COMPONENT)


def subcomponents(*values: str) -> str:
    """Escaped values joined as subcomponents (the parts of a component), trailing empty ones left out."""
    return SUBCOMPONENT.join(escape(v) for v in values).rstrip(SUBCOMPONENT)


def name_parts(dicom_name: str) -> tuple[str, str, str, str, str]:
    """The alphabetic group of a DICOM PN: (family, given, middle, prefix, suffix)."""
    parts = (dicom_name.split("=")[0].split("^") + [""] * 5)[:5]
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def xpn(dicom_name: str) -> str:
    """DICOM PN family^given^middle^prefix^suffix as HL7 XPN family^given^middle^suffix^prefix."""
    family, given, middle, prefix, suffix = name_parts(dicom_name)
    return components(family, given, middle, suffix, prefix)


def xcn(identifier: str, dicom_name: str) -> str:
    """An XCN (id^family^given^middle^suffix^prefix) from an identifier and a DICOM PN."""
    family, given, middle, prefix, suffix = name_parts(dicom_name)
    return components(identifier, family, given, middle, suffix, prefix)


def timestamp(moment: datetime) -> str:
    """An HL7 TS/DTM in the machine's local time with its UTC offset (YYYYMMDDHHMMSS+ZZZZ)."""
    return moment.astimezone().strftime("%Y%m%d%H%M%S%z")


def msh(sending_application: str, sending_facility: str, receiving_application: str,
        receiving_facility: str, message_type: str, control_id: str, now: datetime, *,
        version: str = "2.5", processing_id: str = "P", accept_ack: str = "AL", application_ack: str = "NE",
        charset: str = UTF8) -> list[str]:  # fmt: skip
    """The MSH fields (HL7 v2.5 2.14.9) of a message we send; `message_type` is written as is.

    MSH-15/16 default to the enhanced acknowledgment our outbox expects
    (accept ACK always, no application ACK); pass "" for original mode.
    """
    fields = ["MSH", ENCODING_CHARACTERS, escape(sending_application), escape(sending_facility),
              escape(receiving_application), escape(receiving_facility), timestamp(now), "", message_type,
              escape(control_id), processing_id, version, "", "", accept_ack, application_ack, "", charset]  # fmt: skip
    return fields


def numbered(name: str, values: Mapping[int, str]) -> list[str]:
    """A segment's fields from {field number: value}; the fields not given are empty."""
    fields = [name] + [""] * max(values, default=0)
    for n, value in values.items():
        fields[n] = value
    return fields


def segment(fields: Sequence[str]) -> str:
    """One segment: fields joined by ``|``, trailing empty fields left out."""
    return FIELD.join(fields).rstrip(FIELD)


def encode(segments: Sequence[Sequence[str]]) -> bytes:
    """The message in UTF-8, each segment ended by CR (HL7 v2.5 2.5.4)."""
    return "".join(segment(s) + "\r" for s in segments).encode("utf-8")


__all__ = ["ENCODING_CHARACTERS", "UTF8", "components", "encode", "escape", "escape_text", "msh", "name_parts",
           "numbered", "segment", "subcomponents", "timestamp", "xcn", "xpn"]  # fmt: skip
