"""What a signed report sends out: HL7 ORU^R01 to the EMR, the DICOM SR and PDF into its study.

Both are queued in the durable outbox (worklist.outbox) inside the
transaction that signs the version (`on_final` is one of the service's
final listeners), so they exist exactly when the report is final. The
outbox sender then delivers them: the ORU over MLLP until the EMR's ACK
(destination "emr"), the DICOM objects by ingesting them here (destination
"archive", `store_dicom`). A failure of either is retried with backoff and
shown by `minipacs outbox list`; it never undoes the signature.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Connection, Table, select, update

from archive import Origin
from archive.errors import NotFound
from reports.dicom_sr import pdf_uids, store_report_objects
from reports.models import ReportVersionRow
from reports.oru import build_oru
from reports.service import Reports
from reports.types import Hospital, ReportView
from worklist.outbox import DeliveryError, enqueue

log = logging.getLogger(__name__)

VERSION = cast(Table, ReportVersionRow.__table__)

#: Outbox destinations: the EMR's MLLP listener, and this archive.
EMR, ARCHIVE = "emr", "archive"


@dataclass(frozen=True)
class OutputConfig:
    hospital: Hospital
    #: Send ORU^R01 to the EMR (reports.emr is set).
    emr: bool = False
    sending_application: str = "MINIPACS"
    emr_application: str = "EMR"
    emr_facility: str = ""
    #: Carry the signed PDF in the ORU (an ED OBX).
    oru_pdf: bool = False
    #: Store a DICOM SR and/or an Encapsulated PDF into the study.
    dicom_sr: bool = True
    dicom_pdf: bool = True

    @staticmethod
    def dicom_kinds(setting: str) -> tuple[bool, bool]:
        """reports.dicom ("sr,pdf", "sr", "pdf", "") as (sr, pdf); ValueError names a bad word."""
        words = {w.strip().lower() for w in setting.split(",") if w.strip()}
        unknown = sorted(words - {"sr", "pdf"})
        if unknown:
            raise ValueError(f"reports.dicom: {unknown[0]!r} is not sr or pdf (e.g. \"sr,pdf\", or \"\" for none)")
        return "sr" in words, "pdf" in words


class ReportOutputs:
    """Queues a signed version's outputs, and stores its DICOM objects when the outbox says so."""

    def __init__(self, reports: Reports, config: OutputConfig) -> None:
        self.reports = reports
        self.config = config

    def attach(self) -> ReportOutputs:
        """Queue outputs from now on, whenever a version is signed."""
        self.reports.final_listeners.append(self.on_final)
        return self

    def on_final(self, conn: Connection, view: ReportView, origin: Origin) -> None:
        """A final listener: runs inside the signing transaction."""
        subject = view.accession_number
        if self.config.emr:
            pdf = _pdf_in(conn, self.reports, view) if self.config.oru_pdf else None
            payload = build_oru(view, sending_application=self.config.sending_application,
                                sending_facility=self.config.hospital.facility_code or self.config.hospital.name,
                                receiving_application=self.config.emr_application,
                                receiving_facility=self.config.emr_facility,
                                control_id=f"R{view.id}V{view.version.number}", now=datetime.now(UTC), pdf=pdf)  # fmt: skip
            enqueue(conn, EMR, "ORU^R01", subject, payload)
        if self.config.dicom_sr or self.config.dicom_pdf:
            job = {"report": view.id, "version": view.version.number}
            enqueue(conn, ARCHIVE, "REPORT DICOM", subject, json.dumps(job).encode())

    def store_dicom(self, payload: bytes) -> str:
        """The outbox handler of ARCHIVE: the SR and PDF of one version, ingested (idempotent)."""
        try:
            job = json.loads(payload)
            report_id, number = int(job["report"]), int(job["version"])
        except (ValueError, KeyError, TypeError):
            raise DeliveryError("not a report job") from None
        try:
            view = self.reports.get_by_id(report_id).at_version(number)
        except (NotFound, KeyError):
            raise DeliveryError(f"report {report_id} version {number} is gone") from None
        pdf = self.reports.pdf(view.accession_number, number) if self.config.dicom_pdf else None
        results = store_report_objects(self.reports.archive, view, self.config.hospital, sr=self.config.dicom_sr,
                                       pdf=pdf)  # fmt: skip
        pdf_uid = pdf_uids(view)[1] if pdf is not None else ""
        uids = {"sr_sop_instance_uid": "", "pdf_sop_instance_uid": ""}
        for result in results:
            key = "pdf_sop_instance_uid" if result.sop_instance_uid == pdf_uid else "sr_sop_instance_uid"
            uids[key] = result.sop_instance_uid
        with self.reports.db.write() as conn:
            conn.execute(update(VERSION).where(VERSION.c.report_pk == report_id, VERSION.c.number == number)
                         .values(**{k: v for k, v in uids.items() if v}))  # fmt: skip
        return "stored " + " and ".join(k.split("_")[0].upper() for k, v in uids.items() if v)


def _pdf_in(conn: Connection, reports: Reports, view: ReportView) -> bytes:
    """The signed PDF of the version being signed (its row is not committed yet: read it on `conn`)."""
    key: str = conn.execute(select(VERSION.c.pdf_key).where(VERSION.c.report_pk == view.id,
                                                       VERSION.c.number == view.version.number)).scalar_one()  # fmt: skip
    with reports.archive.objects.open(key) as f:
        return f.read()


__all__ = ["ARCHIVE", "EMR", "OutputConfig", "ReportOutputs"]
