"""Sending a stored object to a peer that cannot take its transfer syntax.

Objects are stored and sent as received. When a C-MOVE destination or a
C-GET requestor accepted only uncompressed syntaxes for an object's SOP
class (dcmtk's storescp does by default, and so do many older
workstations), a compressed object is decompressed for that peer instead of
failing its sub-operation; the SOP Instance UID stays, as the change is
lossless (PS3.5 10). Uncompressed syntaxes pynetdicom converts by itself.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID
from pynetdicom.association import Association

log = logging.getLogger(__name__)

_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def fit_for_peer(dataset: Dataset, peer: Association | None) -> Dataset:
    """`dataset` as stored, or decompressed when that is the only way `peer` can take it."""
    if peer is None:
        return dataset
    sop_class = str(dataset.get("SOPClassUID", ""))
    stored = UID(str(dataset.file_meta.get("TransferSyntaxUID", "")))
    accepted = {str(cx.transfer_syntax[0]) for cx in peer.accepted_contexts
                if cx.abstract_syntax == sop_class and cx.transfer_syntax}  # fmt: skip
    if stored in accepted or not stored.is_compressed or not accepted & _UNCOMPRESSED:
        return dataset
    try:
        dataset.decompress(generate_instance_uid=False)
    except Exception as exc:  # no codec for it, or damaged pixel data
        log.warning("cannot decompress %s (%s) for a peer that accepts it only uncompressed: %s",
                    dataset.get("SOPInstanceUID", "?"), stored.name, exc)  # fmt: skip
        return dataset
    log.info("sending %s decompressed from %s: the peer did not accept it compressed",
             dataset.get("SOPInstanceUID", "?"), stored.name)  # fmt: skip
    return dataset
