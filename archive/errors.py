"""Archive errors, each carrying its answer in every protocol we speak.

One table, translated at each edge (see STYLE.md "Errors"): an edge never
decides a status code itself, it reads it off the error.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """Base class: a request the archive refused, with a message fit for the client."""

    #: HTTP status for the HTTP edge.
    http_status: int = 500
    #: DIMSE status for C-STORE (and the other DIMSE services where it applies).
    dimse_status: int = 0xC000
    #: FailureReason (0008,1197) for STOW-RS.
    stow_reason: int = 0x0110

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInstance(ArchiveError):
    """The object is not a DICOM instance we can index (malformed, truncated, bad UIDs)."""

    http_status = 400
    dimse_status = 0xC000  # Cannot understand
    stow_reason = 0xC000


class SOPClassMismatch(ArchiveError):
    """The dataset's SOP Class or Instance is not the one the request announced."""

    http_status = 400
    dimse_status = 0xA900  # Data Set does not match SOP Class
    stow_reason = 0xA900


class InvalidQuery(ArchiveError):
    """A query key or value the matching engine cannot use."""

    http_status = 400
    dimse_status = 0xA900  # Identifier does not match SOP Class (PS3.4 C.4.1.1.4)
    stow_reason = 0x0110


class NotFound(ArchiveError):
    """The requested patient, study, series, instance or AE does not exist."""

    http_status = 404
    dimse_status = 0xA801  # only used for move destinations on the DIMSE side
    stow_reason = 0x0110


class StorageFull(ArchiveError):
    """The object store has no space left: the write was undone."""

    http_status = 507
    dimse_status = 0xA700  # Out of resources
    stow_reason = 0xA700


class StorageUnavailable(ArchiveError):
    """The object store or the index failed for a reason other than space."""

    http_status = 503
    dimse_status = 0xA700  # Out of resources
    stow_reason = 0x0110  # Processing failure


class InvalidArgument(ArchiveError):
    """A management request (AE registry, configuration) with a bad value."""

    http_status = 400
    dimse_status = 0xC000
    stow_reason = 0x0110
