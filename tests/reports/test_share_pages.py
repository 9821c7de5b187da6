"""The patient's share page over HTTP: images as small JPEGs, the PIN, escaping, CSP, and no other
patient's data whatever the URL says; the final report (signed for real) on the page and as a PDF."""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from archive import Archive
from archive.audit import search
from reports.share import MAX_PIN_ATTEMPTS, split_link
from tests.dicom_scp.helpers import stop_and_check, wait_for
from tests.conftest import CT_FILES
from tests.reports.share_site import CT, DX, XSS_NAME, Site, image_paths, link_path, start_site

STUDY = str(CT.StudyInstanceUID)
PIN = "1980"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("share-pages") / "data")
    yield running
    stop_and_check(running.server)


def new_link(site: Site, study: str = STUDY, **body: object) -> str:
    answer = site.request("POST", "/api/share-links", json={"study_instance_uid": study, **body})
    assert answer.status_code == 201, answer.text
    return link_path(answer.json()["url"])


def get(site: Site, path: str, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).get(f"{site.url}{path}", timeout=30, allow_redirects=False)


def test_the_page_lists_the_series_with_lazy_small_jpegs(site: Site) -> None:
    path = new_link(site)
    answer = get(site, path)
    assert answer.status_code == 200
    html = answer.text
    assert "Nguyễn" in html or str(CT.PatientName).split("^")[0] in html
    assert str(CT.PatientID) in html and "Kết quả" in html and "results" in html.lower()
    images = image_paths(html)
    assert len(images) == len(CT_FILES)
    assert all(src.startswith(f"{path}/instances/") for src in images)
    assert html.count('loading="lazy"') == len(images)
    for src in images[:3]:
        image = get(site, src)
        assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
        assert "private" in image.headers["Cache-Control"]
        with Image.open(io.BytesIO(image.content)) as picture:
            assert picture.format == "JPEG" and max(picture.size) <= 320
        assert len(image.content) < 40_000  # a slow phone network
    large = re.search(r'href="([^"]+viewport=1024[^"]+)"', html)
    assert large
    with Image.open(io.BytesIO(get(site, large.group(1).replace("&amp;", "&")).content)) as picture:
        assert max(picture.size) <= 1024
    assert "Chưa có kết quả đọc phim" in html  # no report yet


def test_pages_carry_a_strict_content_security_policy(site: Site) -> None:
    path = new_link(site)
    token_id, _ = split_link(path[3:])
    for answer in (get(site, path), get(site, f"/s/{token_id}.wrong"), get(site, new_link(site, pin=PIN))):
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["Referrer-Policy"] == "no-referrer"  # the URL is the key: never sent on
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script" not in answer.text and " style=" not in answer.text and "onerror" not in answer.text
    css = get(site, "/assets/pages.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")


def test_a_hostile_patient_name_is_shown_as_text(site: Site) -> None:
    html = get(site, new_link(site, site.xss_study)).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS_NAME not in html and "<script" not in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html and "<img src=x" not in html
    assert "XSS&lt;b&gt;1&lt;/b&gt;" in html


def test_no_other_study_is_reachable_through_a_link(site: Site) -> None:
    path = new_link(site)
    for sop in (str(DX.SOPInstanceUID), site.xss_sop, "1.2.3.4.5.6"):
        answer = get(site, f"{path}/instances/{sop}/rendered")
        assert answer.status_code == 404 and answer.headers["Content-Type"] == "application/json"
    assert get(site, f"{path}/instances/..%2F..%2Fetc/rendered").status_code in (400, 404)
    assert get(site, f"{path}/instances/not-a-uid/rendered").status_code == 400
    own = f"{path}/instances/{CT.SOPInstanceUID}/rendered"
    assert get(site, f"{own}?viewport=99999,99999").status_code == 400
    assert get(site, f"{own}?viewport=64,64,0,0,10,10").status_code == 400
    assert get(site, f"{own}?window=40,400").status_code == 400  # only viewport and quality
    assert get(site, f"{own}?quality=0").status_code == 400
    # The other DICOMweb doors stay closed to the link holder.
    assert get(site, f"/dicomweb/studies/{STUDY}/metadata").status_code == 401
    assert get(site, f"{path}/../../dicomweb/studies").status_code in (401, 404)


