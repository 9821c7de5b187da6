"""The health-insurance claim values (QĐ 130/QĐ-BYT, XML3/XML4) of signed reports: exact values and warnings."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from archive import Archive, Origin
from reports.claim import ClaimValues, claim_values
from reports.devices import ADMIN, DeviceEntry, DeviceRegistry
from reports.errors import ReportStateError
from reports.types import Performed, ReportStatus
from tests.reports.factory import CONCLUSION_VI, FINDINGS_VI, amended_view, report_view, signed_version

DEVICE = DeviceEntry("DR_ROOM1", "XQ.1.12345.SN-DR-88231", "DX", "SN-DR-88231", "X-quang phòng 1", ADMIN,
                     datetime(2026, 12, 1, tzinfo=UTC))  # fmt: skip
#: The technologist's practising-certificate number, found by the name the modality sent as operator.
PERFORMER = "000987/HCM-CCHN"


def claim(*args: Any, **kwargs: Any) -> ClaimValues:
    return claim_values(*args, **{"performer_code": PERFORMER, **kwargs})


def test_exact_values_of_a_final_report() -> None:
    values = claim(report_view(), DEVICE, "link")
    assert values == {
        "MO_TA": FINDINGS_VI,
        "KET_LUAN": CONCLUSION_VI,
        "NGAY_KQ": "202612050915",  # signed 02:15:30 UTC = 09:15 in Vietnam (UTC+7)
        "MA_BS_DOC_KQ": "003421/HCM-CCHN",
        "NGAY_TH_YL": "202612050855",
        "NGUOI_THUC_HIEN": PERFORMER,
        "MA_DICH_VU": "18.0001.0028",
        "MA_CHI_SO": "18.0001.0028",
        "MA_MAY": "XQ.1.12345.SN-DR-88231",
        "delivery_mode": "link",
        "warnings": [],
    }
    assert json.loads(json.dumps(values)) == values  # the JSON API returns it as it stands
    assert all(len(values[k]) == 12 for k in ("NGAY_KQ", "NGAY_TH_YL"))  # type: ignore[literal-required]


def test_the_date_of_a_result_signed_late_in_the_evening_utc_is_the_next_day_in_vietnam() -> None:
    late = signed_version(signature=replace(signed_version().signature,  # type: ignore[type-var]
                                            signed_at="2026-12-05T18:40:00+00:00"))  # fmt: skip
    assert claim(report_view(late), DEVICE, "film")["NGAY_KQ"] == "202612060140"
    offset = signed_version(signature=replace(signed_version().signature,  # type: ignore[type-var]
                                              signed_at="2026-12-05T09:15:00+07:00"))  # fmt: skip
    assert claim(report_view(offset), DEVICE, "film")["NGAY_KQ"] == "202612050915"


def test_an_amendment_gives_its_own_text_and_signing_time() -> None:
    view = amended_view()
    second = replace(view.version, signature=replace(view.version.signature,  # type: ignore[type-var]
                                                     signed_at="2026-12-06T01:05:00+00:00"))  # fmt: skip
    view = replace(view, version=second)
    values = claim(view, DEVICE, "cd")
    assert values["KET_LUAN"] == "Nốt mờ 6 mm thùy trên phổi phải, đề nghị chụp CT ngực."
    assert values["NGAY_KQ"] == "202612060805"
    assert claim(view.at_version(1), DEVICE, "cd")["KET_LUAN"] == CONCLUSION_VI


def test_the_certificate_number_comes_from_the_signature_only() -> None:
    # The author's name, the signer's display name, free text anywhere: never MA_BS_DOC_KQ.
    unsigned_number = replace(signed_version().signature, certificate_number="")  # type: ignore[type-var]
    view = report_view(signed_version(signature=unsigned_number, author="003421/HCM-CCHN"))
    values = claim(view, DEVICE, "film")
    assert values["MA_BS_DOC_KQ"] == ""
    [warning] = values["warnings"]
    assert warning.startswith("MA_BS_DOC_KQ:") and "bs.lan" in warning and "practising-certificate" in warning


def test_device_code_from_the_registry(archive: Archive) -> None:
    """The caller looks the study's station AE up in the registry; what it finds is MA_MAY."""
    registry = DeviceRegistry(archive.db)
    view = report_view()
    assert claim(view, registry.get(view.performed.station_ae_title), "film")["MA_MAY"] == ""
    registry.set("DR_ROOM1", "XQ.2.79001.BV-0042", modality="DX", actor=Origin("cli:admin", "", "CLI"))
    assert claim(view, registry.get(view.performed.station_ae_title), "film")["MA_MAY"] == "XQ.2.79001.BV-0042"


