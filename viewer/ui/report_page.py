"""The report panel, and a page of its own for it: ``/ui/report/<StudyInstanceUID>``.

The panel (templates/ui/report_panel.html, static/ui/report.js) is where a
radiologist writes the report of a study from a template, with the draft saved
as they type, signs it with their PIN and amends it; a referring doctor or a
technologist reads the signed report there. The study viewer shows it beside
the images; this page shows it full width with the patient and study on top
(a second monitor, or a report written away from the images).

The panel builds itself from the reports API (viewer/reports_api.py), which
checks every request on the server; the panel only hides what a role may not
do. What it needs from the page is in page-data (``study``, ``accession``,
``patientName``, ``modality``, ``role``); its own strings and the role's
rights come with the panel's template (`panel_context`), so any page that
includes the panel gets them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, request
from flask_babel import gettext as _
from werkzeug.wrappers import Response as BaseResponse

from archive import NotFound, Origin
from archive.errors import ArchiveError
from reports.service import Reports
from reports.study_pages import StudySummary, study_summary
from viewer.access import ROLES
from viewer.auth import Principal
from viewer.pages import person_name
from viewer.ui import base
from viewer.ui.base import render, ui_page
from viewer.urls import path_uid

blueprint = Blueprint("ui_report", __name__)
blueprint.register_error_handler(ArchiveError, base.refused)
blueprint.register_error_handler(base.LoginNeeded, base.login_needed)

#: Modalities of objects made from reports or for display, never the examination's own.
_NOT_IMAGING = frozenset({"SR", "DOC", "KO", "PR", "OT"})


def panel_strings() -> dict[str, str]:
    """Everything report.js shows, in the page's language. Placeholders are ``{name}`` (MP.t)."""
    return {
        "title": _("Report"), "newWindow": _("Open in a new window"),
        "clinical_information": _("Clinical information"), "technique": _("Technique"),
        "findings": _("Findings"), "conclusion": _("Conclusion"), "recommendation": _("Recommendation"),
        "status.draft": _("Draft"), "status.preliminary": _("Preliminary"), "status.final": _("Final"),
        "status.amended": _("Amended"), "status.cancelled": _("Cancelled"),
        "version": _("Version {n}"),
        "template": _("Template"), "chooseTemplate": _("Choose a template…"),
        "templatesFor": _("Templates for {modality}"), "otherTemplates": _("Other templates"),
        "otherLanguage": _("Templates in the other language"),
        "replaceText": _("Replace the text of the report with the template “{title}”?"),
        "startEmpty": _("Start without a template"),
        "noReportYet": _("No report yet. Choose a template to start it."),
        "wasCancelled": _("The previous draft was cancelled. Choose a template to start again."),
        "noFinalYet": _("No final report yet."),
        "noAccession": _("This study has no accession number. Reports are kept per accession number: "
                         "match the study to its order first (technologist: unmatched studies)."),
        "noStudy": _("No study is open."),
        "loadFailed": _("The report could not be loaded: {reason}"),
        "draftBy": _("Draft by {name}, changed {time}"),
        "saving": _("Saving…"), "savedAt": _("Saved {time}"), "notSaved": _("Not saved: {reason}"),
        "unsaved": _("Changes not saved yet"),
        "conflict": _("Someone else changed this report since you opened it. Your latest changes were NOT saved "
                      "and nothing was overwritten. Reload the report to see their version."),
        "changedElsewhere": _("Changed by someone else"), "reload": _("Reload the report"),
        "yourText": _("Your unsaved text (copy what you still need)"),
        "fields": _("Measurements"),
        "sign": _("Sign…"), "signTitle": _("Sign the report"), "signNow": _("Sign"),
        "signConclusion": _("You are signing this conclusion:"),
        "pin": _("Signing PIN"), "pinHint": _("The passphrase of your signing certificate. It is never stored."),
        "pinEmpty": _("Type your PIN."),
        "wrongPin": _("Wrong PIN. Nothing was signed."),
        "locked": _("Too many wrong PINs: signing is locked for {minutes} min (until {time})."),
        "needConclusion": _("Write a conclusion before signing."),
        "signFailed": _("Not signed: {reason}"),
        "noCertificate": _("Not signed: you have no signing certificate yet. Ask an administrator to install yours."),
        "signing": _("Signing…"),
        "signedBy": _("Signed by {name}, {time}"), "certificate": _("Practising certificate {number}"),
        "pdf": _("Signed PDF"),
        "outputs": _("Sent to"), "out.ORU^R01": _("EMR (HL7 result)"),
        "out.REPORT DICOM": _("SR and PDF into the study"),
        "state.sent": _("delivered"), "state.pending": _("waiting"), "state.failed": _("failed"),
        "amend": _("Amend…"), "amendTitle": _("Amend the signed report"),
        "amendHelp": _("A new version opens with the signed text; the signed version stays as it is."),
        "reason": _("Reason"), "reasonNeeded": _("Give a reason."), "amendNow": _("Open an amendment"),
        "amendReason": _("Amendment: {reason}"),
        "cancelDraft": _("Cancel draft…"), "cancelTitle": _("Withdraw this version?"),
        "cancelHelp": _("The text of this version is dropped. A signed version stays in force."),
        "reasonOptional": _("Reason (optional)"), "cancelNow": _("Withdraw the version"),
        "back": _("Back"),
        "previous": _("Signed version {n}"), "versions": _("Versions"),
        "failed": _("Not done: {reason}"),
    }  # fmt: skip


