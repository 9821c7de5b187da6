"""`minipacs import` and appliance.importer: files, folders, DICOMDIR media, bad files."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import pytest

from appliance import cli
from appliance.importer import collect, looks_like_dicom
from tests.appliance.util import assert_one_line_error, instance_count, run_cli
from tests.conftest import CT_FILES, DX_FILE, US_FILES, dcmtk

SUMMARY = "{} stored, {} already stored, 0 conflicting resends kept aside, {} rejected, {} non-DICOM files skipped"


def truncated(path: Path, source: Path = CT_FILES[0]) -> Path:
    """The first half of a real instance: what a copy interrupted by a full disk leaves."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def with_bad_uid(path: Path, source: Path = CT_FILES[1]) -> Path:
    """A real instance whose SOP Instance UID has a letter in it (same length, so the
    file structure stays intact and only the UID is wrong)."""
    from pydicom import dcmread

    uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    bad = uid[:-1] + "x"
    data = source.read_bytes()
    assert data.count(uid.encode()) == 2  # file meta and dataset
    path.write_bytes(data.replace(uid.encode(), bad.encode()))
    return path


def make_media(root: Path, files: list[Path]) -> Path:
    """A patient CD: DICOM/ST000001/IM00000n with a DICOMDIR made by dcmtk's dcmmkdir."""
    folder = root / "DICOM" / "ST000001"
    folder.mkdir(parents=True)
    for number, source in enumerate(files, 1):
        shutil.copyfile(source, folder / f"IM{number:06d}")
    # -Nxc: some samples are JPEG 2000, which the general-purpose CD profile does not list.
    dcmtk("dcmmkdir", "-Nxc", "+r", "+id", root, "+D", root / "DICOMDIR", "DICOM")
    assert (root / "DICOMDIR").is_file()
    return root / "DICOMDIR"


# --- the command ----------------------------------------------------------------------------


