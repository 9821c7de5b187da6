"""The technologist's pages over Flask's test client: today's worklist and its status buttons,
unmatched studies and the manual match, walk-in registration; bad input, CSRF and roles."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from archive import Archive, Origin
from archive.audit import search
from tests.archive.helpers import find, ingest_ds, make_dataset, uid
from tests.worklist.helpers import HIS, order
from viewer.app import create_app
from viewer.config import WebConfig
from worklist.service import Worklist

ADMIN = Origin("cli:test", "", "CLI")
PASSWORD = "phong chup 2026"
XSS = "<script>alert(1)</script>"
TODAY = datetime.now().astimezone().strftime("%Y%m%d")


@pytest.fixture
def worklist(archive: Archive) -> Iterator[Worklist]:
    wl = Worklist(archive)
    wl.reconcile_ingest()
    for name, role in (("ktv.hoa", "technologist"), ("bs.ngoai", "referrer"), ("bs.lan", "radiologist")):
        archive.accounts.add_user(name, role, PASSWORD, ADMIN)
    yield wl


@pytest.fixture
def app_client(tmp_path: Path, archive: Archive, worklist: Worklist) -> FlaskClient:
    return create_app(archive, WebConfig(secret_file=tmp_path / "key"), worklist).test_client()


def log_in(client: FlaskClient, user: str = "ktv.hoa") -> str:
    answer = client.post("/login", json={"username": user, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    token: str = client.get("/session").json["csrf_token"]  # type: ignore[index]
    return token


def schedule(worklist: Worklist, number: str, accession: str, patient_id: str, modality: str = "CT",
             **extra: str) -> None:  # fmt: skip
    extra.setdefault("start_date", TODAY)
    worklist.create(order(number, accession, patient_id=patient_id, modality=modality, **extra), HIS)


def error_text(html: str) -> str:
    found = re.search(r'<p class="error[^"]*"[^>]*>(.*?)</p>', html, re.S)
    return found.group(1) if found else ""


# --- today's worklist ------------------------------------------------------------------------------


def test_today_lists_the_days_steps_with_counts_filters_and_escaped_names(app_client: FlaskClient, archive: Archive,
                                                                          worklist: Worklist) -> None:  # fmt: skip
    schedule(worklist, "O1", "ACC001", "PID001", start_time="0900", station_ae_title="CT_ROOM1", priority="STAT")
    schedule(worklist, "O2", "ACC002", "PID002", modality="DX", start_time="0815", name=XSS)
    schedule(worklist, "O3", "ACC003", "PID003", start_date=(datetime.now() + timedelta(days=1)).strftime("%Y%m%d"))
    log_in(app_client)
    page = app_client.get("/ui/worklist")
    assert page.status_code == 200
    html = page.text
    assert "ACC001" in html and "ACC002" in html and "ACC003" not in html  # tomorrow's is not today's
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.index("ACC001") < html.index("ACC002")  # STAT first
    assert 'class="badge stat"' in html and "CT_ROOM1" in html
    assert re.search(r"CT <b>1</b>", html) and re.search(r"DX <b>1</b>", html)
    assert 'href="/ui/worklist"' in html  # the menu item
    assert 'data-refresh="60"' in html
    only_dx = app_client.get("/ui/worklist?modality=dx").text
    assert "ACC002" in only_dx and "ACC001" not in only_dx
    station = app_client.get("/ui/worklist?station=CT_ROOM1").text
    assert "ACC001" in station and "ACC002" not in station
    tomorrow = (datetime.now() + timedelta(days=1)).date().isoformat()
    other_day = app_client.get(f"/ui/worklist?date={tomorrow}").text
    assert "ACC003" in other_day and "ACC001" not in other_day
    assert "ACC001" not in app_client.get("/ui/worklist?status=COMPLETED").text
    assert "ACC001" in app_client.get("/ui/worklist?status=OPEN").text
    # Who looked at the worklist is in the audit log, as for /api/worklist.
    archive.audit.flush()
    seen = search(archive.db, action="WORKLIST_QUERY")
    assert seen and seen[0].actor == "ktv.hoa" and "status=OPEN" in seen[0].detail


@pytest.mark.parametrize("query", ["date=2026-02-30", "date=yesterday", "modality=C%3CT", "status=ARRIVED",
                                   "station=" + "X" * 17])  # fmt: skip
def test_bad_filters_get_a_clear_400(app_client: FlaskClient, query: str) -> None:
    log_in(app_client)
    answer = app_client.get(f"/ui/worklist?{query}")
    assert answer.status_code == 400
    assert error_text(answer.text) and "Traceback" not in answer.text


def test_status_buttons_move_the_step_as_the_service_allows(app_client: FlaskClient, archive: Archive,
                                                           worklist: Worklist) -> None:  # fmt: skip
    schedule(worklist, "O1", "ACC001", "PID001")
    csrf = log_in(app_client)
    html = app_client.get("/ui/worklist").text
    assert 'value="started"' in html and 'value="completed"' in html and 'value="discontinued"' in html
    # Without the session's CSRF token nothing happens.
    refused = app_client.post("/ui/worklist/ACC001/status", data={"status": "started"})
    assert refused.status_code == 403 and worklist.get("ACC001").status == "SCHEDULED"
    started = app_client.post("/ui/worklist/ACC001/status?modality=CT", data={"status": "started", "csrf_token": csrf})
    assert started.status_code == 303 and started.headers["Location"] == "/ui/worklist?modality=CT"
    assert worklist.get("ACC001").status == "IN PROGRESS"
    after = app_client.get(started.headers["Location"]).text
    assert "ACC001" in after and 'class="ok' in after  # the flash message
    assert 'value="started"' not in after  # IN PROGRESS: complete or discontinue only
    done = app_client.post("/ui/worklist/ACC001/status", data={"status": "completed", "csrf_token": csrf})
    assert done.status_code == 303 and worklist.get("ACC001").status == "COMPLETED"
    again = app_client.post("/ui/worklist/ACC001/status", data={"status": "discontinued", "csrf_token": csrf})
    assert again.status_code == 409 and "ACC001" in error_text(again.text)
    assert "data-refresh" not in again.text  # a page answering a POST never reloads itself (that would re-post)
    assert worklist.get("ACC001").status == "COMPLETED"
    archive.audit.flush()
    audited = search(archive.db, action="WORKLIST_STATUS")
    assert [(a.uid, a.outcome) for a in audited] == [("ACC001", "refused 409")]  # the accepted ones: by the service
    for data, code in (({"status": "arrived"}, 400), ({"status": "cancelled"}, 400),
                       ({"status": "started", "reason": "x" * 501}, 400)):  # fmt: skip
        answer = app_client.post("/ui/worklist/ACC001/status", data={**data, "csrf_token": csrf})
        assert answer.status_code == code and error_text(answer.text)
    missing = app_client.post("/ui/worklist/NOPE/status", data={"status": "started", "csrf_token": csrf})
    assert missing.status_code == 404 and "NOPE" in error_text(missing.text)
    history = worklist.history("ACC001")
    assert [e["status"] for e in history if e["action"] == "status"] == ["IN PROGRESS", "COMPLETED"]
    assert history[-1]["actor"] == "ktv.hoa"


def test_a_discontinued_step_keeps_its_reason(app_client: FlaskClient, worklist: Worklist) -> None:
    schedule(worklist, "O1", "ACC001", "PID001")
    csrf = log_in(app_client)
    answer = app_client.post("/ui/worklist/ACC001/status",
                             data={"status": "discontinued", "reason": "bệnh nhân từ chối", "csrf_token": csrf})
    assert answer.status_code == 303
    assert worklist.get("ACC001").status == "DISCONTINUED"
    assert worklist.history("ACC001")[-1]["detail"] == "bệnh nhân từ chối"


def test_images_received_are_counted_per_step(app_client: FlaskClient, archive: Archive, worklist: Worklist) -> None:
    schedule(worklist, "O1", "ACC001", "PID001")
    ingest_ds(archive, make_dataset(1))
    ingest_ds(archive, make_dataset(2))
    log_in(app_client)
    html = app_client.get("/ui/worklist").text
    row = html[html.index('data-accession="ACC001"'):]
    assert re.search(r'class="num wl-images"><a href="/studies/[0-9.]+"[^>]*>2</a>', row)


# --- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui/worklist", "/ui/worklist/unmatched", "/ui/worklist/walk-in"])
def test_a_referrer_gets_403_and_no_menu_item(app_client: FlaskClient, path: str) -> None:
    log_in(app_client, "bs.ngoai")
    answer = app_client.get(path)
    assert answer.status_code == 403
    assert 'href="/ui/worklist"' not in answer.text and "Traceback" not in answer.text


def test_a_referrer_cannot_post_either(app_client: FlaskClient, worklist: Worklist) -> None:
    schedule(worklist, "O1", "ACC001", "PID001")
    csrf = log_in(app_client, "bs.ngoai")
    for path, form in (("/ui/worklist/ACC001/status", {"status": "started"}),
                       ("/ui/worklist/walk-in", {"patient_name": "A B"}), ("/ui/worklist/unmatched/match", {})):
        assert app_client.post(path, data={**form, "csrf_token": csrf}).status_code == 403
    assert worklist.get("ACC001").status == "SCHEDULED" and len(worklist.steps()) == 1


def test_without_a_session_the_pages_send_to_the_login_page(app_client: FlaskClient) -> None:
    answer = app_client.get("/ui/worklist/unmatched")
    assert answer.status_code == 303 and "/login-page?next=%2Fui%2Fworklist%2Funmatched" in answer.headers["Location"]


def test_a_radiologist_may_open_the_worklist(app_client: FlaskClient) -> None:
    log_in(app_client, "bs.lan")
    assert app_client.get("/ui/worklist").status_code == 200


# --- unmatched studies -----------------------------------------------------------------------------


def unmatched_study(archive: Archive, patient_id: str = "TYPO01", name: str = "NGUYEN^VAN A") -> str:
    ds = make_dataset(77, study=uid(1, 77), series=uid(2, 77), patient_id=patient_id, patient_name=name,
                      AccessionNumber=None, modality="DX")  # fmt: skip
    ingest_ds(archive, ds)
    return str(ds.StudyInstanceUID)


def test_an_unmatched_study_is_matched_to_an_order_by_hand(app_client: FlaskClient, archive: Archive,
                                                           worklist: Worklist) -> None:  # fmt: skip
    study = unmatched_study(archive, patient_id="PID009", name="Nguyễn^Văn An")
    schedule(worklist, "O9", "ACC009", "PID009", modality="DX")
    csrf = log_in(app_client)
    html = app_client.get("/ui/worklist/unmatched").text
    assert study in html and 'value="ACC009"' in html  # in the list of open orders to pick from
    answer = app_client.post("/ui/worklist/unmatched/match",
                             data={"study_instance_uid": study, "accession_number": "ACC009", "csrf_token": csrf})
    assert answer.status_code == 303 and answer.headers["Location"] == "/ui/worklist/unmatched"
    assert worklist.unmatched_studies() == []
    [found] = find(archive, "STUDY", StudyInstanceUID=study, AccessionNumber=None)
    assert found.AccessionNumber == "ACC009"
    after = app_client.get("/ui/worklist/unmatched").text
    assert "ACC009" in after and 'id="unmatched-empty"' in after


def test_a_study_of_another_patient_needs_the_technologists_confirmation(app_client: FlaskClient, archive: Archive,
                                                                        worklist: Worklist) -> None:  # fmt: skip
    study = unmatched_study(archive, name=XSS)
    schedule(worklist, "O1", "ACC001", "PID001", modality="DX")
    csrf = log_in(app_client)
    form = {"study_instance_uid": study, "accession_number": "ACC001", "csrf_token": csrf}
    refused = app_client.post("/ui/worklist/unmatched/match", data=form)
    assert refused.status_code == 409
    message = error_text(refused.text)
    assert "TYPO01" in message and "PID001" in message and "&lt;script&gt;" in message and XSS not in refused.text
    assert 'name="confirm_patient"' in refused.text and 'value="ACC001"' in refused.text  # entered value kept
    assert len(worklist.unmatched_studies()) == 1
    matched = app_client.post("/ui/worklist/unmatched/match", data={**form, "confirm_patient": "1"})
    assert matched.status_code == 303 and worklist.unmatched_studies() == []
    [found] = find(archive, "STUDY", StudyInstanceUID=study, PatientID=None, AccessionNumber=None)
    assert found.PatientID == "PID001" and found.AccessionNumber == "ACC001"
    notices = app_client.get("/ui/worklist/unmatched").text
    assert "TYPO01" in notices  # the correction is reported


@pytest.mark.parametrize("form, code", [
    ({"study_instance_uid": "1.2.3", "accession_number": "UNKNOWN"}, 404),
    ({"study_instance_uid": "1.2.3", "accession_number": ""}, 400),
    ({"study_instance_uid": "not a uid", "accession_number": "ACC001"}, 400),
    ({"study_instance_uid": "1.2.3", "accession_number": "A" * 17}, 400),
    ({"study_instance_uid": "1.2.999", "accession_number": "ACC001"}, 404),
])  # fmt: skip
def test_bad_matches_are_refused_with_a_message(app_client: FlaskClient, archive: Archive, worklist: Worklist,
                                                form: dict[str, str], code: int) -> None:  # fmt: skip
    study = unmatched_study(archive)
    schedule(worklist, "O1", "ACC001", "PID001", modality="DX")
    csrf = log_in(app_client)
    if form["study_instance_uid"] == "1.2.3":
        form = {**form, "study_instance_uid": study}
    answer = app_client.post("/ui/worklist/unmatched/match", data={**form, "csrf_token": csrf})
    assert answer.status_code == code and error_text(answer.text)
    assert len(worklist.unmatched_studies()) == 1


def test_an_order_that_has_its_images_is_not_offered_and_is_refused(app_client: FlaskClient, archive: Archive,
                                                                   worklist: Worklist) -> None:  # fmt: skip
    schedule(worklist, "O1", "ACC001", "PID001")
    ingest_ds(archive, make_dataset(1))  # the order's own study, matched by accession
    study = unmatched_study(archive, patient_id="PID001")
    csrf = log_in(app_client)
    assert 'value="ACC001"' not in app_client.get("/ui/worklist/unmatched").text
    answer = app_client.post("/ui/worklist/unmatched/match",
                             data={"study_instance_uid": study, "accession_number": "ACC001", "csrf_token": csrf})
    assert answer.status_code == 409 and "ACC001" in error_text(answer.text)
    assert len(worklist.unmatched_studies()) == 1


# --- walk-in ---------------------------------------------------------------------------------------


def walk_in_form(client: FlaskClient) -> dict[str, str]:
    html = client.get("/ui/worklist/walk-in").text
    found = re.search(r'name="form_id" value="([0-9a-f]+)"', html)
    assert found, html
    return {"form_id": found.group(1), "patient_name": "Trần Thị Bích", "patient_id": "BN26009001",
            "birth_date": "1975-04-30", "sex": "F", "cccd": "079175001234", "bhyt": "dn4797912345678",
            "modality": "DX", "procedure_code": "XQ-NGUC-THANG", "station_ae_title": "DX_ROOM2",
            "priority": "HIGH", "referring_physician": "", "reason": "ho kéo dài"}  # fmt: skip


def test_a_walk_in_is_registered_and_its_accession_number_shown(app_client: FlaskClient, worklist: Worklist) -> None:
    csrf = log_in(app_client)
    form = walk_in_form(app_client)
    answer = app_client.post("/ui/worklist/walk-in", data={**form, "csrf_token": csrf})
    assert answer.status_code == 303, error_text(answer.text)
    [step] = worklist.steps()
    assert answer.headers["Location"] == f"/ui/worklist/walk-in?done={step.accession_number}"
    assert step.placer_issuer == "WALKIN" and step.modality == "DX" and step.priority == "HIGH"
    assert step.station_ae_title == "DX_ROOM2" and step.procedure_code == "XQ-NGUC-THANG"
    assert step.patient.name == "Trần^Thị Bích" and step.patient.birth_date == "19750430"
    assert {(o.issuer, o.value) for o in step.patient.other_ids} == {("CCCD", "079175001234"),
                                                                       ("BHYT", "DN4797912345678")}  # fmt: skip
    shown = app_client.get(answer.headers["Location"]).text
    assert f'id="new-accession">{step.accession_number}<' in shown
    # The same form sent twice (a double click, the back button) registers one exam.
    again = app_client.post("/ui/worklist/walk-in", data={**form, "csrf_token": csrf})
    assert again.status_code == 303 and len(worklist.steps()) == 1
    today = app_client.get("/ui/worklist").text
    assert step.accession_number in today and "Trần Thị Bích" in today


def test_a_walk_in_without_patient_id_gets_one(app_client: FlaskClient, worklist: Worklist) -> None:
    csrf = log_in(app_client)
    form = {**walk_in_form(app_client), "patient_id": "", "cccd": "", "bhyt": "", "procedure_code": ""}
    answer = app_client.post("/ui/worklist/walk-in", data={**form, "csrf_token": csrf})
    assert answer.status_code == 303
    [step] = worklist.steps()
    assert re.fullmatch(r"WI\d{6}[0-9A-F]{6}", step.patient.patient_id)
    assert step.patient.patient_id in app_client.get(answer.headers["Location"]).text


@pytest.mark.parametrize("changes, field", [
    ({"patient_name": ""}, "patient_name"),
    ({"patient_name": "Nguyễn^Văn"}, "patient_name"),
    ({"birth_date": "2999-01-01"}, "birth_date"),
    ({"birth_date": "1975-02-30"}, "birth_date"),
    ({"sex": "X"}, "sex"),
    ({"cccd": "12345"}, "cccd"),
    ({"bhyt": "12345"}, "bhyt"),
    ({"procedure_code": "NO-SUCH"}, "procedure_code"),
    ({"modality": "CT"}, "procedure_code"),  # a chest X-ray is not done on the CT
    ({"modality": "", "procedure_code": ""}, "modality"),
    ({"modality": "C T"}, "modality"),
    ({"station_ae_title": "A" * 17}, "station_ae_title"),
    ({"priority": "URGENT"}, "priority"),
    ({"reason": "x" * 501}, "reason"),
    ({"patient_id": "a\\b"}, "patient_id"),
    ({"patient_name": "An\x00"}, "patient_name"),
])  # fmt: skip
def test_a_bad_walk_in_is_refused_next_to_the_field_with_the_values_kept(
    app_client: FlaskClient, worklist: Worklist, changes: dict[str, str], field: str
) -> None:  # fmt: skip
    csrf = log_in(app_client)
    form = {**walk_in_form(app_client), **changes, "csrf_token": csrf}
    answer = app_client.post("/ui/worklist/walk-in", data=form)
    assert answer.status_code == 400
    assert f'id="err-{field}"' in answer.text and 'id="walk-in-errors"' in answer.text
    assert 'value="BN26009001"' in answer.text or field == "patient_id"  # what was typed stays
    assert worklist.steps() == []


def test_a_walk_in_may_not_rename_an_existing_patient(app_client: FlaskClient, worklist: Worklist) -> None:
    schedule(worklist, "O1", "ACC001", "BN26009001")  # Nguyễn Văn An
    csrf = log_in(app_client)
    answer = app_client.post("/ui/worklist/walk-in", data={**walk_in_form(app_client), "csrf_token": csrf})
    assert answer.status_code == 400 and 'id="err-patient_id"' in answer.text and "Nguyễn Văn An" in answer.text
    assert len(worklist.steps()) == 1
    same = {**walk_in_form(app_client), "patient_name": "nguyễn  văn an", "csrf_token": csrf}
    assert app_client.post("/ui/worklist/walk-in", data=same).status_code == 303
    assert len(worklist.steps()) == 2


def test_an_expired_or_forged_walk_in_form_is_refused(app_client: FlaskClient, worklist: Worklist) -> None:
    csrf = log_in(app_client)
    answer = app_client.post("/ui/worklist/walk-in",
                             data={**walk_in_form(app_client), "form_id": "x", "csrf_token": csrf})
    assert answer.status_code == 400 and worklist.steps() == []
    no_csrf = app_client.post("/ui/worklist/walk-in", data=walk_in_form(app_client))
    assert no_csrf.status_code == 403 and worklist.steps() == []


def test_the_pages_are_in_vietnamese(app_client: FlaskClient) -> None:
    csrf = log_in(app_client)
    app_client.post("/ui/preferences", data={"language": "vi", "csrf_token": csrf})
    assert "Danh sách chờ chụp" in app_client.get("/ui/worklist").text
    assert "Ca chưa ghép" in app_client.get("/ui/worklist/unmatched").text
    assert "Đăng ký" in app_client.get("/ui/worklist/walk-in").text


def test_orders_of_the_last_week_are_suggested_older_ones_typed(app_client: FlaskClient, archive: Archive,
                                                                 worklist: Worklist) -> None:  # fmt: skip
    study = unmatched_study(archive, patient_id="PID001")
    schedule(worklist, "O1", "RECENT1", "PID001", modality="DX",
             start_date=(datetime.now() - timedelta(days=3)).strftime("%Y%m%d"))  # fmt: skip
    schedule(worklist, "O2", "OLD1", "PID001", modality="DX",
             start_date=(datetime.now() - timedelta(days=10)).strftime("%Y%m%d"))  # fmt: skip
    csrf = log_in(app_client)
    html = app_client.get("/ui/worklist/unmatched").text
    assert 'value="RECENT1"' in html and 'value="OLD1"' not in html
    answer = app_client.post("/ui/worklist/unmatched/match",
                             data={"study_instance_uid": study, "accession_number": "OLD1", "csrf_token": csrf})
    assert answer.status_code == 303 and worklist.unmatched_studies() == []