def panel_context() -> dict[str, Any]:
    """What report_panel.html embeds for report.js: strings, and what the role may do (the server checks anyway)."""
    principal: Principal | None = getattr(g, "principal", None)
    role = principal.role if principal else ""
    return {"strings": panel_strings(), "canWrite": role in ROLES["reports"], "canSign": role == "radiologist",
            "fields": field_labels()}  # fmt: skip


def field_labels() -> dict[str, dict[str, dict[str, str]]]:
    """Template id -> structured field -> label and unit: how a reader (who gets no templates) sees the values."""
    service: Reports | None = current_app.config.get("REPORTS")
    if service is None:
        return {}
    return {t.id: {f.name: {"label": f.label, "unit": f.unit} for f in t.fields}
            for t in service.templates.all() if t.fields}  # fmt: skip


@blueprint.app_context_processor
def _panel() -> dict[str, Any]:
    return {"report_panel": panel_context}


def page_data(summary: StudySummary) -> dict[str, str]:
    """The panel's part of page-data for a study (the viewer gives the same)."""
    study = summary.study
    return {"study": study.study_instance_uid, "accession": study.accession_number.strip(),
            "patientName": summary.patient.name, "modality": examination_modality(study.modalities)}  # fmt: skip


def examination_modality(modalities_in_study: str) -> str:
    """The modality the study was made with: "CT" of "CT\\SR\\DOC" (a signed report adds SR and DOC series)."""
    found = [m.strip().upper() for m in modalities_in_study.split("\\") if m.strip()]
    imaging = [m for m in found if m not in _NOT_IMAGING]
    return (imaging or found or [""])[0]


@blueprint.get("/<study>")
@ui_page("results")
def report_page(study: str) -> BaseResponse:
    uid = path_uid(study, "study")
    summary = study_summary(base.archive().db, uid)
    if summary is None:
        raise NotFound(_("There is no study %(uid)s in the archive.", uid=uid))
    principal: Principal = g.principal
    base.archive().audit.record(Origin(principal.name, request.remote_addr or "", "HTTP"), "VIEW", "STUDY", uid,
                                "ok", "report page")  # fmt: skip
    data = page_data(summary)
    sexes = {"M": _("Male"), "F": _("Female"), "O": _("Other")}
    return render("ui/report_page.html", data=data, summary=summary, patient_name=person_name(summary.patient.name),
                  modality=data["modality"], sex=sexes.get(summary.patient.sex, summary.patient.sex))  # fmt: skip
