"""The study list in a real browser: the reading order, search with and without diacritics, the modality
filter, paging, a hostile patient name, and the page in Vietnamese and English."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect
from pydicom.uid import generate_uid

from sqlalchemy import update

from archive.models import UserAccount
from archive.text import name_tokens
from tests.archive.helpers import make_dataset, part10
from tests.ui.conftest import CT_ACCESSION, USERS, Pages, Site

Screenshot = Callable[[Page, str], Path]
DX_ACCESSION, US_ACCESSION = "DX2611200002", "US2611210003"
XSS = "<script>alert(1)</script>"
SAMPLE_DAYS = "from=2026-11-20&to=2026-11-21"


def rows(page: Page) -> Locator:
    return page.locator("#study-list tbody tr")


def accessions(page: Page) -> list[str]:
    """The accession numbers of the rows shown (column 9), in order."""
    return [text.strip() for text in page.locator("#study-list tbody tr td:nth-child(9)").all_inner_texts()]


def row_of(page: Page, accession: str) -> Locator:
    return page.locator("#study-list tbody tr", has=page.locator("td:nth-child(9)", has_text=accession))


def stow(site: Site, name: str, patient_id: str, accession: str, modality: str = "CT") -> str:
    """A one-image study of a patient of this test's own, stored over STOW-RS (multipart/related)."""
    study = generate_uid(prefix="2.25.")
    today = (datetime.now(UTC) + timedelta(hours=7)).strftime("%Y%m%d")  # the hospital's day (UTC+7)
    ds = make_dataset(1, study=study, series=generate_uid(prefix="2.25."), sop=generate_uid(prefix="2.25."),
                      patient_id=patient_id, patient_name=name, modality=modality, AccessionNumber=accession,
                      StudyDate=today, StudyTime="083000", StudyDescription="Chụp thử danh sách")  # fmt: skip
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10(ds)
            + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
    answer = site.call("POST", "/dicomweb/studies", data=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return study


@pytest.fixture
def radiologist_language(site: Site) -> Iterator[None]:
    """The radiologist's language is the account's: put it back for the tests that follow."""
    archive = site.archive()
    try:
        account = archive.accounts.user(USERS["radiologist"][0])
        before = account.ui_language if account else ""
    finally:
        archive.close()
    yield
    archive = site.archive()
    try:  # "" (not chosen yet) is no choice set_preferences makes
        with archive.db.write() as conn:
            conn.execute(update(UserAccount).where(UserAccount.username == USERS["radiologist"][0])
                         .values(ui_language=before))  # fmt: skip
    finally:
        archive.close()


def test_the_reading_list_puts_the_stat_ct_first(pages: Pages, site: Site, screenshot: Screenshot,
                                                 radiologist_language: None) -> None:  # fmt: skip
    page = pages.login("radiologist", "/ui/studies")
    expect(page).to_have_url(re.compile(r"/ui/studies$"))
    expect(page.locator("header.top nav.menu a[aria-current=page]")).to_have_text("Danh sách ca chụp")
    expect(page.locator("#f-status")).to_have_value("todo")  # a radiologist starts with what is left to read
    month = (datetime.now(UTC) + timedelta(hours=7) - timedelta(days=29)).strftime("%d/%m/%Y")
    expect(page.locator("#f-from")).to_have_value(month)  # ... of the last 30 days
    page.click(".quick-dates a:has-text('Mọi ngày')")  # every date: the sample studies are of November 2026
    expect(page).to_have_url(re.compile(r"from=&to="))
    shown = accessions(page)
    assert CT_ACCESSION in shown and DX_ACCESSION in shown and US_ACCESSION in shown, shown
    assert shown.index(CT_ACCESSION) < min(shown.index(DX_ACCESSION), shown.index(US_ACCESSION))
    ct = row_of(page, CT_ACCESSION)
    expect(ct.locator(".badge.stat")).to_have_text("Cấp cứu")
    expect(ct.locator("td.patient")).to_have_text("Nguyễn Văn An")
    expect(ct.locator("td:nth-child(4)")).to_have_text("15/03/1968")  # dd/mm/yyyy in Vietnamese
    expect(ct.locator("td:nth-child(6)")).to_contain_text("20/11/2026")
    expect(ct.locator("td:nth-child(10)")).to_have_text("20")
    expect(ct.locator("td:nth-child(11)")).to_have_text("Chưa đọc")
    screenshot(page, "studies-vi")
    # The sample days only: the STAT CT is the very first row.
    page.goto(f"/ui/studies?status=all&{SAMPLE_DAYS}")
    assert accessions(page)[0] == CT_ACCESSION
    # A click on the row opens the study in the viewer.
    ct.locator("td:nth-child(10)").click()
    expect(page).to_have_url(re.compile(r"/studies/2\.25\.201267940079897072368978825170084415160$"))
    # English at the click of a switch (remembered in the account; the fixture puts it back).
    page.goto("/ui/studies?from=&to=")
    page.click("header.top button[value=en]")
    expect(page.locator("h1")).to_contain_text("Studies")
    expect(row_of(page, CT_ACCESSION).locator(".badge.stat")).to_have_text("STAT")
    expect(row_of(page, CT_ACCESSION).locator("td:nth-child(4)")).to_have_text("1968-03-15")
    expect(page.locator("th a", has_text="Study date")).to_be_visible()
    expect(page.locator("#f-from")).to_have_attribute("type", "date")  # the browser's date picker in English
    screenshot(page, "studies-en")
    page.click("header.top button[value=vi]")
    expect(page.locator("h1")).to_contain_text("Danh sách ca chụp")


@pytest.mark.parametrize("typed", ["nguyen van an", "Nguyễn Văn An"])
def test_a_patient_is_found_with_or_without_diacritics(pages: Pages, typed: str) -> None:
    page = pages.login("radiologist", "/ui/studies?status=all&from=&to=")
    page.fill("#f-name", typed)
    page.click("#f-search")
    expect(page).to_have_url(re.compile(r"name="))
    expect(row_of(page, CT_ACCESSION)).to_have_count(1)
    shown = accessions(page)
    assert DX_ACCESSION not in shown and US_ACCESSION not in shown, shown
    for patient in page.locator("#study-list td.patient").all_inner_texts():  # only Nguyễn Văn An(h)...
        words = name_tokens(patient)
        assert "NGUYEN" in words and "VAN" in words and any(w.startswith("AN") for w in words), patient
    expect(page.locator("#f-name")).to_have_value(typed)  # the form keeps what was typed


def test_the_modality_filter(pages: Pages) -> None:
    page = pages.login("radiologist", f"/ui/studies?status=all&{SAMPLE_DAYS}")
    page.select_option("#f-modality", "US")  # the script searches at once
    expect(page).to_have_url(re.compile(r"modality=US"))
    expect(row_of(page, US_ACCESSION)).to_have_count(1)
    modalities = page.locator("#study-list tbody td:nth-child(7)").all_inner_texts()
    assert modalities and all("US" in m.split(", ") for m in modalities), modalities
    assert CT_ACCESSION not in accessions(page)
    # Dates typed as Vietnamese write them (a text field: dd/mm/yyyy whatever the browser's own language).
    page.fill("#f-from", "21/11/2026")
    page.fill("#f-to", "21/11/2026")
    page.click("#f-search")
    expect(page).to_have_url(re.compile(r"from=21%2F11%2F2026"))
    expect(page.locator("#f-from")).to_have_value("21/11/2026")
    days = page.locator("#study-list tbody td:nth-child(6)").all_inner_texts()
    assert days and all(d.startswith("21/11/2026") for d in days), days
    expect(row_of(page, US_ACCESSION)).to_have_count(1)


def test_paging_and_sorting(pages: Pages) -> None:
    page = pages.login("radiologist", "/ui/studies?status=all&size=2&from=&to=")
    expect(rows(page)).to_have_count(2)
    expect(page.locator("#page-of")).to_contain_text(re.compile(r"Trang 1/\d+"))
    first = accessions(page)
    page.click("#page-next")
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(page.locator("#page-of")).to_contain_text("Trang 2/")
    assert not set(first) & set(accessions(page))
    page.click("#page-prev")
    expect(page.locator("#page-of")).to_contain_text("Trang 1/")
    assert accessions(page) == first
    # Sorting by date (oldest first), then again (newest first): the size stays, the page starts over.
    page.goto(f"/ui/studies?status=all&{SAMPLE_DAYS}")
    page.click("th a:has-text('Ngày chụp')")
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Ngày chụp")
    dates = page.locator("#study-list tbody td:nth-child(6)").all_inner_texts()
    assert dates[0].startswith("21/11/2026") and dates[-1].startswith("20/11/2026"), dates
    page.click("th a:has-text('Ngày chụp')")
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Ngày chụp")
    assert page.locator("#study-list tbody td:nth-child(6)").first.inner_text().startswith("20/11/2026")


def test_a_hostile_patient_name_is_shown_as_text(pages: Pages, site: Site) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    stow(site, XSS, f"XSS{tag}", f"XS{tag}")
    page = pages.new()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"/ui/studies?status=all&from=&to=&pid=XSS{tag}")
    page.fill("#username", USERS["radiologist"][0])
    page.fill("#password", "phong doc phim 2026")
    page.click("#login-submit")
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#study-list td.patient")).to_have_text(XSS)
    assert page.locator("#study-list script").count() == 0
    # Searching by the name itself is just as harmless.
    page.fill("#f-name", XSS)
    page.click("#f-search")
    expect(page.locator("#f-name")).to_have_value(XSS)
    expect(page.locator("#study-list td.patient")).to_have_text(XSS)
    assert not dialogs


def test_bad_filters_say_what_is_wrong(pages: Pages, screenshot: Screenshot) -> None:
    page = pages.login("radiologist", "/ui/studies?page=-1&sort=bogus&from=31/02/2026")
    problems = page.locator("#filter-problems li")
    expect(problems).to_have_count(3)
    screenshot(page, "studies-bad-filter")
    expect(page.locator("#filter-problems")).to_contain_text("31/02/2026")
    expect(page.locator("#study-list")).to_have_count(0)
    page.click("a.button:has-text('Xóa lọc')")  # back to the plain list
    expect(page.locator("#filter-problems")).to_have_count(0)
    expect(page.locator("#study-list, #no-studies")).to_be_visible()


def test_a_referrer_sees_signed_or_not(pages: Pages, screenshot: Screenshot) -> None:
    page = pages.login("referrer", f"/ui/studies?{SAMPLE_DAYS}")
    expect(page.locator("#f-status option")).to_have_count(3)
    expect(page.locator("#f-status")).to_have_value("all")
    expect(row_of(page, CT_ACCESSION).locator("td:nth-child(11)")).to_have_text("Chưa có kết quả")
    screenshot(page, "studies-referrer")
