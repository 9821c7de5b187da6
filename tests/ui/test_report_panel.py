"""The report panel in a real browser: template, autosave, sign with the PIN, amend, conflicts, roles.

Every test works on a study of its own (its own HIS order, patient and UIDs, sent over DICOM) so
that the sample CT's accession number stays unreported for the other screens' tests. The
radiologist bs.lan signs with the test CA's certificate (tests/reports/ca.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Page, expect
from pydicom import dcmread
from pydicom.uid import generate_uid

from reports.identities import SigningIdentities
from tests.conftest import CT_FILES
from tests.reports import ca
from tests.ui.conftest import ADMIN, PASSWORD, Pages, Site, store_as_is
from tests.worklist.helpers import HIS, order
from worklist.service import Worklist

Screenshot = Callable[[Page, str], Path]
CONCLUSION = "Máu tụ dưới màng cứng bán cầu trái, dày 8 mm. <b>Không</b> di lệch đường giữa."


def own_study(site: Site, scratch: Path, *, ordered: bool = True, name: str = "Phạm^Thị Mai") -> tuple[str, str]:
    """A CT study of a patient of its own, with its HIS order (unless `ordered` is False, then no accession
    number), sent by the CT console over DICOM. Returns (Study Instance UID, accession number)."""
    tag = uuid.uuid4().hex[:8].upper()
    accession = f"RP{tag}" if ordered else ""
    study = generate_uid(prefix="2.25.")
    patient = f"BNRP{tag}"
    if ordered:
        archive = site.archive()
        try:
            Worklist(archive).create(order(f"HIS-RP-{tag}", accession, patient_id=patient, name=name,
                                           procedure_code="CT-SONAO", study_instance_uid=study), HIS)  # fmt: skip
        finally:
            archive.close()
    scratch.mkdir(parents=True, exist_ok=True)
    series = generate_uid(prefix="2.25.")
    files = []
    for number, source in enumerate(CT_FILES[:2], 1):
        ds = dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
        ds.AccessionNumber, ds.PatientID, ds.PatientName = accession, patient, name
        files.append(scratch / f"{tag}-{number}.dcm")
        ds.save_as(files[-1])
    store_as_is(site.server.port, "CT_ROOM1", files)
    return study, accession


def api(site: Site, method: str, path: str, role: str = "radiologist", **kwargs: Any) -> requests.Response:
    return site.call(method, path, role, **kwargs)


def signed_report(site: Site, study: str, accession: str, conclusion: str = CONCLUSION) -> dict[str, Any]:
    """A report written and signed through the API (as another radiologist's browser would)."""
    created = api(site, "POST", "/api/reports", json={"study_instance_uid": study, "template_id": "ct-so-nao-vi"})
    assert created.status_code == 201, created.text
    saved = api(site, "PUT", f"/api/reports/{accession}", json={"sections": {"conclusion": conclusion},
                                                                "structured": {"midline_shift_mm": 3.5},
                                                                "revision": created.json()["revision"]})  # fmt: skip
    assert saved.status_code == 200, saved.text
    signed = api(site, "POST", f"/api/reports/{accession}/sign",
                 json={"pin": ca.PASSPHRASE, "revision": saved.json()["revision"]})
    assert signed.status_code == 200, signed.text
    body: dict[str, Any] = signed.json()
    return body


def test_write_from_a_template_autosave_sign_with_the_pin_and_amend(
    pages: Pages, site: Site, tmp_path: Path, screenshot: Screenshot
) -> None:
    study, accession = own_study(site, tmp_path)
    page = pages.login("radiologist", f"/ui/report/{study}")
    panel = page.locator("#report")
    expect(page.locator(".report-study .accession")).to_have_text(accession)
    expect(panel.locator("a.report-window")).to_have_count(0)  # this is the report's own window
    expect(panel.locator(".report-none")).to_have_text("Chưa có kết quả. Chọn một mẫu để bắt đầu.")
    # Templates in the UI's language for the study's modality come first; the others after.
    expect(page.locator("#report-template optgroup").first).to_have_attribute("label", "Mẫu cho CT")
    expect(page.locator("#report-template optgroup").first.locator("option")).to_have_text(["CT sọ não"])
    page.select_option("#report-template", label="CT sọ não")
    conclusion = page.locator("#report-conclusion")
    expect(conclusion).to_have_value(re.compile("chưa phát hiện bất thường"))  # the template's text
    expect(page.locator("#report-findings")).to_have_value(re.compile("Không thấy hình ảnh máu tụ"))
    expect(page.locator("#report-status")).to_have_text("Bản nháp")

    conclusion.fill(CONCLUSION)
    expect(page.locator("#report-save")).to_have_text(re.compile(r"^Đã lưu lúc \d\d:\d\d$"), timeout=10_000)
    draft = api(site, "GET", f"/api/reports/{accession}").json()
    assert draft["status"] == "draft" and draft["version"]["sections"]["conclusion"] == CONCLUSION
    # Leaving a textarea saves at once (no waiting for the pause).
    page.locator("#report-recommendation").fill("Chụp lại sau 24 giờ.")
    page.locator("#report-findings").focus()
    expect(page.locator("#report-save")).to_have_text(re.compile("^Đã lưu lúc"))
    draft = api(site, "GET", f"/api/reports/{accession}").json()
    assert draft["version"]["sections"]["recommendation"] == "Chụp lại sau 24 giờ."
    # The template's measurement, as a number.
    expect(page.locator("label[for=report-field-midline_shift_mm]")).to_have_text("Di lệch đường giữa (mm)")
    page.locator("#report-field-midline_shift_mm").fill("2.5")
    page.locator("#report-findings").focus()
    expect(page.locator("#report-save")).to_have_text(re.compile("^Đã lưu lúc"))
    draft = api(site, "GET", f"/api/reports/{accession}").json()
    assert draft["version"]["structured"] == {"midline_shift_mm": 2.5}
    screenshot(page, "report-draft")

    # A wrong PIN: a message in the dialog, nothing signed.
    page.click("#report-sign")
    dialog = page.locator("#report-sign-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#report-sign-conclusion")).to_have_text(CONCLUSION)  # as text, tags and all
    screenshot(page, "report-sign-dialog")
    dialog.locator("#report-pin").fill("000000")
    dialog.locator("button[type=submit]").click()
    expect(dialog.locator(".dialog-error")).to_have_text("Sai mã PIN. Chưa ký gì.")
    expect(dialog.locator("#report-pin")).to_have_value("")
    after = api(site, "GET", f"/api/reports/{accession}").json()
    assert after["status"] == "draft" and after["revision"] == draft["revision"]
    # The right PIN signs: final, the signer, the PDF.
    dialog.locator("#report-pin").fill(ca.PASSPHRASE)
    dialog.locator("#report-pin").press("Enter")
    expect(dialog).to_have_count(0)
    expect(page.locator("#report-status")).to_have_text("Đã ký")
    expect(page.locator("#report-signer")).to_contain_text("Đã ký bởi BS. Trần Thị Lan")
    expect(panel.locator("textarea")).to_have_count(0)
    expect(panel.locator(".report-section[data-section=conclusion]")).to_have_text(CONCLUSION)
    href = page.locator("a.report-pdf").first.get_attribute("href")
    assert href == f"/api/reports/{accession}/pdf?version=1"
    pdf = page.request.get(href)
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF")
    assert api(site, "GET", f"/api/reports/{accession}").json()["status"] == "final"
    screenshot(page, "report-signed")
    # Where it went: the SR and PDF into the study (the panel looks again until they arrive).
    expect(page.locator("#report-outputs")).to_contain_text("SR và PDF vào ca chụp: đã nhận", timeout=60_000)

    # Amend: a reason, then a new editable version; the signed one stays in view.
    page.click("#report-amend")
    amend = page.locator("#report-amend-dialog")
    amend.locator("button[type=submit]").click()
    expect(amend.locator(".dialog-error")).to_have_text("Hãy nhập lý do.")
    amend.locator("#report-amend-reason").fill("Bổ sung: nốt vôi hóa đám rối mạch mạc")
    amend.locator("button[type=submit]").click()
    expect(page.locator("#report-status")).to_have_text("Bản nháp")
    expect(panel.locator(".report-version")).to_have_text("Phiên bản 2")
    expect(panel.locator(".report-reason")).to_contain_text("Bổ sung: nốt vôi hóa")
    expect(page.locator("#report-conclusion")).to_have_value(CONCLUSION)
    previous = panel.locator("details.report-previous")
    expect(previous).to_contain_text("Phiên bản đã ký 1")
    expect(previous.locator(".report-section[data-section=conclusion]")).to_have_text(CONCLUSION)
    amended = api(site, "GET", f"/api/reports/{accession}").json()
    assert amended["version"]["number"] == 2 and amended["version"]["status"] == "draft"
    assert [(v["number"], v["status"]) for v in amended["versions"]] == [(1, "final"), (2, "draft")]
    # The amendment is written and signed: amended, both versions' PDFs listed.
    page.locator("#report-conclusion").fill(CONCLUSION + " Vôi hóa đám rối mạch mạc.")
    page.locator("#report-conclusion").press("Control+s")
    expect(page.locator("#report-save")).to_have_text(re.compile("^Đã lưu lúc"))
    page.click("#report-sign")
    expect(page.locator("#report-sign-conclusion")).to_have_text(CONCLUSION + " Vôi hóa đám rối mạch mạc.")
    page.locator("#report-pin").fill(ca.PASSPHRASE)
    page.locator("#report-pin").press("Enter")
    expect(page.locator("#report-status")).to_have_text("Đã sửa đổi")
    versions = panel.locator("details.report-versions")
    versions.locator("summary").click()
    expect(versions.locator("li")).to_have_count(2)
    expect(versions.locator("a.report-pdf")).to_have_count(2)
    assert page.request.get(f"/api/reports/{accession}/pdf?version=1").headers["content-type"] == "application/pdf"
    # Another amendment, withdrawn: version 2 stays in force.
    page.click("#report-amend")
    page.locator("#report-amend-reason").fill("Thử")
    page.locator("#report-amend-dialog button[type=submit]").click()
    expect(panel.locator(".report-version")).to_have_text("Phiên bản 3")
    page.click("#report-cancel")
    page.locator("#report-cancel-dialog button[type=submit]").click()
    expect(page.locator("#report-status")).to_have_text("Đã sửa đổi")
    final = api(site, "GET", f"/api/reports/{accession}").json()
    assert final["status"] == "amended" and final["version"]["number"] == 2


