"""Who may do what over HTTP, against a running `minipacs serve`: the role matrix, browser
sessions with CSRF, CORS, anonymous reading on a trusted LAN, and the admin audit endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask
from pydicom import dcmread

from archive import Archive, Origin
from archive.site_keys import shared_key
from tests.conftest import CT_FILES, DX_FILE, Server
from tests.dicom_scp.helpers import stop_and_check, wait_for
from tests.viewer.helpers import start_web_server
from viewer import create_app
from viewer.config import WebConfig

PASSWORD = "phong doc phim 2026"
ROLES = ("admin", "radiologist", "technologist", "referrer")
EMR_ORIGIN = "https://emr.benhvien.example"
CT = dcmread(CT_FILES[0], stop_before_pixels=True)
DX = dcmread(DX_FILE, stop_before_pixels=True)
ADMIN = Origin("cli:test", "", "CLI")


@dataclass
class Site:
    server: Server
    url: str
    tokens: dict[str, str]

    def get(self, path: str, as_: str | None = "radiologist", headers: dict[str, str] | None = None,
            **kwargs: object) -> requests.Response:  # fmt: skip
        credentials = _credentials(self, as_)
        headers = {**credentials.pop("headers", {}), **(headers or {})}  # type: ignore[dict-item]
        return requests.get(f"{self.url}{path}", timeout=30, headers=headers, **credentials, **kwargs)  # type: ignore[arg-type]


def _credentials(site: Site, who: str | None) -> dict[str, object]:
    if who is None:
        return {}
    if who in site.tokens:
        return {"headers": {"Authorization": f"Bearer {site.tokens[who]}"}}
    return {"auth": (who, PASSWORD)}


def _prepare(data: Path) -> dict[str, str]:
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        for path in (CT_FILES[0], DX_FILE):
            with open(path, "rb") as f:
                archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
        for role in ROLES:
            archive.accounts.add_user(role, role, PASSWORD, ADMIN)
        archive.accounts.add_user("bs.hoa", "radiologist", PASSWORD, ADMIN)
        return {"emr": archive.accounts.create_token("emr", ADMIN).secret,
                "tech-token": archive.accounts.create_token("tech-token", ADMIN, role="technologist").secret}  # fmt: skip
    finally:
        archive.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("access") / "data"
    data.mkdir()
    tokens = _prepare(data)
    server, url = start_web_server(data, env={"MINIPACS_HTTP_CORS_ORIGINS": f"{EMR_ORIGIN}, http://10.0.0.5:3000"})
    yield Site(server, url, tokens)
    stop_and_check(server)


STUDY = f"/dicomweb/studies/{CT.StudyInstanceUID}"

#: One request per endpoint family; "allowed" means neither 401 nor 403.
FAMILIES = {
    "search": ("GET", "/dicomweb/studies"),
    "retrieve": ("GET", f"{STUDY}/metadata"),
    "store": ("POST", "/dicomweb/studies"),
    "admin": ("GET", "/api/audit?limit=1"),
}
#: The expected matrix: who may use which family.
MATRIX = {
    "admin": {"search", "retrieve", "store", "admin"},
    "radiologist": {"search", "retrieve", "store"},
    "technologist": {"search", "retrieve", "store"},
    "tech-token": {"search", "retrieve", "store"},
    "referrer": {"search", "retrieve"},
    "emr": {"search", "retrieve"},
    None: set(),
}


@pytest.mark.parametrize("who", list(MATRIX), ids=lambda w: w or "nobody")
def test_role_matrix(site: Site, who: str | None) -> None:
    for family, (method, path) in FAMILIES.items():
        credentials = _credentials(site, who)
        headers = {**credentials.pop("headers", {}),  # type: ignore[dict-item]
                   "Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}
        answer = requests.request(method, f"{site.url}{path}", timeout=30, headers=headers,
                                  data=b"--x--\r\n" if method == "POST" else None, **credentials)  # type: ignore[arg-type]
        expected = "allowed" if family in MATRIX[who] else (401 if who is None else 403)
        got = "allowed" if answer.status_code not in (401, 403) else answer.status_code
        assert got == expected, f"{who} on {family}: {answer.status_code} {answer.text[:200]}"
        if got != "allowed":
            assert answer.headers["Content-Type"] == "application/json" and answer.json()["message"]
            assert "Traceback" not in answer.text


def test_forbidden_says_what_to_do(site: Site) -> None:
    answer = site.get("/api/audit", as_="referrer")
    assert answer.status_code == 403
    assert answer.json()["message"] == ("the referrer role may not use administration endpoints; "
                                        "ask an administrator for a role that may")  # fmt: skip


# --- browser sessions -------------------------------------------------------------------------


def login(site: Site, user: str = "bs.hoa", password: str = PASSWORD) -> tuple[requests.Session, str]:
    browser = requests.Session()
    answer = browser.post(f"{site.url}/login", data={"username": user, "password": password}, timeout=30)
    assert answer.status_code == 200, answer.text
    return browser, answer.json()["csrf_token"]


def test_a_browser_logs_in_once_and_then_uses_its_cookie(site: Site) -> None:
    browser = requests.Session()
    refused = browser.post(f"{site.url}/login", json={"username": "bs.hoa", "password": "wrong"}, timeout=30)
    assert refused.status_code == 401 and "wrong user name or password" in refused.json()["message"]
    assert "WWW-Authenticate" not in refused.headers  # no browser dialog on a failed form login
    assert "minipacs_session" not in browser.cookies
    answer = browser.post(f"{site.url}/login", json={"username": "bs.hoa", "password": PASSWORD}, timeout=30)
    assert answer.status_code == 200 and answer.json()["role"] == "radiologist"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert PASSWORD not in cookie
    # Two gunicorn workers share the signing key: many requests, all accepted.
    for _ in range(6):
        studies = browser.get(f"{site.url}/dicomweb/studies", timeout=30)
        assert studies.status_code == 200 and len(studies.json()) == 2
    me = browser.get(f"{site.url}/session", timeout=30).json()
    assert me == {"username": "bs.hoa", "role": "radiologist", "via": "session",
                  "csrf_token": answer.json()["csrf_token"]}  # fmt: skip


def test_state_changing_requests_need_the_csrf_token(site: Site) -> None:
    browser, csrf = login(site)
    without = browser.post(f"{site.url}/logout", timeout=30)
    assert without.status_code == 403 and "CSRF" in without.json()["message"]
    wrong = browser.post(f"{site.url}/logout", headers={"X-CSRF-Token": csrf[:-2] + "xx"}, timeout=30)
    assert wrong.status_code == 403
    assert browser.get(f"{site.url}/dicomweb/studies", timeout=30).status_code == 200  # still logged in
    # A STOW upload from a session needs it too; it is refused before the body is looked at.
    stow = browser.post(f"{site.url}/dicomweb/studies", data=b"--x--\r\n", timeout=30,
                        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'})  # fmt: skip
    assert stow.status_code == 403 and "CSRF" in stow.json()["message"]
    out = browser.post(f"{site.url}/logout", headers={"X-CSRF-Token": csrf}, timeout=30)
    assert out.status_code == 200
    assert browser.get(f"{site.url}/dicomweb/studies", timeout=30).status_code == 401


def test_a_forged_or_foreign_cookie_is_not_a_session(site: Site) -> None:
    browser, _ = login(site)
    value = browser.cookies["minipacs_session"]
    forged = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    answer = requests.get(f"{site.url}/dicomweb/studies", cookies={"minipacs_session": forged}, timeout=30)
    assert answer.status_code == 401
    # A cookie signed with another key (another installation) is refused the same way.
    other = Flask("elsewhere")
    other.secret_key = b"k" * 32
    serializer = other.session_interface.get_signing_serializer(other)  # type: ignore[attr-defined]
    foreign = serializer.dumps({"user": "admin", "since": time.time(), "seen": time.time(), "csrf": "x"})
    assert requests.get(f"{site.url}/api/audit", cookies={"minipacs_session": foreign}, timeout=30).status_code == 401


def test_disabling_the_account_or_changing_its_password_ends_its_sessions(site: Site) -> None:
    archive = site.server.archive()
    try:
        archive.accounts.add_user("bs.tam", "radiologist", PASSWORD, ADMIN)
        archive.accounts.add_user("bs.nga", "radiologist", PASSWORD, ADMIN)
        tam, _ = login(site, "bs.tam")
        nga, _ = login(site, "bs.nga")
        assert tam.get(f"{site.url}/dicomweb/studies", timeout=30).status_code == 200
        archive.accounts.set_disabled("bs.tam", True, ADMIN)
        time.sleep(0.01)
        archive.accounts.set_password("bs.nga", "a new password 2026", ADMIN)
    finally:
        archive.close()
    for browser in (tam, nga):
        ended = browser.get(f"{site.url}/dicomweb/studies", timeout=30)
        assert ended.status_code == 401 and "log in again" in ended.json()["message"]


@pytest.mark.parametrize("body", [
    {"username": "bs.hoa"}, {"username": ["bs.hoa"], "password": PASSWORD}, {"username": "x" * 5000, "password": "y"},
    "<script>alert(1)</script>", {"username": "' OR 1=1 --", "password": "' OR 1=1 --"},
])  # fmt: skip
def test_malformed_logins_are_refused_cleanly(site: Site, body: object) -> None:
    answer = requests.post(f"{site.url}/login", json=body, timeout=30)
    assert answer.status_code == 401 and answer.headers["Content-Type"] == "application/json"
    assert "Set-Cookie" not in answer.headers and "Traceback" not in answer.text


def test_an_idle_session_expires(tmp_path: Path, archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle clock, with the app in-process: waiting 30 real minutes is not a test."""
    archive.accounts.add_user("bs.hoa", "radiologist", PASSWORD, ADMIN)
    app = create_app(archive, WebConfig(session_minutes=30, secret_file=tmp_path / "key"))
    client = app.test_client()
    assert client.post("/login", data={"username": "bs.hoa", "password": PASSWORD}).status_code == 200
    assert app.secret_key == shared_key(archive.db, "http-session")  # the site's key, from the index
    now = time.time()
    monkeypatch.setattr("viewer.session.time.time", lambda: now + 29 * 60)
    assert client.get("/session").status_code == 200  # active: the idle clock restarts
    monkeypatch.setattr("viewer.session.time.time", lambda: now + 58 * 60)
    assert client.get("/session").status_code == 200
    monkeypatch.setattr("viewer.session.time.time", lambda: now + 89 * 60)
    expired = client.get("/session")
    assert expired.status_code == 401 and "expired" in expired.get_json()["message"]
    assert client.get("/session").status_code == 401  # and it stays ended


