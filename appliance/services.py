"""Building the archive and the DICOM service from the settings (shared by serve and workers)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.settings import Settings

if TYPE_CHECKING:
    from archive import Archive
    from dicom_scp import DicomConfig

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Something the operator must fix before the service can run; the message says what."""


def open_archive(settings: Settings) -> Archive:
    from archive import Archive  # imported here so `minipacs --help` stays fast

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(
            f"cannot create the data directory {settings.data_dir}: {exc.strerror or exc}. "
            "Choose another one with --data (or MINIPACS_DATA)."
        ) from exc
    try:
        return Archive.open(
            settings.database_url,
            settings.storage_url,
            reserve_bytes=settings["storage.reserve_mb"] * 2**20,
        )
    except Exception as exc:
        raise ServiceError(f"cannot open the archive in {settings.data_dir}: {exc}") from exc


def dicom_config(settings: Settings, spool_dir: Path | None = None, session_prefix: str = "") -> DicomConfig:
    from dicom_scp import DicomConfig

    return DicomConfig(
        ae_title=settings["dicom.ae_title"],
        host=settings["dicom.host"],
        port=settings["dicom.port"],
        max_pdu=settings["dicom.max_pdu"],
        max_associations=settings["dicom.max_associations"],
        acse_timeout=settings["dicom.acse_timeout"],
        dimse_timeout=settings["dicom.dimse_timeout"],
        network_timeout=settings["dicom.network_timeout"],
        registered_only=settings["dicom.calling_ae"] == "registered",
        check_called_ae=settings["dicom.check_called_ae"],
        spool_dir=spool_dir or settings.spool_dir,
        session_prefix=session_prefix,
    )
