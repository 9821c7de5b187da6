"""Building the archive and the DICOM service from the settings (shared by serve and workers)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from appliance.settings import Settings

if TYPE_CHECKING:
    from archive import Archive, ArchiveError
    from dicom_scp import DicomConfig
    from worklist.service import Worklist

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Something the operator must fix before the service can run; the message says what."""


def open_archive(settings: Settings, upgrade: bool = True) -> Archive:
    """Open the archive the settings name; `upgrade` brings the index schema up to date."""
    from archive import Archive  # imported here so `minipacs --help` stays fast
    from storage import StorageError, StorageURLError

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(
            f"cannot create the data directory {settings.data_dir}: {exc.strerror or exc}. "
            "Choose another one with --data (or MINIPACS_DATA)."
        ) from exc
    try:
        archive = Archive.open(
            settings.database_url,
            settings.storage_url,
            reserve_bytes=settings["storage.reserve_mb"] * 2**20,
            upgrade=upgrade,
            access_key=settings["storage.access_key"],
            secret_key=settings["storage.secret_key"],
            create_bucket=settings["storage.create_bucket"],
        )
    except (StorageError, StorageURLError) as exc:
        raise ServiceError(
            f"cannot use the object store of storage.url = {settings.storage_url!r} "
            f"(from {settings.sources['storage.url']}): {exc}"
        ) from exc
    except Exception as exc:
        raise ServiceError(f"cannot open the archive in {settings.data_dir}: {exc}") from exc
    try:
        # Every way in (DICOM workers, STOW in the HTTP workers, `minipacs import`)
        # reconciles new studies with the orders (worklist.reconcile).
        open_worklist(archive, settings).reconcile_ingest()
        # Modalities' Device Serial Numbers pre-fill the device codes of the claim (MA_MAY).
        from reports.devices import DeviceRegistry

        DeviceRegistry(archive.db, archive.audit).observe_ingest(
            archive, settings["reports.facility_code"], settings["reports.device_funding"])
    except Exception:
        archive.close()
        raise
    return archive


T = TypeVar("T")


def run_on_archive(settings: Settings, action: Callable[[Archive], T], error: Callable[[str], Exception],
                   advice: Callable[[ArchiveError], str] | None = None) -> T:  # fmt: skip
    """`action(archive)` for one CLI command: the archive opened and closed around it, and what goes
    wrong (it cannot be opened, the archive refuses) raised as `error(message)` for a one-line answer."""
    from archive import ArchiveError

    try:
        archive = open_archive(settings)
    except ServiceError as exc:
        raise error(str(exc)) from exc
    try:
        return action(archive)
    except ArchiveError as exc:
        raise error(advice(exc) if advice else exc.message) from exc
    finally:
        archive.close()


def open_worklist(archive: Archive, settings: Settings) -> Worklist:
    """The worklist service over `archive`, configured from the settings."""
    from worklist.catalogue import Catalogue
    from worklist.service import Worklist, WorklistConfig

    catalogue_file = settings["worklist.catalogue"]
    try:
        catalogue = Catalogue.load(Path(catalogue_file) if catalogue_file else None)
    except Exception as exc:
        raise ServiceError(f"{exc} (setting worklist.catalogue)") from exc
    worklist = Worklist(archive, WorklistConfig(
        accession_pattern=settings["worklist.accession_pattern"],
        correct_demographics=settings["worklist.correct_demographics"],
        catalogue=catalogue,
    ))  # fmt: skip
    if settings["hl7.status_updates"]:
        from worklist.status_updates import StatusUpdates

        try:
            updates = StatusUpdates.from_setting(settings["hl7.status_updates"], sender=settings["dicom.ae_title"])
        except ValueError as exc:
            raise ServiceError(f"{exc} (setting hl7.status_updates, MINIPACS_HL7_STATUS_UPDATES)") from exc
        worklist.status_listeners.append(updates.on_status)
    return worklist


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
        ascii_stations=frozenset(t.strip() for t in settings["worklist.ascii_stations"].split(",") if t.strip()),
    )


def startup_report(archive: Archive, settings: Settings) -> None:
    """What the operator should know when the service starts."""
    stats = archive.statistics()
    log.info("archive %s: %d patients, %d studies, %d instances (%.1f MB)", settings.data_dir,
             stats.patients, stats.studies, stats.instances, stats.size_bytes / 1e6)  # fmt: skip
    free_bytes = getattr(archive.objects, "free_bytes", None)  # filesystem stores only
    reserve_mb = settings["storage.reserve_mb"]
    if free_bytes is not None and reserve_mb and free_bytes() // 2**20 < reserve_mb:
        log.warning(
            "only %d MiB free for the archive, less than storage.reserve_mb = %d: new images "
            "will be refused (out of resources) until space is freed or storage.reserve_mb "
            "(MINIPACS_STORAGE_RESERVE_MB) is lowered", free_bytes() // 2**20, reserve_mb,
        )  # fmt: skip
    first_admin(archive)
    if settings["dicom.calling_ae"] == "registered" and not archive.registry.list():
        log.warning("dicom.calling_ae = \"registered\" but no AE is registered, so every "
                    "association will be refused: register modalities with `minipacs ae add`")  # fmt: skip


def first_admin(archive: Archive) -> None:
    """With no user yet, make `admin` from MINIPACS_ADMIN_PASSWORD (an unattended install), or say how."""
    from archive import ArchiveError, Origin

    if archive.accounts.count_users():
        return
    password = os.environ.get("MINIPACS_ADMIN_PASSWORD", "")
    if not password:
        log.info("no users yet: create the first administrator with `minipacs user add admin --role admin` "
                 "(or set MINIPACS_ADMIN_PASSWORD before the first start)")  # fmt: skip
        return
    try:
        archive.accounts.add_user("admin", "admin", password, Origin("MINIPACS_ADMIN_PASSWORD", "", "CONFIG"),
                                  display_name="Administrator")  # fmt: skip
    except ArchiveError as exc:
        log.warning("MINIPACS_ADMIN_PASSWORD not used: %s", exc.message)
        return
    log.info("created the first administrator, user admin, from MINIPACS_ADMIN_PASSWORD")