def test_image_views_are_audited_as_the_link(site: Site) -> None:
    path = new_link(site)
    token_id, _ = split_link(path[3:])
    assert get(site, f"{path}/instances/{CT.SOPInstanceUID}/rendered?viewport=64,64").status_code == 200
    archive = site.server.archive()
    try:
        rows = wait_for(lambda: search(archive.db, actor=f"share:{token_id[:8]}", action="VIEW"), timeout=20,
                        what="the image view in the audit log")  # fmt: skip
        assert rows[0].uid == str(CT.SOPInstanceUID) and "share link" in rows[0].outcome
    finally:
        archive.close()


# --- the PIN ---------------------------------------------------------------------------------


def pin_form(site: Site, path: str, browser: requests.Session) -> str:
    answer = get(site, path, browser)
    assert answer.status_code == 200 and 'name="pin"' in answer.text
    assert str(CT.PatientID) not in answer.text and not image_paths(answer.text)
    match = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
    assert match
    return match.group(1)


def enter(site: Site, path: str, browser: requests.Session, pin: str, csrf: str) -> requests.Response:
    return browser.post(f"{site.url}{path}", data={"pin": pin, "csrf_token": csrf}, timeout=30, allow_redirects=False)


def test_the_right_pin_opens_the_page_and_its_images_for_that_browser(site: Site) -> None:
    path = new_link(site, pin=PIN)
    browser = requests.Session()
    image = f"{path}/instances/{CT.SOPInstanceUID}/rendered?viewport=64,64"
    assert get(site, image).status_code == 401  # not before the PIN
    csrf = pin_form(site, path, browser)
    wrong = enter(site, path, browser, "1981", csrf)
    assert wrong.status_code == 403 and f"còn {MAX_PIN_ATTEMPTS - 1} lần" in wrong.text and "tries left" in wrong.text
    right = enter(site, path, browser, PIN, csrf)
    assert right.status_code == 303 and right.headers["Location"] == path
    cookie = right.headers["Set-Cookie"]
    assert f"Path={path}" in cookie and "HttpOnly" in cookie and "Max-Age=3600" in cookie
    page = get(site, path, browser)
    assert page.status_code == 200 and str(CT.PatientID) in page.text
    assert all(get(site, src, browser).status_code == 200 for src in image_paths(page.text)[:2])
    assert get(site, image).status_code == 401  # another browser still needs it
    # The cookie of one link opens no other link.
    other = new_link(site, pin=PIN)
    stolen = requests.Session()
    stolen.cookies.set("minipacs_share", browser.cookies["minipacs_share"], path=other)
    assert get(site, other, stolen).status_code == 200 and 'name="pin"' in get(site, other, stolen).text
    assert get(site, f"{other}/instances/{CT.SOPInstanceUID}/rendered", stolen).status_code == 401


def test_the_pin_form_needs_its_own_csrf_token(site: Site) -> None:
    path = new_link(site, pin=PIN)
    browser = requests.Session()
    pin_form(site, path, browser)
    other_csrf = pin_form(site, new_link(site, pin=PIN), browser)  # a token of another link
    for csrf in ("", "forged", other_csrf):
        answer = enter(site, path, browser, PIN, csrf)
        assert answer.status_code == 403 and "minipacs_share" not in answer.headers.get("Set-Cookie", "")
    assert enter(site, path, browser, PIN, pin_form(site, path, browser)).status_code == 303


@pytest.mark.slow
def test_guessing_the_pin_locks_the_link_across_a_restart(site: Site) -> None:
    path = new_link(site, pin=PIN)
    browser = requests.Session()
    csrf = pin_form(site, path, browser)
    answers = [enter(site, path, browser, f"{1900 + i}", csrf) for i in range(MAX_PIN_ATTEMPTS)]
    assert [a.status_code for a in answers] == [403] * (MAX_PIN_ATTEMPTS - 1) + [429]
    assert 890 <= int(answers[-1].headers["Retry-After"]) <= 900
    assert "khóa" in answers[-1].text and "locked" in answers[-1].text
    assert enter(site, path, browser, PIN, csrf).status_code == 429  # even the right PIN, while locked
    assert get(site, path).status_code == 429
    site.restart()  # a new app on the same database: the lock is in the link's row
    locked = enter(site, path, browser, PIN, csrf)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 800


