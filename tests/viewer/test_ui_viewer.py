"""The study viewer's page and data (/studies/<uid>/...) through Flask's test client: what the manifest says,
who may load what (a session, the IID link's cookie of that study only), bad UIDs and parameters, the tag browser."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from pydicom import dcmread

from archive import Archive, Origin
from tests.conftest import CT_FILES, DX_FILE, US_FILES
from viewer.app import create_app
from viewer.config import WebConfig

ADMIN = Origin("cli:test", "", "CLI")
PASSWORD = "phong doc phim 2026"
USERS = {"radiologist": "bs.lan", "technologist": "ktv.hoa", "admin": "admin"}
CT = dcmread(CT_FILES[0], stop_before_pixels=True)
DX = dcmread(DX_FILE, stop_before_pixels=True)
US_CINE = dcmread(US_FILES[1], stop_before_pixels=True)
CT_STUDY, DX_STUDY, US_STUDY = str(CT.StudyInstanceUID), str(DX.StudyInstanceUID), str(US_CINE.StudyInstanceUID)


@dataclass
class Site:
    archive: Archive
    app: Any
    his_token: str

    def client(self, role: str | None = "radiologist") -> FlaskClient:
        client: FlaskClient = self.app.test_client()
        if role:
            answer = client.post("/login", json={"username": USERS[role], "password": PASSWORD})
            assert answer.status_code == 200, answer.text
        return client


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One archive for the module (ingesting the samples costs seconds); tests that add data add their own studies."""
    tmp_path = tmp_path_factory.mktemp("viewer")
    archive = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    for role, name in USERS.items():
        archive.accounts.add_user(name, role, PASSWORD, ADMIN)
    for path in [*CT_FILES, DX_FILE, *US_FILES]:
        with path.open("rb") as f:
            archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
    app = create_app(archive, WebConfig(secret_file=tmp_path / "key", cache_dir=tmp_path / "cache"))
    yield Site(archive, app, archive.accounts.create_token("his-system", ADMIN, role="his").secret)
    archive.close()


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


def test_the_page_carries_the_study_and_its_manifest(site: Site) -> None:
    page = site.client().get(f"/studies/{CT_STUDY}")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'id="viewport-0"' in page.text and 'class="viewport-canvas"' in page.text
    assert '<aside id="report-panel">' in page.text and "ui/report.js" in page.text
    data = json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page.text, re.S)[1])
    assert data["study"] == CT_STUDY and data["accession"] == str(CT.AccessionNumber)
    assert data["patientName"] == "Nguyễn^Văn An" and data["modality"] == "CT"
    assert data["manifest"]["study"]["uid"] == CT_STUDY and data["priors"] is True
    assert re.search(rf'<img src="/studies/{CT_STUDY}/instances/[0-9.]+/thumbnail"', page.text)  # the series strip


def test_the_manifest_lists_series_in_order_with_spacing_windows_and_cine_timing(site: Site) -> None:
    client = site.client()
    answer = client.get(f"/studies/{CT_STUDY}/manifest")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "private, no-cache" and answer.headers["ETag"]
    assert client.get(f"/studies/{CT_STUDY}/manifest", headers={"If-None-Match": answer.headers["ETag"]}).status_code == 304
    manifest = answer.json
    assert manifest["patient"]["id"] == "BN26001001" and manifest["patient"]["name"] == "Nguyễn^Văn An"
    [series] = manifest["series"]
    common, images = series["common"], series["images"]
    assert series["modality"] == "CT" and len(images) == 20
    # What every slice shares is given once.
    assert common["rows"] == common["columns"] == 512 and common["frames"] == 1 and common["grayscale"] is True
    assert common["spacing"] == {"row": 0.449219, "column": 0.449219, "kind": "patient"}
    assert common["windows"] == [{"center": 40.0, "width": 80.0, "name": "BRAIN"},
                                  {"center": 500.0, "width": 2500.0, "name": "BONE"}]
    assert [i["number"] for i in images] == list(range(1, 21))
    assert [i["location"] for i in images] == sorted(i["location"] for i in images)
    by_file = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in CT_FILES}
    assert {i["sop"] for i in images} == by_file
    assert len(answer.data) < 8000  # small for slow links: ~300 bytes a slice
    dx = client.get(f"/studies/{DX_STUDY}/manifest").json["series"][0]["images"][0]
    assert dx["spacing"]["kind"] == "detector" and dx["spacing"]["row"] == 0.28
    us = client.get(f"/studies/{US_STUDY}/manifest").json
    cine = next(i for s in us["series"] for i in s["images"] if i.get("frames") == 30 or s["common"].get("frames") == 30)
    merged = {**next(s["common"] for s in us["series"] if cine in s["images"]), **cine}
    assert merged["frames"] == 30 and merged["frameTime"] == 50.0 and merged["grayscale"] is False
    # Ultrasound measures with its region's calibration (0.0372 cm a pixel), inside that region.
    assert merged["spacing"] == {"row": 0.372, "column": 0.372, "kind": "region", "region": [16, 40, 623, 479]}


