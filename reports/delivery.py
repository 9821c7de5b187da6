"""How a study's results went home with the patient: printed film, a link/QR code, or a DICOM CD.

The HIS bills the film-free price variant ("không in phim") from this, so
every choice is kept with its time and who made it; the latest one counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, insert, select

from archive import Origin
from archive.audit import audit_row
from archive.db import Database
from archive.errors import InvalidArgument, NotFound
from archive.models import AuditEvent, Study
from reports.models import StudyDelivery
from reports.types import DELIVERY_MODES

log = logging.getLogger(__name__)

_DELIVERY = cast(Table, StudyDelivery.__table__)
_S = cast(Table, Study.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)


@dataclass(frozen=True)
class Delivery:
    mode: str
    at: str
    actor: str


class Deliveries:
    """Delivery records per study."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, study_instance_uid: str, mode: str, origin: Origin) -> Delivery:
        if mode not in DELIVERY_MODES:
            raise InvalidArgument(f"delivery mode {mode!r} is not one of {', '.join(DELIVERY_MODES)} "
                                  "(film: printed film; link: film-free link or QR code; cd: DICOM CD)")  # fmt: skip
        now = datetime.now(UTC)
        with self.db.write() as conn:
            study_pk = conn.execute(select(_S.c.pk).where(_S.c.study_instance_uid == study_instance_uid)).scalar()
            if study_pk is None:
                raise NotFound(f"no study {study_instance_uid}")
            conn.execute(insert(_DELIVERY), {"study_pk": study_pk, "mode": mode, "at": now, "actor": origin.actor})
            conn.execute(insert(_AUDIT), audit_row(origin, "DELIVERY", "STUDY", study_instance_uid, mode))
        log.info("study %s: results delivered as %s (recorded by %s)", study_instance_uid, mode, origin.actor)
        return Delivery(mode, now.isoformat(), origin.actor)

    def latest(self, study_instance_uid: str) -> Delivery | None:
        with self.db.read() as conn:
            row = conn.execute(select(_DELIVERY).join(_S, _S.c.pk == _DELIVERY.c.study_pk)
                               .where(_S.c.study_instance_uid == study_instance_uid)
                               .order_by(_DELIVERY.c.pk.desc()).limit(1)).first()  # fmt: skip
        if row is None:
            return None
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
        return Delivery(row.mode, at.isoformat(), row.actor)
