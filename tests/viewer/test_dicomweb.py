"""QIDO-RS and WADO-RS against a running `minipacs serve`, with the dicomweb-client package
(a client nobody here wrote) and raw HTTP for headers, errors and access control."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from archive import Origin
from tests.archive.helpers import table_rows
from tests.conftest import ALL_SAMPLES, CT_FILES, DX_FILE, US_FILES, Server, site_on
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.dicom_scp.helpers import dataset_bytes, stop_and_check, wait_for
from tests.viewer.helpers import start_web_server

PASSWORD = "reading room 2026"
UTF8_PASSWORD = "đọc phim buổi sáng"


@dataclass
class Web:
    server: Server
    url: str
    token: str

    def client(self, auth: tuple[str, str] | None = ("lan", PASSWORD), token: str | None = None) -> DICOMwebClient:
        session = requests.Session()
        if auth:
            session.auth = auth
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        return DICOMwebClient(url=f"{self.url}/dicomweb", session=session)

    def get(self, path: str, auth: tuple[str, str] | None = ("lan", PASSWORD), **kwargs: object) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=auth, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def web(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        site_backend: str) -> Iterator[Web]:  # fmt: skip
    data = tmp_path_factory.mktemp("qido") / "data"
    with site_on(request, site_backend, data) as site:
        archive = site.open_archive()
        try:
            for path in ALL_SAMPLES:
                with open(path, "rb") as f:
                    archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
            admin = Origin("cli:test", "", "CLI")
            archive.accounts.add_user("lan", "radiologist", PASSWORD, admin)
            archive.accounts.add_user("off", "referrer", "disabled user pw", admin)
            archive.accounts.add_user("hoa", "technologist", UTF8_PASSWORD, admin)
            archive.accounts.set_disabled("off", True, admin)
            token = archive.accounts.create_token("his-emr", admin).secret
            archive.accounts.create_token("old-script", admin)
        finally:
            archive.close()
        server, url = start_web_server(data, site=site)
        yield Web(server, url, token)
        stop_and_check(server)


def uids(results: list[dict[str, object]], tag: str = "0020000D") -> set[str]:
    return {r[tag]["Value"][0] for r in results}  # type: ignore[index]


SAMPLE_STUDIES = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in ALL_SAMPLES}


def test_search_studies_series_and_instances_with_dicomweb_client(web: Web) -> None:
    client = web.client()
    studies = client.search_for_studies()
    assert uids(studies) == SAMPLE_STUDIES
    ct = next(s for s in studies if s["00080061"]["Value"] == ["CT"])
    assert ct["00100010"]["Value"] == [{"Alphabetic": "Nguyễn^Văn An"}]
    assert ct["00201208"]["Value"] == [20] and ct["00080005"]["Value"] == ["ISO_IR 192"]
    study = ct["0020000D"]["Value"][0]
    assert ct["00081190"]["Value"] == [f"{web.url}/dicomweb/studies/{study}"]
    series = client.search_for_series(study_instance_uid=study)
    assert len(series) == 1 and series[0]["00201209"]["Value"] == [20]
    instances = client.search_for_instances(study_instance_uid=study,
                                            series_instance_uid=series[0]["0020000E"]["Value"][0])  # fmt: skip
    assert len(instances) == 20
    assert sorted(i["00200013"]["Value"][0] for i in instances) == list(range(1, 21))
    assert len(client.search_for_series()) == 3  # one series per sample study
    assert len(client.search_for_instances()) == len(ALL_SAMPLES)


@pytest.mark.parametrize("name", ["nguyen*", "NGUYEN^VAN*", "Nguyễn*", "van an nguyen", "Nguyen Van An"])
def test_names_match_as_over_dimse_without_diacritics_or_order(web: Web, name: str) -> None:
    found = web.client().search_for_studies(search_filters={"PatientName": name})
    assert [s["00100020"]["Value"][0] for s in found] == ["BN26001001"]


def test_dd_counts_as_d_and_one_engine_answers_both_edges(web: Web) -> None:
    over_http = uids(web.client().search_for_studies(search_filters={"PatientName": "tran^thi dao"}))
    ae = AE(ae_title="QIDOTEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", web.server.port, ae_title="MINIPACS")
    try:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.PatientName = "tran^thi dao"
        ident.StudyInstanceUID = ""
        over_dimse = {str(ds.StudyInstanceUID) for status, ds in
                      assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind) if ds is not None}  # fmt: skip
    finally:
        assoc.release()
    assert over_http == over_dimse and len(over_http) == 1


def test_filters_includefield_limit_offset_and_the_warning(web: Web) -> None:
    client = web.client()
    dx = client.search_for_studies(search_filters={"ModalitiesInStudy": "DX"}, fields=["StudyDescription"])
    assert [s["00081030"]["Value"][0] for s in dx] == ["X-quang ngực thẳng (PA)"]
    by_date = client.search_for_studies(search_filters={"StudyDate": "20000101-20991231"})
    assert uids(by_date) == SAMPLE_STUDIES
    first = web.get("/dicomweb/studies?limit=2")
    assert first.status_code == 200 and len(first.json()) == 2
    assert first.headers["Warning"].startswith("299 minipacs") and "offset=2" in first.headers["Warning"]
    rest = web.get("/dicomweb/studies?limit=2&offset=2")
    assert len(rest.json()) == 1 and "Warning" not in rest.headers
    assert uids(first.json()) | uids(rest.json()) == SAMPLE_STUDIES
    assert first.headers["Content-Type"] == "application/dicom+json; charset=utf-8"
    assert first.headers["Cache-Control"] == "no-store"


def test_nobody_sees_patient_data_without_credentials(web: Web) -> None:
    anonymous = web.get("/dicomweb/studies", auth=None)
    assert anonymous.status_code == 401
    assert anonymous.json()["message"].startswith("log in")
    assert "Basic" in anonymous.headers["WWW-Authenticate"] and "Bearer" in anonymous.headers["WWW-Authenticate"]
    assert "BN2600" not in anonymous.text
    assert web.get("/healthz", auth=None).status_code == 200
    for auth in (("lan", "wrong password"), ("off", "disabled user pw"), ("ghost", PASSWORD)):
        refused = web.get("/dicomweb/studies", auth=auth)
        assert refused.status_code == 401 and "wrong user name or password" in refused.json()["message"]
    # Browsers send UTF-8 credentials (the challenge says charset="UTF-8").
    utf8 = base64.b64encode(f"hoa:{UTF8_PASSWORD}".encode()).decode()
    assert web.get("/dicomweb/studies", auth=None, headers={"Authorization": f"Basic {utf8}"}).status_code == 200
    assert web.get("/dicomweb/studies", auth=None, headers={"Authorization": "Digest abc"}).status_code == 401
    assert web.get("/dicomweb/studies", auth=None, headers={"Authorization": "Basic !!!"}).status_code == 401


def test_tokens_work_until_revoked(web: Web) -> None:
    assert uids(web.client(auth=None, token=web.token).search_for_studies()) == SAMPLE_STUDIES
    archive = web.server.archive()
    try:
        new = archive.accounts.create_token("short-lived", Origin("cli:test", "", "CLI"))
        assert web.get("/dicomweb/studies", auth=None,
                       headers={"Authorization": f"Bearer {new.secret}"}).status_code == 200  # fmt: skip
        archive.accounts.revoke_token("short-lived", Origin("cli:test", "", "CLI"))
    finally:
        archive.close()
    revoked = web.get("/dicomweb/studies", auth=None, headers={"Authorization": f"Bearer {new.secret}"})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/dicomweb/studies?Foo=1", "'Foo' is not a DICOM attribute keyword or tag"),
        ("/dicomweb/studies?limit=100000", "limit='100000': give a whole number from 1 to 1000"),
        ("/dicomweb/studies?limit=-1", "give a whole number"),
        ("/dicomweb/studies?offset=abc", "offset='abc'"),
        ("/dicomweb/studies?fuzzymatching=maybe", "fuzzymatching='maybe': use true or false"),
        ("/dicomweb/studies?StudyInstanceUID=1.2.3,../../etc", "is not a UID"),
        ("/dicomweb/studies/1.2.3..4/series", "the study UID in the URL '1.2.3..4' is not a valid UID"),
        ("/dicomweb/studies/1.2.3/series/<script>/instances", "the series UID in the URL"),
        ("/dicomweb/studies?StudyDate=2024-01-01", "StudyDate"),
        ("/dicomweb/studies?OtherPatientIDsSequence=1", "sequences is not supported"),
    ],
)
def test_bad_parameters_get_400_with_a_json_message(web: Web, path: str, message: str) -> None:
    response = web.get(path)
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert message in response.json()["message"]
    assert "Traceback" not in response.text


def test_hostile_values_match_nothing_and_change_nothing(web: Web) -> None:
    before = web.server.archive()
    try:
        counts = before.statistics()
    finally:
        before.close()
    for value in ("' OR 1=1 --", "x\"; DROP TABLE patient; --", "<script>alert(1)</script>", "%", "_"):
        response = web.get("/dicomweb/studies", params={"PatientID": value})
        assert response.status_code == 200 and response.json() == [], value
    assert web.get("/nowhere").status_code == 404 and web.get("/nowhere").json()["status"] == 404
    traversal = web.get("/dicomweb/studies/..%2F..%2Fetc%2Fpasswd/series")  # decoded before routing
    assert traversal.status_code == 404 and traversal.json()["status"] == 404
    assert requests.post(f"{web.url}/dicomweb/studies/1.2.3/series", auth=("lan", PASSWORD),
                         timeout=10).status_code == 405  # fmt: skip
    after = web.server.archive()
    try:
        assert after.statistics() == counts
    finally:
        after.close()


def test_every_search_is_audited_with_who_asked(web: Web) -> None:
    web.get("/dicomweb/studies", params={"PatientID": "BN26001002"})
    web.get("/dicomweb/studies", auth=None, headers={"Authorization": f"Bearer {web.token}"})
    wanted = {("lan", "PatientID=BN26001002"), ("his-emr", "everything")}

    def queries() -> set[tuple[str, str]] | None:
        archive = web.server.archive()  # the HTTP workers write audit rows in the background
        try:
            asked = {(r["actor"], r["detail"]) for r in table_rows(archive, "audit_event") if r["action"] == "QUERY"}
        finally:
            archive.close()
        return asked if wanted <= asked else None

    wait_for(queries, timeout=20, what="the searches' audit rows")


def test_wado_rs_sends_each_object_byte_for_byte_as_stored(web: Web) -> None:
    """transfer-syntax=* (dicomweb-client's default): the stored files, unchanged."""
    client = web.client()
    stored = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in ALL_SAMPLES}
    for study_uid in SAMPLE_STUDIES:
        for ds in client.retrieve_study(study_uid, media_types=(("application/dicom", "*"),)):
            path = stored[str(ds.SOPInstanceUID)]
            original = dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            assert ds.PixelData == original.PixelData and ds.PatientName == original.PatientName
    dx = dcmread(DX_FILE, stop_before_pixels=True)
    one = client.retrieve_instance(str(dx.StudyInstanceUID), str(dx.SeriesInstanceUID), str(dx.SOPInstanceUID))
    assert one.SOPInstanceUID == dx.SOPInstanceUID
    series = client.retrieve_series(str(dx.StudyInstanceUID), str(dx.SeriesInstanceUID),
                                    media_types=(("application/dicom", "*"),))  # fmt: skip
    assert [str(d.SOPInstanceUID) for d in series] == [str(dx.SOPInstanceUID)]
    raw = web.get(f"/dicomweb/studies/{dx.StudyInstanceUID}/series/{dx.SeriesInstanceUID}",
                  headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})  # fmt: skip
    [part] = DICOMwebClient._decode_multipart_message(client, raw, stream=False)  # type: ignore[arg-type]
    assert dataset_bytes(bytes(part)) == dataset_bytes(DX_FILE)  # the dataset exactly as received