def test_images_are_rendered_scoped_to_the_study_and_cached(site: Site) -> None:
    client = site.client()
    sop = str(CT.SOPInstanceUID)
    low = client.get(f"/studies/{CT_STUDY}/instances/{sop}/frames/1/rendered?viewport=256,256&quality=50")
    full = client.get(f"/studies/{CT_STUDY}/instances/{sop}/frames/1/rendered?quality=90&window=-600,1500")
    for answer in (low, full):
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
        assert answer.headers["ETag"] and answer.headers["Cache-Control"].startswith("private")
    assert len(low.data) < len(full.data)
    again = client.get(f"/studies/{CT_STUDY}/instances/{sop}/frames/1/rendered?quality=90&window=-600,1500",
                       headers={"If-None-Match": full.headers["ETag"]})  # fmt: skip
    assert again.status_code == 304
    thumb = client.get(f"/studies/{CT_STUDY}/instances/{sop}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    frame = client.get(f"/studies/{US_STUDY}/instances/{US_CINE.SOPInstanceUID}/frames/30/rendered")
    assert frame.status_code == 200
    # Another study's image through this study's URL is not found.
    other = client.get(f"/studies/{CT_STUDY}/instances/{DX.SOPInstanceUID}/frames/1/rendered")
    assert other.status_code == 404 and other.json["status"] == 404


@pytest.mark.parametrize(("path", "status"), [
    ("/studies/1.2.3/instances/{sop}/frames/1/rendered", 404),
    ("/studies/{study}/instances/1.2.3/frames/1/rendered", 404),
    ("/studies/{study}/instances/{sop}/frames/0/rendered", 400),
    ("/studies/{study}/instances/{sop}/frames/99/rendered", 404),
    ("/studies/{study}/instances/{sop}/frames/1/rendered?window=abc", 400),
    ("/studies/{study}/instances/{sop}/frames/1/rendered?window=40,0", 400),
    ("/studies/{study}/instances/{sop}/frames/1/rendered?viewport=99999,1", 400),
    ("/studies/{study}/instances/{sop}/frames/1/rendered?quality=0", 400),
    ("/studies/{study}/instances/{sop}/frames/1/rendered?evil=1", 400),
    ("/studies/{study}/instances/{sop}/thumbnail?viewport=1,1", 400),
    ("/studies/1.2.x/manifest", 400),
    ("/studies/..%2F..%2Fetc/manifest", 404),
    ("/studies/1.2.3/manifest", 404),
    ("/studies/{study}/instances/1.2.abc/tags", 400),
    ("/studies/1.2.3/priors", 404),
])  # fmt: skip
def test_bad_uids_and_parameters_are_json_4xx(site: Site, path: str, status: int) -> None:
    answer = site.client().get(path.format(study=CT_STUDY, sop=CT.SOPInstanceUID))
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json" and answer.json["status"] == status
    assert "Traceback" not in answer.text


def test_a_bad_study_uid_in_the_page_url_is_an_html_page(site: Site) -> None:
    client = site.client()
    bad, missing = client.get("/studies/1.2.x"), client.get("/studies/1.2.3")
    assert bad.status_code == 400 and missing.status_code == 404
    assert all(a.headers["Content-Type"].startswith("text/html") for a in (bad, missing))


def test_without_a_session_the_page_sends_to_login_and_the_data_is_401(site: Site) -> None:
    client = site.client(None)
    page = client.get(f"/studies/{CT_STUDY}")
    assert page.status_code == 303 and page.headers["Location"].startswith("/login-page?next=%2Fstudies%2F")
    for path in ("manifest", f"instances/{CT.SOPInstanceUID}/frames/1/rendered", f"instances/{CT.SOPInstanceUID}/tags",
                 f"instances/{CT.SOPInstanceUID}/thumbnail", "priors"):  # fmt: skip
        answer = client.get(f"/studies/{CT_STUDY}/{path}")
        assert answer.status_code == 401 and answer.json["status"] == 401, path
        assert "WWW-Authenticate" not in answer.headers  # no browser login dialog over the page


def test_a_role_that_does_not_read_results_is_refused(site: Site) -> None:
    client = site.client(None)
    his = {"Authorization": f"Bearer {site.his_token}"}  # an order system: no images
    page = client.get(f"/studies/{CT_STUDY}", headers=his)
    assert page.status_code == 403 and page.headers["Content-Type"].startswith("text/html")
    data = client.get(f"/studies/{CT_STUDY}/manifest", headers=his)
    assert data.status_code == 403 and data.json["status"] == 403
    assert site.client("technologist").get(f"/studies/{CT_STUDY}/manifest").status_code == 200


def iid_visitor(site: Site, study: str) -> FlaskClient:
    """A browser that followed an EMR's IID link to `study` (no login)."""
    made = site.client(None).post("/api/iid-tokens", json={"studyUID": study}, headers=basic(USERS["admin"]))
    assert made.status_code == 201, made.text
    link = urlsplit(made.json["url"])
    browser: FlaskClient = site.app.test_client()
    opened = browser.get(f"{link.path}?{link.query}")
    assert opened.status_code == 303 and opened.headers["Location"] == f"/studies/{study}"
    return browser


def test_an_iid_link_opens_its_study_and_its_images_only(site: Site) -> None:
    browser = iid_visitor(site, CT_STUDY)
    page = browser.get(f"/studies/{CT_STUDY}")
    assert page.status_code == 200 and 'id="viewport-0"' in page.text
    assert "/ui/logout" not in page.text and 'id="report-panel"' not in page.text  # no staff frame, no report API
    assert browser.get(f"/studies/{CT_STUDY}/manifest").status_code == 200
    assert browser.get(f"/studies/{CT_STUDY}/instances/{CT.SOPInstanceUID}/frames/1/rendered").status_code == 200
    assert browser.get(f"/studies/{CT_STUDY}/instances/{CT.SOPInstanceUID}/tags").status_code == 200
    # An IID link opens one study: no prior studies, and another study's data is closed.
    priors = browser.get(f"/studies/{CT_STUDY}/priors")
    assert priors.status_code == 403 and priors.json["status"] == 403
    assert browser.get(f"/studies/{DX_STUDY}").status_code == 303
    assert browser.get(f"/studies/{DX_STUDY}/manifest").status_code == 401
    assert browser.get(f"/studies/{DX_STUDY}/instances/{DX.SOPInstanceUID}/frames/1/rendered").status_code == 401
    # The cookie of another study, sent along with this study's URL, opens nothing either.
    cookie = browser.get_cookie("minipacs_iid", path=f"/studies/{CT_STUDY}")
    assert cookie is not None
    stranger: FlaskClient = site.app.test_client()
    stranger.set_cookie("minipacs_iid", cookie.value, path=f"/studies/{DX_STUDY}")
    assert stranger.get(f"/studies/{DX_STUDY}/manifest").status_code == 401


def test_tags_leave_out_pixel_data_and_shorten_long_values(site: Site, tmp_path: Path) -> None:
    client = site.client()
    answer = client.get(f"/studies/{US_STUDY}/instances/{US_CINE.SOPInstanceUID}/tags")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "private, no-cache"
    rows = answer.json["tags"]
    by_keyword = {r["keyword"]: r for r in rows if r["keyword"]}
    assert by_keyword["PatientName"]["value"] == "Lê^Thị Hồng Nhung" and by_keyword["PatientName"]["tag"] == "(0010,0010)"
    assert "PixelData" not in by_keyword and by_keyword["TransferSyntaxUID"]["value"]  # file meta too
    regions = by_keyword["SequenceOfUltrasoundRegions"]
    assert regions["vr"] == "SQ" and any(r["depth"] > regions["depth"] for r in rows)
    # A long text and a binary value are shortened.
    ds = dcmread(CT_FILES[0])
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "BN-TAGS", "2.25.1234567890121", "2.25.1234567890122"
    ds.SOPInstanceUID = "2.25.1234567890123"
    ds.ImageComments = "x" * 5000
    ds.add_new(0x00091010, "OB", b"\x00" * 10000)
    path = tmp_path / "long.dcm"
    ds.save_as(path)
    with path.open("rb") as f:
        site.archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
    tags = {r["tag"]: r for r in client.get("/studies/2.25.1234567890121/instances/2.25.1234567890123/tags").json["tags"]}
    assert len(tags["(0020,4000)"]["value"]) < 200 and "5000 characters" in tags["(0020,4000)"]["value"]
    assert tags["(0009,1010)"]["value"] == "[binary, 10000 bytes]"


def test_prior_studies_are_the_same_patients_newest_first(site: Site, tmp_path: Path) -> None:
    for n, date in enumerate(("20200101", "20240601"), 1):
        ds = dcmread(CT_FILES[0])
        ds.StudyInstanceUID = f"2.25.99887766{n}"
        ds.SeriesInstanceUID = f"2.25.99887766{n}1"
        ds.SOPInstanceUID = f"2.25.99887766{n}11"
        ds.StudyDate = date
        ds.AccessionNumber = f"OLD{n}"
        path = tmp_path / f"prior{n}.dcm"
        ds.save_as(path)
        with path.open("rb") as f:
            site.archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
    answer = site.client().get(f"/studies/{CT_STUDY}/priors")
    assert answer.status_code == 200
    assert [p["accession"] for p in answer.json["priors"]] == ["OLD2", "OLD1"]  # not the study itself, not others
    assert site.client().get(f"/studies/{DX_STUDY}/priors").json["priors"] == []
