"""Reports through a real `minipacs serve`: the radiologist's API, the EMR's outputs, exactly-once ORU.

The server runs with its outbox: signed reports go to an MLLP listener of the
test (the EMR) as ORU^R01 and into the study as DICOM SR and PDF; the EMR
finds everything by accession number.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hl7
import pytest
import requests
from pydicom import dcmread

from archive import Archive, Origin
from reports.identities import SigningIdentities
from reports.signing import verify_pdf
from tests.archive.helpers import table_rows
from tests.conftest import CT_FILES, Server, dcmtk, free_port
from tests.reports import ca
from tests.viewer.helpers import start_web_server
from tests.worklist.helpers import HIS, MllpPeer, order
from worklist.service import Worklist

PASSWORD = "phong doc phim 2026"
ADMIN = Origin("cli:test", "", "CLI")
ACCESSION = "CT2611200001"
STUDY = "2.25.201267940079897072368978825170084415160"
PUBLIC_URL = "https://pacs.cangiuoc.example"
CONCLUSION = "Không thấy máu tụ nội sọ. Không có đường vỡ xương sọ."


@dataclass
class Site:
    data: Path
    server: Server
    url: str
    emr_token: str

    def call(self, method: str, path: str, who: str = "bs.lan", **kwargs: Any) -> requests.Response:
        if who == "emr":
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {self.emr_token}"}
        elif who:
            kwargs["auth"] = (who, PASSWORD)
        return requests.request(method, f"{self.url}{path}", timeout=60, **kwargs)

    def archive(self) -> Archive:
        return self.server.archive()


def prepare(data: Path) -> str:
    """Users, a signing certificate, the HIS order and the sample CT as the CT console sent it."""
    data.mkdir(parents=True)
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        accounts = archive.accounts
        for name, role, display in (("bs.lan", "radiologist", "BS. Trần Thị Lan"), ("ktv.hoa", "technologist", "KTV Hoa"),
                                    ("bs.ngoai", "referrer", "BS. Ngoại"), ("admin", "admin", "Quản trị")):  # fmt: skip
            accounts.add_user(name, role, PASSWORD, ADMIN, display_name=display)
        accounts.set_practising_certificate("bs.lan", "003421/HCM-CCHN", ADMIN)
        accounts.add_user("ktv.hung", "technologist", PASSWORD, ADMIN, display_name="Phạm Văn Hùng")
        accounts.set_practising_certificate("ktv.hung", "000987/HCM-CCHN", ADMIN)
        SigningIdentities(archive.db, archive.audit).install("bs.lan", ca.radiologist().pkcs12, ca.PASSPHRASE, ADMIN)
        token = accounts.create_token("emr-test", ADMIN, role="emr").secret
        Worklist(archive).create(order("HIS-77", ACCESSION, patient_id="BN26001001", procedure_code="CT-SONAO",
                                       study_instance_uid=STUDY), HIS)  # fmt: skip
    finally:
        archive.close()
    return token


def start(data: Path, token: str, emr_port: int, images: bool = False) -> Site:
    """`minipacs serve` with its outbox to the EMR; `images`: the CT console sends three images of the study."""
    env = {"MINIPACS_REPORTS_EMR": f"127.0.0.1:{emr_port}", "MINIPACS_REPORTS_FACILITY_CODE": "79123",
           "MINIPACS_REPORTS_HOSPITAL_NAME": "Bệnh viện Đa khoa huyện Cần Giuộc",
           "MINIPACS_REPORTS_PUBLIC_URL": PUBLIC_URL}  # fmt: skip
    server, url = start_web_server(data, env=env)
    if images:  # as the console sends them: its operator named
        sent = []
        for path in CT_FILES[:3]:
            ds = dcmread(path)
            ds.OperatorsName = "Phạm^Văn Hùng"
            sent.append(data.parent / path.name)
            ds.save_as(sent[-1])
        dcmtk("storescu", "-aet", "CT_ROOM1", "-aec", "MINIPACS", "127.0.0.1", str(server.port), *sent)
    return Site(data, server, url, token)


@pytest.fixture
def emr() -> Iterator[MllpPeer]:
    peer = MllpPeer(["AA"])
    yield peer
    peer.close()


@pytest.fixture
def site(tmp_path: Path, emr: MllpPeer) -> Iterator[Site]:
    token = prepare(tmp_path / "data")
    running = start(tmp_path / "data", token, emr.port, images=True)
    yield running
    assert running.server.stop() == 0
    assert "Traceback" not in running.server.log(), running.server.log()


def draft(site: Site) -> requests.Response:
    created = site.call("POST", "/api/reports", json={"study_instance_uid": STUDY, "template_id": "ct-so-nao-vi"})
    assert created.status_code == 201, created.text
    saved = site.call("PUT", f"/api/reports/{ACCESSION}", json={"sections": {"conclusion": CONCLUSION}},
                      headers={"If-Match": created.headers["ETag"]})  # fmt: skip
    assert saved.status_code == 200, saved.text
    return saved


def wait_for(what: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_write_sign_and_the_emr_gets_everything_by_accession(site: Site, emr: MllpPeer) -> None:
    saved = draft(site)
    body = saved.json()
    assert body["status"] == "draft" and body["version"]["sections"]["conclusion"] == CONCLUSION
    assert body["order"]["placer_order_number"] == "HIS-77" and body["order"]["service_code"] == "18.0001.0001"

    # Nobody else sees the draft outside the department.
    assert site.call("GET", f"/api/reports/{ACCESSION}", who="bs.ngoai").status_code == 404
    assert site.call("GET", f"/api/reports?accession={ACCESSION}", who="emr").json() == []

    wrong = site.call("POST", f"/api/reports/{ACCESSION}/sign", json={"pin": "000000", "revision": body["revision"]})
    assert wrong.status_code == 403 and "PIN" in wrong.json()["message"]
    signed = site.call("POST", f"/api/reports/{ACCESSION}/sign", json={"pin": ca.PASSPHRASE,
                                                                       "revision": body["revision"]})  # fmt: skip
    assert signed.status_code == 200, signed.text
    final = signed.json()
    assert final["status"] == "final" and final["version"]["signature"]["certificate_number"] == "003421/HCM-CCHN"

    # HL7 ORU^R01 to the EMR, acknowledged once.
    [message] = wait_for(lambda: list(emr.received))
    oru = hl7.parse(message.decode())
    assert str(oru.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(oru.segment("OBR")[25]) == "F"
    assert ACCESSION in str(oru.segment("OBR"))
    assert CONCLUSION in message.decode()

    # The DICOM SR and PDF are in the study.
    def report_series() -> list[str]:
        found = site.call("GET", f"/dicomweb/studies/{STUDY}/series", who="emr").json()
        return sorted(s["00080060"]["Value"][0] for s in found if s["00080060"]["Value"][0] in ("SR", "DOC"))

    assert wait_for(lambda: report_series() == ["DOC", "SR"])

    def outputs() -> list[tuple[str, str]]:
        return sorted((o["kind"], o["state"]) for o in site.call("GET", f"/api/reports/{ACCESSION}").json()["outputs"])

    assert wait_for(lambda: outputs() == [("ORU^R01", "sent"), ("REPORT DICOM", "sent")])

    # The EMR by accession number: the study, the report text, the links, the claim values.
    [study] = site.call("GET", f"/api/studies?accession={ACCESSION}", who="emr").json()
    assert study["report"]["conclusion"] == CONCLUSION and study["report"]["status"] == "final"
    assert study["study_instance_uid"] == STUDY and study["patient"]["patient_id"] == "BN26001001"
    claim = study["claim"]
    assert claim["KET_LUAN"] == CONCLUSION and claim["MA_BS_DOC_KQ"] == "003421/HCM-CCHN"
    assert claim["MA_DICH_VU"] == "18.0001.0001" and len(claim["NGAY_KQ"]) == 12
    assert claim["MA_MAY"].startswith("CL.1.79123.")
    assert claim["NGUOI_THUC_HIEN"] == "000987/HCM-CCHN"  # the operator the console named, as a user with a CCHN  # pre-filled from the CT's Device Serial Number
    pdf = requests.get(study["report"]["pdf"], headers={"Authorization": f"Bearer {site.emr_token}"}, timeout=30)
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert verify_pdf(pdf.content, [ca.test_ca().pem]).ok
    [report] = site.call("GET", f"/api/reports?accession={ACCESSION}", who="emr").json()
    assert report["version"]["sections"]["conclusion"] == CONCLUSION and report["links"]["pdf"]
    assert site.call("GET", study["links"]["viewer"].removeprefix(site.url), who="bs.lan",
                     allow_redirects=False).status_code in (302, 303)  # fmt: skip

    # Signing made the patient's link, at the address phones reach (reports.public_url).
    links = site.call("GET", f"/api/share-links?study={STUDY}", who="ktv.hoa").json()["links"]
    assert [link["url"].startswith(PUBLIC_URL + "/s/") for link in links] == [True]

    # Delivery mode, for the HIS's film-free price.
    recorded = site.call("PUT", f"/api/studies/{STUDY}/delivery", who="ktv.hoa", json={"mode": "link"})
    assert recorded.status_code == 200 and recorded.json()["actor"] == "ktv.hoa"
    [study] = site.call("GET", f"/api/studies?accession={ACCESSION}", who="emr").json()
    assert study["delivery"]["mode"] == "link"


def test_amendment_sends_a_correction_and_keeps_version_one(site: Site, emr: MllpPeer) -> None:
    body = draft(site).json()
    final = site.call("POST", f"/api/reports/{ACCESSION}/sign",
                      json={"pin": ca.PASSPHRASE, "revision": body["revision"]}).json()  # fmt: skip
    opened = site.call("POST", f"/api/reports/{ACCESSION}/amend", json={"reason": "Bổ sung", "revision": final["revision"]})
    assert opened.status_code == 200 and opened.json()["version"]["number"] == 2
    # Until the amendment is signed, the referrer reads version 1.
    shown = site.call("GET", f"/api/reports/{ACCESSION}", who="bs.ngoai").json()
    assert shown["version"]["number"] == 1 and [v["number"] for v in shown["versions"]] == [1]
    edited = site.call("PUT", f"/api/reports/{ACCESSION}", headers={"If-Match": opened.headers["ETag"]},
                       json={"sections": {"conclusion": CONCLUSION + " Có nốt vôi hóa đám rối mạch mạc."}})  # fmt: skip
    amended = site.call("POST", f"/api/reports/{ACCESSION}/sign",
                        json={"pin": ca.PASSPHRASE, "revision": edited.json()["revision"]})  # fmt: skip
    assert amended.json()["status"] == "amended"
    messages = wait_for(lambda: emr.received if len(emr.received) == 2 else None)
    assert [str(hl7.parse(m.decode()).segment("OBR")[25]) for m in messages] == ["F", "C"]
    v1 = site.call("GET", f"/api/reports/{ACCESSION}?version=1", who="bs.ngoai").json()
    assert v1["version"]["sections"]["conclusion"] == CONCLUSION and v1["version"]["status"] == "final"
    old_pdf = site.call("GET", f"/api/reports/{ACCESSION}/pdf?version=1", who="bs.ngoai")
    assert old_pdf.status_code == 200 and verify_pdf(old_pdf.content, [ca.test_ca().pem]).ok


def test_roles_locking_and_bad_input(site: Site) -> None:
    assert site.call("POST", "/api/reports", who="ktv.hoa", json={"study_instance_uid": STUDY}).status_code == 403
    assert site.call("POST", "/api/reports", who="emr", json={"study_instance_uid": STUDY}).status_code == 403
    revision_on_create = site.call("POST", "/api/reports", json={"study_instance_uid": STUDY, "revision": 1})
    assert revision_on_create.status_code == 400 and "revision" in revision_on_create.json()["message"]
    saved = draft(site)
    stale = {"If-Match": f'"r{saved.json()["id"]}-1"'}
    conflict = site.call("PUT", f"/api/reports/{ACCESSION}", headers=stale, json={"sections": {"findings": "x"}})
    assert conflict.status_code == 409 and "reload" in conflict.json()["message"]
    for body, status in (({"sections": {"findings": 3}}, 400), ({"sections": {"opinion": "x"}}, 400),
                         ({"colour": "red"}, 400), ([1, 2], 400), ({"sections": {}}, 400)):  # fmt: skip
        answer = site.call("PUT", f"/api/reports/{ACCESSION}", json=body)  # no revision: refused too
        assert answer.status_code == status and answer.json()["message"], (body, answer.text)
    assert site.call("PUT", f"/api/reports/{ACCESSION}", data=b"\xff\xfe", headers={
        "Content-Type": "application/json", "If-Match": saved.headers["ETag"]}).status_code == 400  # fmt: skip
    assert site.call("PUT", f"/api/reports/{ACCESSION}", data="x", headers={
        "Content-Type": "text/plain", "If-Match": saved.headers["ETag"]}).status_code == 415  # fmt: skip
    sign = site.call("POST", f"/api/reports/{ACCESSION}/sign", who="ktv.hoa", json={"pin": ca.PASSPHRASE,
                                                                                    "revision": 2})  # fmt: skip
    assert sign.status_code == 403
    for path in ("/api/reports?status=signed", "/api/reports?date_from=2026-11-20", "/api/reports?limit=0",
                 "/api/reports?colour=red", "/api/studies", "/api/studies?accession=" + "x" * 40,
                 f"/api/reports/{ACCESSION}?version=abc"):  # fmt: skip
        answer = site.call("GET", path, who="ktv.hoa")
        assert answer.status_code == 400 and answer.json()["message"], path
    assert site.call("GET", "/api/reports/NOPE", who="ktv.hoa").status_code == 404
    assert site.call("PUT", f"/api/studies/{STUDY}/delivery", who="ktv.hoa", json={"mode": "fax"}).status_code == 400
    assert site.call("PUT", f"/api/studies/{STUDY}/delivery", who="bs.ngoai", json={"mode": "film"}).status_code == 403
    # Nothing changed by all that, and the server still answers.
    after = site.call("GET", f"/api/reports/{ACCESSION}", who="ktv.hoa").json()
    assert after["revision"] == saved.json()["revision"] and after["status"] == "draft"
    templates = site.call("GET", "/api/report-templates?modality=CT&language=vi").json()
    assert [t["id"] for t in templates] == ["ct-so-nao-vi"]


@pytest.mark.slow
def test_an_emr_that_is_down_gets_the_result_exactly_once_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    token = prepare(tmp_path / "data")
    site = start(tmp_path / "data", token, port, images=True)
    try:
        body = draft(site).json()
        assert site.call("POST", f"/api/reports/{ACCESSION}/sign",
                         json={"pin": ca.PASSPHRASE, "revision": body["revision"]}).status_code == 200  # fmt: skip

        def attempts() -> int:
            arc = site.archive()
            try:
                rows = [r for r in table_rows(arc, "outbox_message") if r["destination"] == "emr"]
            finally:
                arc.close()
            return int(rows[0]["attempts"]) if rows else 0

        wait_for(lambda: attempts() >= 1)  # tried while the EMR was down
        # The radiologist sees that the EMR has not got it yet, and why; so does the administrator.
        [oru] = [o for o in site.call("GET", f"/api/reports/{ACCESSION}").json()["outputs"] if o["kind"] == "ORU^R01"]
        assert oru["state"] == "pending" and oru["destination"] == "emr" and "cannot reach" in oru["last_error"]
        pending = site.call("GET", "/api/outbox?state=pending&subject=" + ACCESSION, who="admin").json()["messages"]
        assert [m["number"] for m in pending if m["destination"] == "emr"] == [oru["number"]]
        assert site.call("GET", "/api/outbox", who="bs.lan").status_code == 403
        assert site.call("GET", "/api/outbox?state=lost", who="admin").status_code == 400
    finally:
        assert site.server.stop() == 0
    emr = MllpPeer(["AA"], port=port)
    try:
        site = start(tmp_path / "data", token, port)
        try:
            wait_for(lambda: emr.received, timeout=60)
            time.sleep(3)  # more polls of the outbox: nothing goes out twice
        finally:
            assert site.server.stop() == 0
        site = start(tmp_path / "data", token, port)
        time.sleep(3)
        assert site.server.stop() == 0
        assert len(emr.received) == 1
        arc = site.archive()
        try:
            [row] = [r for r in table_rows(arc, "outbox_message") if r["destination"] == "emr"]
        finally:
            arc.close()
        assert row["state"] == "sent"
        assert "Traceback" not in site.server.log()
        site = start(tmp_path / "data", token, port)
        try:
            again = site.call("POST", f"/api/outbox/{row['pk']}/retry", who="admin")
            assert again.status_code == 400 and "not sent twice" in again.json()["message"]
        finally:
            assert site.server.stop() == 0
    finally:
        emr.close()
