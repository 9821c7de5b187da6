"""Building the report service and its outputs from the settings (HTTP workers, the outbox sender, the CLI)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.services import ServiceError
from appliance.settings import Settings

if TYPE_CHECKING:
    from archive import Archive
    from reports.outputs import ReportOutputs
    from reports.service import Reports
    from reports.types import Hospital

log = logging.getLogger(__name__)


def hospital(settings: Settings) -> Hospital:
    from reports.types import Hospital

    return Hospital(name=settings["reports.hospital_name"], department=settings["reports.department"],
                    address=settings["reports.hospital_address"], phone=settings["reports.hospital_phone"],
                    logo_path=settings["reports.logo"], facility_code=settings["reports.facility_code"])  # fmt: skip


def open_reports(archive: Archive, settings: Settings) -> Reports:
    """Reports over `archive`: templates, PAdES sign-off with the users' certificates, outputs queued on signing."""
    from reports.identities import SigningIdentities
    from reports.service import Reports
    from reports.signoff import PadesSigner
    from reports.templates import TemplateError, Templates

    try:
        templates = Templates.load(settings["reports.templates"])
    except TemplateError as exc:
        raise ServiceError(f"{exc} (setting reports.templates)") from exc
    where = hospital(settings)
    reports = Reports(archive, templates, PadesSigner(SigningIdentities(archive.db, archive.audit), where))
    report_outputs(reports, settings).attach()
    return reports


def report_outputs(reports: Reports, settings: Settings) -> ReportOutputs:
    """What a signed report sends out (reports.emr, reports.dicom), from the settings."""
    from reports.outputs import OutputConfig, ReportOutputs

    try:
        sr, pdf = OutputConfig.dicom_kinds(settings["reports.dicom"])
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc
    return ReportOutputs(reports, OutputConfig(
        hospital=hospital(settings), emr=bool(settings["reports.emr"]), sending_application=settings["dicom.ae_title"],
        emr_application=settings["reports.emr_application"], emr_facility=settings["reports.emr_facility"],
        oru_pdf=settings["reports.oru_pdf"], dicom_sr=sr, dicom_pdf=pdf,
    ))  # fmt: skip


def check_reports(settings: Settings) -> None:
    """ServiceError for report settings that cannot work (templates, reports.dicom); a warning when
    report PDFs cannot be made on this machine (the font is missing: signing waits until it is installed)."""
    from pathlib import Path

    from reports.outputs import OutputConfig
    from reports.pdf import FONT_DIR, FONT_FILES
    from reports.templates import TemplateError, Templates

    try:
        Templates.load(settings["reports.templates"])
    except TemplateError as exc:
        raise ServiceError(f"{exc} (setting reports.templates)") from exc
    try:
        OutputConfig.dicom_kinds(settings["reports.dicom"])
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc
    logo = settings["reports.logo"]
    if logo and not Path(logo).is_file():
        log.warning("reports.logo = %r is not a file: report PDFs are printed without a logo", logo)
    missing = [name for name in FONT_FILES if not (FONT_DIR / name).is_file()]
    if missing:
        log.error("report PDFs need the DejaVu fonts (%s not in %s): signing reports fails until "
                  "`apt-get install fonts-dejavu-core`", ", ".join(missing), FONT_DIR)  # fmt: skip
