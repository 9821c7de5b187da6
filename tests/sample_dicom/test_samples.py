"""Tests for the committed synthetic sample studies in ``sample_dicom/``.

The samples are fixtures for the rest of the test-suite, so they must
(1) be exactly what ``sample_dicom/generate.py`` produces (byte-identical,
so nobody hand-edits a file or changes the generator without regenerating),
(2) stay small, and (3) keep the properties other tests rely on: Vietnamese
UTF-8 names, CCCD/BHYT other IDs, a >= 20-slice 512x512 CT, a JPEG 2000 DX,
and a JPEG Baseline YBR_FULL_422 multi-frame ultrasound cine.

Expected identifiers are written out here, not read from the generator, so
that changing them in the generator makes these tests fail.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset
from pydicom.encaps import generate_frames
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_dicom"
STUDY_DIRS = ("ct", "dx", "us")
MAX_TOTAL_BYTES = 25 * 1000 * 1000

EXPECTED = {
    "ct": dict(
        name="Nguyễn^Văn An", family="Nguyễn", given="Văn An",
        patient_id="BN26001001", accession="CT2611200001", sex="M",
        birth="19680315", cccd="080068001234", bhyt="GD4800123456789",
        description="CT sọ não không tiêm thuốc",
        study_uid="2.25.201267940079897072368978825170084415160",
        files=[f"CT_{i:03d}.dcm" for i in range(1, 21)],
    ),
    "dx": dict(
        name="Trần^Thị Đào", family="Trần", given="Thị Đào",
        patient_id="BN26001002", accession="DX2611200002", sex="F",
        birth="19750809", cccd="080175004321", bhyt="HC4800987654321",
        description="X-quang ngực thẳng (PA)",
        study_uid="2.25.79413251553892344005708511772898469447",
        files=["DX_001.dcm"],
    ),
    "us": dict(
        name="Lê^Thị Hồng Nhung", family="Lê", given="Thị Hồng Nhung",
        patient_id="BN26001003", accession="US2611210003", sex="F",
        birth="19920127", cccd="080192007788", bhyt="DN4800246813579",
        description="Siêu âm ổ bụng tổng quát",
        study_uid="2.25.48453463520213932914468139852915584526",
        files=["US_001.dcm", "US_002_cine.dcm"],
    ),
}


def committed_files() -> list[Path]:
    """All committed sample files, relative to ``sample_dicom/``."""
    return sorted(p.relative_to(SAMPLES)
                  for d in STUDY_DIRS for p in (SAMPLES / d).glob("*.dcm"))


def read(rel: Path | str) -> FileDataset:
    return pydicom.dcmread(SAMPLES / rel)


def study_files(study: str) -> list[Path]:
    return [Path(study) / name for name in EXPECTED[study]["files"]]


def load_generator() -> ModuleType:
    """Import ``sample_dicom/generate.py`` by path (it is not an installed package)."""
    spec = importlib.util.spec_from_file_location(
        "minipacs_sample_dicom_generate", SAMPLES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the generator's CLI into a fresh temporary directory."""
    out = tmp_path_factory.mktemp("sample_dicom")
    generator = load_generator()
    try:
        assert generator.main(["--out", str(out)]) == 0
        yield out
    finally:
        sys.modules.pop("minipacs_sample_dicom_generate", None)


# ---------------------------------------------------------------------------
# Reproducibility and size
# ---------------------------------------------------------------------------

def test_committed_file_set_is_complete() -> None:
    expected = sorted(Path(s) / f for s in EXPECTED for f in EXPECTED[s]["files"])
    assert committed_files() == expected


def test_regeneration_is_byte_identical(regenerated: Path) -> None:
    produced = sorted(p.relative_to(regenerated) for p in regenerated.rglob("*")
                      if p.is_file())
    assert produced == committed_files()
    differing = [str(rel) for rel in produced
                 if (regenerated / rel).read_bytes() != (SAMPLES / rel).read_bytes()]
    assert not differing, (
        f"generate.py output differs from the committed files {differing}; "
        "if the change is intended, re-run `python sample_dicom/generate.py`")


def test_total_size_under_budget() -> None:
    total = sum((SAMPLES / rel).stat().st_size for rel in committed_files())
    assert 10_000_000 < total < MAX_TOTAL_BYTES


# ---------------------------------------------------------------------------
# Every file: Part 10, charset, identifiers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rel", committed_files(), ids=str)
def test_file_is_valid_part10_with_identifiers(rel: Path) -> None:
    raw = (SAMPLES / rel).read_bytes()
    assert raw[:128] == bytes(128) and raw[128:132] == b"DICM"
    ds = read(rel)
    meta = ds.file_meta
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.ImplementationVersionName == "MINIPACS_SAMPLE"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    for keyword in ("AccessionNumber", "StudyID", "ReferringPhysicianName",
                    "StudyDescription", "InstitutionName", "PatientID",
                    "PatientBirthDate", "PatientSex", "StationName",
                    "Manufacturer"):
        assert str(ds.get(keyword, "")).strip(), keyword
    assert ds.InstitutionName.startswith("Bệnh viện Đa khoa huyện")
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                meta.ImplementationClassUID):
        assert uid.is_valid and uid.startswith("2.25.")


