"""The device registry behind MA_MAY: validation, pre-fill from what modalities send, the CLI."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from archive import Archive, InvalidArgument, NotFound, Origin
from archive.audit import search
from reports.devices import ADMIN, AUTO, DeviceRegistry, auto_code, check_device_code, device_type_for
from tests.appliance.util import assert_one_line_error, cli_env, open_archive, run_cli
from tests.archive.helpers import ingest
from tests.conftest import DX_FILE, US_FILES, dcmtk, start_server
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)

ADMIN_ORIGIN = Origin("cli:admin", "", "CLI")


@pytest.fixture
def devices(archive: Archive) -> Iterator[DeviceRegistry]:
    registry = DeviceRegistry(archive.db, archive.audit)
    registry.observe_ingest(archive, "12345", "1")
    yield registry


def sample(path: Path = DX_FILE, serial: str | None = "SN-DR-88231", new_study: bool = True) -> bytes:
    """A sample instance (as a modality sends it), in a study of its own, with a Device Serial Number."""
    ds = dcmread(path)
    if new_study:
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if serial is None:
        ds.pop("DeviceSerialNumber", None)
    else:
        ds.DeviceSerialNumber = serial
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def from_modality(ae_title: str, via: str = "DIMSE") -> Origin:
    return Origin(ae_title, "127.0.0.1", via, "assoc-1")


# --- codes --------------------------------------------------------------------------


def test_device_types_of_modalities() -> None:
    assert [device_type_for(m) for m in ("CT", "DX", "CR", "MG", "XA", "RF", "US", "MR", "ES", "dx")] == [
        "CL", "XQ", "XQ", "XQ", "XQ", "XQ", "SA", "MRI", "NS", "XQ"]  # fmt: skip
    assert device_type_for("NM") == "" and device_type_for("") == ""


@pytest.mark.parametrize("code", ["XQ.1.12345.SN001", "CL.2.79001.A-12", "MRI.1.01001.7", "sa.1.12345.X9"])
def test_valid_codes(code: str) -> None:
    assert check_device_code(f" {code} ") == code[:code.index(".")].upper() + code[code.index("."):]


@pytest.mark.parametrize(("code", "says"), [
    ("", "four parts"), ("XQ.1.12345", "four parts"), ("XQ-1-12345-SN1", "four parts"),
    ("X.1.12345.SN1", "device type"), ("X1.1.12345.SN1", "device type"), ("ÂB.1.12345.SN1", "device type"),
    ("XQ.12.12345.SN1", "funding source"), ("XQ.a.12345.SN1", "funding source"),
    ("XQ.1.1234.SN1", "facility code"), ("XQ.1.123456.SN1", "facility code"), ("XQ.1.1234a.SN1", "facility code"),
    ("XQ.1.12345.", "serial"), ("XQ.1.12345.SN 1", "serial"), ("XQ.1.12345.SN/1", "serial"),
    ("XQ.1.12345." + "9" * 41, "serial"),
])  # fmt: skip
def test_invalid_codes_say_which_part_is_wrong(code: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        check_device_code(code)


def test_auto_codes_are_made_only_from_usable_parts() -> None:
    assert auto_code("DX", "SN-DR-88231", "12345", "1") == "XQ.1.12345.SN-DR-88231"
    assert auto_code("CT", "A1", "79001", "2") == "CL.2.79001.A1"
    assert auto_code("NM", "A1", "12345", "1") == ""  # no device type we can name
    assert auto_code("DX", "SN 88/231", "12345", "1") == ""  # never a made-up serial
    assert auto_code("DX", "SN1", "", "1") == ""  # facility code not set
    assert auto_code("DX", "SN1", "12345", "") == ""


# --- the registry -------------------------------------------------------------------


def test_set_get_list_remove_and_audit(archive: Archive, devices: DeviceRegistry) -> None:
    entry = devices.set("DR_ROOM1", "xq.1.12345.SN001", modality="dx", description="X-quang phòng 1",
                        actor=ADMIN_ORIGIN)  # fmt: skip
    assert (entry.ae_title, entry.device_code, entry.modality, entry.serial_number, entry.source) == (
        "DR_ROOM1", "XQ.1.12345.SN001", "DX", "SN001", ADMIN)  # fmt: skip
    assert devices.get("DR_ROOM1") == entry
    devices.set("CT_ROOM", "CL.1.12345.CT-77", serial_number="CT 77", actor="bs.admin")
    assert [e.ae_title for e in devices.list()] == ["CT_ROOM", "DR_ROOM1"]
    assert devices.get("CT_ROOM").serial_number == "CT 77"  # type: ignore[union-attr]
    changed = devices.set("DR_ROOM1", "XQ.1.12345.SN002", actor=ADMIN_ORIGIN)
    assert devices.get("DR_ROOM1") == changed and changed.device_code == "XQ.1.12345.SN002"
    devices.remove("CT_ROOM", ADMIN_ORIGIN)
    assert devices.get("CT_ROOM") is None
    with pytest.raises(NotFound, match="CT_ROOM"):
        devices.remove("CT_ROOM", ADMIN_ORIGIN)
    archive.audit.flush()
    events = [(e.action, e.uid, e.actor) for e in search(archive.db) if e.level == "DEVICE"]
    assert sorted(events) == sorted([("DEVICE_SET", "DR_ROOM1", "cli:admin"), ("DEVICE_SET", "CT_ROOM", "bs.admin"),
                                     ("DEVICE_SET", "DR_ROOM1", "cli:admin"),
                                     ("DEVICE_REMOVE", "CT_ROOM", "cli:admin")])  # fmt: skip


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"ae_title": "", "device_code": "XQ.1.12345.SN1"}, "AE title"),
    ({"ae_title": "A" * 17, "device_code": "XQ.1.12345.SN1"}, "AE title"),
    ({"ae_title": "DR\\1", "device_code": "XQ.1.12345.SN1"}, "AE title"),
    ({"ae_title": "DR1", "device_code": "XQ.1.12345"}, "four parts"),
    ({"ae_title": "DR1", "device_code": "XQ.1.12345.SN1", "modality": "X-RAY!"}, "modality"),
    ({"ae_title": "DR1", "device_code": "XQ.1.12345.SN1", "serial_number": "S" * 65}, "serial"),
])  # fmt: skip
def test_bad_input_changes_nothing(devices: DeviceRegistry, kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        devices.set(**kwargs, actor=ADMIN_ORIGIN)
    assert devices.list() == []


# --- pre-fill from what modalities send ---------------------------------------------------


def test_a_modality_pre_fills_an_auto_entry_from_its_device_serial_number(archive: Archive,
                                                                          devices: DeviceRegistry) -> None:
    result = ingest(archive, sample(), from_modality("DR_ROOM1"))
    assert result.status.name == "STORED"
    entry = devices.get("DR_ROOM1")
    assert entry is not None
    assert (entry.device_code, entry.modality, entry.serial_number, entry.source) == (
        "XQ.1.12345.SN-DR-88231", "DX", "SN-DR-88231", AUTO)  # fmt: skip
    # The machine was replaced (or its serial corrected): an auto entry follows what the modality sends.
    ingest(archive, sample(serial="SN-DR-90000"), from_modality("DR_ROOM1"))
    assert devices.get("DR_ROOM1").device_code == "XQ.1.12345.SN-DR-90000"  # type: ignore[union-attr]


def test_an_admin_entry_is_never_overwritten(archive: Archive, devices: DeviceRegistry,
                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    admin = devices.set("DR_ROOM1", "XQ.2.12345.BV-001", modality="DX", actor=ADMIN_ORIGIN)
    caplog.set_level("WARNING", "reports.devices")
    ingest(archive, sample(), from_modality("DR_ROOM1"))
    assert devices.get("DR_ROOM1") == admin
    assert "SN-DR-88231" in caplog.text and "XQ.2.12345.BV-001" in caplog.text


def test_only_dicom_senders_with_a_serial_pre_fill(archive: Archive, devices: DeviceRegistry) -> None:
    ingest(archive, sample(serial=None), from_modality("DR_ROOM1"))  # no Device Serial Number
    ingest(archive, sample(), from_modality("bs.lan", via="STOW"))  # a user, not an AE title
    ingest(archive, sample(), from_modality("import", via="IMPORT"))
    assert devices.list() == []


def test_a_serial_that_cannot_be_a_code_is_recorded_without_one(archive: Archive, devices: DeviceRegistry) -> None:
    ingest(archive, sample(US_FILES[0], serial="US 4471/B"), from_modality("US_ROOM2"))
    entry = devices.get("US_ROOM2")
    assert entry is not None and entry.source == AUTO
    assert (entry.device_code, entry.modality, entry.serial_number) == ("", "US", "US 4471/B")


def test_a_later_image_of_a_known_study_costs_nothing(archive: Archive, devices: DeviceRegistry) -> None:
    data = sample(new_study=False, serial="SN-1")
    ingest(archive, data, from_modality("DR_ROOM1"))
    devices.remove("DR_ROOM1", ADMIN_ORIGIN)
    ds = dcmread(io.BytesIO(data))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    ingest(archive, out.getvalue(), from_modality("DR_ROOM1"))  # same study: the hook does not run
    assert devices.list() == []


# --- the command -------------------------------------------------------------------


def cli(data: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, "--data", data, cwd=data.parent, env=cli_env())
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
def test_cli_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, out, err = cli(data, "device", "list")
    assert code == 0 and "no device codes yet" in out, err
    code, out, err = cli(data, "device", "add", "DR_ROOM1", "XQ.1.12345.SN001", "--modality", "DX",
                         "--description", "X-quang phòng 1")  # fmt: skip
    assert code == 0 and "XQ.1.12345.SN001" in out, err
    code, out, err = cli(data, "device", "list")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:3] == ["AE", "TITLE", "DEVICE"]
    assert row.split()[:5] == ["DR_ROOM1", "XQ.1.12345.SN001", "DX", "admin", "SN001"] and "X-quang phòng 1" in row
    code, out, err = cli(data, "device", "remove", "DR_ROOM1")
    assert code == 0 and "DR_ROOM1" in out, err
    archive = open_archive(data)
    try:
        assert DeviceRegistry(archive.db).list() == []
        assert [e.action for e in search(archive.db) if e.level == "DEVICE"] == ["DEVICE_REMOVE", "DEVICE_SET"]
    finally:
        archive.close()


@pytest.mark.parametrize(("args", "says"), [
    (("device", "add", "DR_ROOM1", "XQ.1.1234.SN1"), "facility code"),
    (("device", "add", "DR_ROOM1", "XRAY"), "XX.n.YYYYY.Z"),
    (("device", "add", "DR ROOM 1 WITH A LONG NAME", "XQ.1.12345.SN1"), "AE title"),
    (("device", "remove", "NOBODY"), "device list"),
])  # fmt: skip
def test_cli_bad_input_is_one_line_and_changes_nothing(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    data = tmp_path / "data"
    result = run_cli(*args, "--data", data, cwd=tmp_path, env=cli_env())
    assert says in assert_one_line_error(result, 1)
    archive = open_archive(data)
    try:
        assert DeviceRegistry(archive.db).list() == []
    finally:
        archive.close()


def test_cli_usage_errors(tmp_path: Path) -> None:
    result = run_cli("device", "add", "DR_ROOM1", cwd=tmp_path, env=cli_env())
    assert result.returncode == 2 and "CODE" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("device", cwd=tmp_path, env=cli_env())
    assert result.returncode == 2 and "add" in result.stdout


@pytest.mark.slow
def test_minipacs_serve_pre_fills_from_a_c_store(tmp_path: Path) -> None:
    """The hook is wired into `minipacs serve`: storescu as the modality, the facility code from the environment."""
    image = tmp_path / "dx.dcm"
    image.write_bytes(sample())
    server = start_server(tmp_path / "data", env={"MINIPACS_REPORTS_FACILITY_CODE": "79001",
                                                  "MINIPACS_REPORTS_DEVICE_FUNDING": "2"})  # fmt: skip
    try:
        dcmtk("storescu", "-xv", "-aet", "DR_ROOM1", "-aec", "MINIPACS", "127.0.0.1", str(server.port), image)
    finally:
        assert server.stop() == 0, server.log()
    archive = server.archive()
    try:
        entry = DeviceRegistry(archive.db).get("DR_ROOM1")
    finally:
        archive.close()
    assert entry is not None and (entry.device_code, entry.source) == ("XQ.2.79001.SN-DR-88231", AUTO)


def test_cli_lists_an_incomplete_auto_entry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    archive = open_archive(data)
    try:
        registry = DeviceRegistry(archive.db)
        registry.observe_ingest(archive, "", "1")  # reports.facility_code not set yet
        ingest(archive, sample(), from_modality("DR_ROOM1"))
    finally:
        archive.close()
    code, out, err = cli(data, "device", "list")
    assert code == 0, err
    row = out.splitlines()[1].split()
    assert row[:5] == ["DR_ROOM1", "(incomplete)", "DX", "auto", "SN-DR-88231"]
