"""The values a signed report gives the HIS for the health-insurance claim (giám định BHYT).

The HIS builds, signs and sends the claim XML of QĐ 130/QĐ-BYT (as amended
by QĐ 4750/QĐ-BYT); minipacs supplies the imaging values of one service:

============== ===================== =================================================================
field          table                 value
============== ===================== =================================================================
MO_TA          XML4 CHI_TIET_CLS     the findings (Mô tả), as signed
KET_LUAN       XML4                  the conclusion (Kết luận), as signed
NGAY_KQ        XML3 and XML4         when the version was signed, Vietnam time, ``yyyymmddHHMM``
MA_BS_DOC_KQ   XML4                  the signer's practising-certificate number (số CCHN), as recorded
                                     in the signature -- never typed in
NGAY_TH_YL     XML3 CHI_TIET_DVKT    when the examination was performed (MPPS, else the study), ``yyyymmddHHMM``
NGUOI_THUC_HIEN XML3                 who performed it (the modality's operator / performing physician)
MA_DICH_VU     XML3 and XML4         the service code (mã DVKT) of the ordered procedure
MA_CHI_SO      XML4                  the indicator code (mã chỉ số) of the ordered procedure
MA_MAY         XML3                  the device code ``XX.n.YYYYY.Z`` of the modality (reports.devices)
============== ===================== =================================================================

A value minipacs does not have is left empty and named in ``warnings``
(Vietnamese and English, with what to do), so the HIS can show the claim
officer what to fix before the XML is sent. Only signed (final or amended)
versions have claim values.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import TypedDict

from reports.devices import DeviceEntry, device_type_for
from reports.errors import ReportStateError
from reports.types import DELIVERY_MODES, ReportView
from worklist.hl7_encoding import name_parts

log = logging.getLogger(__name__)

#: Vietnam time (ICT, UTC+7, no daylight saving): the claim's dates are local.
VIETNAM = timezone(timedelta(hours=7), "ICT")


class ClaimValues(TypedDict):
    """The claim values of one report version; JSON as it stands."""

    MO_TA: str
    KET_LUAN: str
    NGAY_KQ: str
    MA_BS_DOC_KQ: str
    NGAY_TH_YL: str
    NGUOI_THUC_HIEN: str
    MA_DICH_VU: str
    MA_CHI_SO: str
    MA_MAY: str
    #: film, link or cd (reports.types.DELIVERY_MODES), "" when not recorded: film-free is billed differently.
    delivery_mode: str
    #: What is missing and how to fix it, one line each ("" fields above).
    warnings: list[str]


def claim_values(view: ReportView, device: DeviceEntry | None, delivery_mode: str = "", *,
                 facility_code: str = "", performer_code: str = "") -> ClaimValues:  # fmt: skip
    """The claim values of `view.version`; `device` is the registry entry of the study's station AE.

    `facility_code` (reports.facility_code) only completes the command a
    missing device code's warning suggests. `performer_code` is the
    practising-certificate number of the user the modality named as operator
    (QĐ 130 wants the performer's code); without one, NGUOI_THUC_HIEN is the
    name the modality sent, with a warning.

    Raises ReportStateError (HTTP 409) for a version that is not signed and
    ValueError for a delivery mode that is not one of DELIVERY_MODES.
    """
    version = view.version
    signature = version.signature
    if not version.status.is_signed or signature is None:
        raise ReportStateError(f"report {view.accession_number} version {version.number} is "
                               f"{version.status.value}: claim values come only from a signed (final or amended) "
                               "report / chỉ báo cáo đã ký mới có dữ liệu giám định")  # fmt: skip
    if delivery_mode and delivery_mode not in DELIVERY_MODES:
        raise ValueError(f"delivery mode {delivery_mode!r} is not one of {', '.join(DELIVERY_MODES)}")
    warnings: list[str] = []
    certificate = signature.certificate_number.strip()
    if not certificate:
        warnings.append(f"MA_BS_DOC_KQ: người ký {signature.username} chưa có số chứng chỉ hành nghề / the signer "
                        f"{signature.username} had no practising-certificate number when signing: "
                        f"`minipacs user certificate-number {signature.username} NUMBER`, then amend the report")  # fmt: skip
    performed_at = _minutes(view.performed.at)
    if not performed_at:
        warnings.append("NGAY_TH_YL: chưa rõ thời gian thực hiện / the time the examination was performed is "
                        f"unknown ({view.performed.at or 'no MPPS and no study date and time'})")  # fmt: skip
    performer = performer_code or _display_name(view.performed.performer)
    if not performer:
        warnings.append("NGUOI_THUC_HIEN: chưa rõ người thực hiện / the modality sent no operator or performing "
                        "physician name")  # fmt: skip
    elif not performer_code:
        warnings.append(f"NGUOI_THUC_HIEN: {performer} là tên, chưa phải mã người thực hiện / is the name the "
                        "modality sent, not a code: give the operator a user account with the same name and "
                        "`minipacs user certificate-number`")  # fmt: skip
    if not view.service_code:
        warnings.append(f"MA_DICH_VU: dịch vụ {view.procedure_code or '(không có chỉ định)'} chưa có mã DVKT / the "
                        "procedure has no service code: add it to the procedure catalogue (worklist.catalogue)")  # fmt: skip
    if not view.indicator_code:
        warnings.append("MA_CHI_SO: dịch vụ chưa có mã chỉ số / the procedure has no indicator code: add it to "
                        "the procedure catalogue (worklist.catalogue)")  # fmt: skip
    code = device.device_code if device is not None else ""
    if not code:
        warnings.append(_device_warning(view, device, facility_code))
    if not delivery_mode:
        warnings.append("delivery_mode: chưa ghi nhận hình thức trả kết quả (in phim / không in phim) / how the "
                        "results went home (film, link, CD) is not recorded")  # fmt: skip
    values = ClaimValues(
        MO_TA=version.section("findings"), KET_LUAN=version.section("conclusion"),
        NGAY_KQ=datetime.fromisoformat(signature.signed_at).astimezone(VIETNAM).strftime("%Y%m%d%H%M"),
        MA_BS_DOC_KQ=certificate, NGAY_TH_YL=performed_at, NGUOI_THUC_HIEN=performer,
        MA_DICH_VU=view.service_code, MA_CHI_SO=view.indicator_code, MA_MAY=code,
        delivery_mode=delivery_mode, warnings=warnings,
    )  # fmt: skip
    log.info("claim values of report %s version %d: %d warnings", view.accession_number, version.number,
             len(warnings))  # fmt: skip
    return values


def _minutes(value: str) -> str:
    """``yyyymmddHHMM`` from a DICOM date and time (local, as the modality sent it); "" without a time."""
    digits = value.strip()
    if not re.fullmatch(r"\d{12}(\d{2})?(\.\d*)?", digits):
        return ""
    try:
        datetime.strptime(digits[:12], "%Y%m%d%H%M")
    except ValueError:
        return ""
    return digits[:12]


def _display_name(dicom_name: str) -> str:
    """A DICOM PN as people write it: "Phạm^Văn Hùng" -> "Phạm Văn Hùng" (the Vietnamese order, family first)."""
    family, given, middle, prefix, suffix = name_parts(dicom_name.strip())
    return " ".join(p.strip() for p in (prefix, family, given, middle, suffix) if p.strip())


def _device_warning(view: ReportView, device: DeviceEntry | None, facility_code: str) -> str:
    """What to do when there is no device code: name the AE and give the command with what is known."""
    station = view.performed.station_ae_title
    if not station:
        return ("MA_MAY: không rõ máy thực hiện / the modality that sent the study is unknown (no calling AE title), "
                "so it has no device code")  # fmt: skip
    kind = device_type_for(view.modality) or "XX"
    serial = (device.serial_number if device is not None else "") or view.performed.device_serial_number
    if not re.fullmatch(r"[A-Za-z0-9-]{1,40}", serial):
        serial = "SERIAL"
    command = f"`minipacs device add {station} {kind}.1.{facility_code or 'YYYYY'}.{serial}`"
    if not facility_code:
        command += " (YYYYY: mã cơ sở KCB, the 5-digit facility code; also set reports.facility_code)"
    return f"MA_MAY: máy {station} chưa có mã máy / no device code for AE {station}: {command}"


__all__ = ["VIETNAM", "ClaimValues", "claim_values"]
