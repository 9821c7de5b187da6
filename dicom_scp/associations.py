"""Association bookkeeping: who called, whether they may, and what they did.

One log line when an association opens and one when it ends, with a summary
of what was stored, so the administrator can read who sent what from the log.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field

from pynetdicom.association import Association
from pynetdicom.events import Event

from archive import Origin
from archive.registry import AERegistry

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    origin: Origin
    counts: Counter[str] = field(default_factory=Counter)


class AssociationLog:
    """Tracks open associations and enforces the calling-AE policy."""

    def __init__(self, registry: AERegistry, registered_only: bool, session_prefix: str = "") -> None:
        self._registry = registry
        self.registered_only = registered_only
        self._prefix = session_prefix
        self._entries: weakref.WeakKeyDictionary[Association, _Entry] = weakref.WeakKeyDictionary()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def origin(self, assoc: Association) -> Origin:
        entry = self._entries.get(assoc)
        if entry is None:
            return self._new_entry(assoc).origin
        return entry.origin

    def count(self, assoc: Association, outcome: str) -> None:
        entry = self._entries.get(assoc)
        if entry is not None:
            entry.counts[outcome] += 1

    def _new_entry(self, assoc: Association) -> _Entry:
        with self._lock:
            entry = self._entries.get(assoc)
            if entry is None:
                primitive = assoc.requestor.primitive
                title = primitive.calling_ae_title if primitive is not None else assoc.requestor.ae_title
                entry = _Entry(Origin(
                    actor=str(title).strip(),
                    address=str(assoc.requestor.address),
                    via="DIMSE",
                    session=f"{self._prefix}a{next(self._ids)}",
                ))  # fmt: skip
                self._entries[assoc] = entry
            return entry

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: reject unknown callers before negotiation when registered-only."""
        origin = self.origin(event.assoc)
        if not self.registered_only:
            return
        primitive = event.assoc.requestor.primitive
        called = str(primitive.called_ae_title).strip() if primitive is not None else ""
        allowed, reason = self._registry.is_allowed(origin.actor, origin.address)
        if not allowed:
            log.warning("association %s from %s to %s rejected: %s", origin.session, origin,
                        called, reason)  # fmt: skip
            # Rejected permanent, by the service user, calling AE title not recognised.
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            # As pynetdicom does after its own rejections: wait until the DUL has
            # sent the A-ASSOCIATE-RJ and the peer has closed. Without this the
            # socket is shut as soon as this handler returns, the reject is
            # never sent, and the peer only sees the connection drop.
            event.assoc.kill()

    def on_accepted(self, event: Event) -> None:
        origin = self.origin(event.assoc)
        log.info("association %s from %s accepted", origin.session, origin)
        if self._registry.get(origin.actor) is not None:
            self._registry.seen(origin.actor)

    def on_ended(self, event: Event) -> None:
        """EVT_RELEASED / EVT_ABORTED: one summary line."""
        entry = self._entries.get(event.assoc)
        if entry is None:
            return
        how = "released" if event.event.name == "EVT_RELEASED" else "aborted"
        summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(entry.counts.items()))
        log.info("association %s from %s %s%s", entry.origin.session, entry.origin, how,
                 f": {summary}" if summary else "")  # fmt: skip