def test_a_referrer_reads_the_signed_report_and_a_technologist_no_draft(
    pages: Pages, site: Site, tmp_path: Path, screenshot: Screenshot
) -> None:
    study, accession = own_study(site, tmp_path / "a", name="Võ^Văn <i>Tám</i>")
    signed_report(site, study, accession)
    page = pages.login("referrer", f"/ui/report/{study}")
    panel = page.locator("#report")
    expect(page.locator("#report-status")).to_have_text("Đã ký")
    expect(panel.locator(".report-section[data-section=conclusion]")).to_have_text(CONCLUSION)
    expect(panel.locator(".report-fields-view")).to_have_text("Di lệch đường giữa (mm)3,5")  # its label; a decimal comma
    expect(page.locator(".report-study .patient-name")).to_have_text("Võ Văn <i>Tám</i>")  # as text
    for hidden in ("textarea", "#report-template", "#report-sign", "#report-amend", "#report-cancel"):
        expect(panel.locator(hidden)).to_have_count(0)
    screenshot(page, "report-referrer")
    assert page.request.get(f"/api/reports/{accession}/pdf").headers["content-type"] == "application/pdf"
    # The server refuses what the panel does not show.
    refused = page.request.post(f"/api/reports/{accession}/amend", data={"reason": "x", "revision": 1},
                                headers={"X-CSRF-Token": page.evaluate("MP.data.csrf")})  # fmt: skip
    assert refused.status == 403

    # A draft stays in the department: the technologist sees no text of it.
    draft_study, draft_accession = own_study(site, tmp_path / "b")
    created = api(site, "POST", "/api/reports", json={"study_instance_uid": draft_study, "template_id": "ct-so-nao-vi"})
    assert created.status_code == 201
    page = pages.login("technologist", f"/ui/report/{draft_study}")
    expect(page.locator("#report .report-none")).to_have_text("Chưa có kết quả chính thức.")
    expect(page.locator("#report textarea")).to_have_count(0)
    expect(page.locator("#report")).not_to_contain_text("máu tụ")
    assert draft_accession in page.locator(".report-study").inner_text()


