"""Patient share links: the service (signature, expiry, revocation, tampering) and the staff API
(/api/share-links, its roles and its QR code), against a running `minipacs serve`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from archive import Archive, Origin
from archive.audit import search
from archive.errors import InvalidArgument, NotFound
from archive.models import Study
from reports.models import ShareLink
from reports.share import (
    LOCK_MINUTES,
    MAX_PIN_ATTEMPTS,
    LinkGone,
    LinkLocked,
    LinkNotFound,
    PinRequired,
    ShareLinks,
    WrongPin,
    derive_key,
    split_link,
)
from tests.conftest import CT_FILES
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)
from tests.dicom_scp.helpers import stop_and_check, wait_for
from tests.reports.share_site import CT, DX, Site, link_path, start_site

STUDY = str(CT.StudyInstanceUID)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("share-links") / "data")
    yield running
    stop_and_check(running.server)


def create(site: Site, as_: str = "technologist", **body: object) -> requests.Response:
    return site.request("POST", "/api/share-links", as_=as_, json={"study_instance_uid": STUDY, **body})


def page(site: Site, path: str) -> requests.Response:
    return requests.get(f"{site.url}{path}", timeout=30, allow_redirects=False)


# --- the API and its roles ------------------------------------------------------------------


@pytest.mark.parametrize("who, status", [
    ("admin", 201), ("radiologist", 201), ("technologist", 201),
    ("referrer", 403), ("emr", 403), ("his", 403), (None, 401),
])  # fmt: skip
def test_who_may_make_a_link(site: Site, who: str | None, status: int) -> None:
    answer = create(site, as_=who)  # type: ignore[arg-type]
    assert answer.status_code == status, answer.text
    if status != 201:
        assert answer.headers["Content-Type"] == "application/json" and answer.json()["message"]
        for path in (f"/api/share-links?study={STUDY}", "/api/share-links/x/qr.png"):
            assert site.request("GET", path, as_=who).status_code == status
        assert site.request("DELETE", "/api/share-links/x", as_=who).status_code == status


def test_a_new_link_opens_the_study(site: Site) -> None:
    answer = create(site, days=7)
    assert answer.status_code == 201
    body = answer.json()
    assert body["url"].startswith(f"{site.url}/s/") and body["has_pin"] is False and body["use_count"] == 0
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    token_id, signature = split_link(link_path(body["url"])[3:])
    assert token_id == body["token_id"] and len(token_id) >= 32 and len(signature) >= 22  # 192 and 128 bits
    opened = page(site, link_path(body["url"]))
    assert opened.status_code == 200 and opened.headers["Content-Type"].startswith("text/html")
    listed = site.request("GET", f"/api/share-links?study={STUDY}").json()["links"]
    mine = next(link for link in listed if link["token_id"] == token_id)
    assert mine["url"] == body["url"] and mine["use_count"] == 1 and mine["last_used_at"]


def test_the_default_lifetime_is_the_setting(site: Site) -> None:
    expires = datetime.fromisoformat(create(site).json()["expires_at"])
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)


def test_the_qr_code_reads_back_as_the_link(site: Site, tmp_path: Path) -> None:
    body = create(site).json()
    answer = site.request("GET", f"/api/share-links/{body['token_id']}/qr.png")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
    assert body["qr_png_url"] == f"{site.url}/api/share-links/{body['token_id']}/qr.png"
    png = tmp_path / "qr.png"
    png.write_bytes(answer.content)
    assert shutil.which("zbarimg"), "zbarimg (Debian zbar-tools) reads QR codes: tests/setup.sh installs it"
    read = subprocess.run(["zbarimg", "--quiet", "--raw", str(png)], capture_output=True, text=True, timeout=30)
    assert read.returncode == 0 and read.stdout.strip() == body["url"]


@pytest.mark.parametrize("body, message", [
    ({"study_instance_uid": STUDY, "days": 0}, "days must be a whole number"),
    ({"study_instance_uid": STUDY, "days": "30"}, "days must be a whole number"),
    ({"study_instance_uid": STUDY, "days": True}, "days must be a whole number"),
    ({"study_instance_uid": STUDY, "days": 100000}, "days must be a whole number"),
    ({"study_instance_uid": STUDY, "pin": "12"}, "pin: give 4 to 32"),
    ({"study_instance_uid": STUDY, "pin": 1980}, "pin must be text"),
    ({"study_instance_uid": "../../etc/passwd"}, "study_instance_uid must be"),
    ({"study_instance_uid": STUDY, "owner": "x"}, "unknown field"),
    ({}, "study_instance_uid must be"),
    ([STUDY], "send a JSON object"),
])  # fmt: skip
def test_bad_requests_make_no_link(site: Site, body: object, message: str) -> None:
    before = len(site.request("GET", f"/api/share-links?study={STUDY}").json()["links"])
    answer = site.request("POST", "/api/share-links", json=body)
    assert answer.status_code == 400 and message in answer.json()["message"], answer.text
    assert len(site.request("GET", f"/api/share-links?study={STUDY}").json()["links"]) == before


def test_unknown_study_and_unknown_link(site: Site) -> None:
    answer = site.request("POST", "/api/share-links", json={"study_instance_uid": "1.2.3.4.5"})
    assert answer.status_code == 404 and "no study" in answer.json()["message"]
    assert site.request("DELETE", "/api/share-links/nope").status_code == 404
    assert site.request("GET", "/api/share-links/nope/qr.png").status_code == 404
    assert site.request("GET", "/api/share-links").status_code == 400
    assert site.request("GET", "/api/share-links?study=1.2.3&all=1").status_code == 400


def test_a_session_needs_its_csrf_token_to_make_or_revoke(site: Site) -> None:
    browser = requests.Session()
    login = browser.post(f"{site.url}/login", json={"username": "radiologist", "password": "phong doc phim 2026"},
                         timeout=30)  # fmt: skip
    csrf = login.json()["csrf_token"]
    body = {"study_instance_uid": STUDY}
    assert browser.post(f"{site.url}/api/share-links", json=body, timeout=30).status_code == 403
    made = browser.post(f"{site.url}/api/share-links", json=body, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert made.status_code == 201
    token_id = made.json()["token_id"]
    assert browser.delete(f"{site.url}/api/share-links/{token_id}", timeout=30).status_code == 403
    revoked = browser.delete(f"{site.url}/api/share-links/{token_id}", headers={"X-CSRF-Token": csrf}, timeout=30)
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "radiologist"


# --- expiry, revocation, tampering --------------------------------------------------------------


def test_revoked_links_are_gone(site: Site) -> None:
    body = create(site).json()
    path = link_path(body["url"])
    assert page(site, path).status_code == 200
    revoked = site.request("DELETE", f"/api/share-links/{body['token_id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    gone = page(site, path)
    assert gone.status_code == 410 and "thu hồi" in gone.text and "withdrawn" in gone.text
    assert page(site, f"{path}/instances/{CT.SOPInstanceUID}/rendered").status_code == 410
    assert site.request("GET", f"/api/share-links/{body['token_id']}/qr.png").status_code == 410
    assert site.request("DELETE", f"/api/share-links/{body['token_id']}").status_code == 200  # twice: harmless


def test_expired_links_are_gone(site: Site) -> None:
    archive = site.server.archive()
    try:
        past = datetime.now(UTC) - timedelta(days=31)
        links = site.links(archive, clock=lambda: past)
        expired = links.create(STUDY, "test", days=30)
        fresh = site.links(archive).create(STUDY, "test", days=1)
        with pytest.raises(LinkGone):
            site.links(archive).open(expired.token_id, expired.signature)
    finally:
        archive.close()
    answer = page(site, expired.path)
    assert answer.status_code == 410 and "hết hạn" in answer.text and "expired" in answer.text
    assert CT.PatientID not in answer.text
    assert page(site, fresh.path).status_code == 200  # made by the test process: the nodes share the key


def test_tampering_is_not_found_and_tells_nothing(site: Site) -> None:
    body = create(site).json()
    path = link_path(body["url"])
    token_id, signature = split_link(path[3:])
    flipped = "A" if signature[0] != "A" else "B"
    other_token = ("x" if token_id[0] != "x" else "y") + token_id[1:]
    answers = [page(site, p) for p in (f"/s/{token_id}.{flipped}{signature[1:]}", f"/s/{other_token}.{signature}",
                                       f"/s/{token_id}", f"/s/{token_id}.", f"/s/.{signature}",
                                       f"/s/{'x' * 300}.{signature}")]  # fmt: skip
    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert CT.PatientID not in answer.text and str(CT.PatientName).split("^")[0] not in answer.text
    # An unknown token and a tampered signature answer the very same page: nothing tells them apart.
    assert answers[0].text == answers[1].text
    assert page(site, f"/s/{token_id}.{flipped}{signature[1:]}/instances/{CT.SOPInstanceUID}/rendered").status_code == 404
    assert page(site, path).status_code == 200  # the real one still works


def test_a_row_pointed_at_another_study_or_stretched_fails_its_signature(site: Site) -> None:
    """Someone with write access to the database cannot move a link to another patient or extend it."""
    moved, stretched = create(site).json(), create(site).json()
    archive = site.server.archive()
    try:
        with archive.db.write() as conn:
            dx_pk = conn.execute(select(Study.pk).where(Study.study_instance_uid == str(DX.StudyInstanceUID))).scalar_one()
            conn.execute(update(ShareLink).where(ShareLink.token_id == moved["token_id"]).values(study_pk=dx_pk))
            conn.execute(update(ShareLink).where(ShareLink.token_id == stretched["token_id"])
                         .values(expires_at=datetime.now(UTC) + timedelta(days=3650)))  # fmt: skip
        with pytest.raises(LinkNotFound):
            site.links(archive).check(*split_link(link_path(moved["url"])[3:]))
    finally:
        archive.close()
    for body in (moved, stretched):
        answer = page(site, link_path(body["url"]))
        assert answer.status_code == 404 and str(DX.PatientID) not in answer.text


def test_every_use_and_refusal_is_audited(site: Site) -> None:
    body = create(site).json()
    path = link_path(body["url"])
    page(site, path)
    page(site, path[:-2] + ("AA" if not path.endswith("AA") else "BB"))
    site.request("DELETE", f"/api/share-links/{body['token_id']}")
    page(site, path)
    archive = site.server.archive()
    try:
        def events() -> set[tuple[str, str, str]] | None:
            rows = search(archive.db, uid=STUDY, limit=500)
            found = {(r.action, r.outcome, r.detail) for r in rows if body["token_id"][:8] in r.actor + r.detail}
            wanted = {("SHARE_CREATE", "done"), ("SHARE_OPEN", "ok"), ("SHARE_OPEN", "refused"), ("SHARE_REVOKE", "done")}
            return found if wanted <= {(a, o) for a, o, _ in found} else None

        found = wait_for(events, timeout=20, what="the link's audit events")
        refusals = {detail for action, outcome, detail in found if outcome == "refused"}
        assert "revoked" in refusals and any(d.startswith("unknown or tampered") for d in refusals)
    finally:
        archive.close()


# --- the service on its own ------------------------------------------------------------------


def test_ensure_for_study_reuses_the_live_link(site: Site) -> None:
    archive = site.server.archive()
    try:
        links = site.links(archive)
        first = links.ensure_for_study(None, str(DX.StudyInstanceUID), "bs.lan")
        assert links.ensure_for_study(None, str(DX.StudyInstanceUID), "bs.lan").token_id == first.token_id
        with archive.db.write() as conn:  # inside the caller's transaction (the sign flow's)
            assert links.ensure_for_study(conn, str(DX.StudyInstanceUID), "bs.lan").token_id == first.token_id
        links.revoke(first.token_id, "admin")
        with archive.db.write() as conn:
            second = links.ensure_for_study(conn, str(DX.StudyInstanceUID), "bs.lan")
        assert second.token_id != first.token_id and second.live(datetime.now(UTC))
        assert [i.token_id for i in links.list_for_study(str(DX.StudyInstanceUID))][:2] == [second.token_id, first.token_id]
        with pytest.raises(NotFound):
            links.ensure_for_study(None, "1.2.3.999", "bs.lan")
        with pytest.raises(InvalidArgument):
            links.create(str(DX.StudyInstanceUID), "bs.lan", pin="\x00\x01\x02\x03")
    finally:
        archive.close()
    assert page(site, second.path).status_code == 200


def test_pin_attempts_are_counted_in_the_row(archive: Archive) -> None:
    """Five wrong PINs lock the link for 15 minutes, for every instance on the database; the lock then ends."""
    with open(CT_FILES[0], "rb") as f:
        archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
    now = [datetime(2026, 12, 6, 8, 0, tzinfo=UTC)]
    key = derive_key(b"k" * 32)

    def node() -> ShareLinks:  # a process of its own: nothing shared but the database and the key
        return ShareLinks(archive.db, archive.audit, key, clock=lambda: now[0])

    info = node().create(STUDY, "ktv.hoa", pin=" 1980 ")
    assert info.has_pin
    with pytest.raises(PinRequired):
        node().open(info.token_id, info.signature)
    with pytest.raises(PinRequired):
        node().open(info.token_id, info.signature, "   ")  # an empty form costs no attempt
    for left in range(MAX_PIN_ATTEMPTS - 1, 0, -1):
        with pytest.raises(WrongPin, match=f"{left} tries left"):
            node().open(info.token_id, info.signature, "1981")
    with pytest.raises(LinkLocked) as locked:
        node().open(info.token_id, info.signature, "1982")
    assert locked.value.retry_after == LOCK_MINUTES * 60 and locked.value.http_status == 429
    now[0] += timedelta(minutes=LOCK_MINUTES - 1)
    with pytest.raises(LinkLocked):
        node().open(info.token_id, info.signature, "1980")
    assert node().get(info.token_id).use_count == 0
    now[0] += timedelta(minutes=1, seconds=1)
    opened = node().open(info.token_id, info.signature, "1980")  # spaces around a PIN do not matter
    assert opened.study_instance_uid == STUDY and opened.has_pin
    with pytest.raises(WrongPin, match=f"{MAX_PIN_ATTEMPTS - 1} tries left"):  # the right PIN started the count again
        node().open(info.token_id, info.signature, "0000")
    assert node().open(info.token_id, info.signature, pin_verified=True).token_id == info.token_id
    stored = node().get(info.token_id)
    assert stored.use_count == 2 and stored.locked_until is None
    with archive.db.read() as conn:
        pin_hash = conn.execute(select(ShareLink.pin_hash)).scalar_one()
    assert pin_hash.startswith("$argon2id$") and "1980" not in pin_hash


def test_a_key_shorter_than_16_bytes_is_refused(archive: Archive) -> None:
    with pytest.raises(ValueError, match="secret"):
        ShareLinks(archive.db, archive.audit, b"short")