@pytest.mark.parametrize("study", list(EXPECTED))
def test_patient_and_study_identity(study: str) -> None:
    exp = EXPECTED[study]
    for rel in study_files(study):
        ds = read(rel)
        assert str(ds.PatientName) == exp["name"]
        assert unicodedata.is_normalized("NFC", str(ds.PatientName))
        assert ds.PatientName.family_name == exp["family"]
        assert ds.PatientName.given_name == exp["given"]
        # Stored as UTF-8 bytes on disk, not as an escaped or Latin-1 string.
        assert exp["name"].encode("utf-8") in (SAMPLES / rel).read_bytes()
        assert ds.PatientID == exp["patient_id"]
        assert ds.AccessionNumber == exp["accession"]
        assert ds.PatientSex == exp["sex"]
        assert ds.PatientBirthDate == exp["birth"]
        assert ds.StudyDescription == exp["description"]
        assert ds.StudyInstanceUID == exp["study_uid"]


@pytest.mark.parametrize("study", list(EXPECTED))
def test_other_patient_ids_hold_cccd_and_bhyt(study: str) -> None:
    exp = EXPECTED[study]
    for rel in study_files(study):
        items = read(rel).OtherPatientIDsSequence
        by_issuer = {item.IssuerOfPatientID: item.PatientID for item in items}
        assert by_issuer == {"CCCD": exp["cccd"], "BHYT": exp["bhyt"]}
        assert all(item.TypeOfPatientID == "TEXT" for item in items)
        assert re.fullmatch(r"\d{12}", by_issuer["CCCD"])
        assert re.fullmatch(r"[A-Z]{2}\d{13}", by_issuer["BHYT"])


def test_studies_do_not_share_identifiers() -> None:
    firsts = [read(study_files(s)[0]) for s in EXPECTED]
    for keyword in ("PatientID", "AccessionNumber", "StudyID", "StudyInstanceUID"):
        values = [ds[keyword].value for ds in firsts]
        assert len(set(values)) == len(values), keyword
    sop_uids = [read(rel).SOPInstanceUID for rel in committed_files()]
    assert len(set(sop_uids)) == len(sop_uids)


# ---------------------------------------------------------------------------
# Per-modality content
# ---------------------------------------------------------------------------

def test_ct_head_series() -> None:
    slices = sorted((read(rel) for rel in study_files("ct")),
                    key=lambda ds: int(ds.InstanceNumber))
    assert len(slices) >= 20
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1
    assert len({ds.FrameOfReferenceUID for ds in slices}) == 1
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert np.allclose(np.diff(z), 5.0)
    for ds in slices:
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)
        assert ds.BodyPartExamined == "HEAD"
        assert float(ds.SliceThickness) == 5.0
        assert float(ds.SliceLocation) == float(ds.ImagePositionPatient[2])
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert 0.4 < float(ds.PixelSpacing[0]) < 0.5
        assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024, 1)
        assert (float(ds.WindowCenter[0]), float(ds.WindowWidth[0])) == (40, 80)
        for keyword in ("KVP", "XRayTubeCurrent", "ExposureTime",
                        "ConvolutionKernel", "SpacingBetweenSlices"):
            assert keyword in ds, keyword

    hu = apply_modality_lut(slices[10].pixel_array, slices[10])
    assert hu.shape == (512, 512)
    assert abs(float(np.median(hu[:40, :40])) + 1000) < 20     # air
    assert hu.max() > 900                                      # skull
    brain = hu[226:286, 186:216]                               # right hemisphere
    assert 20 < float(np.median(brain)) < 45
    sizes = [int((apply_modality_lut(ds.pixel_array, ds) > 500).sum())
             for ds in (slices[0], slices[-1])]
    assert sizes[1] < sizes[0]                                 # head narrows


def test_dx_chest() -> None:
    ds = read("dx/DX_001.dcm")
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
    assert (ds.Modality, ds.ViewPosition, ds.BodyPartExamined) == ("DX", "PA", "CHEST")
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored) == (16, 12)
    assert "ImagerPixelSpacing" in ds
    img = ds.pixel_array
    assert img.shape == (1536, 1536) and int(img.max()) < 4096
    lung = img[700:800, 425:525].mean()        # right lung field
    heart = img[1020:1120, 800:900].mean()     # cardiac shadow
    assert heart - lung > 500


def test_us_single_frame_rgb() -> None:
    ds = read("us/US_001.dcm")
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == UltrasoundImageStorage and ds.Modality == "US"
    assert (ds.PhotometricInterpretation, ds.PlanarConfiguration) == ("RGB", 0)
    img = ds.pixel_array
    assert img.shape == (480, 640, 3)
    assert img[440:470, 0:10].max() == 0                # outside the fan
    assert img[100:140, 300:340].mean() > 40            # speckled liver


def test_us_cine_is_jpeg_baseline_multiframe_ybr422() -> None:
    ds = read("us/US_002_cine.dcm")
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.SOPClassUID == UltrasoundMultiFrameImageStorage
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert ds.StudyDescription == "Siêu âm ổ bụng tổng quát"
    assert int(ds.NumberOfFrames) == 30
    assert ds.FrameIncrementPointer == 0x00181063
    assert float(ds.FrameTime) == 50.0 and int(ds.CineRate) == 20
    assert ds.LossyImageCompression == "01"

    frames = list(generate_frames(ds.PixelData, number_of_frames=30))
    assert len(frames) == 30
    for frame in frames:
        assert frame.startswith(b"\xff\xd8")
        sof = frame.find(b"\xff\xc0")                   # SOF0 = baseline
        assert sof > 0 and b"\xff\xc2" not in frame[:sof]
        ncomp = frame[sof + 9]
        sampling = [frame[sof + 11 + 3 * i] for i in range(ncomp)]
        assert sampling == [0x21, 0x11, 0x11]           # 4:2:2 chroma

    pixels = ds.pixel_array
    assert pixels.shape == (30, 480, 640, 3)
    assert not np.array_equal(pixels[0], pixels[7])    # the loop moves
