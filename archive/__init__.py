"""The archive core: index, ingest, matching, retrieval, registry and audit.

No protocol code lives here: the DICOM, HTTP and HL7 edges all call these
services, so every edge behaves the same.
"""

from __future__ import annotations

from pydicom import config as _pydicom_config

from archive.errors import (
    ArchiveError,
    InvalidArgument,
    InvalidInstance,
    InvalidQuery,
    NotFound,
    SOPClassMismatch,
    StorageFull,
    StorageUnavailable,
)
from archive.ingest import Expected, StoreResult, StoreStatus
from archive.origin import Origin
from archive.query import InstanceRef, Level, Query, query_from_identifier, require_unique_key
from archive.registry import AERegistry, RemoteAE
from archive.service import Archive, Statistics

# Accept what modalities actually send: a value that breaks a VR rule is kept
# as received (and stored byte for byte) instead of producing warnings or
# refusing the image. Structural damage is still refused by archive.part10.
_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE

__all__ = [
    "AERegistry",
    "Archive",
    "ArchiveError",
    "Expected",
    "InstanceRef",
    "InvalidArgument",
    "InvalidInstance",
    "InvalidQuery",
    "Level",
    "NotFound",
    "Origin",
    "Query",
    "RemoteAE",
    "SOPClassMismatch",
    "Statistics",
    "StorageFull",
    "StorageUnavailable",
    "StoreResult",
    "StoreStatus",
    "query_from_identifier",
    "require_unique_key",
]
