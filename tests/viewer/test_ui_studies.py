"""The study list (/ui/studies) through Flask's test client: filters, order, paging, report status per
role, bad input (a 400 page, never a 500), who may see it, and how many SQL statements a page costs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event

from archive import Archive, Origin
from reports.reading_list import ReadingListQuery, name_pattern, reading_list
from reports.service import Reports, SignedDocument
from reports.types import ReportDraft, ReportView
from tests.archive.helpers import ingest_ds, make_dataset, uid
from tests.conftest import index_database
from tests.worklist.helpers import HIS, order
from viewer.app import create_app
from viewer.ui import studies
from viewer.config import WebConfig
from worklist.service import Worklist

ADMIN = Origin("cli:test", "", "CLI")
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PASSWORD = "phong doc phim 2026"
XSS = "<script>alert(1)</script>"
USERS = {"radiologist": "bs.lan", "technologist": "ktv.hoa", "referrer": "bs.ngoai", "admin": "admin"}


class FakeSigner:
    """Signs without a certificate: the list cares that a version is signed, not how."""

    def sign(self, view: ReportView, username: str, pin: str, share_url: Callable[[], str]) -> SignedDocument:
        return SignedDocument(b"%PDF-1.7 test", "01", "CN=test")


@dataclass
class Site:
    archive: Archive
    reports: Reports
    app: Any

    def client(self, role: str | None) -> FlaskClient:
        client: FlaskClient = self.app.test_client()
        if role:
            answer = client.post("/login", json={"username": USERS[role], "password": PASSWORD})
            assert answer.status_code == 200, answer.text
        return client


#: accession -> (patient name, patient ID, modality, study date, time, priority of its order or None)
STUDIES = {
    "CT0001": ("Nguyễn^Văn An", "BN001", "CT", "20261120", "101530", "STAT"),
    "DX0002": ("Trần^Thị Đào", "BN002", "DX", "20261120", "090000", None),
    "US0003": ("Lê^Thị Hồng Nhung", "BN003", "US", "20261121", "080000", "ROUTINE"),
    "CR0004": ("Nguyễn^Văn Anh", "BN004", "CR", "20261119", "070000", "HIGH"),
    "CT0005": (XSS, "BN005", "CT", "20261118", "120000", None),
    "US0006": ("Phạm^Minh Đức", "BN006", "US", "20261121", "150000", "STAT"),
}


#: A citizen ID (CCCD) the modality sent as Other Patient IDs: the list finds the patient by it too.
OTHER_IDS = {"BN006": {"OtherPatientIDs": "079301234567"}}


def study_uid(accession: str) -> str:
    return uid(1, 100 + list(STUDIES).index(accession))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One archive per index backend for the module's tests: they only read (the tokens made have names of
    their own). The list's SQL is the same on SQLite and PostgreSQL; every test runs on both."""
    tmp_path = tmp_path_factory.mktemp("ui-studies")
    with index_database(request, str(request.param), tmp_path) as url:
        yield from _site(tmp_path, Archive.open(url, str(tmp_path / "objects")))


def _site(tmp_path: Path, archive: Archive) -> Iterator[Site]:
    for role, name in USERS.items():
        archive.accounts.add_user(name, role, PASSWORD, ADMIN, display_name=f"BS. {name}")
    worklist = Worklist(archive)
    worklist.reconcile_ingest()
    reports = Reports(archive, signer=FakeSigner())
    for n, (accession, (name, pid, modality, day, time, priority)) in enumerate(STUDIES.items(), start=1):
        study = study_uid(accession)
        if priority:
            worklist.create(order(f"O{n}", accession, patient_id=pid, name=name, modality=modality,
                                  study_instance_uid=study, priority=priority), HIS)  # fmt: skip
        for i in range(n):  # n images: the count shows
            ingest_ds(archive, make_dataset(n * 10 + i, study=study, series=uid(2, n), patient_id=pid,
                                            patient_name=name, modality=modality, AccessionNumber=accession,
                                            StudyDate=day, StudyTime=time, StudyDescription=f"{modality} study",
                                            **OTHER_IDS.get(pid, {})))  # fmt: skip
    # The signed US gains its report's SR, as signing on the server files it into the study.
    ingest_ds(archive, make_dataset(999, study=study_uid("US0003"), series=uid(2, 99), sop_class=BASIC_TEXT_SR,
                                    patient_id="BN003", patient_name="Lê^Thị Hồng Nhung", modality="SR",
                                    AccessionNumber="US0003", StudyDate="20261121", StudyTime="080000"))  # fmt: skip
    # DX: a draft; US0003: signed; CR: signed, then an amendment in progress by another radiologist.
    sections = {"findings": "Bình thường.", "conclusion": "Không thấy bất thường."}
    reports.create(study_uid("DX0002"), ReportDraft(sections=sections), "bs.lan")
    view = reports.create(study_uid("US0003"), ReportDraft(sections=sections), "bs.lan")
    reports.sign("US0003", "bs.lan", "0000", view.revision)
    view = reports.create(study_uid("CR0004"), ReportDraft(sections=sections), "bs.lan")
    view = reports.sign("CR0004", "bs.lan", "0000", view.revision)
    reports.amend("CR0004", "admin", "sai bên", view.revision)
    app = create_app(archive, WebConfig(secret_file=tmp_path / "key"), worklist, reports)
    with pytest.MonkeyPatch.context() as patch:  # the list's default window is the last 30 days from "today"
        patch.setattr(studies, "local_today", lambda: date(2026, 11, 25))
        yield Site(archive, reports, app)
    archive.close()


