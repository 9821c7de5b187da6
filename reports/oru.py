"""A signed report as an HL7 v2.5 ORU^R01 (unsolicited observation result, HL7 v2.5 7.3.1) for the EMR.

One message per signed version: PID (the patient, with the BHYT card and
the citizen ID as further PID-3 repetitions), PV1, ORC (RE, with the order
numbers), OBR (the accession number in OBR-18, result status F for a final
report and C for an amendment, the signer as OBR-32) and one OBX of type FT
per non-empty section, coded in LOINC; optionally the signed PDF as an ED
OBX. Every field and where it comes from is in docs/hl7.md ("ORU^R01 out").
Text is UTF-8 (MSH-18 ``UNICODE UTF-8``); delimiters in it are escaped and
line breaks written as ``\\.br\\`` (HL7 v2.5 2.7.4, 2.7.6), so the receiver
gets back the radiologist's text exactly.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime

from reports.types import SECTION_TITLES, SECTIONS, ReportStatus, ReportView, Signature
from worklist.hl7_encoding import (
    components,
    encode,
    escape,
    escape_text,
    msh,
    name_parts,
    numbered,
    subcomponents,
    timestamp,
    xcn,
    xpn,
)

log = logging.getLogger(__name__)

MESSAGE_TYPE = "ORU^R01^ORU_R01"

#: OBX-3 of each section: LOINC code and its name (LOINC 2.7x, the codes of the HL7 CDA imaging report).
SECTION_CODES: dict[str, tuple[str, str]] = {
    "clinical_information": ("55752-0", "Clinical information"),
    "technique": ("55111-9", "Current imaging procedure descriptions"),
    "findings": ("59776-5", "Procedure findings"),
    "conclusion": ("19005-8", "Radiology Imaging study [Impression] (narrative)"),
    "recommendation": ("18783-1", "Radiology Study recommendation (narrative)"),
}
#: OBX-3 of the signed PDF: the whole diagnostic imaging report.
PDF_CODE = ("18748-4", "Diagnostic imaging study")

#: OBR-25 / OBX-11 result status (HL7 table 0123 / 0085): F final, C corrected (an amendment).
RESULT_STATUS = {ReportStatus.FINAL: "F", ReportStatus.AMENDED: "C"}

#: PID-3.5 identifier type (HL7 table 0203) of the Other Patient IDs' issuers (worklist.hl7 reads them back).
ID_TYPES = {"CCCD": "NNVNM", "BHYT": "HC"}


def build_oru(view: ReportView, *, sending_application: str, sending_facility: str, receiving_application: str,
              receiving_facility: str, control_id: str, now: datetime, pdf: bytes | None = None) -> bytes:  # fmt: skip
    """The ORU^R01 of `view.version`, UTF-8 with segments ended by CR.

    Raises ValueError for a version that is not signed (a draft, a cancelled
    report): only final and amended versions are results.
    """
    version = view.version
    status = RESULT_STATUS.get(version.status)
    signature = version.signature
    if status is None or signature is None:
        raise ValueError(f"report {view.accession_number} version {version.number} is {version.status.value}: "
                         "only a signed (final or amended) version is sent as a result")  # fmt: skip
    signed = timestamp(datetime.fromisoformat(signature.signed_at))
    observed = _observation_time(view)
    placer = components(view.placer_order_number, view.placer_issuer)
    filler = components(view.filler_order_number or view.accession_number, sending_application)
    referring = xcn("", view.referring_physician)
    p = view.patient
    segments = [
        msh(sending_application, sending_facility, receiving_application, receiving_facility, MESSAGE_TYPE,
            control_id, now),
        numbered("PID", {1: "1", 3: _patient_ids(view), 5: xpn(p.name), 7: escape(p.birth_date), 8: escape(p.sex)}),
        numbered("PV1", {1: "1", 2: "U", 8: referring}),
        numbered("ORC", {1: "RE", 2: placer, 3: filler, 5: "CM", 9: signed, 12: referring}),
        numbered("OBR", {
            1: "1", 2: placer, 3: filler,
            4: components(view.procedure_code, view.procedure_description, view.procedure_scheme),
            7: observed, 16: referring, 18: escape(view.accession_number), 22: signed, 24: escape(view.modality),
            25: status, 32: _interpreter(signature),
        }),
    ]  # fmt: skip
    if version.reason:
        segments.append(numbered("NTE", {1: "1", 2: "L", 3: escape_text(version.reason)}))
    titles = SECTION_TITLES.get(version.language, SECTION_TITLES["en"])
    observations = [("FT", components(*SECTION_CODES[name], "LN", name, titles[name], "L"),
                     escape_text(version.section(name)))
                    for name in SECTIONS if version.section(name).strip()]  # fmt: skip
    if pdf is not None:
        data = components(sending_application, "AP", "PDF", "Base64") + "^" + base64.b64encode(pdf).decode("ascii")
        observations.append(("ED", components(*PDF_CODE, "LN"), data))
    observer = xcn(signature.certificate_number, signature.display_name)
    for n, (value_type, identifier, value) in enumerate(observations, 1):
        segments.append(numbered("OBX", {1: str(n), 2: value_type, 3: identifier, 5: value, 11: status,
                                         14: observed, 16: observer, 19: signed}))  # fmt: skip
    message = encode(segments)
    log.info("ORU^R01 %s for report %s version %d (%s, status %s, %d bytes)", control_id, view.accession_number,
             version.number, "with PDF" if pdf is not None else "text", status, len(message))  # fmt: skip
    return message


def _patient_ids(view: ReportView) -> str:
    """PID-3: the Patient ID (type PI) first, then each Other Patient ID (CCCD as NNVNM, BHYT as HC)."""
    p = view.patient
    ids = [components(p.patient_id, "", "", p.issuer, "PI")]
    ids += [components(o.value, "", "", o.issuer, ID_TYPES.get(o.issuer.upper(), "")) for o in p.other_ids if o.value]
    return "~".join(ids)


def _interpreter(signature: Signature) -> str:
    """OBR-32 (NDL): component 1 is a CNN of subcomponents id&family&given&middle&suffix&prefix.

    The id is the signer's practising-certificate number (số CCHN, the
    claim's MA_BS_DOC_KQ); the name is the display name as the user record
    has it, in the family name subcomponent (it is not split into parts).
    """
    family, given, middle, prefix, suffix = name_parts(signature.display_name)
    return subcomponents(signature.certificate_number, family, given, middle, suffix, prefix)


def _observation_time(view: ReportView) -> str:
    """OBR-7 / OBX-14: the study's date and time (local, as the modality sent it), else when it was performed."""
    if view.study_date:
        return escape(view.study_date + view.study_time.split(".")[0][:6])
    return escape(view.performed.at)


__all__ = ["MESSAGE_TYPE", "PDF_CODE", "RESULT_STATUS", "SECTION_CODES", "build_oru"]
