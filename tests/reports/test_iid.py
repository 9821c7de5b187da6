"""IHE Invoke Image Display (RAD-106) over HTTP: /iid to the study page, the login page and back,
404 and 400 pages, and the EMR's short-lived signed links (POST /api/iid-tokens)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from archive.audit import search
from tests.dicom_scp.helpers import stop_and_check, wait_for
from tests.reports.share_site import CT, DX, PASSWORD, Site, image_paths, start_site

STUDY, OTHER = str(CT.StudyInstanceUID), str(DX.StudyInstanceUID)
ACCESSION = str(CT.AccessionNumber)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("iid") / "data")
    yield running
    stop_and_check(running.server)


def logged_in(site: Site, user: str = "radiologist") -> requests.Session:
    browser = requests.Session()
    answer = browser.post(f"{site.url}/login", json={"username": user, "password": PASSWORD}, timeout=30)
    assert answer.status_code == 200
    return browser


def get(site: Site, path: str, browser: requests.Session | None = None, **kwargs: object) -> requests.Response:
    return (browser or requests).get(f"{site.url}{path}", timeout=30, allow_redirects=False, **kwargs)  # type: ignore[arg-type]


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden fields of a form, as the browser would send them."""
    return {name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page)}  # fmt: skip


def iid(**params: str) -> str:
    return "/iid?" + urlencode(params)


def test_a_logged_in_browser_goes_to_the_study_page(site: Site) -> None:
    browser = logged_in(site)
    for path in (iid(requestType="STUDY", accessionNumber=ACCESSION), iid(requestType="STUDY", studyUID=STUDY)):
        answer = get(site, path, browser)
        assert answer.status_code == 303 and answer.headers["Location"] == f"/studies/{STUDY}"
    page = get(site, f"/studies/{STUDY}", browser)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Nguyễn Văn An" in page.text and "BN26001001" in page.text and ACCESSION in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    thumbnails = image_paths(page.text)
    assert thumbnails and all(src.startswith(f"/studies/{STUDY}/instances/") for src in thumbnails)
    image = get(site, thumbnails[0], browser)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert get(site, thumbnails[0]).status_code == 401  # not without the session


def test_basic_credentials_work_too_and_the_role_is_checked(site: Site) -> None:
    path = iid(requestType="STUDY", accessionNumber=ACCESSION)
    assert get(site, path, **site.auth("referrer")).status_code == 303  # type: ignore[arg-type]
    refused = get(site, path, **site.auth("his"))  # type: ignore[arg-type]
    assert refused.status_code == 403 and "Không được phép" in refused.text
    assert get(site, path, auth=("radiologist", "wrong")).status_code == 401


def test_a_patient_request_lists_their_studies(site: Site) -> None:
    browser = logged_in(site)
    for patient in (str(CT.PatientID), f"{CT.PatientID}^^^BVDKCG", f"{CT.PatientID}^^^BVDKCG&1.2.3&ISO"):
        answer = get(site, iid(requestType="PATIENT", patientID=patient), browser)
        assert answer.status_code == 200, patient
        assert f'href="/studies/{STUDY}"' in answer.text and OTHER not in answer.text
    other_issuer = get(site, iid(requestType="PATIENT", patientID=f"{CT.PatientID}^^^ANOTHER"), browser)
    assert other_issuer.status_code == 404


@pytest.mark.parametrize("query, found", [
    ({"requestType": "STUDY", "studyUID": STUDY, "patientID": str(CT.PatientID)}, True),
    ({"requestType": "STUDY", "studyUID": STUDY, "patientID": str(DX.PatientID)}, False),
    ({"requestType": "PATIENT", "patientID": str(CT.PatientID), "modalitiesInStudy": "CT,MR"}, True),
    ({"requestType": "PATIENT", "patientID": str(CT.PatientID), "modalitiesInStudy": "US"}, False),
    ({"requestType": "PATIENT", "patientID": str(CT.PatientID), "lowerDateTime": "2000-01-01T00:00:00Z"}, True),
    ({"requestType": "PATIENT", "patientID": str(CT.PatientID), "lowerDateTime": "2099-01-01"}, False),
    ({"requestType": "PATIENT", "patientID": str(CT.PatientID), "upperDateTime": "2000-01-01T00:00:00"}, False),
    ({"requestType": "PATIENT", "patientID": str(CT.PatientID), "mostRecentResults": "1"}, True),
    ({"requestType": "PATIENT", "patientID": str(CT.PatientID), "viewerType": "IHE_BIR",
      "diagnosticQuality": "true", "keyImagesOnly": "false"}, True),
])  # fmt: skip
def test_iid_filters(site: Site, query: dict[str, str], found: bool) -> None:
    answer = get(site, iid(**query), logged_in(site))
    assert answer.status_code == ((303 if query["requestType"] == "STUDY" else 200) if found else 404), answer.text


