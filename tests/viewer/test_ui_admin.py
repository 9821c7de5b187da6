"""The administrator's pages through Flask's test client: roles, CSRF, bad input changes nothing, hostile text is escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from archive import Archive, Origin
from archive.audit import search
from tests.conftest import CT_FILES
from viewer.app import create_app
from viewer.config import WebConfig
from worklist.outbox import FAILED, OUTBOX, enqueue

ADMIN = Origin("cli:test", "", "CLI")
PASSWORD = "phong doc phim 2026"


@pytest.fixture
def client(tmp_path: Path, archive: Archive) -> Iterator[FlaskClient]:
    archive.accounts.add_user("admin", "admin", PASSWORD, ADMIN, display_name="Quản trị viên")
    archive.accounts.add_user("bs.lan", "radiologist", PASSWORD, ADMIN)
    yield create_app(archive, WebConfig(secret_file=tmp_path / "key")).test_client()


def login(client: FlaskClient, username: str = "admin") -> str:
    answer = client.post("/login", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    client.set_cookie("minipacs_lang", "en")
    token: str = answer.json["csrf_token"]  # type: ignore[index]
    return token


def test_pages_are_for_administrators_only(client: FlaskClient) -> None:
    for path in ("/ui/admin", "/ui/admin/users", "/ui/admin/outbox", "/ui/admin/audit"):
        answer = client.get(path)
        assert answer.status_code == 303 and "/login-page?next=" in answer.headers["Location"], path
    csrf = login(client, "bs.lan")
    for path in ("/ui/admin", "/ui/admin/users", "/ui/admin/outbox", "/ui/admin/audit"):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "text/html" in answer.content_type and "may not open this page" in answer.text
    refused = client.post("/ui/admin/users", data={"csrf_token": csrf, "username": "intruder", "role": "admin",
                                                   "password": "long enough pw", "confirm": "long enough pw"})
    assert refused.status_code == 403
    assert client.application.config["ARCHIVE"].accounts.user("intruder") is None
    home = client.get("/ui/studies", follow_redirects=True)
    assert "/ui/admin" not in home.text  # the menu item is hidden too


def test_dashboard_shows_storage_modalities_and_queues(client: FlaskClient, archive: Archive) -> None:
    for path in CT_FILES[:3]:
        with path.open("rb") as f:
            archive.ingest(f, Origin("CT_ROOM1", "10.0.0.5", "DIMSE"))
    with archive.db.write() as conn:
        enqueue(conn, "his", "ORM", "CT2611200001", b"MSH|^~\\&|x")
        number = enqueue(conn, "emr", "ORU", "CT2611200002", b"MSH|^~\\&|y")
        conn.execute(OUTBOX.update().where(OUTBOX.c.pk == number).values(state=FAILED, last_error="refused"))
    login(client)
    page = client.get("/ui/admin")
    assert page.status_code == 200
    assert re.search(r'<dd id="instances">3</dd>', page.text)
    assert 'data-ae="CT_ROOM1"' in page.text and "just now" in page.text
    assert 'href="/ui/admin/audit?user=CT_ROOM1"' in page.text
    assert "Not enough data yet" in page.text  # an archive of one day gives no projection
    assert 'data-destination="his"' in page.text and 'data-destination="emr"' in page.text
    assert 'href="/ui/admin/outbox?state=failed"' in page.text
    assert 'href="/ui/admin"' in page.text  # the menu has the item for an admin
    assert 'style="' not in page.text and "<script>" not in page.text  # CSP: no inline style or script


def test_add_user_refuses_bad_input_and_changes_nothing(client: FlaskClient, archive: Archive) -> None:
    csrf = login(client)
    good = {"csrf_token": csrf, "username": "ktv.hoa", "display_name": "KTV Hoa", "role": "technologist",
            "password": "chup phim ca dem", "confirm": "chup phim ca dem"}  # fmt: skip
    before = archive.accounts.count_users()
    cases = {
        "username": ("Bad Name!", "The user name must be"),
        "role": ("superuser", "Choose a role."),
        "password": ("short", "The two passwords differ."),
    }
    for field, (value, message) in cases.items():
        answer = client.post("/ui/admin/users", data={**good, field: value})
        assert answer.status_code == 400 and message in answer.text, (field, answer.text[:300])
    short = client.post("/ui/admin/users", data={**good, "password": "short", "confirm": "short"})
    assert short.status_code == 400 and "at least 8 characters" in short.text
    same = client.post("/ui/admin/users", data={**good, "username": "ktv.hoa.dem", "password": "KTV.hoa.dem",
                                                  "confirm": "KTV.hoa.dem"})
    assert same.status_code == 400 and "must not be the user name" in same.text
    taken = client.post("/ui/admin/users", data={**good, "username": "bs.lan"})
    assert taken.status_code == 400 and "already exists" in taken.text
    assert archive.accounts.count_users() == before
    assert 'value="KTV Hoa"' in short.text  # what was typed is kept (but never the password)
    assert "chup phim ca dem" not in taken.text
    added = client.post("/ui/admin/users", data=good)
    assert added.status_code == 303 and "done=added" in added.headers["Location"]
    assert "User ktv.hoa added." in client.get(added.headers["Location"]).text
    user = archive.accounts.user("ktv.hoa")
    assert user is not None and user.role == "technologist" and user.display_name == "KTV Hoa"
    assert archive.accounts.authenticate("ktv.hoa", "chup phim ca dem") is not None


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(client: FlaskClient, archive: Archive) -> None:
    csrf = login(client)
    attempts = {
        "/ui/admin/users": {"username": "x.y", "role": "admin", "password": "abcdefghij", "confirm": "abcdefghij"},
        "/ui/admin/users/bs.lan/disabled": {"disabled": "1"},
        "/ui/admin/users/bs.lan/password": {"password": "new password 1", "confirm": "new password 1"},
        "/ui/admin/users/bs.lan/certificate": {"number": "999/HN-CCHN"},
        "/ui/admin/tokens": {"name": "emr-test", "role": "emr"},
    }
    for path, fields in attempts.items():
        for token in (None, "forged-" + csrf[:10]):
            data = fields if token is None else {**fields, "csrf_token": token}
            answer = client.post(path, data=data)
            assert answer.status_code == 403, (path, answer.status_code)
            assert "This form has expired" in answer.text
    user = archive.accounts.user("bs.lan")
    assert user is not None and not user.disabled and user.practising_certificate == ""
    assert archive.accounts.authenticate("bs.lan", PASSWORD) is not None
    assert archive.accounts.user("x.y") is None and archive.accounts.tokens() == []


def test_disable_enable_password_and_certificate(client: FlaskClient, archive: Archive) -> None:
    csrf = login(client)
    assert client.post("/ui/admin/users/bs.lan/disabled", data={"csrf_token": csrf, "disabled": "1"}).status_code == 303
    user = archive.accounts.user("bs.lan")
    assert user is not None and user.disabled
    assert client.post("/ui/admin/users/bs.lan/disabled", data={"csrf_token": csrf, "disabled": "0"}).status_code == 303
    user = archive.accounts.user("bs.lan")
    assert user is not None and not user.disabled
    own = client.post("/ui/admin/users/admin/disabled", data={"csrf_token": csrf, "disabled": "1"})
    assert own.status_code == 400 and "your own account" in own.text
    differ = client.post("/ui/admin/users/bs.lan/password",
                         data={"csrf_token": csrf, "password": "mat khau moi 1", "confirm": "mat khau moi 2"})
    assert differ.status_code == 400 and archive.accounts.authenticate("bs.lan", PASSWORD) is not None
    changed = client.post("/ui/admin/users/bs.lan/password",
                          data={"csrf_token": csrf, "password": "mat khau moi 1", "confirm": "mat khau moi 1"})
    assert changed.status_code == 303 and archive.accounts.authenticate("bs.lan", "mat khau moi 1") is not None
    bad = client.post("/ui/admin/users/bs.lan/certificate", data={"csrf_token": csrf, "number": "x" * 65})
    assert bad.status_code == 400 and "at most 64" in bad.text
    ok = client.post("/ui/admin/users/bs.lan/certificate", data={"csrf_token": csrf, "number": "003421/HCM-CCHN"})
    assert ok.status_code == 303
    user = archive.accounts.user("bs.lan")
    assert user is not None and user.practising_certificate == "003421/HCM-CCHN"
    missing = client.post("/ui/admin/users/nobody/disabled", data={"csrf_token": csrf, "disabled": "1"})
    assert missing.status_code == 404 and "There is no user nobody" in missing.text
    archive.audit.flush()
    actions = [r.action for r in search(archive.db, actor="admin", limit=20)]
    assert {"USER_DISABLE", "USER_ENABLE", "USER_PASSWORD", "USER_CERTIFICATE_NUMBER"} <= set(actions)


def test_token_secret_is_shown_once_and_revoking_refuses_it(client: FlaskClient, archive: Archive) -> None:
    csrf = login(client)
    bad = client.post("/ui/admin/tokens", data={"csrf_token": csrf, "name": "emr bv", "role": "emr"})
    assert bad.status_code == 400 and "A token needs a name" in bad.text and archive.accounts.tokens() == []
    wrong_role = client.post("/ui/admin/tokens", data={"csrf_token": csrf, "name": "emr-bv", "role": "root"})
    assert wrong_role.status_code == 400 and archive.accounts.tokens() == []
    created = client.post("/ui/admin/tokens", data={"csrf_token": csrf, "name": "emr-bv", "role": "emr"})
    assert created.status_code == 200 and "shown only once" in created.text
    assert created.headers["Cache-Control"] == "no-store"
    secret = re.search(r'id="token-secret"[^>]*>(mpt_[A-Za-z0-9_-]{43})<', created.text)
    assert secret, created.text
    listing = client.get("/ui/admin/users").text
    assert 'data-token="emr-bv"' in listing and secret.group(1) not in listing  # the prefix only
    twice = client.post("/ui/admin/tokens", data={"csrf_token": csrf, "name": "emr-bv", "role": "emr"})
    assert twice.status_code == 400 and "already exists" in twice.text
    bearer = {"Authorization": f"Bearer {secret.group(1)}"}
    other = client.application.test_client()
    assert other.get("/api/reports?accession=X", headers=bearer).status_code in (200, 404, 503)
    assert client.post("/ui/admin/tokens/emr-bv/revoke", data={"csrf_token": csrf}).status_code == 303
    assert other.get("/api/reports?accession=X", headers=bearer).status_code == 401
    assert client.post("/ui/admin/tokens/no-such/revoke", data={"csrf_token": csrf}).status_code == 404


def test_hostile_text_is_shown_as_text(client: FlaskClient, archive: Archive) -> None:
    csrf = login(client)
    xss = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    added = client.post("/ui/admin/users", data={"csrf_token": csrf, "username": "bs.xss", "display_name": xss,
                                                 "role": "radiologist", "password": "an toan thong tin",
                                                 "confirm": "an toan thong tin"})  # fmt: skip
    assert added.status_code == 303
    archive.audit.record(Origin(xss[:40], "", "HTTP"), "LOGIN", "", "", "refused", xss)
    archive.audit.flush()
    from reports.devices import DeviceRegistry

    with archive.db.write() as conn:  # what a modality sends as its Device Serial Number
        DeviceRegistry(archive.db).observe(conn, "EVIL_AE", "CT", "<script>alert(1)</script>", "", "")
    for path in ("/ui/admin/users", "/ui/admin/audit?action=LOGIN", "/ui/admin"):
        text = client.get(path).text
        assert "<script>alert(1)" not in text and "<img src=x" not in text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path


def test_audit_search_filters_pages_and_refuses_bad_input(client: FlaskClient, archive: Archive) -> None:
    login(client)
    for i in range(60):
        archive.audit.record(Origin("ktv.hoa", "10.0.0.9", "HTTP"), "VIEW", "STUDY", f"1.2.3.{i}", "ok", f"view {i}")
    archive.audit.flush()
    first = client.get("/ui/admin/audit?user=ktv.hoa&action=view")
    assert first.status_code == 200
    assert "1.2.3.59" in first.text and "1.2.3.10" in first.text and "1.2.3.9<" not in first.text  # newest first
    assert 'rel="next"' in first.text and 'rel="prev"' not in first.text
    second = client.get("/ui/admin/audit?user=ktv.hoa&action=view&page=2")
    assert "1.2.3.9<" in second.text and "1.2.3.0<" in second.text and 'rel="next"' not in second.text
    found = client.get("/ui/admin/audit?contains=view+42")
    assert "1.2.3.42" in found.text and "1.2.3.41" not in found.text
    logins = client.get("/ui/admin/audit?user=admin&action=LOGIN")
    assert re.search(r"<td>admin</td>.*?LOGIN", logins.text, re.S)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert "1.2.3.59" in client.get(f"/ui/admin/audit?since={today}&until={today}&user=ktv.hoa").text
    for query, message in (("since=23/11/2026", "Dates are written like"), ("since=2026-11-23&until=2026-11-01",
                           "before the start date"), ("page=0", "no such page"), ("page=abc", "no such page"),
                           ("user=" + "x" * 201, "at most 200"), ("contains=%00", "printable")):  # fmt: skip
        answer = client.get(f"/ui/admin/audit?{query}")
        assert answer.status_code == 400 and message in answer.text, query
    archive.audit.flush()
    assert search(archive.db, action="AUDIT_SEARCH", actor="admin", limit=1)  # searching is audited too


def test_outbox_page_filters_and_retries(client: FlaskClient, archive: Archive) -> None:
    with archive.db.write() as conn:
        number = enqueue(conn, "his", "ORM", "CT2611200001", b"MSH|^~\\&|x")
        conn.execute(OUTBOX.update().where(OUTBOX.c.pk == number).values(state=FAILED, attempts=9,
                                                                          last_error="cannot reach 10.0.0.2:2575"))
        enqueue(conn, "emr", "ORU", "CT2611200002", b"MSH|^~\\&|y")
    csrf = login(client)
    failed = client.get("/ui/admin/outbox?state=failed")
    assert failed.status_code == 200 and "cannot reach 10.0.0.2:2575" in failed.text
    assert "CT2611200002" not in failed.text
    assert client.get("/ui/admin/outbox?state=bogus").status_code == 400
    assert client.post(f"/ui/admin/outbox/{number}/retry").status_code == 403  # no CSRF token
    with archive.db.read() as conn:
        assert conn.execute(OUTBOX.select().where(OUTBOX.c.pk == number)).one().state == FAILED
    retried = client.post(f"/ui/admin/outbox/{number}/retry", data={"csrf_token": csrf})
    assert retried.status_code == 303
    assert "is back in line" in client.get(retried.headers["Location"]).text
    with archive.db.read() as conn:
        row = conn.execute(OUTBOX.select().where(OUTBOX.c.pk == number)).one()
    assert row.state == "pending" and row.attempts == 0
    assert client.post("/ui/admin/outbox/999/retry", data={"csrf_token": csrf}).status_code == 404


def test_dashboard_warns_before_the_disk_is_full(client: FlaskClient, archive: Archive,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from sqlalchemy import update

    from archive import usage
    from archive.models import Study

    with CT_FILES[0].open("rb") as f:
        stored = archive.ingest(f, Origin("CT_ROOM1", "10.0.0.5", "DIMSE"))
    five_days_ago = datetime.now(UTC) - usage.DAY * 5 + usage.DAY / 24
    with archive.db.write() as conn:
        conn.execute(update(Study).values(created_at=five_days_ago, updated_at=five_days_ago))
    size = stored.size  # received over 5 days: size/5 a day
    login(client)
    monkeypatch.setattr(usage, "capacity", lambda objects: usage.Capacity(100 * size, size, 0))
    soon = client.get("/ui/admin").text
    assert re.search(r'class="notice" id="projection" role="alert">About 5 days until the disk is full', soon), soon
    assert 'class="meter warn"' in soon and "full in about 5 days" in soon
    monkeypatch.setattr(usage, "capacity", lambda objects: usage.Capacity(100 * size, 1000 * size, 0))
    later = client.get("/ui/admin").text
    assert 'class="ok" id="projection">About 5,000 days until the disk is full' in later
    monkeypatch.setattr(usage, "capacity", lambda objects: usage.Capacity(100 * size, 0, 10**9))
    full = client.get("/ui/admin").text
    assert 'class="error" id="projection" role="alert">The disk is full' in full and 'class="meter full"' in full
    monkeypatch.setattr(usage, "capacity", lambda objects: None)
    assert "S3 object store" in client.get("/ui/admin").text
