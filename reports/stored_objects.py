"""The objects reports keep in the archive's store (signed PDFs), for `minipacs fsck`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from sqlalchemy import Connection, Table, select

from archive.integrity import Reference
from reports.models import Report, ReportVersionRow

_REPORT = cast(Table, Report.__table__)
_VERSION = cast(Table, ReportVersionRow.__table__)


def pdf_references(conn: Connection) -> Iterator[Reference]:
    """Every signed version's PDF: its key and the SHA-256 recorded at signing (the size was not recorded)."""
    stmt = (select(_VERSION.c.pdf_key, _VERSION.c.pdf_sha256, _VERSION.c.number, _REPORT.c.accession_number)
            .join(_REPORT, _REPORT.c.pk == _VERSION.c.report_pk).where(_VERSION.c.pdf_key != "")
            .order_by(_VERSION.c.pk))  # fmt: skip
    for row in conn.execute(stmt):
        yield Reference(row.pdf_key, row.pdf_sha256, None, f"report PDF {row.accession_number} v{row.number}")
