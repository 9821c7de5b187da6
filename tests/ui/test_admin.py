"""The administrator's pages in a real browser: dashboard, users and tokens, audit search, and who may not see them.

The site is shared: this test adds a user and a token of its own (names no other test uses) and revokes the token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import requests
from playwright.sync_api import Page, expect

from tests.ui.conftest import USERS, Pages, Site

NEW_USER, NEW_PASSWORD = "ktv.admin-test", "ca truc dem thu bay"
TOKEN = "emr-admin-test"


def test_dashboard_shows_storage_and_the_sample_modalities(pages: Pages,
                                                           screenshot: Callable[[Page, str], Path]) -> None:  # fmt: skip
    page = pages.login("admin", "/ui/admin")
    expect(page).to_have_url(re.compile(r"/ui/admin$"))
    expect(page.locator("nav.menu a[href='/ui/admin']")).to_have_attribute("aria-current", "page")
    instances = int(page.locator("#instances").inner_text().replace(".", "").replace(",", ""))
    assert instances >= 3  # the sample CT, DX and US at least
    expect(page.locator("#free")).to_contain_text("GB")
    expect(page.locator("#projection")).to_be_visible()
    width = page.locator(".meter > span").evaluate("e => e.style.width")
    assert width.endswith("%") and 0 < float(width[:-1]) <= 100  # set by admin.js from data-width
    for title in ("CT_ROOM1", "DX_ROOM2", "US_ROOM3"):
        row = page.locator(f"#modalities tr[data-ae='{title}']")
        expect(row).to_be_visible()
        expect(row.locator("td.seen")).to_contain_text(re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d"))  # Vietnamese dates
        assert int(row.locator("td.num").inner_text()) >= 1  # sent in the last 24 h
    expect(page.locator("#health .badge").first).to_be_visible()
    screenshot(page, "admin-dashboard")
    page.click("nav.admin-tabs a[href='/ui/admin/outbox']")
    expect(page.locator("h1")).to_be_visible()
    screenshot(page, "admin-outbox")


def test_add_a_user_who_can_then_log_in(pages: Pages) -> None:
    page = pages.login("admin", "/ui/admin/users")
    page.fill("#new-username", NEW_USER)
    page.fill("#new-display", "KTV <b>Thử</b> Nghiệm")
    page.select_option("#new-role", "technologist")
    page.fill("#new-password", NEW_PASSWORD)
    page.fill("#new-confirm", "something else")
    page.click("#add-user-submit")
    expect(page.locator("#form-error")).to_be_visible()  # the two passwords differ: nothing added
    expect(page.locator(f"tr[data-user='{NEW_USER}']")).to_have_count(0)
    page.fill("#new-password", NEW_PASSWORD)
    page.fill("#new-confirm", NEW_PASSWORD)
    page.click("#add-user-submit")
    expect(page.locator("#notice")).to_contain_text(NEW_USER)
    row = page.locator(f"tr[data-user='{NEW_USER}']")
    expect(row).to_contain_text("KTV <b>Thử</b> Nghiệm")  # as text
    newcomer = pages.new()
    newcomer.goto("/ui/")
    newcomer.fill("#username", NEW_USER)
    newcomer.fill("#password", NEW_PASSWORD)
    newcomer.click("#login-submit")
    expect(newcomer).to_have_url(re.compile(r"/ui/worklist"))
    expect(newcomer.locator("nav.menu a[href='/ui/admin']")).to_have_count(0)  # no Administration item


def test_token_secret_shown_once_works_and_revoking_refuses_it(pages: Pages, site: Site,
                                                               screenshot: Callable[[Page, str], Path]) -> None:  # fmt: skip
    page = pages.login("admin", "/ui/admin/users")
    page.fill("#token-name", TOKEN)
    page.select_option("#token-role", "emr")
    page.click("#create-token")
    secret = page.locator("#token-secret").inner_text().strip()
    assert re.fullmatch(r"mpt_[A-Za-z0-9_-]{43}", secret)
    expect(page.locator(".notice")).to_be_visible()  # "shown only once"
    screenshot(page, "admin-token")
    bearer = {"Authorization": f"Bearer {secret}"}
    assert requests.get(f"{site.url}/dicomweb/studies", headers=bearer, timeout=30).status_code == 200
    page.goto("/ui/admin/users")
    row = page.locator(f"tr[data-token='{TOKEN}']")
    expect(row).to_contain_text(secret[:12])
    assert secret not in page.content()  # never again
    screenshot(page, "admin-users")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button.danger").click()
    expect(page.locator("#notice")).to_contain_text(TOKEN)
    expect(row.locator(".badge.stat")).to_be_visible()
    assert requests.get(f"{site.url}/dicomweb/studies", headers=bearer, timeout=30).status_code == 401


def test_audit_search_finds_the_admins_login(pages: Pages, screenshot: Callable[[Page, str], Path]) -> None:
    page = pages.login("admin", "/ui/admin/audit")
    page.fill("#a-user", USERS["admin"][0])
    page.fill("#a-action", "LOGIN")
    page.click("#audit-search button[type=submit]")
    expect(page).to_have_url(re.compile(r"action=LOGIN"))
    rows = page.locator("#events tbody tr")
    expect(rows.first).to_contain_text("LOGIN")
    expect(rows.first).to_contain_text(USERS["admin"][0])
    assert all(USERS["admin"][0] in text for text in rows.all_inner_texts())
    page.fill("#a-since", "2026-12-31")
    page.fill("#a-until", "2026-01-01")
    page.click("#audit-search button[type=submit]")
    expect(page.locator("#form-error")).to_be_visible()  # the end before the start
    page.goto("/ui/admin/audit?user=admin")
    expect(page.locator("#events tbody tr").first).to_be_visible()
    screenshot(page, "admin-audit")


def test_a_radiologist_gets_403_and_no_menu_item(pages: Pages, site: Site) -> None:
    page = pages.login("radiologist", "/ui/studies")
    expect(page.locator("nav.menu a[href='/ui/admin']")).to_have_count(0)
    answer = page.goto("/ui/admin")
    assert answer is not None and answer.status == 403
    expect(page.locator(".error")).to_be_visible()
    for path in ("/ui/admin/users", "/ui/admin/audit", "/ui/admin/outbox"):
        assert site.call("GET", path, role="radiologist", allow_redirects=False).status_code == 403