# --- the final report -------------------------------------------------------------------------


def test_the_final_report_is_on_the_page_and_its_qr_code_is_the_link(archive: Archive, tmp_path: Path) -> None:
    """Signed for real (PAdES, the test CA) through the report API; share_on_final made the link on its PDF."""
    from reports.types import ReportDraft
    from tests.reports.service_helpers import ACCESSION, PASSWORD, RADIOLOGIST, STUDY_UID, add_users, ordered_study
    from tests.reports.service_helpers import signing_reports
    from tests.reports.ca import PASSPHRASE
    from viewer import create_app
    from viewer.config import WebConfig
    from worklist.service import Worklist

    add_users(archive)
    worklist = Worklist(archive)
    ordered_study(archive, worklist)
    reports = signing_reports(archive)
    client = create_app(archive, WebConfig(secret_file=tmp_path / "key"), worklist, reports).test_client()
    draft = reports.create(STUDY_UID, ReportDraft(template_id="ct-so-nao-vi"), RADIOLOGIST)
    draft = reports.update(ACCESSION, ReportDraft(sections={"conclusion": "Không thấy máu tụ nội sọ.",
                                                            "findings": "<b>Nhu mô não</b> bình thường."}),
                           RADIOLOGIST, draft.revision)  # fmt: skip
    unsigned = client.get(f"/api/share-links?study={STUDY_UID}", auth=(RADIOLOGIST, PASSWORD)).get_json()
    assert unsigned == {"links": []}  # no link yet: it is made when the report becomes final
    signed = client.post(f"/api/reports/{ACCESSION}/sign", json={"pin": PASSPHRASE, "revision": draft.revision},
                         auth=(RADIOLOGIST, PASSWORD))  # fmt: skip
    assert signed.status_code == 200, signed.get_data(as_text=True)
    links = client.get(f"/api/share-links?study={STUDY_UID}", auth=(RADIOLOGIST, PASSWORD)).get_json()["links"]
    assert len(links) == 1 and links[0]["created_by"] == RADIOLOGIST
    url = links[0]["url"]
    pdf = reports.pdf(ACCESSION)
    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", "-f", "1", "-l", "1", str(tmp_path / "report.pdf"),
                    str(tmp_path / "page")], check=True, timeout=60)  # fmt: skip
    [png] = tmp_path.glob("page*.png")
    read = subprocess.run(["zbarimg", "--quiet", "--raw", str(png)], capture_output=True, text=True, timeout=60)
    assert read.stdout.strip() == url  # the printed QR code opens this very link
    html = client.get(link_path(url)).get_data(as_text=True)
    assert "Không thấy máu tụ nội sọ." in html and "Kết luận" in html and "Conclusion" in html
    assert "&lt;b&gt;Nhu mô não&lt;/b&gt;" in html and "<b>Nhu" not in html
    assert "BS. Trần Thị Lan" in html and f"{link_path(url)}/report.pdf" in html
    got = client.get(f"{link_path(url)}/report.pdf")
    assert got.status_code == 200 and got.content_type == "application/pdf" and got.data == pdf
    # Signing again (an amendment) reuses the live link; while the amendment is open the page keeps the signed text.
    amended = reports.amend(ACCESSION, RADIOLOGIST, "Bổ sung", signed.get_json()["revision"])
    amended = reports.update(ACCESSION, ReportDraft(sections={"conclusion": "Nhồi máu não cũ thùy chẩm phải."}),
                             RADIOLOGIST, amended.revision)  # fmt: skip
    html = client.get(link_path(url)).get_data(as_text=True)
    assert "Không thấy máu tụ nội sọ." in html and "Nhồi máu" not in html
    again = client.post(f"/api/reports/{ACCESSION}/sign", json={"pin": PASSPHRASE, "revision": amended.revision},
                        auth=(RADIOLOGIST, PASSWORD))  # fmt: skip
    assert again.status_code == 200
    assert len(client.get(f"/api/share-links?study={STUDY_UID}", auth=(RADIOLOGIST, PASSWORD)).get_json()["links"]) == 1
    html = client.get(link_path(url)).get_data(as_text=True)
    assert "Nhồi máu não cũ thùy chẩm phải." in html and "Đã chỉnh sửa" in html and "Bổ sung" in html
    assert client.get(f"{link_path(url)}/report.pdf").data == reports.pdf(ACCESSION)



