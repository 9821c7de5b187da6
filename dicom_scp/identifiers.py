"""C-FIND response identifiers encoded straight from the index's JSON.

pydicom's writer costs about 0.35 ms per identifier and building the Dataset
for it another 0.3 ms: with pynetdicom's own per-message cost that made each
C-FIND match cost 1.6 ms, so a query answering 100 studies took 160 ms. The
index already holds every match as DICOM JSON (PS3.18 F.2) with a small set
of shapes (text, numbers, person names, sequences of those; never binary), and
encoding those in little endian is a few lines. Anything else — big endian,
deflate, a value shape the index should not hold — goes through pydicom as before.

pynetdicom has no way to hand it an identifier already encoded, so
`install()` wraps the one function its C-FIND service calls to encode the
handler's datasets; datasets that are not an `EncodedIdentifier` pass through
unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.valuerep import DSfloat
from pynetdicom import service_class

from archive.query import dataset_from_json

# VRs whose explicit VR header has two reserved bytes and a 32-bit length (PS3.5 7.1.2).
_LONG_HEADER = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_TEXT = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_NUMBERS = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d",
            "SV": "<q", "UV": "<Q"}  # fmt: skip
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_CHARSET = "00080005"


class Unencodable(Exception):
    """A value shape the fast path does not handle; pydicom will."""


class EncodedIdentifier(Dataset):
    """A response identifier that already carries its little endian encoding."""

    def __init__(self, attrs: dict[str, Any], implicit_vr: bool) -> None:
        super().__init__()
        self.attrs = attrs
        self.implicit_vr = implicit_vr
        self.encoded = encode(attrs, implicit_vr)


def identifier(attrs: dict[str, Any], transfer_syntax: Any) -> Dataset:
    """The response identifier for `attrs` on a presentation context with `transfer_syntax`."""
    if transfer_syntax.is_little_endian and not transfer_syntax.is_deflated:
        try:
            return EncodedIdentifier(attrs, bool(transfer_syntax.is_implicit_VR))
        except Unencodable:
            pass
    return dataset_from_json(attrs)


def encode(attrs: dict[str, Any], implicit_vr: bool, utf8: bool = False) -> bytes:
    """Little endian encoding of a DICOM JSON object; raises Unencodable.

    `utf8`: the enclosing dataset's character set is ISO_IR 192 (for sequence items).
    """
    if _CHARSET in attrs:
        utf8 = _is_utf8(attrs[_CHARSET])
    parts: list[bytes] = []
    for key in sorted(attrs):
        element = attrs[key]
        vr = element.get("vr", "UN")
        if "InlineBinary" in element or "BulkDataURI" in element:
            raise Unencodable(f"{key}: binary value")
        value = _value(vr, element.get("Value"), utf8, implicit_vr)
        tag = int(key, 16)
        header = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        if implicit_vr:
            header += struct.pack("<I", len(value))
        elif vr in _LONG_HEADER:
            header += vr.encode("ascii") + struct.pack("<HI", 0, len(value))
        elif len(value) <= 0xFFFE:
            header += vr.encode("ascii") + struct.pack("<H", len(value))
        else:
            raise Unencodable(f"{key}: {len(value)} bytes is too long for {vr}")
        parts.append(header)
        parts.append(value)
    return b"".join(parts)


def _value(vr: str, values: list[Any] | None, utf8: bool, implicit_vr: bool) -> bytes:
    if not values:
        return b""
    if vr == "SQ":
        items = []
        for item in values:
            body = encode(item, implicit_vr, utf8)
            items.append(_ITEM + struct.pack("<I", len(body)) + body)
        return b"".join(items)
    if vr in _NUMBERS:
        try:
            return b"".join(struct.pack(_NUMBERS[vr], v) for v in values)
        except (struct.error, TypeError) as exc:
            raise Unencodable(f"{vr} value {values!r}: {exc}") from None
    if vr == "PN":
        text = "\\".join(_person_name(v) for v in values)
    elif vr == "IS":
        text = "\\".join(str(int(v)) if isinstance(v, (int, float)) else str(v) for v in values)
    elif vr == "DS":
        text = "\\".join(str(DSfloat(v)) if isinstance(v, float) else str(v) for v in values)
    elif vr in _TEXT:
        text = "\\".join("" if v is None else str(v) for v in values)
    else:
        raise Unencodable(f"no fast encoding for VR {vr}")
    if text.isascii():
        raw = text.encode("ascii")
    elif utf8:
        raw = text.encode("utf-8")
    else:
        raise Unencodable("non-ASCII text without ISO_IR 192")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw


def _person_name(value: Any) -> str:
    if not isinstance(value, dict):
        return "" if value is None else str(value)
    groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


def _is_utf8(charset: dict[str, Any] | None) -> bool:
    return bool(charset) and charset.get("Value", [None])[-1] == "ISO_IR 192"  # type: ignore[union-attr]


_Encoder = Callable[..., "bytes | None"]


def install() -> None:
    """Let pynetdicom's C-FIND service send EncodedIdentifier bytes as they are."""
    original: _Encoder = getattr(service_class, "encode")  # noqa: B009 - not re-exported
    if getattr(original, "_minipacs", False):
        return

    def encode_identifier(
        ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
    ) -> bytes | None:
        if (isinstance(ds, EncodedIdentifier) and is_little_endian and not deflated
                and ds.implicit_vr == is_implicit_vr):  # fmt: skip
            return ds.encoded
        if isinstance(ds, EncodedIdentifier):
            ds = dataset_from_json(ds.attrs)
        return original(ds, is_implicit_vr, is_little_endian, deflated)

    encode_identifier._minipacs = True  # type: ignore[attr-defined]
    setattr(service_class, "encode", encode_identifier)  # noqa: B010
