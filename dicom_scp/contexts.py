"""Presentation contexts: which SOP classes and transfer syntaxes we accept and propose."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext

#: Everything is stored as received, so every standard transfer syntax is
#: accepted: uncompressed, deflate, JPEG (baseline, extended, lossless,
#: lossless SV1), JPEG-LS, JPEG 2000, HTJ2K, RLE and the video syntaxes.
#: The order is our preference when a peer proposes several syntaxes in one
#: context (pynetdicom accepts the first of ours the peer proposed): Explicit
#: VR Little Endian first and Implicit VR last, so a modality offering both
#: keeps the value representations, and a C-GET requestor receives objects
#: stored explicit as they are.
STORAGE_TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    *(UID(ts) for ts in AllTransferSyntaxes if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    ImplicitVRLittleEndian,
]

#: Query/retrieve and verification need only the uncompressed syntaxes.
PLAIN_TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID("1.2.840.10008.1.2.2"),  # Explicit VR Big Endian (retired, still sent)
    UID("1.2.840.10008.1.2.1.99"),  # Deflated Explicit VR Little Endian
]

STORAGE_SOP_CLASSES: list[UID] = [
    UID(cx.abstract_syntax) for cx in AllStoragePresentationContexts if cx.abstract_syntax
]

VERIFICATION = UID("1.2.840.10008.1.1")
#: Query/Retrieve information models (PS3.4 C.6): Patient Root and Study Root.
PATIENT_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
PATIENT_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.1.2")
PATIENT_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.1.3")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
PATIENT_ROOT = {PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET}
QUERY_RETRIEVE = [PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET,
                  STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET]  # fmt: skip
#: Basic Worklist Management (PS3.4 K): Modality Worklist Information Model - FIND;
#: Modality Performed Procedure Step (PS3.4 F.7).
MODALITY_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")
MODALITY_PERFORMED_PROCEDURE_STEP = UID("1.2.840.10008.3.1.2.3.3")
WORKLIST = [MODALITY_WORKLIST_FIND, MODALITY_PERFORMED_PROCEDURE_STEP]

# pynetdicom proposes at most 128 presentation contexts on one association.
MAX_PROPOSED_CONTEXTS = 128


def contexts_for_sending(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts to propose for sending instances stored as (SOP Class, Transfer Syntax).

    Each stored syntax gets a context of its own, so the peer can accept it
    exactly and the bytes go out unchanged; each SOP class also gets an
    uncompressed fallback for uncompressed objects.
    """
    contexts: list[PresentationContext] = []
    seen_classes: list[str] = []
    for sop_class, transfer_syntax in sorted(set(pairs)):
        contexts.append(build_context(sop_class, [transfer_syntax]))
        if sop_class not in seen_classes:
            seen_classes.append(sop_class)
    for sop_class in seen_classes:
        contexts.append(build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return contexts[:MAX_PROPOSED_CONTEXTS]


class _AcceptorContext(PresentationContext):
    """A supported context that copies cheaply.

    pynetdicom deep-copies the acceptor's contexts for every association it
    accepts; with every storage SOP class times every transfer syntax (about
    180 contexts, 7,000 UIDs) that took 45 ms of CPU per association, most of
    the time a modality waits for its A-ASSOCIATE-AC. UIDs are immutable
    strings: copying each context and its list of syntaxes is enough.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _AcceptorContext:
        new = object.__new__(_AcceptorContext)
        new.__dict__.update(self.__dict__)
        new._transfer_syntax = list(self._transfer_syntax)
        return new


def acceptor_contexts(contexts: Iterable[PresentationContext]) -> list[PresentationContext]:
    """`contexts` as the server should hold them (see _AcceptorContext)."""
    result: list[PresentationContext] = []
    for cx in contexts:
        fast = _AcceptorContext.__new__(_AcceptorContext)
        fast.__dict__.update(copy.deepcopy(cx).__dict__)
        result.append(fast)
    return result