def test_wado_rs_default_transfer_syntax_is_explicit_little_endian(web: Web) -> None:
    """No transfer-syntax: JPEG 2000 DX comes decompressed, same UID, same pixels."""
    dx = dcmread(DX_FILE)
    url = f"/dicomweb/studies/{dx.StudyInstanceUID}/series/{dx.SeriesInstanceUID}/instances/{dx.SOPInstanceUID}"
    response = web.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200, response.text
    [part] = DICOMwebClient._decode_multipart_message(web.client(), response, stream=False)  # type: ignore[arg-type]
    received = dcmread(BytesIO(part))
    assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert received.SOPInstanceUID == dx.SOPInstanceUID
    assert (received.pixel_array == dx.pixel_array).all()


@pytest.mark.parametrize(
    ("path", "accept", "status", "message"),
    [
        ("/dicomweb/studies/1.2.3.4", "", 404, "no study 1.2.3.4"),
        ("/dicomweb/studies/1.2..3", "", 400, "the study UID in the URL"),
        ("/dicomweb/studies/{study}", "application/json", 406, 'multipart/related; type="application/dicom"'),
        ("/dicomweb/studies/{study}", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
         406, "ask with transfer-syntax=*"),
        ("/dicomweb/studies/{study}", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3',
         406, "is not a transfer syntax UID"),
    ],
)  # fmt: skip
def test_wado_rs_refusals_are_json(web: Web, path: str, accept: str, status: int, message: str) -> None:
    study = dcmread(DX_FILE, stop_before_pixels=True).StudyInstanceUID
    response = web.get(path.format(study=study), headers={"Accept": accept} if accept else {})
    assert response.status_code == status, response.text
    assert message in response.json()["message"]
    assert web.get(path.format(study=study), auth=None).status_code in (401, 400)


