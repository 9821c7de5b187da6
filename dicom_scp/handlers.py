"""DIMSE handlers: turn each request into an archive call and the result into a status.

Handlers make no decisions of their own (STYLE.md): the archive validates,
stores and matches; its errors carry their DIMSE status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from archive import (
    Archive,
    ArchiveError,
    Expected,
    InstanceRef,
    Origin,
    StoreStatus,
    query_from_identifier,
    require_unique_key,
)
from archive.metrics import observe_query
from dicom_scp import responses, status
from dicom_scp.associations import AssociationLog
from dicom_scp.contexts import PATIENT_ROOT, VERIFICATION, contexts_for_sending
from dicom_scp.sockets import tune_socket
from dicom_scp.transcode import fit_for_peer

log = logging.getLogger(__name__)

_QR_LEVEL = "00080052"
_RETRIEVE_AE = "00080054"


def handle_echo(event: Event) -> int:
    """C-ECHO (PS3.4 A.4): we are here."""
    return status.SUCCESS


def handle_store(event: Event, archive: Archive, associations: AssociationLog) -> int | Dataset:
    """C-STORE (PS3.4 B.2): hand the spooled instance to the archive, answer only once durable."""
    origin = associations.origin(event.assoc)
    started = time.perf_counter()
    request = cast(C_STORE, event.request)
    expected = Expected(
        sop_class_uid=str(event.context.abstract_syntax),
        sop_instance_uid=str(request.AffectedSOPInstanceUID or "") or None,
    )
    try:
        # The dataset was spooled to a file as it arrived (pynetdicom's
        # STORE_RECV_CHUNKED_DATASET), so even a 1 GB cine is never in memory.
        with open(event.dataset_path, "rb") as stream:
            result = archive.ingest(stream, origin, expected)
    except ArchiveError as exc:
        associations.count(event.assoc, "failed")
        log.warning("C-STORE %s from %s refused (0x%04X): %s",
                    request.AffectedSOPInstanceUID, origin, exc.dimse_status, exc.message)  # fmt: skip
        return status.with_comment(exc.dimse_status, exc.message)
    except Exception:
        associations.count(event.assoc, "failed")
        log.exception("C-STORE %s from %s failed", request.AffectedSOPInstanceUID, origin)
        # Out of resources tells the modality to try again later: nothing is lost.
        return status.with_comment(status.OUT_OF_RESOURCES, "internal error, please retry")
    associations.count(event.assoc, result.status.name.lower())
    log.info("C-STORE %s from %s: %s, %d KB in %.0f ms", result.sop_instance_uid, origin,
             result.status.value, result.size // 1024, (time.perf_counter() - started) * 1000)  # fmt: skip
    if result.status is StoreStatus.CONFLICT or result.warnings:
        return status.with_comment(status.WARNING_COERCION, result.comment)
    return status.SUCCESS


def handle_find(
    event: Event, archive: Archive, associations: AssociationLog, ae_title: str
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND (PS3.4 C.4.1): Patient Root and Study Root at every level."""
    origin = associations.origin(event.assoc)
    patient_root = str(event.request.AffectedSOPClassUID) in PATIENT_ROOT
    try:
        identifier = event.identifier
        query = query_from_identifier(identifier, patient_root)
    except ArchiveError as exc:
        log.warning("C-FIND from %s refused: %s", origin, exc.message)
        yield status.with_comment(exc.dimse_status, exc.message), None
        return
    except Exception as exc:
        log.warning("C-FIND from %s: undecodable identifier: %s", origin, exc)
        yield status.with_comment(status.UNABLE_TO_PROCESS, "cannot decode the identifier"), None
        return
    matches = 0
    started = time.perf_counter()
    try:
        transfer_syntax = event.context.transfer_syntax
        for attrs in archive.find_json(query):
            if event.is_cancelled:
                log.info("C-FIND from %s cancelled after %d matches", origin, matches)
                yield status.CANCEL, None
                return
            attrs[_QR_LEVEL] = {"vr": "CS", "Value": [query.level.name]}
            attrs[_RETRIEVE_AE] = {"vr": "AE", "Value": [ae_title]}
            matches += 1
            yield status.PENDING, responses.identifier(attrs, transfer_syntax)
    except ArchiveError as exc:
        log.warning("C-FIND from %s failed: %s", origin, exc.message)
        yield status.with_comment(exc.dimse_status, exc.message), None
        return
    except Exception:
        # Answer with our status rather than pynetdicom's 0xC311 for a handler error.
        log.exception("C-FIND from %s failed", origin)
        yield status.with_comment(status.UNABLE_TO_PROCESS, "internal error"), None
        return
    finally:
        # The audit trail records what was asked, values included ("who looked
        # for whom"); the log line names only the keys (no patient names in logs).
        keys = ", ".join(sorted(_keyword(t) for t in query.conditions)) or "everything"
        asked = "; ".join(f"{_keyword(t)}={_value(identifier, t)}" for t in sorted(query.conditions))
        archive.audit.record(origin, "QUERY", query.level.name, "", f"{matches} matches",
                             asked or "everything")  # fmt: skip
    elapsed = time.perf_counter() - started
    observe_query("C-FIND", elapsed)
    log.info("C-FIND %s level from %s on %s: %d matches in %.0f ms", query.level.name, origin,
             keys, matches, elapsed * 1000)  # fmt: skip