def test_import_folder_recursively_then_again(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    (incoming / "ct" / "series1").mkdir(parents=True)
    for source in CT_FILES[:3]:
        shutil.copyfile(source, incoming / "ct" / "series1" / source.name)
    shutil.copyfile(DX_FILE, incoming / DX_FILE.name)
    (incoming / "README.txt").write_text("Phim chụp của bệnh nhân\n")
    (incoming / "ct" / "Thumbs.db").write_bytes(b"\x00" * 300)
    (incoming / "empty.dcm").write_bytes(b"")
    os.mkfifo(incoming / "ct" / "pipe")  # reading it would block the import forever
    truncated(incoming / "ct" / "series1" / "broken.dcm")
    with_bad_uid(incoming / "bad_uid.dcm")

    first = run_cli("import", "incoming", "--data", "data", cwd=tmp_path, timeout=30)
    assert first.returncode == 1, first  # something was rejected
    lines = first.stdout.splitlines()
    assert lines[0] == SUMMARY.format(4, 0, 2, 4)
    assert "  rejected incoming/ct/series1/broken.dcm: the dataset is truncated" in lines
    assert any(line.startswith("  rejected incoming/bad_uid.dcm: SOPInstanceUID") and "not a valid UID" in line
               for line in lines), lines  # fmt: skip
    for name in ("incoming/README.txt", "incoming/ct/Thumbs.db", "incoming/empty.dcm", "incoming/ct/pipe"):
        assert f"  skipped {name}: not a DICOM file" in lines
    assert "Importing" in first.stderr, "a progress bar by default"
    assert "Traceback" not in first.stderr
    assert instance_count(tmp_path / "data") == 4

    # Again, from the folder that also holds the data directory: the same files are
    # "already stored", and the archive's own objects and index are not walked into.
    again = run_cli("import", ".", "--data", "data", "--no-progress", cwd=tmp_path, timeout=30)
    assert again.stdout.splitlines()[0] == SUMMARY.format(0, 4, 2, 4)
    assert "data/" not in again.stdout
    assert "not importing data: it is the archive's own data directory" in again.stderr
    assert "Importing" not in again.stderr and "file/s" not in again.stderr
    assert instance_count(tmp_path / "data") == 4


def test_import_files_and_a_dicomdir(tmp_path: Path) -> None:
    dicomdir = make_media(tmp_path / "cdrom", [CT_FILES[0], CT_FILES[1], US_FILES[0]])
    (tmp_path / "cdrom" / "DICOM" / "NOT_LISTED").write_bytes(DX_FILE.read_bytes())  # not in the DICOMDIR

    # A DICOMDIR, a file it also lists (imported once), and two plain files, all clean: exit 0.
    result = run_cli("import", dicomdir, tmp_path / "cdrom" / "DICOM" / "ST000001" / "IM000001",
                     CT_FILES[5], US_FILES[1], "--data", "data", "--no-progress", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [SUMMARY.format(5, 0, 0, 0)]
    assert "Importing" not in result.stderr and "Traceback" not in result.stderr
    assert instance_count(tmp_path / "data") == 5


def test_many_rejections_are_summarised_with_a_way_to_see_all(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for number in range(23):
        truncated(bad / f"{number:02d}.dcm")
    result = run_cli("import", "bad", "--data", "data", "--no-progress", "--log-level", "DEBUG", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == SUMMARY.format(0, 0, 23, 0)
    assert len([line for line in lines if line.startswith("  rejected ")]) == 20
    assert lines[-1] == "  ... and 3 more rejected (run again with --log-level DEBUG to list every one)"
    # ... and at DEBUG every one of them is in the log, as the hint promises.
    for number in range(23):
        assert f"rejected bad/{number:02d}.dcm: the dataset is truncated" in result.stderr


def test_missing_path_is_one_line_and_imports_nothing(tmp_path: Path) -> None:
    (tmp_path / "real.dcm").write_bytes(CT_FILES[0].read_bytes())
    result = run_cli("import", "real.dcm", "no-such-folder", "--data", "data", cwd=tmp_path)
    line = assert_one_line_error(result, 1)
    assert line == "minipacs: nothing imported: no-such-folder does not exist"
    assert instance_count(tmp_path / "data") == 0


class InterruptAt(logging.Handler):
    """Sends this process a real SIGINT (Ctrl+C) when the importer reaches `name`."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.name_ = name

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith(f"{self.name_}: not a DICOM file"):
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_between_files_and_reports_what_was_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process, so the interrupt lands at a known file instead of racing a subprocess."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name, source in (("a.dcm", CT_FILES[0]), ("b.dcm", CT_FILES[1]), ("d.dcm", CT_FILES[2])):
        shutil.copyfile(source, incoming / name)
    (incoming / "c.txt").write_text("Ctrl+C arrives here")
    # cli.main configures logging for the whole process: put it back afterwards.
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    for name in ("", "pynetdicom", "alembic", "sqlalchemy"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    logger = logging.getLogger("appliance.importer")
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    hook = InterruptAt("c.txt")
    logger.addHandler(hook)
    monkeypatch.setenv("MINIPACS_STORAGE_RESERVE_MB", "0")
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(["import", "incoming", "--data", "data", "--no-progress"])
    finally:
        logger.removeHandler(hook)
        root.handlers[:] = saved_handlers
    out = capsys.readouterr().out.splitlines()
    assert code == 130
    assert out[0] == SUMMARY.format(2, 0, 0, 0)
    assert out[-1] == ("interrupted: 2 files not imported yet; run the same import again to finish "
                       "(what is stored now is skipped)")  # fmt: skip
    assert instance_count(tmp_path / "data") == 2


# --- the importer, unit by unit ----------------------------------------------------------------


def test_collect_lists_each_file_once(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.dcm", "a/b/2.dcm", "a/b/3.dcm"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "link.dcm").symlink_to(tmp_path / "a" / "1.dcm")
    found = collect([tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "2.dcm",
                     tmp_path / "link.dcm", tmp_path / "a" / ".." / "a" / "1.dcm"])  # fmt: skip
    assert found == [tmp_path / "a" / "1.dcm", tmp_path / "a" / "b" / "2.dcm", tmp_path / "a" / "b" / "3.dcm"]


def test_collect_follows_dicomdir_references(tmp_path: Path) -> None:
    dicomdir = make_media(tmp_path / "cd", [CT_FILES[0], DX_FILE, US_FILES[0]])
    (tmp_path / "cd" / "DICOM" / "STRAY").write_bytes(b"x")
    found = collect([dicomdir])
    listed = [tmp_path / "cd" / "DICOM" / "ST000001" / f"IM00000{n}" for n in (1, 2, 3)]
    assert found[0] == dicomdir
    assert sorted(found[1:]) == listed  # in the DICOMDIR's patient/study order; the stray is not listed
    # The media folder and its DICOMDIR together: still each file once.
    assert sorted(collect([dicomdir, tmp_path / "cd"])) == sorted([dicomdir, *listed, tmp_path / "cd" / "DICOM" / "STRAY"])


def test_collect_finds_dicomdir_files_on_a_lower_case_mount(tmp_path: Path) -> None:
    """Linux mounts ISO 9660 CDs in lower case (and some burners add ';1'); the DICOMDIR
    still says DICOM\\ST000001\\IM000001."""
    make_media(tmp_path / "burn", [CT_FILES[0], CT_FILES[1]])
    mount = tmp_path / "mnt"
    (mount / "dicom" / "st000001").mkdir(parents=True)
    shutil.copyfile(tmp_path / "burn" / "DICOMDIR", mount / "dicomdir")
    shutil.copyfile(tmp_path / "burn" / "DICOM" / "ST000001" / "IM000001", mount / "dicom" / "st000001" / "im000001")
    shutil.copyfile(tmp_path / "burn" / "DICOM" / "ST000001" / "IM000002", mount / "dicom" / "st000001" / "IM000002;1")
    found = collect([mount / "dicomdir"])
    assert found == [mount / "dicomdir", mount / "dicom" / "st000001" / "im000001",
                     mount / "dicom" / "st000001" / "IM000002;1"]  # fmt: skip


def test_collect_keeps_a_missing_dicomdir_reference_so_it_is_reported(tmp_path: Path) -> None:
    dicomdir = make_media(tmp_path / "cd", [CT_FILES[0], CT_FILES[1]])
    (tmp_path / "cd" / "DICOM" / "ST000001" / "IM000002").unlink()
    assert collect([dicomdir])[-1] == tmp_path / "cd" / "DICOM" / "ST000001" / "IM000002"


def test_collect_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^.*nowhere does not exist$"):
        collect([tmp_path / "nowhere"])


@pytest.mark.parametrize("content, expected", [
    (CT_FILES[0].read_bytes(), True),                       # Part 10: 'DICM' at 128
    (b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00", True),
    (b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 192", True),        # bare dataset, group 0008 first
    (b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00", True),  # bare, group 0002 first
    (b"", False),
    (b"\x08\x00", False),                                   # too short to be anything
    (b"%PDF-1.7\n" + b"x" * 200, False),
    (b"\x89PNG\r\n\x1a\n" + b"x" * 200, False),
    (b"\x00" * 128 + b"DICX", False),
])  # fmt: skip
def test_looks_like_dicom(tmp_path: Path, content: bytes, expected: bool) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    assert looks_like_dicom(path) is expected