def test_nothing_matching_is_a_clear_404_page(site: Site) -> None:
    browser = logged_in(site)
    for path in (iid(requestType="STUDY", accessionNumber="NOSUCH01"), iid(requestType="STUDY", studyUID="1.2.3.4"),
                 iid(requestType="PATIENT", patientID="BN-NOBODY")):  # fmt: skip
        answer = get(site, path, browser)
        assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("text/html")
        assert "Không tìm thấy" in answer.text and "No study matches" in answer.text
    assert get(site, "/studies/1.2.3.4", browser).status_code == 404


@pytest.mark.parametrize("query", [
    {"requestType": "SERIES", "studyUID": STUDY}, {"studyUID": STUDY}, {"requestType": "study", "studyUID": STUDY},
    {"requestType": "STUDY"}, {"requestType": "STUDY", "studyUID": "1.2.abc"},
    {"requestType": "STUDY", "accessionNumber": "X" * 17}, {"requestType": "PATIENT"},
    {"requestType": "PATIENT", "patientID": "^^^BVDKCG"},
    {"requestType": "STUDY", "studyUID": ",".join(["1.2.3"] * 21)},
    {"requestType": "PATIENT", "patientID": "BN1", "lowerDateTime": "yesterday"},
    {"requestType": "PATIENT", "patientID": "BN1", "mostRecentResults": "0"},
    {"requestType": "STUDY", "studyUID": STUDY, "patientID": ""},
])  # fmt: skip
def test_bad_parameters_are_400(site: Site, query: dict[str, str]) -> None:
    for browser in (logged_in(site), None):
        answer = get(site, iid(**query), browser)
        assert answer.status_code == 400 and "Traceback" not in answer.text
        assert "Yêu cầu không hợp lệ" in answer.text and "Bad request" in answer.text


def test_without_a_session_the_login_page_leads_back(site: Site) -> None:
    browser = requests.Session()
    path = iid(requestType="STUDY", accessionNumber=ACCESSION)
    sent = get(site, path, browser)
    assert sent.status_code == 303
    login_url = sent.headers["Location"]
    assert urlsplit(login_url).path == "/login-page" and parse_qs(urlsplit(login_url).query)["next"] == [path]
    form = get(site, login_url, browser)
    assert form.status_code == 200 and 'action="/login-page"' in form.text and "Mật khẩu" in form.text
    assert "default-src 'self'" in form.headers["Content-Security-Policy"]
    fields = hidden_fields(form.text)
    assert fields["next"] == path
    wrong = browser.post(f"{site.url}/login-page", data={**fields, "username": "radiologist", "password": "nope"},
                         timeout=30, allow_redirects=False)  # fmt: skip
    assert wrong.status_code == 401 and "Sai tên đăng nhập" in wrong.text and "minipacs_session" not in browser.cookies
    fields = hidden_fields(wrong.text)
    right = browser.post(f"{site.url}/login-page", data={**fields, "username": "radiologist", "password": PASSWORD},
                         timeout=30, allow_redirects=False)  # fmt: skip
    assert right.status_code == 303 and right.headers["Location"] == path
    back = get(site, path, browser)
    assert back.status_code == 303 and back.headers["Location"] == f"/studies/{STUDY}"
    assert get(site, f"/studies/{STUDY}", browser).status_code == 200


def test_the_login_form_refuses_forged_posts_and_foreign_redirects(site: Site) -> None:
    stranger = requests.post(f"{site.url}/login-page", timeout=30, allow_redirects=False,
                             data={"username": "radiologist", "password": PASSWORD, "csrf_token": "x", "next": "/"})  # fmt: skip
    assert stranger.status_code == 403 and "minipacs_session" not in stranger.headers.get("Set-Cookie", "")
    browser = requests.Session()
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        form = get(site, "/login-page?" + urlencode({"next": evil}), browser)
        fields = hidden_fields(form.text)
        assert fields["next"] == ""
        answer = browser.post(f"{site.url}/login-page", timeout=30, allow_redirects=False,
                              data={"username": "radiologist", "password": PASSWORD, "csrf_token": fields["csrf_token"],
                                    "next": evil})  # fmt: skip
        assert answer.status_code == 303 and answer.headers["Location"] == "/ui/"  # the start page, never elsewhere


def test_a_study_page_without_a_session_sends_to_the_login_page(site: Site) -> None:
    answer = get(site, f"/studies/{STUDY}")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/login-page?next=%2Fstudies%2F")


# --- the EMR's token -----------------------------------------------------------------------------