def test_signing_on_the_server_makes_the_link_on_the_pdf_and_the_page_shows_the_report(site: Site,
                                                                                       tmp_path: Path) -> None:  # fmt: skip
    """Through `minipacs serve`: sign a DX report over HTTP (reports.share_on_final is on by default)."""
    from reports.identities import SigningIdentities
    from tests.reports import ca
    from tests.reports.share_site import ADMIN, PASSWORD

    archive = site.server.archive()
    try:
        SigningIdentities(archive.db, archive.audit).install("radiologist", ca.radiologist().pkcs12, ca.PASSPHRASE,
                                                            ADMIN)  # fmt: skip
    finally:
        archive.close()
    study, accession = str(DX.StudyInstanceUID), str(DX.AccessionNumber)
    auth = {"as_": "radiologist"}
    created = site.request("POST", "/api/reports", json={"study_instance_uid": study, "template_id": "xq-nguc-thang-vi"},
                           **auth)  # type: ignore[arg-type]
    assert created.status_code == 201, created.text
    conclusion = "Tràn dịch màng phổi phải lượng ít."
    saved = site.request("PUT", f"/api/reports/{accession}", json={"sections": {"conclusion": conclusion}},
                         headers={"If-Match": created.headers["ETag"]}, **auth)  # type: ignore[arg-type]
    assert saved.status_code == 200, saved.text
    assert site.request("GET", f"/api/share-links?study={study}").json() == {"links": []}
    signed = site.request("POST", f"/api/reports/{accession}/sign", json={"pin": ca.PASSPHRASE,
                          "revision": saved.json()["revision"]}, **auth)  # type: ignore[arg-type]
    assert signed.status_code == 200, signed.text
    [link] = site.request("GET", f"/api/share-links?study={study}").json()["links"]
    assert link["created_by"] == "radiologist" and link["url"].startswith(f"{site.url}/s/")
    pdf = requests.get(f"{site.url}/api/reports/{accession}/pdf", auth=("radiologist", PASSWORD), timeout=30).content
    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", "-f", "1", "-l", "1", str(tmp_path / "report.pdf"),
                    str(tmp_path / "page")], check=True, timeout=60)  # fmt: skip
    [png] = tmp_path.glob("page*.png")
    read = subprocess.run(["zbarimg", "--quiet", "--raw", str(png)], capture_output=True, text=True, timeout=60)
    assert read.stdout.strip() == link["url"]
    path = link_path(link["url"])

    def with_report_objects() -> str | None:
        # The outbox stores the SR and the Encapsulated PDF into the study: they are no images to show.
        series = site.request("GET", f"/dicomweb/studies/{study}/series").json()
        if not {"SR", "DOC"} <= {s["00080060"]["Value"][0] for s in series}:
            return None
        answer = get(site, path)
        return answer.text if answer.status_code == 200 else None

    html = wait_for(with_report_objects, timeout=60, what="the SR and PDF in the study")
    assert conclusion in html and "Kết luận" in html and "Conclusion" in html
    assert len(image_paths(html)) == 1  # the DX image; not the SR, not the PDF
    assert all(get(site, src).status_code == 200 for src in image_paths(html))
    got = get(site, f"{path}/report.pdf")
    assert got.status_code == 200 and got.headers["Content-Type"] == "application/pdf" and got.content == pdf
    assert "default-src 'self'" in got.headers["Content-Security-Policy"]


def test_share_on_final_off_leaves_the_pdf_without_a_link(archive: Archive, tmp_path: Path) -> None:
    from reports.service import Reports
    from viewer import create_app
    from viewer.config import WebConfig

    reports = Reports(archive)
    create_app(archive, WebConfig(secret_file=tmp_path / "key", share_on_final=False), reports=reports)
    assert reports.share_url is None
    create_app(archive, WebConfig(secret_file=tmp_path / "key"), reports=reports)
    assert reports.share_url is not None and reports.share_url(object(), "x") == ""  # type: ignore[arg-type]