def test_no_device_code_says_which_command_to_run() -> None:
    view = report_view()
    [warning] = claim(view, None, "film")["warnings"]
    assert warning.startswith("MA_MAY:") and "DR_ROOM1" in warning
    assert "`minipacs device add DR_ROOM1 XQ.1.YYYYY.SN-DR-88231`" in warning and "facility" in warning
    [warning] = claim(view, None, "film", facility_code="12345")["warnings"]
    assert "`minipacs device add DR_ROOM1 XQ.1.12345.SN-DR-88231`" in warning
    # An auto entry that could not be completed (no facility code when the modality sent its serial).
    incomplete = replace(DEVICE, device_code="", source="auto", serial_number="SN-7")
    [warning] = claim(view, incomplete, "film", facility_code="12345")["warnings"]
    assert "`minipacs device add DR_ROOM1 XQ.1.12345.SN-7`" in warning
    ct = report_view(modality="CT", performed=Performed(at="20261205085512", performer="Phạm^Văn Hùng",
                                                       station_ae_title="CT_ROOM"))  # fmt: skip
    [warning] = claim(ct, None, "film", facility_code="12345")["warnings"]
    assert "`minipacs device add CT_ROOM CL.1.12345.SERIAL`" in warning


def test_every_missing_value_is_a_warning() -> None:
    view = report_view(service_code="", indicator_code="", performed=Performed())
    values = claim(view, None, performer_code="")
    assert (values["NGAY_TH_YL"], values["NGUOI_THUC_HIEN"], values["MA_DICH_VU"], values["MA_CHI_SO"],
            values["MA_MAY"], values["delivery_mode"]) == ("", "", "", "", "", "")  # fmt: skip
    assert [w.split(":")[0] for w in values["warnings"]] == ["NGAY_TH_YL", "NGUOI_THUC_HIEN", "MA_DICH_VU",
                                                             "MA_CHI_SO", "MA_MAY", "delivery_mode"]  # fmt: skip
    assert "unknown" in values["warnings"][4]  # no station AE: nothing to name


@pytest.mark.parametrize(("at", "expected"), [
    ("20261205085512", "202612050855"), ("202612050855", "202612050855"), ("20261205085512.123", "202612050855"),
    ("20261205", ""), ("2026120508", ""), ("20261305085512", ""), ("garbage", ""),
])  # fmt: skip
def test_performed_time_is_yyyymmddhhmm_or_a_warning(at: str, expected: str) -> None:
    values = claim(report_view(performed=replace(report_view().performed, at=at)), DEVICE, "film")
    assert values["NGAY_TH_YL"] == expected
    assert bool(values["warnings"]) == (not expected)


@pytest.mark.parametrize("status", [ReportStatus.DRAFT, ReportStatus.PRELIMINARY, ReportStatus.CANCELLED])
def test_only_signed_versions_have_claim(status: ReportStatus) -> None:
    view = report_view(signed_version(status=status, signature=None))
    with pytest.raises(ReportStateError, match="signed") as refused:
        claim(view, DEVICE, "film")
    assert refused.value.http_status == 409


def test_a_final_status_without_a_signature_is_refused_too() -> None:
    with pytest.raises(ReportStateError):
        claim(report_view(signed_version(signature=None)), DEVICE, "film")


def test_an_unknown_delivery_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="delivery mode"):
        claim(report_view(), DEVICE, "email")


def test_without_the_operators_code_the_performer_is_the_name_the_modality_sent_with_a_warning() -> None:
    values = claim_values(report_view(), DEVICE, "link")
    assert values["NGUOI_THUC_HIEN"] == "Phạm Văn Hùng"
    [warning] = values["warnings"]
    assert warning.startswith("NGUOI_THUC_HIEN:") and "minipacs user certificate-number" in warning