def test_metadata_has_every_attribute_and_pixel_data_as_bulk_data(web: Web) -> None:
    client = web.client()
    ct_files = [p for p in ALL_SAMPLES if "/ct/" in str(p)]
    ct = dcmread(ct_files[0])
    metadata = client.retrieve_study_metadata(str(ct.StudyInstanceUID))
    assert len(metadata) == len(ct_files)
    mine = next(m for m in metadata if m["00080018"]["Value"] == [str(ct.SOPInstanceUID)])
    as_dataset = Dataset.from_json(mine, bulk_data_uri_handler=lambda tag, vr, uri: None)
    for keyword in ("PatientName", "PatientID", "Rows", "Columns", "RescaleSlope", "RescaleIntercept",
                    "WindowCenter", "PixelSpacing", "ImagePositionPatient", "BitsStored"):  # fmt: skip
        assert as_dataset[keyword].value == ct[keyword].value, keyword
    uri = mine["7FE00010"]["BulkDataURI"]
    assert mine["7FE00010"]["vr"] == "OW" and uri.endswith(f"/instances/{ct.SOPInstanceUID}/bulkdata/7FE00010")
    assert client.retrieve_bulkdata(uri) == [ct.PixelData]
    series = client.retrieve_series_metadata(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID))
    assert len(series) == len(ct_files)
    dx = dcmread(DX_FILE, stop_before_pixels=True)
    dx_meta = client.retrieve_instance_metadata(str(dx.StudyInstanceUID), str(dx.SeriesInstanceUID),
                                                str(dx.SOPInstanceUID))  # fmt: skip
    assert dx_meta["00100010"]["Value"] == [{"Alphabetic": "Trần^Thị Đào"}]
    compressed = web.get(dx_meta["7FE00010"]["BulkDataURI"].replace(web.url, ""))
    assert compressed.status_code == 406 and "/frames" in compressed.json()["message"]
    missing = web.get(dx_meta["7FE00010"]["BulkDataURI"].replace(web.url, "").replace("7FE00010", "00100010"))
    assert missing.status_code == 404
    bad = web.get(dx_meta["7FE00010"]["BulkDataURI"].replace(web.url, "").replace("7FE00010", "../../x"))
    assert bad.status_code in (400, 404) and bad.headers["Content-Type"].startswith("application/json")