def accessions(html: str) -> list[str]:
    """The accession numbers of the table's rows, in order."""
    body = html.split('<tbody>', 1)[1].split('</tbody>', 1)[0] if "<tbody>" in html else ""
    return re.findall(r'<td class="nowrap">([A-Z]{2}\d{4})</td>', body)


def listed(client: FlaskClient, query: str = "", status: int = 200) -> list[str]:
    answer = client.get(f"/ui/studies{query}")
    assert answer.status_code == status, answer.text
    return accessions(answer.text)


def test_a_radiologist_starts_with_the_studies_to_read_urgent_first_then_newest(site: Site) -> None:
    client = site.client("radiologist")
    answer = client.get("/ui/studies")
    assert answer.status_code == 200
    # To read: no report, a draft, an amendment in progress; US0003 is signed. STAT, then HIGH, then newest.
    assert accessions(answer.text) == ["US0006", "CT0001", "CR0004", "DX0002", "CT0005"]
    assert 'href="/studies/' + study_uid("CT0001") + '"' in answer.text
    assert "Nguyễn Văn An" in answer.text  # family name first, as written in Vietnamese
    assert listed(client, "?status=all") == ["US0006", "CT0001", "CR0004", "US0003", "DX0002", "CT0005"]


def test_the_list_covers_the_last_30_days_unless_asked_for_every_date(site: Site,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    client = site.client("radiologist")
    monkeypatch.setattr(studies, "local_today", lambda: date(2026, 12, 19))  # 30 days: from 20/11/2026
    html = client.get("/ui/studies?status=all").text
    assert accessions(html) == ["US0006", "CT0001", "US0003", "DX0002"]
    assert 'name="from" value="20/11/2026"' in html and 'name="to" value=""' in html
    assert re.search(r'<a href="/ui/studies\?status=all&amp;from=&amp;to="[^>]*>Mọi ngày</a>', html)
    assert len(listed(client, "?status=all&from=&to=")) == 6  # every date: what the form sends when emptied
    monkeypatch.setattr(studies, "local_today", lambda: date(2027, 3, 1))
    html = client.get("/ui/studies?status=all").text
    notice = html.split('id="no-studies"', 1)[1].split("</p>", 1)[0]
    assert '<a href="/ui/studies?status=all&amp;from=&amp;to=">Tìm ở mọi ngày và mọi trạng thái</a>' in notice


def test_statuses_draft_authors_and_signers(site: Site) -> None:
    client = site.client("radiologist")
    assert listed(client, "?status=unread") == ["US0006", "CT0001", "CT0005"]
    assert listed(client, "?status=draft") == ["CR0004", "DX0002"]  # the amendment is a draft again
    assert listed(client, "?status=final") == ["US0003"]
    html = client.get("/ui/studies?status=draft").text
    assert "nháp: BS. admin" in html and "BS. bs.lan" in html  # the amendment's author, the first signer


def test_a_referrer_sees_signed_or_not_and_never_a_drafts_author(site: Site) -> None:
    client = site.client("referrer")
    html = client.get("/ui/studies").text  # every study
    # Urgent and not signed first; a signed study, however urgent its order, is in date order with the rest.
    assert accessions(html) == ["US0006", "CT0001", "US0003", "DX0002", "CR0004", "CT0005"]
    assert "draft" not in html.lower().replace('name="status"', "") or "draft:" not in html
    assert "BS. admin" not in html  # the amendment's author
    assert ">Draft<" not in html and ">Bản nháp<" not in html
    assert listed(client, "?status=final") == ["US0003", "CR0004"]  # the amended CR is still signed for them
    assert listed(client, "?status=notfinal") == ["US0006", "CT0001", "DX0002", "CT0005"]
    assert "Unknown report status" in client.get("/ui/studies?status=draft", headers={"Accept-Language": "en"}).text
    assert client.get("/ui/studies?status=draft").status_code == 400


@pytest.mark.parametrize("typed", ["nguyen van an", "Nguyễn Văn An", "NGUYEN^VAN^AN", "an nguyen", "nguyen van a",
                                   "nguy* van", "  nguyễn   văn  "])
def test_patient_names_match_with_or_without_diacritics_in_any_order(site: Site, typed: str) -> None:
    found = listed(site.client("radiologist"), f"?status=all&name={typed}")
    assert "CT0001" in found and "DX0002" not in found and "US0003" not in found


def test_name_words_each_start_a_word_of_the_name(site: Site) -> None:
    client = site.client("radiologist")
    assert listed(client, "?status=all&name=nguyen+van+an") == ["CT0001", "CR0004"]  # An and Anh
    assert listed(client, "?status=all&name=dao") == ["DX0002"]  # Đ is D
    assert listed(client, "?status=all&name=van+van") == []  # two words, one Văn
    assert listed(client, "?status=all&name=nguy+van") == []  # whole words but the last
    assert listed(client, "?status=all&name=ngu*") == ["CT0001", "CR0004"]
    assert name_pattern("Nguyễn  Văn An") == "NGUYEN VAN AN*" and name_pattern("ng* v?n") == "NG* V?N"


def test_filters_modality_dates_ids_and_accession(site: Site) -> None:
    client = site.client("radiologist")
    assert listed(client, "?status=all&modality=US") == ["US0006", "US0003"]
    assert listed(client, "?status=all&modality=us") == ["US0006", "US0003"]
    assert listed(client, "?status=all&from=2026-11-20&to=2026-11-20") == ["CT0001", "DX0002"]
    assert listed(client, "?status=all&from=20/11/2026") == ["US0006", "CT0001", "US0003", "DX0002"]
    assert listed(client, "?status=all&to=2026-11-19") == ["CR0004", "CT0005"]
    assert listed(client, "?status=all&pid=BN002") == ["DX0002"]
    assert listed(client, "?status=all&pid=079301234567") == ["US0006"]  # the CCCD number (Other Patient IDs)
    assert listed(client, "?status=all&pid=0793*") == ["US0006"]
    assert listed(client, "?status=all&pid=BN00*&modality=US") == ["US0006", "US0003"]
    assert listed(client, "?status=all&accession=CR0004") == ["CR0004"]
    assert listed(client, "?status=all&accession=CR*") == ["CR0004"]
    assert listed(client, "?status=all&modality=CT&name=nguyen") == ["CT0001"]
    vietnamese = client.get("/ui/studies?status=all&from=2026-11-20").text
    assert 'name="from" value="20/11/2026"' in vietnamese and 'placeholder="dd/mm/yyyy"' in vietnamese
    english = client.get("/ui/studies?status=all&from=20/11/2026", headers={"Accept-Language": "en"}).text
    assert 'type="date" id="f-from" name="from" value="2026-11-20"' in english
    html = client.get("/ui/studies?status=all&modality=MR").text
    assert 'id="no-studies"' in html and "<tbody>" not in html


def test_a_reports_sr_is_no_modality_of_the_study(site: Site) -> None:
    page = reading_list(site.archive.db, ReadingListQuery(status="all", accession="US0003"))
    assert [(r.modalities, r.images) for r in page.rows] == [(("US",), 4)]
    html = site.client("radiologist").get("/ui/studies?status=all&from=&to=").text
    options = re.findall(r'<option value="([A-Z]+)"', html.split('id="f-modality"', 1)[1].split("</select>", 1)[0])
    assert options == ["CR", "CT", "DX", "US"]


def test_sorting_by_column_and_the_headers_turn_the_order_round(site: Site) -> None:
    client = site.client("radiologist")
    assert listed(client, "?status=all&sort=date") == ["CT0005", "CR0004", "DX0002", "CT0001", "US0003", "US0006"]
    assert listed(client, "?status=all&sort=-date")[:2] == ["US0006", "US0003"]
    assert listed(client, "?status=all&sort=modality")[:3] == ["CR0004", "CT0001", "CT0005"]
    assert listed(client, "?status=all&sort=priority")[:3] == ["US0006", "CT0001", "CR0004"]
    patients = listed(client, "?status=all&sort=patient")
    assert patients[0] == "CT0005" and patients.index("US0003") < patients.index("CT0001")  # "<" < "L" < "N"
    html = client.get("/ui/studies?status=all&sort=date").text
    assert 'aria-sort="ascending"' in html and "sort=-date" in html  # click again: newest first


def test_paging_with_a_page_size(site: Site) -> None:
    client = site.client("radiologist")
    first = client.get("/ui/studies?status=all&size=4").text
    assert accessions(first) == ["US0006", "CT0001", "CR0004", "US0003"]
    assert "Page 1 of 2" in client.get("/ui/studies?status=all&size=4", headers={"Accept-Language": "en"}).text
    assert "page=2" in first and 'rel="prev"' not in first
    second = client.get("/ui/studies?status=all&size=4&page=2").text
    assert accessions(second) == ["DX0002", "CT0005"] and 'rel="next"' not in second
    assert "Trang 2/2" in second or "2/2" in second or "2 / 2" in second or "trên 2" in second
    assert accessions(client.get("/ui/studies?status=all&size=4&page=99").text) == ["DX0002", "CT0005"]


@pytest.mark.parametrize("query", [
    "?from=2026-13-45", "?to=yesterday", "?from=2026-11-21&to=2026-11-20", "?page=-1", "?page=abc", "?page=0",
    "?size=100000", "?sort=secret", "?sort=-", "?status=everything", "?modality=C%27T", "?name=" + "a" * 65,
    "?accession=" + "9" * 17, "?pid=" + "x" * 65, "?name=%00", "?pid=a%00b", "?accession=%25%27--", "?name=a%0Ab",
])  # fmt: skip
def test_bad_filters_give_the_page_back_with_what_is_wrong(site: Site, query: str) -> None:
    answer = site.client("radiologist").get(f"/ui/studies{query}")
    assert answer.status_code in (200, 400), answer.text
    if "%00" in query or "%0A" in query:
        assert answer.status_code == 400
    if answer.status_code == 400:
        assert 'id="filter-problems"' in answer.text and "<tbody>" not in answer.text
        assert 'id="study-filters"' in answer.text  # the form, to fix it
    assert "Traceback" not in answer.text


def test_bad_values_say_what_is_wrong_in_the_persons_language(site: Site) -> None:
    client = site.client("radiologist")
    english = client.get("/ui/studies?from=31/02/2026&page=-1&sort=x", headers={"Accept-Language": "en"})
    assert english.status_code == 400
    problems = english.text.split('id="filter-problems"', 1)[1].split("</div>", 1)[0]
    assert "is not a date" in problems and "Page must be a whole number" in problems and "Unknown sort" in problems
    vietnamese = client.get("/ui/studies?from=31/02/2026")
    assert vietnamese.status_code == 400 and "không phải là ngày" in vietnamese.text


def test_xss_names_are_text(site: Site) -> None:
    html = site.client("radiologist").get("/ui/studies?status=all&name=%3Cscript").text
    assert accessions(html) == ["CT0005"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and XSS not in html
    html = site.client("radiologist").get("/ui/studies?status=all&name=" + XSS).text
    assert XSS not in html


def test_who_may_see_the_list(site: Site) -> None:
    anonymous = site.app.test_client().get("/ui/studies?status=all")
    assert anonymous.status_code == 303 and anonymous.headers["Location"].startswith("/login-page?next=")
    for role in ("admin", "technologist", "referrer", "radiologist"):
        assert site.client(role).get("/ui/studies").status_code == 200, role
    for role in ("emr", "his"):
        token = site.archive.accounts.create_token(f"{role}-system", ADMIN, role=role)
        answer = site.app.test_client().get("/ui/studies", headers={"Authorization": f"Bearer {token.secret}"})
        assert answer.status_code == 403, (role, answer.status_code)
        assert "Nguyễn" not in answer.text and "<tbody>" not in answer.text


def test_the_menu_has_the_list(site: Site) -> None:
    html = site.client("technologist").get("/ui/studies", headers={"Accept-Language": "en"}).text
    assert '<a href="/ui/studies" aria-current="page">Studies</a>' in html


def test_a_page_costs_two_sql_statements_whatever_its_size(site: Site) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    engine = site.archive.db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        page = reading_list(site.archive.db, ReadingListQuery(status="all", page_size=50))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert page.total == 6 and len(page.rows) == 6 and page.pages == 1
    assert len(statements) == 1, statements
