"""The technologist's pages in a real browser: today's worklist, walk-in registration, matching an
unmatched study by hand, roles.

Tests that change data use their own: a walk-in patient of their own, and a DX study of their own
(new UIDs, own patient, no accession number) sent over DICOM, so the shared site's sample DX and US
studies stay unmatched for the other screens' tests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import DX_FILE
from tests.ui.conftest import CT_ACCESSION, DX_STUDY, Pages, Site, store_as_is
from worklist.service import Worklist

Screenshot = Callable[[Page, str], Path]


def test_the_technologist_lands_on_todays_worklist(pages: Pages, site: Site, screenshot: Screenshot) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    registered = site.call("POST", "/api/worklist/walk-in", "technologist", json={
        "patient": {"patient_id": f"BNTD{tag}", "name": "Võ^Minh Tuấn", "birth_date": "19900512", "sex": "M"},
        "procedure_code": "XQ-NGUC-THANG", "station_ae_title": "DX_ROOM2"})  # fmt: skip
    assert registered.status_code == 201, registered.text
    walk_in = registered.json()["step"]["accession_number"]
    page = pages.login("technologist")
    expect(page).to_have_url(re.compile(r"/ui/worklist$"))
    expect(page.locator("h1")).to_contain_text("Danh sách chờ chụp")
    row = page.locator(f'#worklist tr[data-accession="{CT_ACCESSION}"]')
    expect(row).to_be_visible()
    expect(row.locator(".badge.stat")).to_have_text("Cấp cứu")
    expect(row).to_contain_text("BN26001001")
    expect(row.locator(".wl-images a")).to_have_text(re.compile(r"^[1-9]\d*$"))  # the sample CT's slices arrived
    # The technologist's menu: no administration.
    menu = page.locator("nav.menu a")
    expect(menu.filter(has_text="Danh sách chờ chụp")).to_have_count(1)
    expect(page.locator('nav.menu a[href^="/ui/admin"]')).to_have_count(0)
    expect(page.locator("#unmatched-count")).to_have_text(re.compile(r"^[1-9]\d*$"))  # the sample DX and US
    mine = page.locator(f'#worklist tr[data-accession="{walk_in}"]')
    expect(mine).to_contain_text("Võ Minh Tuấn")
    expect(mine).to_contain_text("DX_ROOM2")
    screenshot(page, "worklist-today")
    # Filter by modality (applied on change by worklist.js), then by station with its chip.
    page.select_option("#wl-modality", "CT")
    expect(page).to_have_url(re.compile(r"modality=CT"))
    expect(row).to_be_visible()
    expect(mine).to_have_count(0)
    page.locator(".wl-groups a.chip.station", has_text="DX_ROOM2").click()
    expect(page).to_have_url(re.compile(r"station=DX_ROOM2"))
    expect(mine).to_be_visible()
    expect(row).to_have_count(0)
    page.locator(".wl-groups a.chip", has_text="Tất cả").click()
    expect(page).not_to_have_url(re.compile(r"modality=|station="))
    expect(row).to_be_visible()
    # Another day: the date field; today's orders are not on it.
    page.fill("#wl-date", "2026-01-01")
    expect(page).to_have_url(re.compile(r"date=2026-01-01"))
    expect(page.locator("#worklist-empty")).to_be_visible()


def test_a_walk_in_is_registered_and_shows_on_the_worklist(pages: Pages, site: Site, screenshot: Screenshot) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    patient_id = f"BNWI{tag}"
    page = pages.login("technologist", "/ui/worklist/walk-in")
    expect(page.locator("h1")).to_have_text("Đăng ký chụp trực tiếp")
    page.fill("#patient_name", "Lê Thị <b>Hồng</b>")
    page.fill("#patient_id", patient_id)
    page.fill("#birth_date", "1982-07-15")
    page.select_option("#sex", "F")
    page.fill("#cccd", "0791820")  # too short
    page.select_option("#procedure_code", "SA-OBUNG")  # chooses the modality too
    expect(page.locator("#modality")).to_have_value("US")
    page.select_option("#priority", "HIGH")
    page.click("#walk-in-submit")
    expect(page.locator("#err-cccd")).to_contain_text("12 chữ số")
    screenshot(page, "worklist-walk-in-errors")
    expect(page.locator("#patient_id")).to_have_value(patient_id)  # what was typed stays
    expect(page.locator("#procedure_code")).to_have_value("SA-OBUNG")
    page.fill("#cccd", "079182001234")
    page.fill("#station_ae_title", "US_ROOM3")
    page.click("#walk-in-submit")
    accession = page.locator("#new-accession")
    expect(accession).to_have_text(re.compile(r"^\d{10}$"))  # worklist.accession_pattern {date}{seq:4}
    expect(page.locator("#new-patient-id")).to_have_text(patient_id)
    number = accession.inner_text()
    screenshot(page, "worklist-walk-in")

    page.click("text=Mở danh sách chờ chụp")
    row = page.locator(f'#worklist tr[data-accession="{number}"]')
    expect(row).to_contain_text("Lê Thị <b>Hồng</b>")  # shown as text
    expect(row.locator(".badge.walk-in")).to_be_visible()
    expect(row.locator(".wl-status")).to_have_text("Chờ chụp")
    # Start the exam from the list.
    row.locator('button[value="started"]').click()
    expect(page.locator(".ok.wl-message")).to_contain_text(number)
    expect(row.locator(".wl-status")).to_have_text("Đang chụp")

    answer = site.call("GET", f"/api/worklist/{number}", "technologist")
    assert answer.status_code == 200, answer.text
    step = answer.json()["step"]
    assert step["patient"]["patient_id"] == patient_id and step["patient"]["name"] == "Lê^Thị <b>Hồng</b>"
    assert step["modality"] == "US" and step["station_ae_title"] == "US_ROOM3" and step["priority"] == "HIGH"
    assert step["status"] == "IN PROGRESS" and step["placer_issuer"] == "WALKIN"
    assert {"value": "079182001234", "issuer": "CCCD", "type": "TEXT"} in step["patient"]["other_ids"]
    archive = site.archive()
    try:
        actors = [e["actor"] for e in Worklist(archive).history(number)]
    finally:
        archive.close()
    assert actors == ["ktv.hoa", "ktv.hoa"]


def own_dx_study(site: Site, scratch: Path, patient_id: str, name: str) -> str:
    """The sample DX as a new study of `patient_id`, without accession number, sent by the DX console."""
    ds = dcmread(DX_FILE)
    study = generate_uid(prefix="2.25.")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid(prefix="2.25.")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
    ds.AccessionNumber, ds.PatientID, ds.PatientName = "", patient_id, name
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"{patient_id}.dcm"
    ds.save_as(path)
    store_as_is(site.server.port, "DX_ROOM2", [path])
    return study


def test_the_technologist_matches_an_unmatched_study(pages: Pages, site: Site, screenshot: Screenshot,
                                                     tmp_path: Path) -> None:  # fmt: skip
    tag = uuid.uuid4().hex[:6].upper()
    patient_id = f"BNUM{tag}"
    study = own_dx_study(site, tmp_path, patient_id, "TRAN^VAN BINH")  # the console types without diacritics
    page = pages.login("technologist", "/ui/worklist/unmatched")
    row = page.locator(f'#unmatched tr[data-study="{study}"]')
    expect(row).to_contain_text(patient_id)
    expect(row).to_contain_text("TRAN VAN BINH")
    expect(page.locator(f'#unmatched tr[data-study="{DX_STUDY}"]')).to_be_visible()  # the sample DX, unmatched too
    # Each study shows a thumbnail to check the images by (DX in JPEG 2000, US cine in JPEG).
    # (Those two rows only, each scrolled into view: the session's other tests leave more unmatched
    # studies, and thumbnails are lazy.)
    for uid in (DX_STUDY, study):
        page.locator(f'#unmatched tr[data-study="{uid}"]').scroll_into_view_if_needed()
        page.wait_for_function("""uid => { const img = document.querySelector(`#unmatched tr[data-study="${uid}"] a.wl-thumb img`);
                                           return img && img.complete && img.naturalWidth > 0; }""", arg=uid)
    screenshot(page, "worklist-unmatched")

    # An accession number no order has: a clear message, nothing changed.
    row.locator('input[name="accession_number"]').fill("KHONGCO")
    row.locator("button", has_text="Ghép").click()
    expect(page.locator("#wl-error")).to_contain_text("KHONGCO")
    expect(page.locator(f'#unmatched tr[data-study="{study}"]')).to_be_visible()

    # The HIS order comes later (here: registered as a walk-in through the API, as another desk would).
    ordered = site.call("POST", "/api/worklist/walk-in", "technologist", json={
        "patient": {"patient_id": patient_id, "name": "Trần^Văn Bình", "birth_date": "19700101", "sex": "M"},
        "procedure_code": "XQ-NGUC-THANG"})  # fmt: skip
    assert ordered.status_code == 201, ordered.text
    accession = ordered.json()["step"]["accession_number"]
    page.reload()
    row = page.locator(f'#unmatched tr[data-study="{study}"]')
    row.locator('input[name="accession_number"]').fill(accession)
    row.locator("button", has_text="Ghép").click()
    expect(page.locator(".ok.wl-message")).to_contain_text(accession)
    expect(page.locator(".notice.wl-message")).to_contain_text(accession)  # the index corrected from the order
    expect(page.locator(f'#unmatched tr[data-study="{study}"]')).to_have_count(0)
    expect(page.locator(f'#unmatched tr[data-study="{DX_STUDY}"]')).to_be_visible()  # others' data untouched

    found = site.call("GET", f"/dicomweb/studies?StudyInstanceUID={study}", "technologist")
    assert found.status_code == 200, found.text
    [attributes] = found.json()
    assert attributes["00080050"]["Value"] == [accession]
    assert attributes["00100010"]["Value"][0]["Alphabetic"] == "Trần^Văn Bình"
    # On the worklist the order now has its image, and has started.
    page.goto("/ui/worklist")
    step_row = page.locator(f'#worklist tr[data-accession="{accession}"]')
    expect(step_row.locator(".wl-images")).to_have_text("1")
    expect(step_row.locator(".wl-status")).to_have_text("Đang chụp")


def test_a_referrer_is_refused_the_worklist(pages: Pages, site: Site) -> None:
    page = pages.login("referrer")
    expect(page).to_have_url(re.compile(r"/ui/studies"))
    expect(page.locator('nav.menu a[href="/ui/worklist"]')).to_have_count(0)
    for path in ("/ui/worklist", "/ui/worklist/unmatched", "/ui/worklist/walk-in"):
        answer = page.goto(path)
        assert answer is not None and answer.status == 403
        expect(page.locator("h1")).to_have_text("Không được phép")
        expect(page.locator('nav.menu a[href="/ui/worklist"]')).to_have_count(0)