def test_frames_decoded_or_as_stored(web: Web) -> None:
    from pydicom.encaps import get_frame
    from pydicom.pixels.utils import pixel_array

    client = web.client()
    ct = dcmread(CT_FILES[0])
    [native] = client.retrieve_instance_frames(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID),
                                               str(ct.SOPInstanceUID), frame_numbers=[1],
                                               media_types=("application/octet-stream",))  # fmt: skip
    assert native == ct.PixelData
    cine_path = next(p for p in US_FILES if "cine" in p.name)
    cine = dcmread(cine_path)
    ids = (str(cine.StudyInstanceUID), str(cine.SeriesInstanceUID), str(cine.SOPInstanceUID))
    jpeg = client.retrieve_instance_frames(*ids, frame_numbers=[1, 30], media_types=("image/jpeg",))
    assert jpeg == [get_frame(cine.PixelData, 0, number_of_frames=30), get_frame(cine.PixelData, 29, number_of_frames=30)]
    assert jpeg[0][:2] == b"\xff\xd8"  # a JPEG stream, as received
    decoded = client.retrieve_instance_frames(*ids, frame_numbers=[2], media_types=("application/octet-stream",))
    assert decoded == [pixel_array(str(cine_path), index=1, raw=True).tobytes()]
    base = f"/dicomweb/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}/frames"
    for frame_list, status, message in (("0", 404, "there is no frame 0: this instance has 30"),
                                        ("31", 404, "there is no frame 31"), ("1,x", 400, "give frame numbers"),
                                        ("1;2", 400, "give frame numbers")):  # fmt: skip
        response = web.get(f"{base}/{frame_list}")
        assert response.status_code == status and message in response.json()["message"], response.text


def test_repeated_failed_logins_are_slowed_down(web: Web) -> None:
    """Each HTTP worker process (2) answers 429 to an address after 10 failures
    in 5 minutes; this test runs last, as 127.0.0.1 stays slowed down."""
    codes = []
    for i in range(40):
        response = web.get("/dicomweb/studies", auth=("lan", f"guess {i}"))
        codes.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) > 0
            assert "too many failed logins" in response.json()["message"]
            break
    assert codes[-1] == 429 and set(codes[:-1]) <= {401, 429}
    assert len(codes) <= 2 * 10 + 1, codes  # at most 10 tries per worker process
