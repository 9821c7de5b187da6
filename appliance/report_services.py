"""Building the report service and its outputs from the settings (HTTP workers, the outbox sender, the CLI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.services import ServiceError
from appliance.settings import Settings

if TYPE_CHECKING:
    from archive import Archive
    from reports.outputs import ReportOutputs
    from reports.service import Reports
    from reports.types import Hospital


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
