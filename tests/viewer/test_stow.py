"""STOW-RS against a running `minipacs serve`: dicomweb-client (a client nobody here wrote)
for the happy paths, DIMSE C-FIND / C-STORE to check both edges see the same archive, and raw
HTTP (requests, and plain sockets for lying or endless bodies) for errors, limits and headers.

The server takes uploads of at most 3 MiB (MINIPACS_HTTP_MAX_UPLOAD_MB=3): every sample file
fits in one request, and the limit tests need only a few MiB.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from archive import Origin
from tests.archive.helpers import table_rows
from tests.conftest import ALL_SAMPLES, CT_FILES, DX_FILE, US_FILES, Server, site_on
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.dicom_scp.helpers import (
    assert_index_matches_objects,
    assert_stored_as_received,
    dataset_bytes,
    index_counts,
    make_instances,
    object_keys,
    stop_and_check,
    stored_objects,
    wait_for,
)
from tests.viewer.helpers import start_web_server

PASSWORD = "may chup X-quang 2026"
LIMIT = 3 << 20
STUDIES = "/dicomweb/studies"
DICOM_JSON = "application/dicom+json"
RELATED = 'multipart/related; type="application/dicom"; boundary={}'
ADMIN = Origin("cli:test", "", "CLI")

# FailureReason / WarningReason values (PS3.18 table 10.5.3-3).
CANNOT_UNDERSTAND, DOES_NOT_MATCH, COERCION = 0xC000, 0xA900, 0xB000
FAILED, REFERENCED, RETRIEVE_URL = "00081198", "00081199", "00081190"
CLASS_UID, INSTANCE_UID, WARNING_REASON, FAILURE_REASON = "00081150", "00081155", "00081196", "00081197"


@dataclass
class Web:
    server: Server
    url: str
    token: str
    revoked_token: str
    files: Path

    def client(self) -> DICOMwebClient:
        session = requests.Session()
        session.auth = ("ky", PASSWORD)
        return DICOMwebClient(url=f"{self.url}/dicomweb", session=session)

    def post(self, body: bytes, path: str = STUDIES, content_type: str | None = RELATED.format("b0undary"),
             auth: tuple[str, str] | None = ("ky", PASSWORD), **headers: str) -> requests.Response:  # fmt: skip
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(f"{self.url}{path}", data=body, auth=auth, headers=headers, timeout=60)

    def fresh(self, count: int = 1, **kwargs: object) -> list[Path]:
        """New small CT instances (a new study unless study_uid= says which) never sent before."""
        directory = self.files / generate_uid()
        return make_instances(directory, count, seed=int.from_bytes(os.urandom(2), "big"), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def web(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        site_backend: str) -> Iterator[Web]:  # fmt: skip
    base = tmp_path_factory.mktemp("stow")
    data = base / "data"
    with site_on(request, site_backend, data) as site:
        archive = site.open_archive()
        try:
            archive.accounts.add_user("ky", "technologist", PASSWORD, ADMIN)
            archive.accounts.add_user("bs.minh", "referrer", PASSWORD, ADMIN)
            token = archive.accounts.create_token("modality-gw", ADMIN, role="technologist").secret
            revoked = archive.accounts.create_token("old-gw", ADMIN, role="technologist").secret
            archive.accounts.revoke_token("old-gw", ADMIN)
        finally:
            archive.close()
        server, url = start_web_server(data, site=site, env={"MINIPACS_HTTP_MAX_UPLOAD_MB": str(LIMIT >> 20)})
        yield Web(server, url, token, revoked, base / "files")
        stop_and_check(server)


def multipart(*parts: bytes | tuple[bytes, str], boundary: str = "b0undary") -> bytes:
    """A multipart/related body: each part bytes (application/dicom) or (bytes, Content-Type)."""
    body = b""
    for part in parts:
        data, media_type = part if isinstance(part, tuple) else (part, "application/dicom")
        body += f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def instance_count(web: Web) -> int:
    return index_counts(web.server)[3]


def values(item: dict[str, dict[str, list[object]]], tag: str) -> list[object]:
    return item[tag].get("Value", [])


def retrieve_as_stored(web: Web, path: Path) -> bytes:
    """The instance of `path` fetched with WADO-RS as stored (transfer-syntax=*)."""
    ds = dcmread(path, stop_before_pixels=True)
    response = requests.get(
        f"{web.url}{STUDIES}/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
        auth=("ky", PASSWORD), timeout=30,
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    [part] = DICOMwebClient._decode_multipart_message(web.client(), response, stream=False)  # type: ignore[arg-type]
    return bytes(part)


def assert_nothing_stray(web: Web) -> None:
    """Every object file is an indexed instance or a conflicting copy kept aside; no temporaries."""
    assert_index_matches_objects(web.server)
    archive = web.server.archive()
    try:
        keys = {r["storage_key"] for r in table_rows(archive, "instance")}
        keys |= {r["storage_key"] for r in table_rows(archive, "duplicate_conflict")}
    finally:
        archive.close()
    assert set(object_keys(web.server)) == keys
    assert not [p for p in web.server.data.iterdir() if p.name.startswith("tmp")], "a spool file was left behind"


def audit_rows(web: Web, uid: str, wanted: set[str]) -> list[dict[str, object]]:
    """The STORE audit rows of `uid`, once their outcomes include `wanted` (written in the background)."""

    def rows() -> list[dict[str, object]] | None:
        archive = web.server.archive()
        try:
            found = [r for r in table_rows(archive, "audit_event") if r["action"] == "STORE" and r["uid"] == uid]
        finally:
            archive.close()
        return found if wanted <= {str(r["outcome"]) for r in found} else None

    result: list[dict[str, object]] = wait_for(rows, timeout=20, what=f"audit rows {wanted} of {uid}")
    return result


# --- raw sockets: bodies that lie about their length or never end --------------------------


def connect(web: Web) -> socket.socket:
    host, port = web.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def request_head(path: str, headers: dict[str, str]) -> bytes:
    auth = base64.b64encode(f"ky:{PASSWORD}".encode()).decode()
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Basic {auth}",
             *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP response (Content-Length framed, as Flask sends them)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


# --- the happy paths, with dicomweb-client --------------------------------------------------


def test_samples_stored_with_dicomweb_client_are_found_over_dimse_and_retrieved_byte_for_byte(web: Web) -> None:
    client = web.client()
    ct = dcmread(CT_FILES[0], stop_before_pixels=True)
    # Several requests, each under the 3 MiB limit; the CT ones into the study's own URL.
    groups = [CT_FILES[i:i + 5] for i in range(0, len(CT_FILES), 5)] + [[DX_FILE]] + [[p] for p in US_FILES]
    for group in groups:
        datasets = [dcmread(p) for p in group]
        study = str(ct.StudyInstanceUID) if group[0] in CT_FILES else None
        answer = client.store_instances(datasets, study_instance_uid=study)
        assert "FailedSOPSequence" not in answer
        assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == \
               [str(d.SOPInstanceUID) for d in datasets]  # fmt: skip
        first = datasets[0]
        assert answer.RetrieveURL == f"{web.url}{STUDIES}/{first.StudyInstanceUID}"
        item = answer.ReferencedSOPSequence[0]
        assert item.ReferencedSOPClassUID == first.SOPClassUID and "WarningReason" not in item
        assert item.RetrieveURL == (f"{web.url}{STUDIES}/{first.StudyInstanceUID}/series/"
                                    f"{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}")  # fmt: skip

    # Stored as received (same transfer syntax, same dataset bytes) and indexed ...
    stored = stored_objects(web.server)
    for path in ALL_SAMPLES:
        assert_stored_as_received(web.server, path, stored[sop_uid(path)])

    # ... found by a DICOM workstation over DIMSE C-FIND ...
    ae = AE(ae_title="STOWTEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", web.server.port, ae_title="MINIPACS")
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientID = ""
        identifier.StudyInstanceUID = ""
        identifier.NumberOfStudyRelatedInstances = None
        found = {str(ds.StudyInstanceUID): int(ds.NumberOfStudyRelatedInstances)
                 for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
                 if ds is not None and status.Status == 0xFF00}  # fmt: skip
    finally:
        assoc.release()
    expected: dict[str, int] = {}
    for path in ALL_SAMPLES:
        study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        expected[study] = expected.get(study, 0) + 1
    assert {k: found[k] for k in expected} == expected

    # ... and retrieved over WADO-RS with the very dataset bytes that were sent.
    for path in [CT_FILES[0], CT_FILES[-1], DX_FILE, *US_FILES]:
        assert dataset_bytes(retrieve_as_stored(web, path)) == dataset_bytes(path), path.name
    assert_nothing_stray(web)


def test_stored_instances_are_audited_as_the_user_who_sent_them(web: Web) -> None:
    [path] = web.fresh()
    assert web.post(multipart(path.read_bytes())).status_code == 200
    [row] = audit_rows(web, sop_uid(path), {"stored"})
    assert row["actor"] == "ky" and row["address"] == "127.0.0.1"
    # The samples the previous test stored are in the audit log too.
    audit_rows(web, sop_uid(DX_FILE), {"stored"})


def test_instances_stored_over_dimse_are_found_and_retrieved_over_http(web: Web) -> None:
    paths = web.fresh(2)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", web.server.port, ae_title="MINIPACS")
    assert assoc.is_established
    try:
        for path in paths:
            assert assoc.send_c_store(path).Status == 0
    finally:
        assoc.release()
    ds = dcmread(paths[0], stop_before_pixels=True)
    found = web.client().search_for_instances(study_instance_uid=str(ds.StudyInstanceUID))
    assert {f["00080018"]["Value"][0] for f in found} == {sop_uid(p) for p in paths}
    for path in paths:
        assert dataset_bytes(retrieve_as_stored(web, path)) == dataset_bytes(path)


@pytest.mark.parametrize("content_type", [
    'multipart/related; type="application/dicom"; boundary="b0undary"',
    "multipart/related; type=application/dicom; boundary=b0undary",
    "Multipart/Related;boundary=b0undary",  # type may be left out
    'multipart/related; boundary="b0undary"; type="application/dicom"; start="<x@y>"',
])
def test_content_type_spellings_clients_use(web: Web, content_type: str) -> None:
    [path] = web.fresh()
    answer = web.post(multipart(path.read_bytes()), content_type=content_type)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == DICOM_JSON
    [item] = answer.json()[REFERENCED]["Value"]
    assert values(item, INSTANCE_UID) == [sop_uid(path)]
    assert FAILED not in answer.json() and "Warning" not in answer.headers


def test_a_bearer_token_with_a_storing_role_may_store(web: Web) -> None:
    [path] = web.fresh()
    answer = web.post(multipart(path.read_bytes()), auth=None, Authorization=f"Bearer {web.token}")
    assert answer.status_code == 200, answer.text
    assert audit_rows(web, sop_uid(path), {"stored"})[0]["actor"] == "modality-gw"


# --- the same instance again -----------------------------------------------------------------


def test_the_same_instance_again_is_a_success_stored_once(web: Web) -> None:
    [path] = web.fresh()
    assert web.post(multipart(path.read_bytes())).status_code == 200
    count = instance_count(web)
    again = web.post(multipart(path.read_bytes()))
    assert again.status_code == 200, again.text
    [item] = again.json()[REFERENCED]["Value"]
    assert values(item, INSTANCE_UID) == [sop_uid(path)] and WARNING_REASON not in item
    assert instance_count(web) == count
    audit_rows(web, sop_uid(path), {"stored", "already stored"})
    assert_nothing_stray(web)


def test_a_different_instance_with_the_same_uid_is_a_warning_and_the_first_copy_stays(web: Web) -> None:
    [path] = web.fresh()
    first = path.read_bytes()
    assert web.post(multipart(first)).status_code == 200
    changed = dcmread(path)
    changed.PatientComments = "sent again with different content"
    other = web.files / "changed.dcm"
    changed.save_as(other, enforce_file_format=True)
    count = instance_count(web)
    answer = web.post(multipart(other.read_bytes()))
    assert answer.status_code == 202, answer.text
    [item] = answer.json()[REFERENCED]["Value"]
    assert values(item, INSTANCE_UID) == [sop_uid(path)]
    assert values(item, WARNING_REASON) == [COERCION]
    assert "first copy was kept" in answer.headers["Warning"] and answer.headers["Warning"].startswith("299 ")
    assert FAILED not in answer.json()
    assert instance_count(web) == count
    assert dataset_bytes(retrieve_as_stored(web, path)) == dataset_bytes(first)  # unchanged
    # Kept aside, never lost, and only once however often it is resent.
    assert web.post(multipart(other.read_bytes())).status_code == 202
    archive = web.server.archive()
    try:
        assert [r["sop_instance_uid"] for r in table_rows(archive, "duplicate_conflict")].count(sop_uid(path)) == 1
    finally:
        archive.close()
    audit_rows(web, sop_uid(path), {"stored", "conflict kept", "conflict"})
    assert_nothing_stray(web)


# --- per-instance failures -------------------------------------------------------------------

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + os.urandom(2000) + b"\xff\xd9"
HTML = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"
GARBAGE = os.urandom(5000)


def test_a_good_part_and_a_garbage_part(web: Web) -> None:
    [path] = web.fresh()
    count = instance_count(web)
    answer = web.post(multipart(path.read_bytes(), GARBAGE))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    [stored] = body[REFERENCED]["Value"]
    [failed] = body[FAILED]["Value"]
    assert values(stored, INSTANCE_UID) == [sop_uid(path)]
    assert values(failed, FAILURE_REASON) == [CANNOT_UNDERSTAND]
    assert values(failed, INSTANCE_UID) == [] and values(failed, CLASS_UID) == []  # not known
    assert "part 2 refused 0xC000" in answer.headers["Warning"]
    assert instance_count(web) == count + 1
    assert_nothing_stray(web)


def test_nothing_but_garbage_is_409(web: Web) -> None:
    [path] = web.fresh()
    truncated = path.read_bytes()[:-100]  # a DICOM file cut short: its UIDs are readable
    count = instance_count(web)
    answer = web.post(multipart(GARBAGE, JPEG, HTML, (path.read_bytes(), "image/jpeg"), truncated))
    assert answer.status_code == 409, answer.text
    assert answer.headers["Content-Type"] == DICOM_JSON
    body = answer.json()
    assert REFERENCED not in body and RETRIEVE_URL not in body
    failed = body[FAILED]["Value"]
    assert [values(f, FAILURE_REASON) for f in failed] == [[CANNOT_UNDERSTAND]] * 5
    assert values(failed[4], INSTANCE_UID) == [sop_uid(path)]
    assert values(failed[4], CLASS_UID) == [CTImageStorage]
    warnings = answer.headers["Warning"]
    assert "part 4" in warnings and "not application/dicom" in warnings
    assert instance_count(web) == count
    audit_rows(web, sop_uid(path), {"refused 0xC000"})
    assert_nothing_stray(web)


def test_an_instance_of_another_study_than_the_url_says_fails_with_a900(web: Web) -> None:
    [mine] = web.fresh()
    [other] = web.fresh()
    study = str(dcmread(mine, stop_before_pixels=True).StudyInstanceUID)
    count = instance_count(web)
    alone = web.post(multipart(other.read_bytes()), path=f"{STUDIES}/{study}")
    assert alone.status_code == 409, alone.text
    [failed] = alone.json()[FAILED]["Value"]
    assert values(failed, FAILURE_REASON) == [DOES_NOT_MATCH]
    assert values(failed, INSTANCE_UID) == [sop_uid(other)]
    mixed = web.post(multipart(mine.read_bytes(), other.read_bytes()), path=f"{STUDIES}/{study}")
    assert mixed.status_code == 202, mixed.text
    assert values(mixed.json()[REFERENCED]["Value"][0], INSTANCE_UID) == [sop_uid(mine)]
    assert values(mixed.json()[FAILED]["Value"][0], FAILURE_REASON) == [DOES_NOT_MATCH]
    assert mixed.json()[RETRIEVE_URL]["Value"] == [f"{web.url}{STUDIES}/{study}"]
    assert instance_count(web) == count + 1
    bad_url = web.post(multipart(mine.read_bytes()), path=f"{STUDIES}/1.2.3..4")
    assert bad_url.status_code == 400 and "not a valid UID" in bad_url.json()["message"]


# --- request-level refusals --------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "message"), [
    ('multipart/related; type="application/dicom+json"; boundary=b0undary', "metadata and bulk data"),
    ('multipart/related; type="application/dicom+xml"; boundary=b0undary', "is not supported"),
    ("multipart/form-data; boundary=b0undary", "multipart/related"),
    ('multipart/related; type="image/jpeg"; boundary=b0undary', 'type="application/dicom"'),
    ("application/dicom", "multipart/related"),
    (None, "multipart/related"),
])
def test_wrong_media_types_get_415(web: Web, content_type: str | None, message: str) -> None:
    [path] = web.fresh()
    answer = web.post(multipart(path.read_bytes()), content_type=content_type)
    assert answer.status_code == 415, answer.text
    assert answer.headers["Content-Type"] == "application/json" and message in answer.json()["message"]
    assert answer.json()["status"] == 415


def test_an_accept_header_without_dicom_json_gets_406(web: Web) -> None:
    [path] = web.fresh()
    answer = web.post(multipart(path.read_bytes()), Accept="application/dicom+xml")
    assert answer.status_code == 406 and "application/dicom+json" in answer.json()["message"]
    ok = web.post(multipart(path.read_bytes()), Accept="application/dicom+xml, application/dicom+json;q=0.5")
    assert ok.status_code == 200


@pytest.mark.parametrize(("body", "content_type", "message"), [
    (b"--b0undary--\r\n", RELATED.format("b0undary"), "no parts"),
    (b"", RELATED.format("b0undary"), "no --b0undary delimiter"),
    (None, 'multipart/related; type="application/dicom"', "no boundary parameter"),
    (None, RELATED.format("x" * 71), "1 to 70"),
    (None, RELATED.format("other"), "no --other delimiter"),
    ("cut", RELATED.format("b0undary"), "ended before the closing delimiter"),
    ("bad headers", RELATED.format("b0undary"), "more than 64 KB in part headers"),
    (b"no boundary anywhere " * 5000, RELATED.format("b0undary"), "more than 64 KB before the first boundary"),
])
def test_malformed_bodies_get_400_and_store_nothing(web: Web, body: bytes | str | None, content_type: str,
                                                    message: str) -> None:  # fmt: skip
    [path] = web.fresh()
    whole = multipart(path.read_bytes())
    if body is None:
        body = whole
    elif body == "cut":
        body = whole[: len(whole) // 2]
    elif body == "bad headers":
        body = b"--b0undary\r\nContent-Type: application/dicom\r\nX-Junk: " + b"j" * 100_000 + whole
    count = instance_count(web)
    answer = web.post(body, content_type=content_type)  # type: ignore[arg-type]
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]
    assert instance_count(web) == count
    assert_nothing_stray(web)


def test_a_cut_off_body_keeps_only_the_instances_that_arrived_whole(web: Web) -> None:
    first, second = web.fresh(2)
    body = multipart(first.read_bytes(), second.read_bytes())
    answer = web.post(body[: len(body) - 1000])
    assert answer.status_code == 400
    assert "the 1 instance(s) that arrived whole before that were stored" in answer.json()["message"]
    assert sop_uid(first) in stored_objects(web.server) and sop_uid(second) not in stored_objects(web.server)
    again = web.post(body)
    assert again.status_code == 200  # the first is already stored: a success
    assert_nothing_stray(web)


def test_content_length_over_the_limit_is_refused_before_reading(web: Web) -> None:
    for announced in (LIMIT + 1, 2 << 30):  # the second one a lie: a few bytes are all that come
        with connect(web) as sock:
            sock.sendall(request_head(STUDIES, {"Content-Type": RELATED.format("b0undary"),
                                                "Content-Length": str(announced)}) + b"--b0undary\r\n")  # fmt: skip
            status, headers, body = read_response(sock)
        assert status == 413, body
        assert headers["content-type"] == "application/json" and b"3 MiB" in body
    assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200


def test_a_chunked_body_over_the_limit_gets_413_and_is_not_read_further(web: Web) -> None:
    count = instance_count(web)
    sock = connect(web)
    sent = 0
    stop = threading.Event()

    def send() -> None:
        # A client that would go on for ever: the server must stop it, not read it all.
        nonlocal sent
        try:
            sock.sendall(request_head(STUDIES, {"Content-Type": RELATED.format("b0undary"),
                                                "Transfer-Encoding": "chunked"}))  # fmt: skip
            head = b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n"
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            block = os.urandom(256 << 10)
            while not stop.is_set() and sent < 64 * LIMIT:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        status, headers, body = read_response(sock)
    finally:
        stop.set()
        sock.close()
        sender.join(timeout=30)
    assert status == 413, body
    assert b"over the limit of 3 MiB" in body
    assert sent < 16 * LIMIT, "the server read far past the limit"
    assert instance_count(web) == count
    assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200
    assert_nothing_stray(web)


def test_a_client_announcing_more_than_it_sends_gets_400_and_stores_nothing(web: Web) -> None:
    [path] = web.fresh()
    count = instance_count(web)
    start = multipart(path.read_bytes())[:100]
    with connect(web) as sock:
        sock.sendall(request_head(STUDIES, {"Content-Type": RELATED.format("b0undary"),
                                            "Content-Length": "500000"}) + start)  # fmt: skip
        sock.shutdown(socket.SHUT_WR)  # and sends nothing more
        status, _, body = read_response(sock)
    assert status == 400, body
    assert b"the body ended after 100 of the 500000 bytes announced" in body
    assert instance_count(web) == count
    assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200
    assert_nothing_stray(web)


def test_a_stalled_upload_does_not_stop_the_others(web: Web) -> None:
    [stalled_path] = web.fresh()
    [path] = web.fresh()
    with connect(web) as stalled:
        stalled.sendall(request_head(STUDIES, {"Content-Type": RELATED.format("b0undary"), "Content-Length": "500000"})
                        + multipart(stalled_path.read_bytes())[:100])  # fmt: skip
        time.sleep(0.2)  # it is being read now, and waits
        assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200
        assert web.post(multipart(path.read_bytes())).status_code == 200
    # Gone without a word: nothing of it was stored, and the server still answers.
    assert sop_uid(stalled_path) not in stored_objects(web.server)
    assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200


# --- who may store -------------------------------------------------------------------------------


def test_only_storing_roles_may_store(web: Web) -> None:
    [path] = web.fresh()
    count = instance_count(web)
    body = multipart(path.read_bytes())
    referrer = web.post(body, auth=("bs.minh", PASSWORD))
    assert referrer.status_code == 403 and "may not store images" in referrer.json()["message"]
    nobody = web.post(body, auth=None)
    assert nobody.status_code == 401 and "WWW-Authenticate" in nobody.headers
    revoked = web.post(body, auth=None, Authorization=f"Bearer {web.revoked_token}")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]
    assert instance_count(web) == count
