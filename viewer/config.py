"""What the HTTP edge needs from the appliance's settings, as one typed object.

The viewer does not read minipacs.toml itself (dependencies point inward):
appliance/http.py builds this from the settings and hands it to create_app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import current_app


@dataclass(frozen=True)
class WebConfig:
    #: Let callers without credentials search and retrieve (never store or administer).
    #: Only for a trusted hospital LAN where the modality network is closed.
    anonymous_read: bool = False
    #: Origins (scheme://host:port) whose pages may call DICOMweb from a browser; "*" for any.
    cors_origins: tuple[str, ...] = ()
    #: Largest STOW-RS request body accepted, in bytes (413 above it).
    max_upload_bytes: int = 2048 << 20
    #: Minutes a browser session lasts without a request.
    session_minutes: int = 30
    #: Where a single box kept the signing key of browser sessions before it lived in the index
    #: (taken over once). None: a key of this process only, nothing shared.
    secret_file: Path | None = None
    #: Where STOW-RS parts wait for ingest (on the archive's disk); None: the system's temporary folder.
    spool_dir: Path | None = None
    #: Where rendered previews and thumbnails are cached; None: no cache.
    cache_dir: Path | None = None
    #: Upper bound of that cache, in bytes.
    cache_bytes: int = 512 << 20
    #: The JSON order API's field-mapping file (worklist.order_mapping); None: the bundled default.
    order_mapping: Path | None = None
    #: Days a patient's share link lasts unless its maker says otherwise (reports.share_link_days).
    share_link_days: int = 30
    #: Make (or reuse) a share link for the QR code when a report is signed (reports.share_on_final).
    share_on_final: bool = True
    #: Where patients' phones reach us (the QR code's link starts with it); "": the address the signer used.
    public_url: str = ""
    #: Listeners of this node that /healthz connects to: (name, host, port), e.g. ("dicom", "0.0.0.0", 11112).
    health_listeners: tuple[tuple[str, str, int], ...] = ()
    #: Free space the store keeps (storage.reserve_mb): /healthz fails below it.
    storage_reserve_bytes: int = 0


def web_config() -> WebConfig:
    """The configuration of the app answering the current request."""
    config: WebConfig = current_app.config["WEB"]
    return config