def handle_move(
    event: Event, archive: Archive, associations: AssociationLog
) -> Iterator[Any]:
    """C-MOVE (PS3.4 C.4.2): send the matching instances to a registered AE."""
    origin = associations.origin(event.assoc)
    destination_title = event.move_destination.decode("ascii", "replace").strip() \
        if isinstance(event.move_destination, bytes) else str(event.move_destination).strip()
    destination = archive.registry.get(destination_title)
    if destination is None or not destination.can_receive:
        why = "not registered" if destination is None else "registered without host and port"
        log.warning("C-MOVE from %s to %s refused: destination %s", origin, destination_title, why)
        archive.audit.record(origin, "RETRIEVE", "", "", "refused", f"unknown destination {destination_title}")
        yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
        return
    refs = _instances(event, archive, origin)
    if isinstance(refs, Dataset):
        # pynetdicom only sends a failure status after connecting to the
        # destination, which is registered, so this costs one short association.
        # It needs a context to propose: without one pynetdicom cannot associate
        # and answers 0xC515 with a traceback instead of our status.
        yield destination.host, destination.port, {"contexts": [build_context(VERIFICATION)]}
        yield 1
        yield refs, None
        return
    pairs = {(r.sop_class_uid, r.transfer_syntax_uid) for r in refs}
    # pynetdicom opens the association to the destination itself; catch it
    # when established to see which transfer syntaxes the destination took.
    peer: list[Association] = []
    yield destination.host, destination.port, {
        "contexts": contexts_for_sending(pairs),
        "evt_handlers": [(evt.EVT_CONN_OPEN, tune_socket),
                         (evt.EVT_ESTABLISHED, lambda e: peer.append(e.assoc))],
    }  # fmt: skip
    yield len(refs)
    yield from _send(event, archive, refs, origin, f"C-MOVE to {destination_title}",
                     lambda: peer[0] if peer else None)  # fmt: skip


def handle_get(event: Event, archive: Archive, associations: AssociationLog) -> Iterator[Any]:
    """C-GET (PS3.4 C.4.3): send the matching instances back on the same association."""
    origin = associations.origin(event.assoc)
    refs = _instances(event, archive, origin)
    if isinstance(refs, Dataset):
        yield 1  # a failure status is only sent once there are sub-operations
        yield refs, None
        return
    yield len(refs)
    yield from _send(event, archive, refs, origin, "C-GET", lambda: event.assoc)


def _instances(event: Event, archive: Archive, origin: Origin) -> list[InstanceRef] | Dataset:
    """The instances a retrieve identifier names, or the failure status to answer with."""
    patient_root = str(event.request.AffectedSOPClassUID) in PATIENT_ROOT
    try:
        query = query_from_identifier(event.identifier, patient_root)
        require_unique_key(query)
        return archive.instances(query)
    except ArchiveError as exc:
        log.warning("retrieve from %s refused: %s", origin, exc.message)
        archive.audit.record(origin, "RETRIEVE", "", "", "refused", exc.message)
        return status.with_comment(exc.dimse_status, exc.message)
    except Exception as exc:
        log.warning("retrieve from %s: undecodable identifier: %s", origin, exc)
        return status.with_comment(status.UNABLE_TO_PROCESS, "cannot decode the identifier")


def _send(
    event: Event, archive: Archive, refs: list[InstanceRef], origin: Origin, what: str,
    peer: Callable[[], Association | None],
) -> Iterator[tuple[int, Dataset | None]]:
    started = time.perf_counter()
    # Audited when asked, not when done: an aborted retrieve was still a read.
    per_study: dict[str, int] = {}
    for ref in refs:
        per_study[ref.study_instance_uid] = per_study.get(ref.study_instance_uid, 0) + 1
    for study, count in per_study.items():
        archive.audit.record(origin, "RETRIEVE", "STUDY", study, f"{count} instances requested", what)
    sent = 0
    for ref in refs:
        if event.is_cancelled:
            log.info("%s from %s cancelled after %d of %d", what, origin, sent, len(refs))
            yield status.CANCEL, None
            break
        try:
            dataset = archive.read_dataset(ref)
        except ArchiveError as exc:
            log.error("%s from %s: cannot read %s: %s", what, origin, ref.sop_instance_uid, exc.message)
            # A dataset pynetdicom cannot send counts as a failed sub-operation
            # and its UID goes into the Failed SOP Instance UID List.
            failed = Dataset()
            failed.SOPInstanceUID = ref.sop_instance_uid
            yield status.PENDING, failed
            continue
        sent += 1
        yield status.PENDING, fit_for_peer(dataset, peer())
    log.info("%s from %s: %d instances of %d studies handed over in %.1f s", what, origin,
             sent, len(per_study), time.perf_counter() - started)  # fmt: skip


def _value(identifier: Dataset, tag: int) -> str:
    element = identifier.get(tag)
    if element is None or element.VR == "SQ":
        return "(sequence)" if element is not None else ""
    return str(element.value)[:200]


def _keyword(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"
