"""The plain JSON order API (/api/orders) against a running `minipacs serve`, configured with the
sample Vietnamese HIS mapping (worklist/order_mapping_vn.toml): create, idempotent resend, change,
cancel, read, list, roles, hostile bodies, and the mapping file's own checks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from archive.audit import search
from archive.errors import InvalidArgument
from tests.dicom_scp.helpers import stop_and_check
from tests.worklist.web_helpers import Site, assert_json_error, start_site
from worklist.order_mapping import BUNDLED, OrderMapping

VN_MAPPING = Path(__file__).parents[2] / "worklist" / "order_mapping_vn.toml"
TODAY = datetime.now().astimezone()


def his_order(number: str = "PH2026-000123", **changes: Any) -> dict[str, Any]:
    """What a typical Vietnamese HIS posts (its own field names, dd/MM/yyyy dates, coded sex and priority)."""
    order: dict[str, Any] = {
        "so_phieu": number,
        "benh_nhan": {"ma_bn": "BN24001", "ho_ten": "Nguyễn Văn An", "ngay_sinh": "03/02/1980", "gioi_tinh": 1,
                      "ma_cccd": "001080012345", "so_the_bhyt": "DN4010123456789"},
        "ma_dich_vu": "CT-SONAO",
        "ngay_chi_dinh": TODAY.strftime("%d/%m/%Y") + " 08:30",
        "muc_do": "cap_cuu",
        "bac_si_chi_dinh": "Trần Thị Bình",
        "chan_doan": "Đau đầu kéo dài",
    }  # fmt: skip
    order.update(changes)
    return order


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("orders") / "data"
    site = start_site(data, env={"MINIPACS_WORKLIST_ORDER_MAPPING": str(VN_MAPPING)})
    yield site
    stop_and_check(site.server)


def post(site: Site, body: Any, as_: str | None = "his-vn", **kwargs: Any) -> requests.Response:
    return site.call("POST", "/api/orders", as_=as_, json=body, **kwargs)


def test_create_maps_the_his_fields(site: Site) -> None:
    answer = post(site, his_order("PH-CREATE-1"))
    assert answer.status_code == 201, answer.text
    assert answer.headers["Location"] == "/api/orders/PH-CREATE-1"
    body = answer.json()
    assert body["outcome"] == "created"
    order = body["order"]
    assert order["placer_issuer"] == "HIS" and order["placer_order_number"] == "PH-CREATE-1"
    assert order["patient"]["patient_id"] == "BN24001"
    assert order["patient"]["name"] == "Nguyễn^Văn An"
    assert order["patient"]["birth_date"] == "19800203" and order["patient"]["sex"] == "M"
    assert {(o["issuer"], o["value"]) for o in order["patient"]["other_ids"]} == {
        ("CCCD", "001080012345"), ("BHYT", "DN4010123456789")}
    assert order["procedure_code"] == "CT-SONAO" and order["modality"] == "CT"  # from the catalogue
    assert order["start_date"] == TODAY.strftime("%Y%m%d") and order["start_time"].startswith("0830")
    assert order["priority"] == "STAT"
    assert order["referring_physician"] == "Trần^Thị Bình" and order["reason"] == "Đau đầu kéo dài"
    assert order["status"] == "SCHEDULED" and len(order["accession_number"]) == 10  # generated: YYMMDD + 4


def test_the_same_order_again_is_a_resend(site: Site) -> None:
    first = post(site, his_order("PH-RESEND"))
    assert first.status_code == 201
    again = post(site, his_order("PH-RESEND"))
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    assert again.json()["order"]["accession_number"] == first.json()["order"]["accession_number"]
    listed = site.call("GET", "/api/orders?limit=1000").json()["orders"]
    assert [o["placer_order_number"] for o in listed].count("PH-RESEND") == 1


def test_the_same_number_with_other_values_is_a_conflict(site: Site) -> None:
    assert post(site, his_order("PH-CONFLICT")).status_code == 201
    answer = post(site, his_order("PH-CONFLICT", ma_dich_vu="CT-NGUC"))
    assert_json_error(answer, 409, "PH-CONFLICT", "already exists")
    assert site.call("GET", "/api/orders/PH-CONFLICT").json()["order"]["procedure_code"] == "CT-SONAO"


def test_change_then_cancel(site: Site) -> None:
    created = post(site, his_order("PH/2026/77")).json()["order"]  # slashes are common in HIS order numbers
    later = his_order("PH/2026/77", ngay_chi_dinh=TODAY.strftime("%d/%m/%Y") + " 14:15", muc_do="thuong")
    answer = site.call("PUT", "/api/orders/PH/2026/77", json=later)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["outcome"] == "changed" and any("start_time" in c for c in body["changes"])
    assert body["order"]["start_time"].startswith("1415") and body["order"]["priority"] == "ROUTINE"
    assert body["order"]["accession_number"] == created["accession_number"]
    # The URL names the order: a body without the number is fine, one with another number is not.
    without = {k: v for k, v in later.items() if k != "so_phieu"}
    assert site.call("PUT", "/api/orders/PH/2026/77", json=without).json()["outcome"] == "unchanged"
    assert_json_error(site.call("PUT", "/api/orders/PH/2026/77", json=his_order("PH-OTHER")), 400, "PH-OTHER")

    cancelled = site.call("POST", "/api/orders/PH/2026/77/cancel", json={"reason": "bệnh nhân về"})
    assert cancelled.status_code == 200 and cancelled.json()["order"]["status"] == "CANCELLED"
    assert site.call("POST", "/api/orders/PH/2026/77/cancel").status_code == 200  # a resend: still cancelled
    assert_json_error(site.call("PUT", "/api/orders/PH/2026/77", json=his_order("PH/2026/77", muc_do="khan")),
                      409, "CANCELLED")  # fmt: skip
    assert site.call("GET", "/api/orders/PH/2026/77").json()["order"]["status"] == "CANCELLED"


def test_unknown_orders_are_404(site: Site) -> None:
    assert_json_error(site.call("GET", "/api/orders/NO-SUCH"), 404, "NO-SUCH")
    assert_json_error(site.call("PUT", "/api/orders/NO-SUCH", json=his_order("NO-SUCH")), 404, "NO-SUCH")
    assert_json_error(site.call("POST", "/api/orders/NO-SUCH/cancel"), 404, "NO-SUCH")


def test_list_filters(site: Site) -> None:
    for number, service in (("PH-LIST-1", "CT-SONAO"), ("PH-LIST-2", "XQ-NGUC-THANG"), ("PH-LIST-3", "CT-NGUC")):
        assert post(site, his_order(number, ma_dich_vu=service, muc_do="thuong")).status_code == 201
    site.call("POST", "/api/orders/PH-LIST-3/cancel")
    day = TODAY.strftime("%Y%m%d")
    cts = site.call("GET", f"/api/orders?date={day}&modality=CT&status=SCHEDULED&limit=1000").json()["orders"]
    numbers = {o["placer_order_number"] for o in cts}
    assert "PH-LIST-1" in numbers and "PH-LIST-2" not in numbers and "PH-LIST-3" not in numbers
    assert all(o["modality"] == "CT" and o["status"] == "SCHEDULED" for o in cts)
    mine = site.call("GET", "/api/orders?patient_id=BN24001&limit=1000").json()["orders"]
    assert {"PH-LIST-1", "PH-LIST-2", "PH-LIST-3"} <= {o["placer_order_number"] for o in mine}
    page = site.call("GET", "/api/orders?limit=2&offset=1").json()
    assert len(page["orders"]) == 2 and page["offset"] == 1
    assert site.call("GET", "/api/orders?date=20991231").json()["orders"] == []
    for query, word in (("date=05-12-2026", "date"), ("status=DONE", "status"), ("limit=0", "limit"),
                        ("offset=-1", "offset"), ("colour=red", "colour")):  # fmt: skip
        assert_json_error(site.call("GET", f"/api/orders?{query}"), 400, word)


@pytest.mark.parametrize(("change", "words"), [
    ({"so_phieu": None}, ("so_phieu", "missing")),
    ({"benh_nhan": {"ho_ten": "Lê Thị Hoa"}}, ("benh_nhan.ma_bn", "missing")),
    ({"benh_nhan": {"ma_bn": "BN9", "ngay_sinh": "1980-02-03"}}, ("benh_nhan.ngay_sinh", "dd/MM/yyyy")),
    ({"benh_nhan": {"ma_bn": "BN9", "ngay_sinh": "31/02/1980"}}, ("benh_nhan.ngay_sinh",)),
    ({"benh_nhan": {"ma_bn": "BN9", "gioi_tinh": 7}}, ("benh_nhan.gioi_tinh", "'7'")),
    ({"muc_do": "gấp lắm"}, ("muc_do",)),
    ({"ngay_chi_dinh": "hôm nay"}, ("ngay_chi_dinh",)),
    ({"so_phieu": {"so": 1}}, ("so_phieu", "text or a number")),
    ({"ma_dich_vu": "KHONG-CO", "ma_may": None}, ("modality",)),
    ({"ma_may": "C T"}, ("modality",)),
    ({"ma_chi_dinh": "X" * 17}, ("accession number", "16")),
], ids=lambda v: str(v)[:30])  # fmt: skip
def test_bad_fields_are_named(site: Site, change: dict[str, Any], words: tuple[str, ...]) -> None:
    body = copy.deepcopy(his_order("PH-BAD"))
    body.update(change)
    assert_json_error(post(site, body), 400, *words)
    assert_json_error(site.call("GET", "/api/orders/PH-BAD"), 404)  # nothing was stored


def test_hostile_bodies(site: Site) -> None:
    assert_json_error(post(site, None, data=b"{not json", headers={"Content-Type": "application/json"}), 400, "JSON")
    assert_json_error(post(site, None, data=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400)
    assert_json_error(post(site, [his_order()]), 400, "object")
    assert_json_error(post(site, None, data=b"so_phieu=1", headers={"Content-Type": "text/plain"}), 415)
    huge = his_order("PH-HUGE", chan_doan="x" * (300 << 10))
    assert_json_error(post(site, huge), 413)
    deep = b"[" * 100_000 + b"]" * 100_000  # under the size limit, too deep for the decoder
    assert_json_error(post(site, None, data=deep, headers={"Content-Type": "application/json"}), 400, "JSON")
    nested = b'{"so_phieu":' * 5000 + b"1" + b"}" * 5000
    assert_json_error(post(site, None, data=nested, headers={"Content-Type": "application/json"}), 400)
    assert site.call("GET", "/healthz", as_=None).status_code == 200


def test_who_may_place_orders(site: Site) -> None:
    for who in ("referrer", "emr", "technologist", "radiologist"):
        assert_json_error(post(site, his_order("PH-ROLE"), as_=who), 403, "orders")
    assert_json_error(post(site, his_order("PH-ROLE"), as_=None), 401)
    assert_json_error(site.call("GET", "/api/orders", as_=None), 401)
    assert post(site, his_order("PH-ROLE"), as_="admin").status_code == 201
    # The mapping names the issuer ("HIS"), so a second HIS token sees the same orders.
    assert site.call("GET", "/api/orders/PH-ROLE", as_="his-2").json()["order"]["placer_issuer"] == "HIS"


def test_changes_and_reads_are_audited(site: Site) -> None:
    accession = post(site, his_order("PH-AUDIT")).json()["order"]["accession_number"]
    site.call("GET", "/api/orders/PH-AUDIT")
    post(site, his_order("PH-AUDIT", ma_dich_vu="CT-NGUC"))  # refused: 409
    archive = site.archive()
    try:
        archive.audit.flush()

        def events() -> list[tuple[str, str, str]]:
            return [(r.actor, r.action, r.outcome) for r in search(archive.db, contains="", limit=500)
                    if r.uid in (accession, "PH-AUDIT")]  # fmt: skip

        from tests.dicom_scp.helpers import wait_for

        wait_for(lambda: ("his-vn", "ORDER_CREATE", "refused 409") in events(), what="the refused change audited")
        seen = events()
        assert ("his-vn", "ORDER", "created") in seen
        assert ("his-vn", "ORDER_READ", "ok") in seen
    finally:
        archive.close()


# --- the mapping file ----------------------------------------------------------------


def test_the_bundled_mappings_load() -> None:
    default = OrderMapping.load()
    assert default.issuer == "" and default.fields["order_number"] == "order_number"
    order = default.order({"order_number": "1", "patient": {"id": "P1", "name": "Phạm^Thị Lan", "sex": "female",
                                                             "birth_date": "19910704"},
                           "procedure": {"code": "CT-SONAO"}, "scheduled": "2026-12-05T08:30:00+07:00"},
                          "his-token")  # fmt: skip
    assert order.placer_issuer == "his-token" and order.patient.sex == "F" and order.patient.name == "Phạm^Thị Lan"
    vn = OrderMapping.load(VN_MAPPING)
    assert vn.order(his_order(), "x").patient.name == "Nguyễn^Văn An"
    assert vn.order(his_order(benh_nhan={"ma_bn": "1", "gioi_tinh": "Nữ"}), "x").patient.sex == "F"
    assert vn.order(his_order(benh_nhan={"ma_bn": "1", "gioi_tinh": "NU"}), "x").patient.sex == "F"


@pytest.mark.parametrize(("text", "words"), [
    ('[fields]\npatient_id = "a"\n', ("fields.order_number", "required")),
    ('[fields]\norder_number = "a"\npatient_id = "b"\ncolour = "c"\n', ("fields.colour", "unknown")),
    ('[fields]\norder_number = "a b"\npatient_id = "b"\n', ("fields.order_number", "dotted path")),
    ('[fields]\norder_number = "a"\npatient_id = "b"\n[formats]\nname = "reverse"\n', ("formats.name",)),
    ('[fields]\norder_number = "a"\npatient_id = "b"\n[formats]\nbirth_date = "dd/mm"\n', ("formats.birth_date",)),
    ('[fields]\norder_number = "a"\npatient_id = "b"\n[values.sex]\n1 = "X"\n', ("values.sex.1",)),
    ('[fields]\norder_number = "a"\npatient_id = "b"\n[values.colour]\n1 = "X"\n', ("values.colour",)),
    ('issuer = 5\n[fields]\norder_number = "a"\npatient_id = "b"\n', ("issuer",)),
    ('surprise = 1\n', ("surprise",)),
    ('[fields\n', ("order_mapping",)),
], ids=lambda v: str(v)[:20])  # fmt: skip
def test_a_broken_mapping_names_the_key(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    path = tmp_path / "order_mapping.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        OrderMapping.load(path)
    assert str(path) in caught.value.message
    for word in words:
        assert word in caught.value.message


def test_a_server_with_a_broken_mapping_still_serves_images(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[fields]\norder_number = "so_phieu"\n', encoding="utf-8")
    site = start_site(tmp_path / "data", env={"MINIPACS_WORKLIST_ORDER_MAPPING": str(broken)})
    try:
        assert_json_error(post(site, his_order()), 503, "order mapping", "fields.patient_id")
        assert site.call("GET", "/dicomweb/studies", as_="radiologist").status_code in (200, 204)
    finally:
        code = site.server.stop()
    assert code == 0
    assert "fields.patient_id" in site.server.log() and "Traceback" not in site.server.log()


def test_bundled_default_is_documented() -> None:
    text = BUNDLED.read_text(encoding="utf-8")
    assert "order_mapping_vn.toml" in text and "worklist.order_mapping" in text
