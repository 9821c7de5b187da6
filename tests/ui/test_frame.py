"""The page frame in a real browser: login, the language switch, logout, security headers, no script errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.ui.conftest import USERS, Pages, Site


def test_log_in_switch_language_log_out(pages: Pages, site: Site, screenshot: Callable[[Page, str], Path]) -> None:
    page = pages.new()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login-page\?next="))
    expect(page.locator("h1")).to_have_text("Đăng nhập")
    screenshot(page, "login-vi")
    page.click("button[value=en]")  # before logging in: remembered in a cookie
    expect(page.locator("h1")).to_have_text("Log in")
    page.fill("#username", USERS["radiologist"][0])
    page.fill("#password", "wrong password")
    page.click("#login-submit")
    expect(page.locator(".error")).to_have_text("Wrong user name or password.")
    page.fill("#username", USERS["radiologist"][0])
    page.fill("#password", "phong doc phim 2026")
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(r"/ui/studies"))
    expect(page.locator("header.top .who")).to_contain_text(USERS["radiologist"][1])
    page.click("header.top button[value=vi]")  # logged in: remembered in the account
    expect(page.locator("header.top .logout button")).to_have_text("Đăng xuất")
    user = site.archive()
    try:
        account = user.accounts.user(USERS["radiologist"][0])
        assert account is not None and account.ui_language == "vi"
    finally:
        user.close()
    page.click("header.top .logout button")
    expect(page).to_have_url(re.compile(r"/login-page"))
    page.goto("/ui/studies")
    expect(page).to_have_url(re.compile(r"/login-page\?next=%2Fui%2Fstudies"))


def test_every_page_carries_a_strict_content_security_policy(site: Site) -> None:
    import requests

    answer = requests.get(f"{site.url}/login-page", timeout=30)
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\"))", answer.text)  # no inline script
    asset = re.search(r'href="(/assets/ui/ui\.css\?v=[0-9a-f]+)"', answer.text)
    assert asset, answer.text
    cached = requests.get(f"{site.url}{asset.group(1)}", timeout=30)
    assert cached.status_code == 200 and "immutable" in cached.headers["Cache-Control"]
    assert "no-cache" in requests.get(f"{site.url}/assets/ui/ui.css", timeout=30).headers["Cache-Control"]
    import http.client
    from urllib.parse import urlsplit

    for sneaky in ("/assets/../app.py", "/assets/ui/../../app.py", "/assets/%2e%2e/app.py", "/assets/ui/../../../etc/passwd"):
        conn = http.client.HTTPConnection(urlsplit(site.url).netloc, timeout=30)
        conn.request("GET", sneaky)  # sent as written: requests would tidy the dots away
        answer_ = conn.getresponse()
        body = answer_.read()
        assert answer_.status in (404, 401) and b"def create_app" not in body and b"root:" not in body, sneaky
        conn.close()
