"""The HIS's own JSON order shape, mapped to an OrderRequest by a per-hospital file.

Most Vietnamese HIS products integrate over their own REST/JSON rather than
HL7 or FHIR, each with its own field names ("so_phieu", "benh_nhan.ma_bn").
Rather than code per product, the hospital describes its HIS's shape in a
TOML file (setting ``worklist.order_mapping``): which dotted path of the posted
JSON holds each value, how dates are written, and how coded values (sex,
priority) translate. ``worklist/order_mapping.toml`` is the bundled default (a
neutral English-keyed shape); ``worklist/order_mapping_vn.toml`` is a sample
for a typical Vietnamese HIS. The file is checked when it is loaded; an error
names the key. Errors in a posted order name the HIS's own field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from archive.errors import InvalidArgument
from archive.patients import OtherId, PatientDemographics
from archive.text import fold, nfc
from worklist.errors import InvalidOrder
from worklist.types import PRIORITIES, OrderRequest

BUNDLED = Path(__file__).with_name("order_mapping.toml")

#: What a mapping may fill: OrderRequest's fields plus the patient's.
TARGETS = (
    "order_number", "filler_order_number", "accession_number", "study_instance_uid",
    "requested_procedure_id", "sps_id", "procedure_code", "procedure_scheme", "procedure_description",
    "modality", "station_ae_title", "station_name", "start", "start_date", "start_time",
    "performing_physician", "referring_physician", "priority", "pregnancy_status", "reason",
    "patient_id", "patient_issuer", "patient_name", "family_name", "given_name", "birth_date", "sex",
)  # fmt: skip
REQUIRED = ("order_number", "patient_id")
#: Coded values a mapping may translate, and the values they must end up as.
VALUE_MAPS: dict[str, tuple[str, ...]] = {
    "sex": ("M", "F", "O"),
    "priority": PRIORITIES,
    "pregnancy_status": ("1", "2", "3", "4"),
}
NAME_STYLES = ("dicom", "full_name")
#: .NET/Java-style date patterns, the way HIS developers write them.
_TOKENS = (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"))
_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


@dataclass(frozen=True)
class OrderMapping:
    """A loaded, checked mapping file."""

    #: The ordering system's name (the order's placer issuer); "" = the posting token's name.
    issuer: str
    #: target -> dotted path into the posted JSON.
    fields: dict[str, str]
    #: "dicom" (Family^Given) or "full_name" (a Vietnamese full name, family name first);
    #: applies to the patient and the physicians.
    name_style: str = "dicom"
    birth_date_format: str = "yyyyMMdd"
    start_format: str = "iso"
    #: Issuer of an Other Patient ID (CCCD, BHYT) -> dotted path.
    other_ids: dict[str, str] = field(default_factory=dict)
    #: target ("sex", "priority", "pregnancy_status") -> {folded HIS value: our value}.
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = "bundled"

    @classmethod
    def load(cls, path: Path | None = None) -> OrderMapping:
        """Read and check a mapping file (the bundled default when `path` is None).

        Raises InvalidArgument naming the file and the offending key.
        """
        path = path or BUNDLED
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"order mapping {path}: {exc}") from exc
        return cls.from_document(doc, str(path))

    @classmethod
    def from_document(cls, doc: dict[str, Any], source: str) -> OrderMapping:
        def bad(key: str, why: str) -> InvalidArgument:
            return InvalidArgument(f"order mapping {source}: {key}: {why}")

        unknown = sorted(set(doc) - {"issuer", "fields", "formats", "other_ids", "values"})
        if unknown:
            raise bad(unknown[0], "unknown key (use issuer, fields, formats, other_ids, values)")
        issuer = doc.get("issuer", "")
        if not isinstance(issuer, str) or len(issuer) > 64:
            raise bad("issuer", "must be text of at most 64 characters")
        fields = _table(doc, "fields", bad)
        for target, path in fields.items():
            if target not in TARGETS:
                raise bad(f"fields.{target}", f"unknown field; known: {', '.join(TARGETS)}")
            if not isinstance(path, str) or not _PATH.match(path):
                raise bad(f"fields.{target}", "must be a dotted path like \"benh_nhan.ma_bn\"")
        for target in REQUIRED:
            if target not in fields:
                raise bad(f"fields.{target}", "is required")
        formats = _table(doc, "formats", bad)
        for key in sorted(set(formats) - {"name", "birth_date", "start"}):
            raise bad(f"formats.{key}", "unknown format (use name, birth_date, start)")
        name_style = formats.get("name", "dicom")
        if name_style not in NAME_STYLES:
            raise bad("formats.name", f"must be one of {', '.join(NAME_STYLES)}")
        for key in ("birth_date", "start"):
            value = formats.get(key, "yyyyMMdd" if key == "birth_date" else "iso")
            if not isinstance(value, str) or (value != "iso" and "yyyy" not in value):
                raise bad(f"formats.{key}", "must be \"iso\" or a pattern like \"dd/MM/yyyy\" or \"yyyyMMddHHmmss\"")
        other_ids = _table(doc, "other_ids", bad)
        for issuer_name, path in other_ids.items():
            if not isinstance(path, str) or not _PATH.match(path):
                raise bad(f"other_ids.{issuer_name}", "must be a dotted path")
        values: dict[str, dict[str, str]] = {}
        for target, table in _table(doc, "values", bad).items():
            if target not in VALUE_MAPS:
                raise bad(f"values.{target}", f"only {', '.join(VALUE_MAPS)} have value maps")
            if not isinstance(table, dict):
                raise bad(f"values.{target}", "must be a table of HIS value = our value")
            for his, ours in table.items():
                if str(ours).upper() not in VALUE_MAPS[target]:
                    raise bad(f"values.{target}.{his}", f"must map to one of {', '.join(VALUE_MAPS[target])}")
            values[target] = {fold(nfc(str(k)).strip()): str(v).upper() for k, v in table.items()}
        return cls(issuer=issuer.strip(), fields=dict(fields), name_style=name_style,
                   birth_date_format=formats.get("birth_date", "yyyyMMdd"),
                   start_format=formats.get("start", "iso"), other_ids=dict(other_ids), values=values,
                   source=source)  # fmt: skip

    def order(self, body: Any, default_issuer: str) -> OrderRequest:
        """The OrderRequest a posted JSON document means; InvalidOrder names the HIS's field."""
        if not isinstance(body, dict):
            raise InvalidOrder("the order must be a JSON object")
        text = {target: _text(body, path) for target, path in self.fields.items()}
        for target in REQUIRED:
            if not text[target]:
                raise InvalidOrder(f"{self.fields[target]} ({target.replace('_', ' ')}) is missing")
        for target in VALUE_MAPS:
            if text.get(target):
                text[target] = self._coded(target, text[target])
        start_date, start_time = text.get("start_date", ""), text.get("start_time", "")
        if text.get("start"):
            start_date, start_time = self._date(text["start"], "start", self.start_format, with_time=True)
        birth_date = ""
        if text.get("birth_date"):
            birth_date = self._date(text["birth_date"], "birth_date", self.birth_date_format)[0]
        patient = PatientDemographics(
            patient_id=text["patient_id"], issuer=text.get("patient_issuer", ""), name=self._name(text),
            birth_date=birth_date, sex=text.get("sex", ""),
            other_ids=tuple(OtherId(value, issuer) for issuer, path in self.other_ids.items()
                            if (value := _text(body, path))),
        )  # fmt: skip
        pregnancy = text.get("pregnancy_status", "")
        return OrderRequest(
            placer_issuer=self.issuer or default_issuer, placer_order_number=text["order_number"], patient=patient,
            filler_order_number=text.get("filler_order_number", ""),
            accession_number=text.get("accession_number", ""),
            study_instance_uid=text.get("study_instance_uid", ""),
            requested_procedure_id=text.get("requested_procedure_id", ""), sps_id=text.get("sps_id", ""),
            procedure_code=text.get("procedure_code", ""), procedure_scheme=text.get("procedure_scheme", ""),
            procedure_description=text.get("procedure_description", ""), modality=text.get("modality", ""),
            station_ae_title=text.get("station_ae_title", ""), station_name=text.get("station_name", ""),
            start_date=start_date, start_time=start_time,
            performing_physician=self._person(text.get("performing_physician", "")),
            referring_physician=self._person(text.get("referring_physician", "")),
            priority=text.get("priority", "") or "ROUTINE",
            pregnancy_status=int(pregnancy) if pregnancy else None, reason=text.get("reason", ""),
        )  # fmt: skip

    def _coded(self, target: str, value: str) -> str:
        table = self.values.get(target, {})
        mapped = table.get(fold(value))
        if mapped is not None:
            return mapped
        if value.upper() in VALUE_MAPS[target]:
            return value.upper()
        known = ", ".join(sorted(table)) or ", ".join(VALUE_MAPS[target])
        raise InvalidOrder(f"{self.fields[target]} ({target.replace('_', ' ')}): {value[:40]!r} is not one of "
                           f"{known} (the mapping's [values.{target}])")  # fmt: skip

    def _date(self, value: str, target: str, pattern: str, with_time: bool = False) -> tuple[str, str]:
        try:
            if pattern == "iso":
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if parsed.tzinfo is not None:
                    parsed = parsed.astimezone()  # the hospital's local time, as the worklist keeps it
            else:
                parsed = datetime.strptime(value, _strptime(pattern))
        except ValueError:
            raise InvalidOrder(f"{self.fields[target]} ({target.replace('_', ' ')}): {value[:40]!r} is not a "
                               f"date in the form {pattern}") from None  # fmt: skip
        return parsed.strftime("%Y%m%d"), parsed.strftime("%H%M%S") if with_time else ""

    def _name(self, text: dict[str, str]) -> str:
        if text.get("family_name") or text.get("given_name"):
            return f"{text.get('family_name', '')}^{text.get('given_name', '')}".rstrip("^")
        return self._person(text.get("patient_name", ""))

    def _person(self, value: str) -> str:
        """A person name in DICOM PN form; a full name in one field is split after its first word."""
        name = " ".join(value.split())
        if self.name_style == "full_name" and "^" not in name and " " in name:
            family, given = name.split(" ", 1)
            return f"{family}^{given}"
        return name


def _table(doc: dict[str, Any], key: str, bad: Any) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise bad(key, "must be a table")
    return value


def _strptime(pattern: str) -> str:
    out = pattern
    for token, directive in _TOKENS:
        out = out.replace(token, directive)
    return out


def _text(body: dict[str, Any], path: str) -> str:
    """The text at a dotted path ("benh_nhan.ma_bn", "dich_vu.0.ma"); "" when absent or null."""
    value: Any = body
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return ""
        if value is None:
            return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidOrder(f"{path} must be text or a number, not {type(value).__name__}")
    text = nfc(str(value)).strip()
    if len(text) > 1024:
        raise InvalidOrder(f"{path} is longer than 1024 characters")
    return text