def test_someone_else_saving_in_between_is_a_conflict_never_an_overwrite(
    pages: Pages, site: Site, tmp_path: Path
) -> None:
    study, accession = own_study(site, tmp_path)
    page = pages.login("radiologist", f"/ui/report/{study}")
    page.select_option("#report-template", label="CT sọ não")
    expect(page.locator("#report-status")).to_have_text("Bản nháp")
    page.locator("#report-findings").fill("Bản của tôi.")
    expect(page.locator("#report-save")).to_have_text(re.compile("^Đã lưu lúc"))
    # Another window saves; coming back to this one shows their text (nothing typed here meanwhile).
    current = api(site, "GET", f"/api/reports/{accession}").json()
    api(site, "PUT", f"/api/reports/{accession}", json={"sections": {"findings": "Bản ở cửa sổ kia."},
                                                        "revision": current["revision"]})  # fmt: skip
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    expect(page.locator("#report-findings")).to_have_value("Bản ở cửa sổ kia.")
    # Another browser saves in between while this one is being typed in.
    current = api(site, "GET", f"/api/reports/{accession}").json()
    theirs = api(site, "PUT", f"/api/reports/{accession}", json={"sections": {"findings": "Bản của người khác."},
                                                                 "revision": current["revision"]})  # fmt: skip
    assert theirs.status_code == 200
    page.locator("#report-findings").fill("Bản của tôi, sửa thêm.")
    conflict = page.locator(".report-conflict")
    expect(conflict).to_contain_text("Người khác đã sửa kết quả này")
    expect(page.locator("#report-save")).to_have_text("Chưa lưu: Người khác vừa thay đổi")
    expect(page.locator("#report-sign")).to_be_disabled()
    stored = api(site, "GET", f"/api/reports/{accession}").json()["version"]["sections"]
    assert stored["findings"] == "Bản của người khác."
    page.locator("#report-findings").press("End")  # typing more sends nothing
    page.click("#report-reload")
    expect(page.locator("#report-findings")).to_have_value("Bản của người khác.")
    expect(page.locator("details.report-lost")).to_contain_text("Bản của tôi, sửa thêm.")
    assert api(site, "GET", f"/api/reports/{accession}").json()["revision"] == theirs.json()["revision"]