def token_url(site: Site, who: str = "emr", **body: str) -> requests.Response:
    return site.request("POST", "/api/iid-tokens", as_=who, json=body or {"accessionNumber": ACCESSION})


def test_an_emr_link_opens_that_study_without_a_login_and_nothing_else(site: Site) -> None:
    made = token_url(site)
    assert made.status_code == 201 and made.json()["study_instance_uid"] == STUDY and made.json()["expires_in"] == 300
    url = made.json()["url"]
    assert url.startswith(f"{site.url}/iid?requestType=STUDY&studyUID={STUDY}&token=")
    browser = requests.Session()
    opened = browser.get(url, timeout=30, allow_redirects=False)
    assert opened.status_code == 303 and opened.headers["Location"] == f"/studies/{STUDY}"
    assert f"Path=/studies/{STUDY}" in opened.headers["Set-Cookie"] and "HttpOnly" in opened.headers["Set-Cookie"]
    page = get(site, f"/studies/{STUDY}", browser)
    assert page.status_code == 200 and "Nguyễn Văn An" in page.text
    assert all(get(site, src, browser).status_code == 200 for src in image_paths(page.text))
    # Only that study: another study's page, its images, DICOMweb and the APIs stay closed.
    assert get(site, f"/studies/{OTHER}", browser).status_code == 303
    assert get(site, f"/studies/{STUDY}/instances/{DX.SOPInstanceUID}/thumbnail", browser).status_code == 404
    assert get(site, f"/studies/{OTHER}/instances/{DX.SOPInstanceUID}/thumbnail", browser).status_code == 401
    assert get(site, f"/dicomweb/studies/{STUDY}/metadata", browser).status_code == 401
    # The same link named with another study is refused.
    token = parse_qs(urlsplit(url).query)["token"][0]
    moved = get(site, iid(requestType="STUDY", studyUID=OTHER, token=token))
    assert moved.status_code == 403 and "Set-Cookie" not in moved.headers


def test_an_expired_or_tampered_token_is_refused(site: Site) -> None:
    url = token_url(site, "admin", studyUID=STUDY).json()["url"]
    token = parse_qs(urlsplit(url).query)["token"][0]
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 301

    archive = site.server.archive()
    try:
        key = site.key(archive)
    finally:
        archive.close()
    expired = URLSafeTimedSerializer(key, salt="minipacs iid token", signer=Past).dumps({"s": STUDY, "by": "emr"})
    fresh = URLSafeTimedSerializer(key, salt="minipacs iid token").dumps({"s": STUDY, "by": "emr"})
    assert get(site, iid(requestType="STUDY", studyUID=STUDY, token=fresh)).status_code == 303  # the key is right
    for bad in (tampered, expired, "", "x" * 500):
        answer = get(site, iid(requestType="STUDY", studyUID=STUDY, token=bad))
        assert answer.status_code == 403 and "hết hạn" in answer.text and "expired" in answer.text
        assert "Set-Cookie" not in answer.headers
    archive = site.server.archive()
    try:
        wait_for(lambda: [r for r in search(archive.db, action="IID_OPEN", limit=200) if r.outcome == "refused"],
                 timeout=20, what="refused IID opens in the audit log")  # fmt: skip
        opened = search(archive.db, action="IID_OPEN", uid=STUDY, limit=200)
        assert {"ok"} <= {r.outcome for r in opened} and any(r.actor == "iid-token:emr" for r in opened)
    finally:
        archive.close()


@pytest.mark.parametrize("who, status", [
    ("emr", 201), ("admin", 201), ("radiologist", 403), ("technologist", 403), ("referrer", 403), ("his", 403),
    (None, 401),
])  # fmt: skip
def test_who_may_make_emr_links(site: Site, who: str | None, status: int) -> None:
    answer = site.request("POST", "/api/iid-tokens", as_=who, json={"accessionNumber": ACCESSION})
    assert answer.status_code == status and (status == 201 or answer.json()["message"])


@pytest.mark.parametrize("body, status", [
    ({"accessionNumber": "NOSUCH01"}, 404), ({"studyUID": "1.2.3.4"}, 404), ({"studyUID": "x/../y"}, 400),
    ({}, 400), ({"accessionNumber": ACCESSION, "studyUID": STUDY}, 400), ({"accessionNumber": 5}, 400),
    ({"patientID": "BN26001001"}, 400), ({"accessionNumber": "X" * 17}, 400),
])  # fmt: skip
def test_bad_token_requests(site: Site, body: dict[str, object], status: int) -> None:
    answer = site.request("POST", "/api/iid-tokens", as_="emr", json=body)
    assert answer.status_code == status and answer.headers["Content-Type"] == "application/json"
