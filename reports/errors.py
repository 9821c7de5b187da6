"""Report errors, each carrying its HTTP answer (the edges read it off the error)."""

from __future__ import annotations

from archive.errors import ArchiveError


class ReportError(ArchiveError):
    """A report request refused; nothing was changed."""

    http_status = 400


class StaleReport(ReportError):
    """Someone else changed the report since the caller read it (optimistic locking)."""

    http_status = 409


class ReportStateError(ReportError):
    """The report's state does not allow this (edit a signed version, sign a cancelled one, ...)."""

    http_status = 409


class NotAllowedToSign(ReportError):
    """Only a radiologist signs, with their own signing certificate."""

    http_status = 403


__all__ = ["NotAllowedToSign", "ReportError", "ReportStateError", "StaleReport"]