# --- CORS --------------------------------------------------------------------------------------


def test_cors_lets_listed_origins_call_dicomweb_without_cookies(site: Site) -> None:
    preflight = requests.options(f"{site.url}/dicomweb/studies", timeout=30, headers={
        "Origin": EMR_ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept, x-evil"})  # fmt: skip
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == EMR_ORIGIN
    assert preflight.headers["Access-Control-Allow-Headers"] == "accept, authorization"
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    answer = site.get("/dicomweb/studies?limit=1", as_="emr", headers={"Origin": EMR_ORIGIN})
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == EMR_ORIGIN
    assert "Warning" in answer.headers["Access-Control-Expose-Headers"]  # the truncation warning is readable
    assert "Origin" in answer.headers["Vary"]


def test_cors_refuses_other_origins(site: Site) -> None:
    preflight = requests.options(f"{site.url}/dicomweb/studies", timeout=30, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert preflight.status_code == 403 and "http.cors_origins" in preflight.json()["message"]
    answer = site.get("/dicomweb/studies", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 200 and "Access-Control-Allow-Origin" not in answer.headers
    # Not a prefix match: the port and scheme are part of the origin.
    assert "Access-Control-Allow-Origin" not in site.get(
        "/dicomweb/studies", headers={"Origin": "http://10.0.0.5:30001"}).headers  # fmt: skip


# --- the audit log over HTTP ------------------------------------------------------------------


def test_admins_find_who_saw_a_patient(site: Site) -> None:
    site.get(f"{STUDY}/metadata", as_="referrer")
    site.get("/dicomweb/studies", as_="emr", params={"PatientID": str(CT.PatientID)})
    site.get(f"/dicomweb/studies/{DX.StudyInstanceUID}/metadata", as_="bs.hoa")  # another patient

    def events() -> list[dict[str, str]] | None:
        answer = site.get("/api/audit", as_="admin", params={"patient": str(CT.PatientID), "limit": "100"})
        assert answer.status_code == 200
        found = answer.json()["events"]
        return found if {("referrer", "VIEW"), ("emr", "QUERY")} <= {(e["who"], e["action"]) for e in found} else None

    found = wait_for(events, timeout=20, what="audit events of the CT patient")
    assert all(e["who"] != "bs.hoa" for e in found)
    assert all(e["at"] >= found[-1]["at"] for e in found)  # newest first
    by_user = site.get("/api/audit", as_="admin", params={"user": "referrer", "action": "view"}).json()["events"]
    assert by_user and {e["who"] for e in by_user} == {"referrer"} and {e["action"] for e in by_user} == {"VIEW"}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert site.get("/api/audit", as_="admin", params={"since": today, "user": "referrer"}).json()["events"]
    assert not site.get("/api/audit", as_="admin", params={"until": "2020-01-01"}).json()["events"]


@pytest.mark.parametrize("query, message", [
    ("limit=99999999", "limit must be a number"), ("limit=-1", "limit must be a number"),
    ("since=yesterday", "is not a date"), ("order=desc", "unknown parameter"),
    ("user=%00%01", "printable text"), ("contains=" + "x" * 300, "at most 200"),
])  # fmt: skip
def test_audit_endpoint_rejects_bad_parameters(site: Site, query: str, message: str) -> None:
    answer = site.get(f"/api/audit?{query}", as_="admin")
    assert answer.status_code == 400 and message in answer.json()["message"]


def test_hostile_audit_filters_are_just_text(site: Site) -> None:
    for value in ("' OR 1=1 --", "%", "_", "<script>alert(1)</script>"):
        answer = site.get("/api/audit", as_="admin", params={"patient": value, "user": value})
        assert answer.status_code == 200 and answer.json() == {"events": []}


# --- anonymous reading on a trusted LAN --------------------------------------------------------


def test_anonymous_reading_when_enabled_reads_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _prepare(data)
    server, url = start_web_server(data, env={"MINIPACS_HTTP_ANONYMOUS_READ": "true"})
    try:
        studies = requests.get(f"{url}/dicomweb/studies", timeout=30)
        assert studies.status_code == 200 and len(studies.json()) == 2
        assert requests.get(f"{url}{STUDY}/metadata", timeout=30).status_code == 200
        for method, path in (("POST", "/dicomweb/studies"), ("GET", "/api/audit"), ("POST", "/logout")):
            assert requests.request(method, f"{url}{path}", timeout=30).status_code == 401, path
        # Credentials still count: a wrong password is refused, not downgraded to anonymous.
        assert requests.get(f"{url}/dicomweb/studies", auth=("admin", "wrong"), timeout=30).status_code == 401

        def anonymous_rows() -> list[object] | None:
            answer = requests.get(f"{url}/api/audit", auth=("admin", PASSWORD), timeout=30,
                                  params={"user": "anonymous"})  # fmt: skip
            rows = answer.json()["events"]
            return rows if {"QUERY", "VIEW"} <= {r["action"] for r in rows} else None

        wait_for(anonymous_rows, timeout=20, what="audit rows of anonymous reads")
    finally:
        stop_and_check(server)
