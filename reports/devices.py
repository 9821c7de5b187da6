"""The device registry: each modality's device code (MA_MAY) for the health-insurance claim, by AE title.

QĐ 130/QĐ-BYT (as amended by QĐ 4750/QĐ-BYT), XML3 ``MA_MAY``: the machine
that performed a service, written ``XX.n.YYYYY.Z`` -- XX the device type
(XQ X-quang, CL CT, SA siêu âm, MRI cộng hưởng từ, NS nội soi, ...), n the
funding source digit (nguồn kinh phí), YYYYY the 5-digit facility code (mã cơ
sở KCB) and Z the machine's serial number.

An administrator sets the code per modality AE title (``minipacs device
add``): an "admin" entry. Until then, the first image of every new study a
modality sends over DICOM pre-fills an "auto" entry from its Device Serial
Number (0018,1000), the device type its Modality implies and the facility
code and funding digit of the settings (``reports.facility_code``,
``reports.device_funding``). An auto entry follows the serial the modality
sends; an admin entry is never overwritten by what a modality sends.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Row, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from archive.attributes import text
from archive.audit import AuditLog
from archive.db import Database
from archive.errors import InvalidArgument, NotFound
from archive.index_writer import NewStudy
from archive.origin import Origin
from archive.registry import check_ae_title
from reports.models import Device

if TYPE_CHECKING:
    from archive import Archive

log = logging.getLogger(__name__)

_DEVICE = cast(Table, Device.__table__)

ADMIN, AUTO = "admin", "auto"

#: Device type (XX) of each DICOM Modality (PS3.3 C.7.3.1.1.1). Modalities not listed have no type we can name.
DEVICE_TYPES = {
    "CT": "CL",
    "CR": "XQ", "DX": "XQ", "DR": "XQ", "MG": "XQ", "XA": "XQ", "RF": "XQ", "PX": "XQ", "IO": "XQ", "RG": "XQ",
    "US": "SA",
    "MR": "MRI",
    "ES": "NS",
}  # fmt: skip

_CODE = re.compile(r"^(?P<type>[A-Z]{2,4})\.(?P<funding>\d)\.(?P<facility>\d{5})\.(?P<serial>[A-Za-z0-9-]{1,40})$")
_SERIAL = re.compile(r"^[A-Za-z0-9-]{1,40}$")
#: Column widths of reports.models.Device (a code's serial is at most 40, so a code fits in 64).
_MAX_SERIAL, _MAX_MODALITY = 64, 16


@dataclass(frozen=True)
class DeviceEntry:
    """One modality in the registry. `device_code` is "" for an auto entry that could not be completed."""

    ae_title: str
    device_code: str
    modality: str
    serial_number: str
    description: str
    #: "admin" (a person set the code) or "auto" (pre-filled from what the modality sent).
    source: str
    updated_at: datetime


def device_type_for(modality: str) -> str:
    """The device type (XX of a device code) of a DICOM Modality; "" when there is none."""
    return DEVICE_TYPES.get(modality.strip().upper(), "")


def check_device_code(value: str) -> str:
    """The device code in its canonical form (type letters upper case), or InvalidArgument saying what is wrong."""
    code = value.strip()
    parts = code.split(".")
    if len(parts) == 4:
        parts[0] = parts[0].upper()
        code = ".".join(parts)
    if _CODE.match(code):
        return code
    example = "e.g. XQ.1.12345.SN001 (X-quang, funding 1, facility 12345, serial SN001)"
    if len(parts) != 4:
        raise InvalidArgument(f"device code {value!r} is not XX.n.YYYYY.Z (four parts separated by dots), {example}")
    kind, funding, facility, serial = parts
    if not re.fullmatch(r"[A-Z]{2,4}", kind):
        raise InvalidArgument(f"device code {value!r}: the device type {kind!r} must be 2-4 letters "
                              "(XQ X-quang, CL CT, SA siêu âm, MRI, NS nội soi, ...)")  # fmt: skip
    if not re.fullmatch(r"\d", funding):
        raise InvalidArgument(f"device code {value!r}: the funding source {funding!r} must be one digit "
                              "(nguồn kinh phí, e.g. 1)")  # fmt: skip
    if not re.fullmatch(r"\d{5}", facility):
        raise InvalidArgument(f"device code {value!r}: the facility code {facility!r} must be 5 digits "
                              "(mã cơ sở KCB)")  # fmt: skip
    raise InvalidArgument(f"device code {value!r}: the serial {serial!r} must be 1-40 letters, digits or '-'")


def auto_code(modality: str, serial_number: str, facility_code: str, funding_digit: str) -> str:
    """The device code pre-filled from what a modality sent; "" when a part is missing or not usable as is.

    A serial with other characters (spaces, '/') is not rewritten: a made-up
    code on a claim is worse than none, and the claim's warning says how to set one.
    """
    kind = device_type_for(modality)
    serial = serial_number.strip()
    if not kind or not _SERIAL.match(serial) or not re.fullmatch(r"\d{5}", facility_code):
        return ""
    if not re.fullmatch(r"\d", funding_digit):
        return ""
    return f"{kind}.{funding_digit}.{facility_code}.{serial}"


class DeviceRegistry:
    """Set, list and remove device codes; pre-fill them from arriving studies."""

    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self._db = db
        self._audit = audit

    def set(self, ae_title: str, device_code: str, *, modality: str = "", serial_number: str = "",
            description: str = "", actor: Origin | str) -> DeviceEntry:  # fmt: skip
        """Set the device code of a modality AE title (an "admin" entry, replacing whatever was there)."""
        title = check_ae_title(ae_title)
        code = check_device_code(device_code)
        modality = modality.strip().upper()
        if len(modality) > _MAX_MODALITY or not re.fullmatch(r"[A-Z0-9_]*", modality):
            raise InvalidArgument(f"modality {modality!r} is not a DICOM Modality like CT, DX, US, MR")
        serial = serial_number.strip() or code.rsplit(".", 1)[1]
        if len(serial) > _MAX_SERIAL or not serial.isprintable():
            raise InvalidArgument(f"serial number {serial_number!r}: at most {_MAX_SERIAL} printable characters")
        entry = DeviceEntry(title, code, modality, serial, description.strip(), ADMIN, datetime.now(UTC))
        with self._db.write() as conn:
            done = conn.execute(update(_DEVICE).where(_DEVICE.c.ae_title == title).values(_columns(entry))).rowcount
            if not done:
                conn.execute(insert(_DEVICE), [asdict(entry)])
        self._record(actor, "DEVICE_SET", title, f"{code} ({'changed' if done else 'added'})")
        log.info("device %s of AE %s set by %s", code, title, _origin(actor))
        return entry

    def get(self, ae_title: str) -> DeviceEntry | None:
        with self._db.read() as conn:
            return self.get_in(conn, ae_title)

    def get_in(self, conn: Connection, ae_title: str) -> DeviceEntry | None:
        """`get` inside the caller's transaction."""
        row = conn.execute(select(_DEVICE).where(_DEVICE.c.ae_title == ae_title.strip())).first()
        return _entry(row) if row else None

    def list(self) -> list[DeviceEntry]:
        with self._db.read() as conn:
            return [_entry(row) for row in conn.execute(select(_DEVICE).order_by(_DEVICE.c.ae_title))]

    def remove(self, ae_title: str, actor: Origin | str) -> None:
        title = check_ae_title(ae_title)
        with self._db.write() as conn:
            if conn.execute(delete(_DEVICE).where(_DEVICE.c.ae_title == title)).rowcount == 0:
                raise NotFound(f"AE {title} has no device code")
        self._record(actor, "DEVICE_REMOVE", title, "removed")
        log.info("device of AE %s removed by %s", title, _origin(actor))

    def observe(self, conn: Connection, ae_title: str, modality: str, serial_number: str, facility_code: str,
                funding_digit: str) -> DeviceEntry | None:  # fmt: skip
        """Note what a modality sent, in the caller's transaction: pre-fill or update its "auto" entry.

        Returns the entry as it now is (None when nothing could be noted: no
        serial, or an AE title we cannot store). An "admin" entry is left as
        it is; a serial that disagrees with it is logged for the administrator.
        """
        title, serial = ae_title.strip(), serial_number.strip()
        modality = modality.strip().upper()[:_MAX_MODALITY]
        try:
            title = check_ae_title(title)
        except InvalidArgument:
            return None
        if not serial or len(serial) > _MAX_SERIAL:
            return None
        existing = self.get_in(conn, title)
        if existing is not None and existing.source == ADMIN:
            if existing.serial_number != serial:
                log.warning("AE %s sends Device Serial Number %r, but its device code %s was set for serial %r: "
                            "if the code is right, record the serial it sends with `minipacs device add %s %s "
                            "--serial ...`", title, serial, existing.device_code, existing.serial_number, title,
                            existing.device_code)  # fmt: skip
            return existing
        code = auto_code(modality, serial, facility_code, funding_digit)
        entry = DeviceEntry(title, code, modality, serial, existing.description if existing else "", AUTO,
                            datetime.now(UTC))  # fmt: skip
        if existing is not None:
            if (existing.device_code, existing.modality, existing.serial_number) == (code, modality, serial):
                return existing
            conn.execute(update(_DEVICE).where(_DEVICE.c.ae_title == title).values(_columns(entry)))
            log.info("device of AE %s updated from what it sent: %s", title, code or f"serial {serial}, no code")
            return entry
        try:
            with conn.begin_nested():  # two first studies at once (PostgreSQL): the other one wins
                conn.execute(insert(_DEVICE), [asdict(entry)])
        except IntegrityError:
            return self.get_in(conn, title)
        log.info("device of AE %s pre-filled from what it sent: %s", title, code or f"serial {serial}, no code")
        return entry

    def observe_ingest(self, archive: Archive, facility_code: str, funding_digit: str) -> None:
        """Pre-fill entries from the first image of every new study a modality sends (Archive.add_study_hook).

        Only DICOM senders: there the origin's actor is the calling AE title
        (for STOW-RS and imports it is a user or "import").
        """

        def observe_study(conn: Connection, study: NewStudy) -> None:
            if study.origin.via != "DIMSE":
                return
            serial = text(study.record.source, "DeviceSerialNumber")
            if serial:
                self.observe(conn, study.origin.actor, study.record.series.modality, serial, facility_code,
                             funding_digit)  # fmt: skip

        archive.add_study_hook(observe_study)

    def _record(self, actor: Origin | str, action: str, ae_title: str, detail: str) -> None:
        if self._audit is not None:
            self._audit.record(_origin(actor), action, "DEVICE", ae_title, "done", detail)


def _columns(entry: DeviceEntry) -> dict[str, Any]:
    """The row values of `entry` but its key."""
    values = asdict(entry)
    del values["ae_title"]
    return values


def _origin(actor: Origin | str) -> Origin:
    return actor if isinstance(actor, Origin) else Origin(actor, "", "API")


def _entry(row: Row[Any]) -> DeviceEntry:
    updated: datetime = row.updated_at
    if updated.tzinfo is None:  # SQLite hands DateTime(timezone=True) back without its zone; it is UTC
        updated = updated.replace(tzinfo=UTC)
    return DeviceEntry(row.ae_title, row.device_code, row.modality, row.serial_number, row.description, row.source,
                       updated)  # fmt: skip


__all__ = ["ADMIN", "AUTO", "DEVICE_TYPES", "DeviceEntry", "DeviceRegistry", "auto_code", "check_device_code",
           "device_type_for"]  # fmt: skip