def test_wrong_pins_lock_signing_and_the_panel_says_until_when(pages: Pages, site: Site, tmp_path: Path) -> None:
    """Five wrong PINs lock signing (a guessed PIN would forge signatures): a radiologist of their own,
    so that bs.lan can still sign in the other tests."""
    archive = site.archive()
    try:
        archive.accounts.add_user("bs.khoa", "radiologist", PASSWORD, ADMIN, display_name="BS. Đỗ Minh Khoa")
        SigningIdentities(archive.db, archive.audit).install("bs.khoa", ca.second_radiologist().pkcs12,
                                                             ca.second_radiologist().passphrase, ADMIN)  # fmt: skip
    finally:
        archive.close()
    study, accession = own_study(site, tmp_path)
    page = pages.new()
    page.goto(f"/ui/report/{study}")
    page.fill("#username", "bs.khoa")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.select_option("#report-template", label="CT sọ não")
    expect(page.locator("#report-status")).to_have_text("Bản nháp")
    page.click("#report-sign")
    dialog = page.locator("#report-sign-dialog")
    dialog.locator("button[type=submit]").click()
    expect(dialog.locator(".dialog-error")).to_have_text("Hãy nhập mã PIN.")  # nothing sent
    for attempt in range(5):
        dialog.locator("#report-pin").fill(f"sai-{attempt}")
        dialog.locator("#report-pin").press("Enter")
        expect(dialog.locator(".dialog-error")).to_have_text("Sai mã PIN. Chưa ký gì.")
        expect(dialog.locator("#report-pin")).to_have_value("")
    dialog.locator("#report-pin").fill(ca.second_radiologist().passphrase)  # even the right one, now
    dialog.locator("#report-pin").press("Enter")
    expect(dialog.locator(".dialog-error")).to_have_text(
        re.compile(r"^Nhập sai PIN quá nhiều lần: tạm khóa ký số 1[56] phút \(đến \d\d:\d\d\)\.$"))
    assert api(site, "GET", f"/api/reports/{accession}").json()["status"] == "draft"


def test_a_dropped_connection_keeps_the_text_and_saves_it_when_back_then_cancel(
    pages: Pages, site: Site, tmp_path: Path
) -> None:
    study, accession = own_study(site, tmp_path)
    page = pages.login("radiologist", f"/ui/report/{study}")
    page.click("#report-start-empty")
    expect(page.locator("#report-status")).to_have_text("Bản nháp")
    expect(page.locator("#report-conclusion")).to_have_value("")  # no template: empty sections
    page.route("**/api/reports/*", lambda route: route.abort() if route.request.method == "PUT" else route.continue_())
    page.locator("#report-findings").fill("Gan nhiễm mỡ độ I.")
    expect(page.locator("#report-save")).to_have_text(re.compile("^Chưa lưu: Không kết nối được máy chủ"))
    assert api(site, "GET", f"/api/reports/{accession}").json()["version"]["sections"]["findings"] == ""
    page.unroute("**/api/reports/*")
    page.locator("#report-conclusion").focus()  # leaving the textarea tries again at once
    expect(page.locator("#report-save")).to_have_text(re.compile("^Đã lưu lúc"))
    stored = api(site, "GET", f"/api/reports/{accession}").json()["version"]["sections"]
    assert stored["findings"] == "Gan nhiễm mỡ độ I."
    # Withdraw the draft: the report is cancelled, and a new one may start.
    page.click("#report-cancel")
    page.locator("#report-cancel-reason").fill("Nhầm ca chụp")
    page.locator("#report-cancel-dialog button[type=submit]").click()
    expect(page.locator("#report .report-none")).to_have_text("Bản nháp trước đã bị hủy. Chọn một mẫu để bắt đầu lại.")
    expect(page.locator("#report-status")).to_have_text("Đã hủy")
    body = api(site, "GET", f"/api/reports/{accession}").json()
    assert body["status"] == "cancelled" and body["version"]["reason"] == "Nhầm ca chụp"
    page.select_option("#report-template", label="CT sọ não")
    expect(page.locator("#report .report-version")).to_have_text("Phiên bản 2")


