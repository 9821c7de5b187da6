"""C-STORE with dcmtk's storescu, one run per transfer-syntax family: stored as received.

Each family gets its own server because pydicom's MR_small_* files share one
SOP Instance UID. storescu is told to propose the file's own transfer syntax
(`-x?` or, where it has no flag, a `-xf` configuration) and only the contexts
the files need (`-R`), so nothing is converted on the way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import JPEGLossless, JPEGLSLossless, generate_uid

from tests.conftest import CT_FILES, DX_FILE, US_FILES, Server, dcmtk
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.conftest import testdata as pydicom_file
from tests.dicom_scp.helpers import (
    STORESCU_PROPOSE,
    as_storescu_sends,
    assert_stored_as_received,
    dataset_bytes,
    index_counts,
    index_rows,
    make_instances,
    object_bytes,
    object_keys,
    save,
    spool_files,
    stored_objects,
    storescu,
    storescu_config,
    storescu_results,
    transfer_syntax_of,
)


def _jpeg_lossless_process14(tmp: Path) -> list[Path]:
    # +el: JPEG lossless with the default selection value 6, so not SV1 (.70) but .57.
    target = tmp / "CT_001_p14.dcm"
    dcmtk("dcmcjpeg", "+el", CT_FILES[0], target)
    assert transfer_syntax_of(target) == JPEGLossless
    return [target]


def _jpeg_ls_lossless(tmp: Path) -> list[Path]:
    target = tmp / "CT_002_jls.dcm"
    dcmtk("dcmcjpls", "+el", CT_FILES[1], target)
    assert transfer_syntax_of(target) == JPEGLSLossless
    return [target]


def _jpeg_ls_near_lossless(tmp: Path) -> list[Path]:
    # pydicom's file has no Study/Series Instance UID (both Type 1), which the
    # archive rightly refuses (tests/dicom_scp/test_bad_input.py); add them.
    ds = dcmread(pydicom_file("JPEGLSNearLossless_08.dcm"))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "JLS08"
    target = tmp / "JPEGLSNearLossless_08_uids.dcm"
    ds.save_as(target, enforce_file_format=True)
    return [target]


def _files(*names: str | Path) -> Callable[[Path], list[Path]]:
    return lambda tmp: [n if isinstance(n, Path) else pydicom_file(n) for n in names]


FAMILIES: dict[str, Callable[[Path], list[Path]]] = {
    "implicit-little": _files("MR_small_implicit.dcm"),
    "explicit-little": _files("CT_small.dcm", *CT_FILES, US_FILES[0]),
    "explicit-big": _files("MR_small_bigendian.dcm"),
    "deflate": _files("image_dfl.dcm"),
    "jpeg-baseline": _files("SC_rgb_jpeg_dcmtk.dcm", US_FILES[1]),
    "jpeg-extended": _files("JPEG-lossy.dcm"),
    "jpeg-lossless-sv1": _files("SC_rgb_jpeg_gdcm.dcm"),
    "jpeg-lossless-process14": _jpeg_lossless_process14,
    "jpeg-ls-lossless": _jpeg_ls_lossless,
    "jpeg-ls-near-lossless": _jpeg_ls_near_lossless,
    "jpeg2000-lossless": _files("GDCMJ2K_TextGBR.dcm", DX_FILE),
    "jpeg2000": _files("JPEG2000.dcm"),
    "rle": _files("MR_small_RLE.dcm"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_storescu_stores_each_transfer_syntax_as_received(server: Server, tmp_path: Path,
                                                           family: str) -> None:  # fmt: skip
    files = [as_storescu_sends(p, tmp_path) for p in FAMILIES[family](tmp_path)]
    syntaxes = {transfer_syntax_of(p) for p in files}
    assert len(syntaxes) == 1, syntaxes
    (syntax,) = syntaxes
    if syntax in STORESCU_PROPOSE:
        propose = ["-R", *STORESCU_PROPOSE[syntax]]  # -R: only the contexts the files need
    else:
        pairs = [(str(dcmread(p, stop_before_pixels=True).SOPClassUID), syntax) for p in files]
        propose = storescu_config(tmp_path, pairs)

    result = storescu(server, *files, args=propose)
    output = result.stdout + result.stderr

    assert storescu_results(output) == {str(p): "Success" for p in files}, output
    # Nothing was converted on the way: storescu sent each file in its own syntax.
    conversions = re.findall(r"Converting transfer syntax: (.+) -> (.+)", output)
    assert len(conversions) == len(files) and all(a == b for a, b in conversions), conversions
    stored = stored_objects(server)
    assert len(stored) == len(files)
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert_stored_as_received(server, path, stored[uid])
        assert f"C-STORE {uid} from STORESCU@127.0.0.1: stored" in server.log()
    assert len(object_keys(server)) == len(files)
    assert spool_files(server) == []


def test_resend_of_the_same_study_is_stored_once(server: Server) -> None:
    """The same SOP Instance sent twice is one row and one object (DESIGN.md promises)."""
    files = CT_FILES[:5]
    first = storescu(server, *files, args=["-R", "-xe"])
    second = storescu(server, *files, args=["-R", "-xe"])
    assert set(storescu_results(first.stdout + first.stderr).values()) == {"Success"}
    assert set(storescu_results(second.stdout + second.stderr).values()) == {"Success"}
    assert index_counts(server) == (1, 1, 1, 5)
    assert len(object_keys(server)) == 5
    for path in files:
        assert_stored_as_received(server, path)
    assert "already stored" in server.log()


def test_combined_proposal_keeps_explicit_vr(server: Server) -> None:
    """A modality that proposes every uncompressed syntax in one context (storescu +C) sends in
    the one the archive accepts; it must be Explicit VR Little Endian, the file's own, not
    Implicit VR, which would lose the value representations on the way."""
    files = [*CT_FILES[:2], US_FILES[0]]
    result = storescu(server, *files, args=["-R", "-xe", "+C"])
    output = result.stdout + result.stderr
    assert set(storescu_results(output).values()) == {"Success"}, output
    assert "-> Little Endian Implicit" not in output, output
    for path in files:
        assert_stored_as_received(server, path)


def test_conflicting_resend_is_kept_aside_with_a_warning(server: Server, tmp_path: Path) -> None:
    """Another object under a stored SOP Instance UID: the first stays indexed, the second is
    kept in the store and recorded, and the modality hears a warning (DESIGN.md)."""
    (original,) = make_instances(tmp_path / "first", 1, seed=5)
    ds = dcmread(original)
    ds.PatientName = "TRAN^VAN^KHAC"
    changed = save(ds, tmp_path / "changed.dcm", ds.file_meta.TransferSyntaxUID)
    first = storescu(server, original, args=["-R", "-xe"])
    second = storescu(server, changed, args=["-R", "-xe"])
    assert storescu_results(first.stdout + first.stderr) == {str(original): "Success"}
    assert storescu_results(second.stdout + second.stderr) == {str(changed): "Warning: CoercionOfDataElements"}
    assert index_counts(server)[3] == 1
    assert_stored_as_received(server, original)
    assert len(object_keys(server)) == 2
    conflicts = index_rows(server, "SELECT sop_instance_uid, storage_key FROM duplicate_conflict")
    assert [c["sop_instance_uid"] for c in conflicts] == [str(ds.SOPInstanceUID)]
    kept = object_bytes(server, conflicts[0]["storage_key"])
    assert dataset_bytes(kept) == dataset_bytes(changed)
