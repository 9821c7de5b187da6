"""A real `minipacs serve` with the sample studies, and Debian's Chromium driven by Playwright.

`site` is one server for the whole session (starting one costs seconds):
users of every role, the HIS order of the sample CT, and the three sample
studies as their modalities sent them. Tests that change data (sign a report,
match a study) use data of their own or say what they leave behind.
`page_as(role)` is a new browser context logged in through the real login form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from pydicom import dcmread
from pynetdicom import AE

from archive import Archive, Origin
from reports.identities import SigningIdentities
from tests.conftest import CT_FILES, DX_FILE, US_FILES, Server, dcmtk
from tests.reports import ca
from tests.ui.browser import ARGS, ARTIFACTS, CHROMIUM
from tests.viewer.helpers import start_web_server
from tests.worklist.helpers import HIS, order
from worklist.service import Worklist

PASSWORD = "phong doc phim 2026"
ADMIN = Origin("cli:test", "", "CLI")
#: The sample CT's accession number and study (sample_dicom/README.md), ordered by the HIS.
CT_ACCESSION = "CT2611200001"
CT_STUDY = "2.25.201267940079897072368978825170084415160"
DX_STUDY = "2.25.79413251553892344005708511772898469447"
US_STUDY = "2.25.48453463520213932914468139852915584526"
#: A user of each role (user name, display name).
USERS = {"radiologist": ("bs.lan", "BS. Trần Thị Lan"), "technologist": ("ktv.hoa", "KTV Nguyễn Thị Hoa"),
         "referrer": ("bs.ngoai", "BS. Lê Văn Ngoại"), "admin": ("admin", "Quản trị viên")}  # fmt: skip


@dataclass
class Site:
    data: Path
    server: Server
    url: str

    def call(self, method: str, path: str, role: str = "radiologist", **kwargs: Any) -> requests.Response:
        """An HTTP call as a user of `role` (HTTP Basic)."""
        return requests.request(method, f"{self.url}{path}", auth=(USERS[role][0], PASSWORD), timeout=60, **kwargs)

    def archive(self) -> Archive:
        return self.server.archive()


def prepare(data: Path) -> None:
    """Users of every role (the radiologist with a signing certificate) and the HIS order of the sample CT."""
    data.mkdir(parents=True)
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        for role, (name, display) in USERS.items():
            archive.accounts.add_user(name, role, PASSWORD, ADMIN, display_name=display)
        archive.accounts.set_practising_certificate("bs.lan", "003421/HCM-CCHN", ADMIN)
        SigningIdentities(archive.db, archive.audit).install("bs.lan", ca.radiologist().pkcs12, ca.PASSPHRASE, ADMIN)
        Worklist(archive).create(order("HIS-77", CT_ACCESSION, patient_id="BN26001001", procedure_code="CT-SONAO",
                                       study_instance_uid=CT_STUDY, priority="STAT"), HIS)  # fmt: skip
    finally:
        archive.close()


def send_samples(server: Server, scratch: Path) -> None:
    """The sample studies as their modalities send them (the CT console names its operator)."""
    scratch.mkdir(parents=True, exist_ok=True)
    sent = []
    for path in CT_FILES:
        ds = dcmread(path)
        ds.OperatorsName = "Phạm^Văn Hùng"
        sent.append(scratch / path.name)
        ds.save_as(sent[-1])
    dcmtk("storescu", "-aet", "CT_ROOM1", "-aec", "MINIPACS", "127.0.0.1", str(server.port), *sent)
    # The DX (JPEG 2000) and US cine (JPEG) as they are: storescu would only offer to convert them.
    store_as_is(server.port, "DX_ROOM2", [DX_FILE])
    store_as_is(server.port, "US_ROOM3", US_FILES)


def store_as_is(port: int, calling: str, files: list[Path]) -> None:
    """C-STORE with pynetdicom in each file's own transfer syntax."""
    datasets = [dcmread(f) for f in files]
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MINIPACS")
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status and status.Status == 0, status
    finally:
        assoc.release()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui")
    prepare(root / "data")
    server, url = start_web_server(root / "data", env={
        "MINIPACS_REPORTS_HOSPITAL_NAME": "Bệnh viện Đa khoa huyện Cần Giuộc",
        "MINIPACS_REPORTS_PUBLIC_URL": "https://pacs.cangiuoc.example",
    })  # fmt: skip
    try:
        send_samples(server, root / "sent")
        yield Site(root / "data", server, url)
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


# Playwright's sync API keeps an asyncio loop running in the main thread while it is open. Per module,
# so that it is closed before tests of other folders run in this process (pyHanko's asyncio.run, which
# signs reports in the Flask test client's tests, refuses to start inside a running loop).
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run tests/setup.sh (apt-get install chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    yield launched
    launched.close()


class Pages:
    """Browser contexts of this test; every page's console errors and failed requests are collected."""

    def __init__(self, browser: Browser, site: Site) -> None:
        self.browser = browser
        self.site = site
        self.contexts: list[BrowserContext] = []
        self.console_errors: list[str] = []

    def new(self, locale: str = "vi-VN", **options: Any) -> Page:
        """A fresh browser (no cookies) at 1440x900."""
        context = self.browser.new_context(locale=locale, viewport={"width": 1440, "height": 900},
                                           base_url=self.site.url, **options)  # fmt: skip
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        page = context.new_page()
        # Script errors and CSP violations; an HTTP error status is the test's to check (a wrong password is a 401).
        page.on("console", lambda m: self.console_errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)  # fmt: skip
        page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))
        page.on("response", lambda r: self.console_errors.append(f"{r.status} from {r.url}") if r.status >= 500 else None)
        return page

    def login(self, role: str, next_path: str = "/", **options: Any) -> Page:
        """A browser logged in as the user of `role` through the login form, at `next_path`."""
        page = self.new(**options)
        page.goto(next_path)
        page.wait_for_url(re.compile(r"/login-page"))
        page.fill("#username", USERS[role][0])
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_load_state()
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser, site: Site) -> Iterator[Pages]:
    opened = Pages(browser, site)
    yield opened
    opened.close()
    # A page that logs a script error or a CSP violation has a bug even when the test's checks pass.
    assert not opened.console_errors, opened.console_errors


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """Save a full-page screenshot as ``artifacts/ui/<name>.png`` (look at them after a run)."""

    def take(page: Page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
