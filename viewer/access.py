"""Who may do what over HTTP: one table of roles per family of endpoints.

Every blueprint names its family once (``blueprint.before_request(allow("retrieve"))``);
the check is on the server, per request, whatever a page shows or hides.
Tokens carry a role like users do: ``emr`` for an EMR that shows images,
``his`` for a HIS that places orders. The two are kept apart on purpose (least
privilege): an order system needs no images, an image link needs no orders; a
product that does both gets two tokens.
Anonymous callers exist only when ``http.anonymous_read`` is on, and may only read.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import g

from archive import ArchiveError

#: The role of a caller let in without credentials (``http.anonymous_read``).
ANONYMOUS = "anonymous"

_READERS = frozenset({"admin", "radiologist", "technologist", "referrer", "emr", ANONYMOUS})

#: Which roles may use each family of endpoints.
ROLES: dict[str, frozenset[str]] = {
    # QIDO-RS: find patients' studies.
    "search": _READERS,
    # WADO-RS, WADO-URI, metadata, frames, rendered images, thumbnails.
    "retrieve": _READERS,
    # STOW-RS: new images into the archive (a scanned film, an outside CD, a modality over HTTP).
    "store": frozenset({"admin", "radiologist", "technologist"}),
    # The audit log and other administration.
    "admin": frozenset({"admin"}),
    # Orders from the HIS: /api/orders and FHIR /fhir (ServiceRequest, Patient).
    "orders": frozenset({"admin", "his"}),
    # The technologist's worklist pages: today's list, status, walk-in, unmatched studies.
    "worklist": frozenset({"admin", "radiologist", "technologist"}),
    # Writing reports: drafts, signing, amendments (signing also asks for the signer's PIN).
    "reports": frozenset({"admin", "radiologist"}),
    # Reading results by accession number: reports (a referrer sees final ones only), studies,
    # claim values, FHIR DiagnosticReport and ImagingStudy; the EMR's door.
    "results": frozenset({"admin", "radiologist", "technologist", "referrer", "emr"}),
    # Patient share links (film-free results, the QR code): make, list, revoke.
    "share": frozenset({"admin", "radiologist", "technologist"}),
}


class Forbidden(ArchiveError):
    http_status = 403


def check(family: str) -> None:
    """Raise Forbidden unless the current caller's role may use `family`."""
    role = g.principal.role
    if role not in ROLES[family]:
        who = "anonymous callers" if role == ANONYMOUS else f"the {role} role"
        raise Forbidden(f"{who} may not {_VERBS[family]}; ask an administrator for a role that may")


def allow(family: str) -> Callable[[], None]:
    """A before_request hook for a blueprint whose endpoints are all of `family`."""
    if family not in ROLES:
        raise ValueError(f"unknown endpoint family {family!r}")

    def hook() -> None:
        check(family)

    return hook


_VERBS = {
    "search": "search the archive",
    "retrieve": "retrieve images",
    "store": "store images",
    "admin": "use administration endpoints",
    "orders": "place or read orders (a his token does)",
    "worklist": "use the modality worklist",
    "reports": "write or sign reports (a radiologist does)",
    "results": "read reports and results",
    "share": "make or revoke patient share links",
}
