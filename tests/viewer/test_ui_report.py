"""The report page /ui/report/<uid> and the report panel's template, through Flask's test client.

What the panel does in a browser (autosave, signing, amending) is in tests/ui/test_report_panel.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from archive import Archive
from archive.audit import search
from reports.service import Reports
from reports.types import ReportDraft
from tests.archive.helpers import ingest_ds, make_dataset, uid
from tests.reports.service_helpers import ACCESSION, ADMIN, PASSWORD, RADIOLOGIST, STUDY_UID, add_users, ordered_study
from viewer.app import create_app
from viewer.config import WebConfig
from viewer.ui.report_page import examination_modality
from worklist.service import Worklist

XSS = "<script>alert(1)</script>^<img src=x onerror=alert(2)>"
NO_ACCESSION_STUDY = uid(1, 7)
XSS_STUDY = uid(1, 8)


@dataclass
class Site:
    archive: Archive
    reports: Reports
    client_for: Callable[[], FlaskClient]

    def login(self, user: str) -> FlaskClient:
        client = self.client_for()
        answer = client.post("/login", json={"username": user, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return client


@pytest.fixture
def site(tmp_path: Path, archive: Archive) -> Iterator[Site]:
    add_users(archive)
    archive.accounts.add_user("admin", "admin", PASSWORD, ADMIN, display_name="Quản trị")
    worklist = Worklist(archive)
    ordered_study(archive, worklist)
    ingest_ds(archive, make_dataset(7, study=NO_ACCESSION_STUDY, series=uid(2, 7), AccessionNumber=None,
                                    patient_id="PID007"))  # fmt: skip
    ingest_ds(archive, make_dataset(8, study=XSS_STUDY, series=uid(2, 8), AccessionNumber="XSS1", patient_id="PID008",
                                    patient_name=XSS, StudyDescription="<b>bold</b>"))  # fmt: skip
    reports = Reports(archive)
    app = create_app(archive, WebConfig(secret_file=tmp_path / "key"), worklist, reports)
    yield Site(archive, reports, app.test_client)


def panel_data(html: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="report-panel-data">(.*?)</script>', html, re.S)
    assert found, html
    value: dict[str, object] = json.loads(found.group(1))
    return value


def page_data(html: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert found, html
    value: dict[str, object] = json.loads(found.group(1))
    return value


def test_the_page_shows_the_study_and_gives_the_panel_what_it_needs(site: Site) -> None:
    client = site.login(RADIOLOGIST)
    answer = client.get(f"/ui/report/{STUDY_UID}")
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert "Nguyễn Văn An" in html and ACCESSION in html and "PID001" in html
    assert 'id="report"' in html and 'id="report-panel"' in html
    assert re.search(r'<script src="/assets/ui/report\.js\?v=[0-9a-f]+" defer>', html)
    assert re.search(r'href="/assets/ui/report\.css\?v=[0-9a-f]+"', html)
    data = page_data(html)
    assert data["study"] == STUDY_UID and data["accession"] == ACCESSION and data["modality"] == "CT"
    assert data["patientName"] == "Nguyễn^Văn An" and data["role"] == "radiologist"
    panel = panel_data(html)
    assert panel["canWrite"] is True and panel["canSign"] is True
    strings = panel["strings"]
    assert isinstance(strings, dict) and strings["conclusion"] == "Kết luận" and strings["sign"] == "Ký số…"
    assert f'href="/studies/{STUDY_UID}"' in html
    # No inline script or style anywhere (CSP).
    assert not re.search(r'<script(?![^>]*\b(src|type="application/json"))', html)
    assert " style=" not in html and not re.search(r"\son[a-z]+=", html)
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]


def test_in_english_the_strings_are_english(site: Site) -> None:
    client = site.login(RADIOLOGIST)
    csrf = client.get("/session").json["csrf_token"]  # type: ignore[index]
    client.post("/ui/preferences", data={"language": "en", "csrf_token": csrf, "next": "/ui/"})
    html = client.get(f"/ui/report/{STUDY_UID}").text
    strings = panel_data(html)["strings"]
    assert isinstance(strings, dict) and strings["conclusion"] == "Conclusion" and strings["sign"] == "Sign…"
    assert page_data(html)["language"] == "en" and "Open the images" in html


@pytest.mark.parametrize("user, write, sign", [("ktv.hoa", False, False), ("bs.ngoai", False, False),
                                               ("admin", True, False), (RADIOLOGIST, True, True)])  # fmt: skip
def test_each_role_gets_the_controls_it_may_use(site: Site, user: str, write: bool, sign: bool) -> None:
    html = site.login(user).get(f"/ui/report/{STUDY_UID}").text
    panel = panel_data(html)
    assert (panel["canWrite"], panel["canSign"]) == (write, sign)


def test_the_server_refuses_what_the_panel_hides(site: Site) -> None:
    """A hidden button is not access control: a referrer or technologist cannot write through the API."""
    for user in ("ktv.hoa", "bs.ngoai"):
        client = site.login(user)
        csrf = client.get("/session").json["csrf_token"]  # type: ignore[index]
        answer = client.post("/api/reports", json={"study_instance_uid": STUDY_UID}, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 403, (user, answer.text)
        assert client.get("/api/report-templates").status_code == 403
    assert site.reports.find(accession=ACCESSION) == []


def test_a_referrer_never_gets_a_draft(site: Site) -> None:
    site.reports.create(STUDY_UID, ReportDraft(template_id="ct-so-nao-vi"), RADIOLOGIST)
    client = site.login("bs.ngoai")
    assert client.get(f"/ui/report/{STUDY_UID}").status_code == 200
    assert client.get(f"/api/reports/{ACCESSION}").status_code == 404


def test_a_study_without_an_accession_number_says_so_to_the_panel(site: Site) -> None:
    html = site.login(RADIOLOGIST).get(f"/ui/report/{NO_ACCESSION_STUDY}").text
    assert page_data(html)["accession"] == ""
    assert "accession" in str(panel_data(html)["strings"]).lower()  # the panel's message (noAccession)


def test_patient_data_is_escaped(site: Site) -> None:
    answer = site.login(RADIOLOGIST).get(f"/ui/report/{XSS_STUDY}")
    assert answer.status_code == 200
    html = answer.text
    assert "<script>alert(1)</script>" not in html and "<img src=x" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert page_data(html)["patientName"] == XSS  # as data, for textContent


def test_bad_and_unknown_studies_and_no_session(site: Site) -> None:
    client = site.login(RADIOLOGIST)
    missing = client.get("/ui/report/1.2.3.4.999")
    assert missing.status_code == 404 and "1.2.3.4.999" in missing.text and "<html" in missing.text
    bad = client.get("/ui/report/not-a-uid")
    assert bad.status_code == 400 and "Traceback" not in bad.text and "<html" in bad.text
    assert client.get("/ui/report/" + "1." * 40 + "1").status_code == 400  # longer than 64 characters
    anonymous = site.client_for()
    to_login = anonymous.get(f"/ui/report/{STUDY_UID}")
    assert to_login.status_code == 303 and "/login-page?next=" in to_login.headers["Location"]


def test_opening_the_page_is_audited(site: Site) -> None:
    site.login("bs.ngoai").get(f"/ui/report/{STUDY_UID}")
    site.archive.audit.flush()
    events = [e for e in search(site.archive.db, actor="bs.ngoai") if e.action == "VIEW"]
    assert [(e.level, e.uid) for e in events] == [("STUDY", STUDY_UID)]


def test_the_examination_modality_leaves_out_report_objects() -> None:
    assert examination_modality("CT\\SR\\DOC") == "CT"
    assert examination_modality("SR\\US") == "US"
    assert examination_modality("") == "" and examination_modality("DOC") == "DOC"


def test_every_string_the_script_shows_is_given_to_it(site: Site) -> None:
    """report.js shows t("key"): a key missing from the panel's strings would show as the bare key."""
    from flask import g

    from reports.types import SECTIONS, ReportStatus
    from viewer.ui.base import common_strings
    from viewer.ui.report_page import panel_strings
    from worklist.outbox import FAILED, PENDING, SENT

    script = (Path(__file__).resolve().parents[2] / "viewer" / "static" / "ui" / "report.js").read_text()
    used = set(re.findall(r'\bt\("([^"]+)"\s*[,)]', script))  # whole keys; "status." + status below
    with site.client_for().application.test_request_context("/"):
        g.ui_language = "vi"
        given = {**common_strings(), **panel_strings()}
    assert used and not used - set(given), sorted(used - set(given))
    dynamic = ({f"status.{s.value}" for s in ReportStatus} | set(SECTIONS) | {"out.ORU^R01", "out.REPORT DICOM"}
               | {f"state.{s}" for s in (PENDING, SENT, FAILED)})  # fmt: skip
    assert not dynamic - set(given), sorted(dynamic - set(given))
    assert all(value and "{" not in key for key, value in given.items())
