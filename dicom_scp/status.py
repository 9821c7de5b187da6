"""DIMSE status codes we answer with (PS3.4 B.2.3, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; PS3.7 C)."""

from __future__ import annotations

from pydicom.dataset import Dataset

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
#: Storage warning: Coercion of Data Elements, our "stored, but look" status.
WARNING_COERCION = 0xB000
#: Sub-operations complete, one or more failures or warnings (C-MOVE/C-GET).
WARNING_SUBOPERATIONS = 0xB000
OUT_OF_RESOURCES = 0xA700
#: C-MOVE/C-GET: out of resources, unable to perform sub-operations.
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
#: C-FIND/C-MOVE/C-GET: unable to process.
UNABLE_TO_PROCESS = 0xC001

# ErrorComment is LO: at most 64 characters.
_COMMENT_LIMIT = 64


def with_comment(status: int, comment: str) -> Dataset:
    """A status dataset carrying an Error Comment (0000,0902) for the peer's log."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment[:_COMMENT_LIMIT]
    return ds
