"""DIMSE handlers of the worklist: MWL C-FIND (PS3.4 K) and MPPS N-CREATE/N-SET (PS3.4 F.7).

Thin, like dicom_scp.handlers: decode, call worklist.mwl / worklist.mpps,
answer with the status the error carries. A bad request gets a status,
never an aborted association.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from pynetdicom.events import Event

from archive import ArchiveError
from archive.metrics import observe_query
from dicom_scp import responses, status
from dicom_scp.associations import AssociationLog
from dicom_scp.contexts import MODALITY_PERFORMED_PROCEDURE_STEP, MODALITY_WORKLIST_FIND
from worklist import mwl
from worklist.mpps import MppsError, PerformedSteps
from worklist.service import Worklist

log = logging.getLogger(__name__)

__all__ = ["MODALITY_WORKLIST_FIND", "handle_mwl_find", "handle_n_create", "handle_n_set"]


def handle_mwl_find(event: Event, worklist: Worklist, associations: AssociationLog,
                    ascii_stations: frozenset[str]) -> Iterator[tuple[int | Dataset, Dataset | None]]:  # fmt: skip
    """MWL C-FIND (PS3.4 K.4.1): one pending response per scheduled step that matches."""
    origin = associations.origin(event.assoc)
    try:
        query = mwl.parse_query(event.identifier)
    except ArchiveError as exc:
        log.warning("MWL C-FIND from %s refused: %s", origin, exc.message)
        yield status.with_comment(exc.dimse_status, exc.message), None
        return
    except Exception as exc:
        log.warning("MWL C-FIND from %s: undecodable identifier: %s", origin, exc)
        yield status.with_comment(status.UNABLE_TO_PROCESS, "cannot decode the identifier"), None
        return
    ascii_only = origin.actor in ascii_stations
    matches = 0
    started = time.perf_counter()
    try:
        transfer_syntax = event.context.transfer_syntax
        for attrs in mwl.find(worklist.db, query, ascii_only):
            if event.is_cancelled:
                log.info("MWL C-FIND from %s cancelled after %d matches", origin, matches)
                yield status.CANCEL, None
                return
            matches += 1
            yield status.PENDING, responses.identifier(attrs, transfer_syntax)
    except ArchiveError as exc:
        log.warning("MWL C-FIND from %s failed: %s", origin, exc.message)
        yield status.with_comment(exc.dimse_status, exc.message), None
        return
    except Exception:
        log.exception("MWL C-FIND from %s failed", origin)
        yield status.with_comment(status.UNABLE_TO_PROCESS, "internal error"), None
        return
    finally:
        keys = ", ".join(query.keywords()) or "everything"
        worklist.archive.audit.record(origin, "QUERY", "WORKLIST", "", f"{matches} matches", keys)
    elapsed = time.perf_counter() - started
    observe_query("MWL", elapsed)
    log.info("MWL C-FIND from %s on %s%s: %d matches in %.0f ms", origin, keys,
             " (ASCII)" if ascii_only else "", matches, elapsed * 1000)  # fmt: skip


def handle_n_create(event: Event, steps: PerformedSteps,
                    associations: AssociationLog) -> tuple[int | Dataset, Dataset | None]:  # fmt: skip
    """MPPS N-CREATE (PS3.4 F.7.2.1)."""
    origin = associations.origin(event.assoc)
    request = cast(N_CREATE, event.request)
    if str(request.AffectedSOPClassUID) != MODALITY_PERFORMED_PROCEDURE_STEP:
        return status.with_comment(0x0118, "only MPPS instances are created here"), None  # No such SOP Class
    try:
        attrs = event.attribute_list
        requested = request.AffectedSOPInstanceUID
        result = steps.create(str(requested) if requested else None, attrs, origin)
    except MppsError as exc:
        log.warning("MPPS N-CREATE from %s refused (0x%04X): %s", origin, exc.dimse_status, exc.message)
        return _failure(exc, with_attribute=False), None
    except ArchiveError as exc:
        log.warning("MPPS N-CREATE from %s refused (0x%04X): %s", origin, exc.dimse_status, exc.message)
        return status.with_comment(exc.dimse_status, exc.message), None
    except Exception:
        log.exception("MPPS N-CREATE from %s failed", origin)
        return status.with_comment(0x0110, "internal error"), None
    reply = Dataset()
    if not requested:
        reply.AffectedSOPInstanceUID = result.sop_instance_uid  # pynetdicom moves it to the response
    return status.SUCCESS, reply


def handle_n_set(event: Event, steps: PerformedSteps,
                 associations: AssociationLog) -> tuple[int | Dataset, Dataset | None]:  # fmt: skip
    """MPPS N-SET (PS3.4 F.7.2.2)."""
    origin = associations.origin(event.assoc)
    request = cast(N_SET, event.request)
    if str(request.RequestedSOPClassUID) != MODALITY_PERFORMED_PROCEDURE_STEP:
        return status.with_comment(0x0118, "only MPPS instances are set here"), None
    try:
        modifications = event.modification_list
        steps.set(str(request.RequestedSOPInstanceUID or ""), modifications, origin)
    except MppsError as exc:
        log.warning("MPPS N-SET from %s refused (0x%04X): %s", origin, exc.dimse_status, exc.message)
        return _failure(exc), None
    except ArchiveError as exc:
        log.warning("MPPS N-SET from %s refused (0x%04X): %s", origin, exc.dimse_status, exc.message)
        return status.with_comment(exc.dimse_status, exc.message), None
    except Exception:
        log.exception("MPPS N-SET from %s failed", origin)
        return status.with_comment(0x0110, "internal error"), None
    return status.SUCCESS, Dataset()


def _failure(exc: MppsError, with_attribute: bool = True) -> Dataset:
    """The status with Error Comment, Error ID and (N-SET only, PS3.7 10.3.3) the attribute at fault."""
    ds = status.with_comment(exc.dimse_status, exc.message)
    if exc.error_id is not None:
        ds.ErrorID = exc.error_id
    if with_attribute and exc.attribute is not None:
        ds.AttributeIdentifierList = [exc.attribute]
    return ds