def test_a_study_without_an_accession_number_gets_no_report(pages: Pages, site: Site, tmp_path: Path) -> None:
    study, _ = own_study(site, tmp_path, ordered=False)
    page = pages.login("radiologist", f"/ui/report/{study}")
    expect(page.locator("#report .report-no-accession")).to_contain_text("chưa có số phiếu chỉ định")
    expect(page.locator("#report-template")).to_have_count(0)


def test_in_english_with_english_templates(pages: Pages, site: Site, tmp_path: Path, screenshot: Screenshot) -> None:
    """A radiologist of their own whose UI is English (bs.lan's language is left to the other tests)."""
    archive = site.archive()
    try:
        archive.accounts.add_user("bs.anh", "radiologist", PASSWORD, ADMIN, display_name="Dr. Anh Nguyen")
        archive.accounts.set_preferences("bs.anh", ui_language="en")
    finally:
        archive.close()
    study, accession = own_study(site, tmp_path, name="Đặng^Văn Bình")
    page = pages.new(locale="en-US")
    page.goto(f"/ui/report/{study}")
    page.fill("#username", "bs.anh")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#report-title")).to_have_text("Report")
    expect(page.locator("#report-template optgroup").first).to_have_attribute("label", "Templates for CT")
    page.select_option("#report-template", label="CT head (non-contrast)")
    expect(page.locator("label[for=report-conclusion]")).to_have_text("Conclusion")
    page.locator("#report-conclusion").fill("No intracranial haemorrhage.")
    expect(page.locator("#report-save")).to_have_text(re.compile(r"^Saved \d\d:\d\d$"))
    body = api(site, "GET", f"/api/reports/{accession}").json()
    assert body["version"]["language"] == "en" and body["version"]["template_id"] == "ct-so-nao-en"
    # A radiologist without a signing certificate: signing is refused with the server's reason.
    page.click("#report-sign")
    page.locator("#report-pin").fill("whatever")
    page.locator("#report-sign-dialog button[type=submit]").click()
    expect(page.locator("#report-sign-dialog .dialog-error")).to_have_text(
        "Not signed: you have no signing certificate yet. Ask an administrator to install yours.")
    page.keyboard.press("Escape")
    expect(page.locator("#report-sign-dialog")).to_have_count(0)
    screenshot(page, "report-en")


def test_the_panel_beside_the_images_in_the_viewer(
    pages: Pages, site: Site, tmp_path: Path, screenshot: Screenshot
) -> None:
    study, accession = own_study(site, tmp_path)
    page = pages.login("radiologist", f"/studies/{study}")
    panel = page.locator("aside#report-panel #report")
    expect(panel.locator("#report-template")).to_be_visible()
    page.select_option("#report-template", label="CT sọ não")
    page.locator("#report-conclusion").fill("Không thấy máu tụ nội sọ.")
    # Keys typed in the report are the report's: the viewer's shortcuts do not take them.
    where = page.locator("[data-overlay=image]").first
    expect(where).to_contain_text("1/2")
    page.locator("#report-conclusion").press("ArrowDown")
    page.locator("#report-conclusion").press("PageDown")
    expect(page.locator("#report-save")).to_have_text(re.compile("^Đã lưu lúc"))
    assert api(site, "GET", f"/api/reports/{accession}").json()["version"]["sections"]["conclusion"] == (
        "Không thấy máu tụ nội sọ.")
    expect(where).to_contain_text("1/2")
    expect(panel.locator("a.report-window")).to_have_attribute("href", f"/ui/report/{study}")  # a second screen
    screenshot(page, "report-viewer")
