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


class SigningLocked(ReportError):
    """Too many wrong signing PINs in a row: signing waits (a guessed PIN would forge signatures)."""

    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


__all__ = ["NotAllowedToSign", "ReportError", "ReportStateError", "SigningLocked", "StaleReport"]
