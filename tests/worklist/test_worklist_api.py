"""The technologist's endpoints (/api/worklist) against a running `minipacs serve`: today's list by
modality and station with STAT first, step detail with history and priors, status changes and
refused transitions, walk-in registration, unmatched studies and matching one by hand, roles,
CSRF for browser sessions, and hostile bodies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import CT_FILES
from tests.dicom_scp.helpers import stop_and_check, storescu
from tests.worklist.web_helpers import PASSWORD, Site, assert_json_error, start_site

TODAY = datetime.now().astimezone()
DAY = TODAY.strftime("%Y%m%d")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = start_site(tmp_path_factory.mktemp("worklist") / "data")  # the bundled default order mapping
    yield site
    stop_and_check(site.server)


def order(site: Site, number: str, code: str, hhmm: str, priority: str = "ROUTINE", station: str = "",
          patient_id: str = "BN-WL") -> dict[str, Any]:  # fmt: skip
    body = {"order_number": number, "patient": {"id": patient_id, "name": "Võ^Thị Sáu", "sex": "F"},
            "procedure": {"code": code}, "priority": priority, "station_ae_title": station,
            "scheduled": TODAY.strftime("%Y-%m-%d") + f"T{hhmm[:2]}:{hhmm[2:]}:00"}  # fmt: skip
    answer = site.call("POST", "/api/orders", json=body)
    assert answer.status_code == 201, answer.text
    step: dict[str, Any] = answer.json()["order"]
    return step


def tech(site: Site, method: str, path: str, as_: str | None = "technologist", **kwargs: Any) -> requests.Response:
    return site.call(method, f"/api/worklist{path}", as_=as_, **kwargs)


def test_todays_worklist_stat_first(site: Site) -> None:
    routine = order(site, "WL-1", "CT-NGUC", "0800")
    stat = order(site, "WL-2", "CT-SONAO", "1100", priority="STAT")
    chest = order(site, "WL-3", "XQ-NGUC-THANG", "0700", station="DX_ROOM1")
    answer = tech(site, "GET", "?modality=CT")
    assert answer.status_code == 200, answer.text
    assert answer.json()["date"] == DAY
    accessions = [s["accession_number"] for s in answer.json()["steps"]]
    assert accessions.index(stat["accession_number"]) < accessions.index(routine["accession_number"])
    assert chest["accession_number"] not in accessions
    assert accessions[0] == stat["accession_number"]  # STAT before everything scheduled earlier
    by_station = tech(site, "GET", f"?date={DAY}&station=DX_ROOM1").json()["steps"]
    assert [s["accession_number"] for s in by_station] == [chest["accession_number"]]
    tomorrow = (TODAY + timedelta(days=1)).strftime("%Y%m%d")
    assert tech(site, "GET", f"?date={tomorrow}").json()["steps"] == []
    for query, word in (("date=yesterday", "date"), ("date=2026-12-05", "date"), ("status=LATE", "status"),
                        ("limit=100000", "limit"), ("room=1", "room")):  # fmt: skip
        assert_json_error(tech(site, "GET", f"?{query}"), 400, word)


def test_status_changes_and_history(site: Site) -> None:
    step = order(site, "WL-STATUS", "CT-SONAO", "0900")
    accession = step["accession_number"]
    started = tech(site, "POST", f"/{accession}/status", json={"status": "started"})
    assert started.status_code == 200 and started.json()["step"]["status"] == "IN PROGRESS"
    assert tech(site, "POST", f"/{accession}/status", json={"status": "started"}).status_code == 200  # a resend
    done = tech(site, "POST", f"/{accession}/status", json={"status": "completed", "reason": "xong"})
    assert done.json()["step"]["status"] == "COMPLETED"
    assert_json_error(tech(site, "POST", f"/{accession}/status", json={"status": "discontinued"}), 409,
                      "COMPLETED", "DISCONTINUED")  # fmt: skip
    assert_json_error(tech(site, "POST", f"/{accession}/status", json={"status": "paused"}), 400, "paused")
    assert_json_error(tech(site, "POST", f"/{accession}/status", json={"state": "started"}), 400, "state")
    assert_json_error(tech(site, "POST", "/NO-SUCH/status", json={"status": "started"}), 404, "NO-SUCH")
    assert_json_error(tech(site, "GET", "/NO-SUCH"), 404, "NO-SUCH")
    detail = tech(site, "GET", f"/{accession}").json()
    assert detail["step"]["status"] == "COMPLETED"
    history = [(h["action"], h["status"], h["actor"]) for h in detail["history"]]
    assert history[0][:2] == ("created", "SCHEDULED") and history[0][2] == "his-vn"
    assert ("status", "IN PROGRESS", "technologist") in history
    assert ("status", "COMPLETED", "technologist") in history
    # The HIS can see the status.
    assert site.call("GET", "/api/orders/WL-STATUS").json()["order"]["status"] == "COMPLETED"


def test_walk_in(site: Site) -> None:
    body = {"patient": {"patient_id": "VL-0001", "name": "Đặng^Văn Lâm", "birth_date": "19700101", "sex": "M",
                        "other_ids": [{"value": "001070000001", "issuer": "CCCD"}]},
            "procedure_code": "XQ-NGUC-THANG", "priority": "STAT", "reason": "tai nạn giao thông"}  # fmt: skip
    answer = tech(site, "POST", "/walk-in", json=body)
    assert answer.status_code == 201, answer.text
    step = answer.json()["step"]
    assert step["placer_issuer"] == "WALKIN" and step["placer_order_number"].startswith("WALKIN-")
    assert len(step["accession_number"]) == 10 and step["accession_number"].startswith(TODAY.strftime("%y%m%d"))
    assert step["modality"] == "DX" and step["patient"]["name"] == "Đặng^Văn Lâm"
    assert step["patient"]["other_ids"] == [{"value": "001070000001", "issuer": "CCCD", "type": "TEXT"}]
    listed = tech(site, "GET", "?modality=DX").json()["steps"]
    assert listed[0]["accession_number"] == step["accession_number"]  # STAT first
    second = tech(site, "POST", "/walk-in", json=body).json()["step"]
    assert second["accession_number"] != step["accession_number"]


@pytest.mark.parametrize(("body", "words"), [
    ({"patient": {"name": "Không^Có Mã"}, "modality": "CT"}, ("patient ID",)),
    ({"patient": {"patient_id": "VL-9", "birth_date": "1970-01-01"}, "modality": "CT"}, ("birth_date",)),
    ({"patient": {"patient_id": "VL-9", "birth_date": "19701301"}, "modality": "CT"}, ("birth date",)),
    ({"patient": {"patient_id": "VL-9"}}, ("modality",)),
    ({"patient": {"patient_id": "VL-9"}, "modality": "CT", "priority": "NOW"}, ("priority",)),
    ({"patient": {"patient_id": "VL-9"}, "modality": "CT", "pregnancy_status": "yes"}, ("pregnancy_status",)),
    ({"patient": {"patient_id": "VL-9", "other_ids": "0010"}, "modality": "CT"}, ("other_ids",)),
    ({"patient": {"patient_id": "VL-9", "age": 50}, "modality": "CT"}, ("patient.'age'",)),
    ({"patient": "VL-9", "modality": "CT"}, ("patient",)),
    ({"patient": {"patient_id": 9}, "modality": "CT"}, ("patient_id",)),
    ({"patient": {"patient_id": "VL-9"}, "modality": "CT", "accession_number": "X"}, ("accession_number",)),
    ([], ("object",)),
], ids=lambda v: str(v)[:30])  # fmt: skip
def test_walk_in_refusals(site: Site, body: Any, words: tuple[str, ...]) -> None:
    assert_json_error(tech(site, "POST", "/walk-in", json=body), 400, *words)


def test_priors_unmatched_and_manual_match(site: Site, tmp_path: Path) -> None:
    step = order(site, "WL-MATCH", "CT-SONAO", "1000", patient_id="BN-PRIOR")
    # A study of the same patient arrives from the modality with an accession number nobody ordered.
    dataset = dcmread(CT_FILES[0])
    dataset.PatientID = "BN-PRIOR"
    dataset.AccessionNumber = "TYPO-123"
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    path = tmp_path / "ct.dcm"
    dataset.save_as(path)
    storescu(site.server, path)
    study = str(dataset.StudyInstanceUID)

    unmatched = tech(site, "GET", "/unmatched")
    assert unmatched.status_code == 200, unmatched.text
    assert study in [s["study_instance_uid"] for s in unmatched.json()["studies"]]
    priors = tech(site, "GET", f"/{step['accession_number']}").json()["priors"]
    assert study in [p["study_instance_uid"] for p in priors]

    assert_json_error(tech(site, "POST", "/match", json={"study_instance_uid": "1.2.3.999",
                                                         "accession_number": step["accession_number"]}), 404)  # fmt: skip
    assert_json_error(tech(site, "POST", "/match", json={"study_instance_uid": study,
                                                         "accession_number": "NO-SUCH"}), 404)  # fmt: skip
    assert_json_error(tech(site, "POST", "/match", json={"study_instance_uid": study}), 400, "accession_number")
    assert_json_error(tech(site, "POST", "/match", json={"study": study, "accession_number": "A"}), 400, "study")
    matched = tech(site, "POST", "/match", json={"study_instance_uid": study,
                                                 "accession_number": step["accession_number"]})  # fmt: skip
    assert matched.status_code == 200, matched.text
    assert study not in [s["study_instance_uid"] for s in tech(site, "GET", "/unmatched").json()["studies"]]
    assert_json_error(tech(site, "GET", "/unmatched?limit=0"), 400, "limit")


def test_who_may_use_the_worklist(site: Site) -> None:
    for who in ("referrer", "emr", "his-vn"):
        assert_json_error(tech(site, "GET", "", as_=who), 403, "worklist")
        assert_json_error(tech(site, "POST", "/walk-in", as_=who, json={}), 403)
    assert_json_error(tech(site, "GET", "", as_=None), 401)
    for who in ("radiologist", "admin", "technologist"):
        assert tech(site, "GET", "", as_=who).status_code == 200


def test_browser_sessions_need_the_csrf_token(site: Site) -> None:
    step = order(site, "WL-CSRF", "CT-SONAO", "1300")
    browser = requests.Session()
    login = browser.post(f"{site.url}/login", json={"username": "technologist", "password": PASSWORD}, timeout=30)
    assert login.status_code == 200
    url = f"{site.url}/api/worklist/{step['accession_number']}/status"
    assert browser.get(f"{site.url}/api/worklist", timeout=30).status_code == 200
    assert_json_error(browser.post(url, json={"status": "started"}, timeout=30), 403, "CSRF")
    assert tech(site, "GET", f"/{step['accession_number']}").json()["step"]["status"] == "SCHEDULED"
    ok = browser.post(url, json={"status": "started"}, headers={"X-CSRF-Token": login.json()["csrf_token"]},
                      timeout=30)  # fmt: skip
    assert ok.status_code == 200 and ok.json()["step"]["status"] == "IN PROGRESS"


def test_hostile_bodies(site: Site) -> None:
    headers = {"Content-Type": "application/json"}
    assert_json_error(tech(site, "POST", "/walk-in", data=b'{"patient": ', headers=headers), 400, "JSON")
    assert_json_error(tech(site, "POST", "/walk-in", data=b"\x00" * 10, headers=headers), 400)
    assert_json_error(tech(site, "POST", "/walk-in", data=b"a=1", headers={"Content-Type": "text/plain"}), 415)
    assert_json_error(tech(site, "POST", "/walk-in", data=b"{" + b" " * (1 << 20) + b"}", headers=headers), 413)
    assert_json_error(tech(site, "GET", "/" + "A" * 40), 400, "accession")
    assert site.call("GET", "/healthz", as_=None).status_code == 200
