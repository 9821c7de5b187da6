"""Worklist errors, each carrying its answer in every protocol that reaches it.

Like archive.errors: the HL7 edge reads the ACK code and the ERR-3 error code
(HL7 table 0357) off the error, the HTTP edge the status, the DIMSE edge
(MPPS) the status.
"""

from __future__ import annotations

from archive.errors import ArchiveError


class OrderError(ArchiveError):
    """An order or patient message the worklist refused; nothing was changed."""

    http_status = 400
    dimse_status = 0x0110  # Processing failure
    #: MSA-1 of the ACK: AE (application error: fix and resend) or AR (rejected).
    hl7_ack = "AE"
    #: ERR-3 (HL7 table 0357): 207 application internal error.
    hl7_code = "207"


class InvalidOrder(OrderError):
    """A required value is missing or malformed (no patient ID, a bad date, an unknown priority)."""

    hl7_code = "101"


class UnknownOrder(OrderError):
    """The order (or patient) the message refers to does not exist."""

    http_status = 404
    hl7_code = "204"  # unknown key identifier


class OrderConflict(OrderError):
    """The message contradicts what is stored (an accession number another order has)."""

    http_status = 409
    hl7_code = "205"  # duplicate key identifier


class InvalidTransition(OrderError):
    """A status change the step's state does not allow (cancel a completed exam, ...)."""

    http_status = 409
    dimse_status = 0x0110
    hl7_code = "207"


__all__ = ["InvalidOrder", "InvalidTransition", "OrderConflict", "OrderError", "UnknownOrder"]
