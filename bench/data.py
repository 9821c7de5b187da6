"""Test data for the benchmarks: realistic CT, DX and XA Part 10 files, made once and cached.

Layout under ``bench/out/data`` (reused while ``VERSION`` matches the marker):

- ``ct1/``            1,000 CT slices of one study (512x512, 16-bit, ~0.5 MB each)
- ``ct4/sender1..4/`` 250 CT slices each, one patient and study per sender
- ``dx/``             20 DX images of ~10 MB (2236x2236, 16-bit), one study

bench/web keeps its own objects (a CT series, DX of another size, a 1 GB XA
cine made by ``xa_cine``) under ``bench/out/web-data``.

Headers follow what a CT or DX modality sends (patient, study, series,
equipment, frame of reference, image plane, pixel, CT/DX image, VOI LUT
modules) in Specific Character Set ISO_IR 192 with Vietnamese names.
Everything is seeded, so the same files come out every time.
"""

from __future__ import annotations

import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    XRayAngiographicImageStorage,
    UID,
)

from common import OUT

DATA = OUT / "data"
#: Bump when the generated files change, so old caches are rebuilt.
VERSION = "2"
CT_SIZE = 512
DX_SIZE = 2236  # 2236 x 2236 x 2 bytes = 10.0 MB of pixel data
INSTITUTION = "Bệnh viện Đa khoa huyện Cần Giuộc"


@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    cccd: str


@dataclass(frozen=True)
class Study:
    key: str
    patient: Patient
    accession: str
    description: str
    date: str
    time: str
    referring: str


@dataclass(frozen=True)
class Folder:
    """One generated folder: its path, file count and total bytes."""

    path: Path
    files: int
    size: int


def uid(*parts: str) -> str:
    """A deterministic 2.25 UID (name-based UUID, PS3.5 B.2)."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join(('minipacs/bench/v1', *parts))).int}"


PATIENTS = [
    Patient("Nguyễn^Văn Hùng", "BN23004411", "19620214", "M", "061Y", "080062001357"),
    Patient("Trần^Thị Thu Hà", "BN24011873", "19790903", "F", "044Y", "080179002468"),
    Patient("Lê^Quốc Bảo", "BN24020196", "19880611", "M", "035Y", "080088003579"),
    Patient("Phạm^Thị Ngọc Ánh", "BN25003320", "19550128", "F", "068Y", "080155004680"),
    Patient("Huỳnh^Văn Đức", "BN25007745", "19710817", "M", "052Y", "080171005791"),
    Patient("Đặng^Thị Mỹ Dung", "BN25009902", "19940305", "F", "029Y", "080194006802"),
]


def ensure() -> dict[str, Folder]:
    """Generate the test data unless a complete cache of this VERSION exists."""
    marker = DATA / ".complete"
    if not (marker.is_file() and marker.read_text().strip() == VERSION):
        shutil.rmtree(DATA, ignore_errors=True)
        print(f"generating test data in {DATA} (once; reused while present) ...", flush=True)
        rng = np.random.default_rng(20231123)
        ct_series(DATA / "ct1", new_study("ct1", PATIENTS[0], "CT ngực bụng có tiêm thuốc"), 1000, rng)
        for n in range(1, 5):
            study = new_study(f"ct4-{n}", PATIENTS[n], "CT sọ não không tiêm thuốc")
            ct_series(DATA / "ct4" / f"sender{n}", study, 250, rng)
        dx_study(DATA / "dx", new_study("dx", PATIENTS[5], "X-quang cột sống thắt lưng"), 20, rng)
        marker.write_text(VERSION + "\n")
    return {
        "ct1": _describe(DATA / "ct1"),
        "dx": _describe(DATA / "dx"),
        **{f"ct4/{n}": _describe(DATA / "ct4" / f"sender{n}") for n in range(1, 5)},
    }


def _describe(folder: Path) -> Folder:
    files = sorted(folder.glob("*.dcm"))
    return Folder(folder, len(files), sum(f.stat().st_size for f in files))


def new_study(key: str, patient: Patient, description: str) -> Study:
    accession = f"{key.upper().replace('-', '')}2311230{len(key)}"[:16]
    return Study(key, patient, accession, description, "20231123", "091522",
                 "Võ^Minh Tâm")  # fmt: skip


def base(study: Study, series: int, number: int, sop_class: str, modality: str) -> Dataset:
    """SOP common, patient, general study/series/equipment: what every image carries."""
    p = study.patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = study.time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(study.key, str(series), str(number))
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.date
    ds.StudyTime = ds.SeriesTime = study.time
    ds.AcquisitionTime = ds.ContentTime = f"{study.time}.{number:06d}"
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = "SIEMENS" if modality == "CT" else "Canon Inc."
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = "Thị trấn Cần Giuộc, huyện Cần Giuộc, tỉnh Long An"
    ds.ReferringPhysicianName = study.referring
    ds.StationName = "CT01" if modality == "CT" else "DR02"
    ds.StudyDescription = study.description
    ds.SeriesDescription = "Thorax-Abdomen 1.0 Br40" if modality == "CT" else "L-spine AP"
    ds.InstitutionalDepartmentName = "Khoa Chẩn đoán hình ảnh"
    ds.OperatorsName = "Bùi^Văn Long"
    ds.ManufacturerModelName = "SOMATOM go.Now" if modality == "CT" else "CXDI-710C Wireless"
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = "BVDKCG"
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    item = Dataset()
    item.PatientID = p.cccd
    item.IssuerOfPatientID = "CCCD"
    item.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([item])
    ds.PatientAge = p.age
    ds.PatientWeight = "58"
    ds.DeviceSerialNumber = "100234"
    ds.SoftwareVersions = "syngo CT VA40A" if modality == "CT" else "CXDI Control NE 3.2"
    ds.ProtocolName = "ThoraxAbdomen_Routine" if modality == "CT" else "LSPINE_AP"
    ds.StudyInstanceUID = uid(study.key, "study")
    ds.SeriesInstanceUID = uid(study.key, str(series))
    ds.StudyID = study.accession[-6:]
    ds.SeriesNumber = series
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = number
    request = Dataset()
    request.RequestedProcedureID = study.accession
    request.ScheduledProcedureStepID = study.accession + "1"
    request.AccessionNumber = study.accession
    ds.RequestAttributesSequence = Sequence([request])
    ds.PerformedProcedureStepStartDate = study.date
    ds.PerformedProcedureStepStartTime = study.time
    ds.PerformedProcedureStepID = study.accession
    return ds


def ct_series(folder: Path, study: Study, count: int, rng: np.random.Generator) -> None:
    """`count` contiguous 1 mm axial slices of a body phantom (HU + 1024, 12 bits stored)."""
    y, x = np.mgrid[:CT_SIZE, :CT_SIZE].astype(np.float32) - CT_SIZE / 2
    body = ((x / 230) ** 2 + (y / 170) ** 2 < 1).astype(np.float32)
    for i in range(count):
        z = -600.0 + i
        organ = (((x - 40 * np.sin(i / 90)) / 70) ** 2 + ((y + 10) / 55) ** 2 < 1)
        hu = -1000 + body * 1040 + organ * 30 + rng.normal(0, 12, (CT_SIZE, CT_SIZE))
        pixels = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
        ds = base(study, 2, i + 1, CTImageStorage, "CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ScanOptions = "HELICAL MODE"
        ds.SliceThickness = "1"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = "380"
        ds.DistanceSourceToDetector = "1113"
        ds.DistanceSourceToPatient = "595"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "152"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "1000"
        ds.XRayTubeCurrent = "180"
        ds.Exposure = "90"
        ds.FilterType = "BODY"
        ds.GeneratorPower = "22"
        ds.FocalSpots = "0.7"
        ds.ConvolutionKernel = "Br40d"
        ds.PatientPosition = "FFS"
        ds.ImagePositionPatient = ["-190", "-190", f"{z:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = uid(study.key, "for")
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{z:.1f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = CT_SIZE
        ds.PixelSpacing = ["0.7421875", "0.7421875"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["ABDOMEN", "LUNG"]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = pixels.tobytes()
        write(ds, folder / f"CT{i + 1:05d}.dcm")


def dx_study(folder: Path, study: Study, count: int, rng: np.random.Generator,
             rows: int = DX_SIZE, columns: int = DX_SIZE) -> None:  # fmt: skip
    """`count` DX images of `rows` x `columns` (DX_SIZE square by default), 14 bits stored in 16."""
    y, x = np.mgrid[:rows, :columns].astype(np.float32)
    y, x = y / rows, x / columns
    base_image = 2000 + 9000 * np.exp(-(((x - 0.5) / 0.18) ** 2)) * (0.6 + 0.4 * np.cos(y * 40))
    for i in range(count):
        noise = rng.integers(0, 200, (rows, columns), dtype=np.uint16)
        pixels = (base_image.astype(np.uint16) + noise) & 0x3FFF
        ds = base(study, 1 + i // 4, i + 1, DigitalXRayImageStorageForPresentation, "DX")
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.BodyPartExamined = "LSPINE"
        ds.ViewPosition = "AP"
        ds.ViewCodeSequence = Sequence([_code("399348003", "SCT", "antero-posterior")])
        ds.AnatomicRegionSequence = Sequence([_code("122496007", "SCT", "Lumbar spine")])
        ds.PatientOrientation = ["R", "F"]
        ds.ImageLaterality = "U"
        ds.PositionerType = "COLUMN"
        ds.AcquisitionContextSequence = Sequence()
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = 1
        ds.PresentationLUTShape = "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.BurnedInAnnotation = "NO"
        ds.KVP = "80"
        ds.ExposureTime = "32"
        ds.XRayTubeCurrent = "250"
        ds.DistanceSourceToDetector = "1100"
        ds.ImagerPixelSpacing = ["0.125", "0.125"]
        ds.PixelSpacing = ["0.125", "0.125"]
        ds.DetectorType = "SCINTILLATOR"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated = 16
        ds.BitsStored = 14
        ds.HighBit = 13
        ds.PixelRepresentation = 0
        ds.WindowCenter = "8192"
        ds.WindowWidth = "16384"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.PixelData = pixels.tobytes()
        write(ds, folder / f"DX{i + 1:03d}.dcm")


def xa_cine(path: Path, study: Study, frames: int, rng: np.random.Generator, size: int = 1024) -> None:
    """One uncompressed XA cine run of `frames` frames of `size` square, 8 bits: `frames` MiB at 1024.

    The pixel data is written straight to the file a frame at a time, so a
    1 GB object never sits in memory.
    """
    ds = base(study, 1, 1, XRayAngiographicImageStorage, "XA")
    ds.Manufacturer, ds.ManufacturerModelName, ds.StationName = "Philips", "Azurion 7", "CATH01"
    ds.SeriesDescription, ds.ProtocolName = "Coronary LCA cine", "CORO_LCA"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.PixelIntensityRelationship = "LOG"
    ds.KVP = "78"
    ds.RadiationSetting = "GR"
    ds.ExposureTime = "7"
    ds.XRayTubeCurrent = "650"
    ds.DistanceSourceToDetector = "1195"
    ds.PositionerMotion = "STATIC"
    ds.PositionerPrimaryAngle = "-30"
    ds.PositionerSecondaryAngle = "20"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = "66.7"
    ds.CineRate = 15
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    write(ds, path)
    # A vessel tree moving over a noisy background: 16 frames, repeated.
    y, x = np.mgrid[:size, :size].astype(np.float32) / size
    cycle = []
    for k in range(16):
        vessel = np.abs(y - 0.5 - 0.2 * np.sin(x * 9 + k / 3)) < 0.01
        frame = 170 - vessel * 90 + rng.integers(0, 20, (size, size))
        cycle.append(frame.astype(np.uint8).tobytes())
    length = frames * size * size
    with path.open("ab") as f:
        # (7FE0,0010) OB, explicit VR little endian: tag, VR, 2 reserved bytes, 4-byte length.
        f.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", length + length % 2))
        for i in range(frames):
            f.write(cycle[i % len(cycle)])
        if length % 2:
            f.write(b"\0")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def write(ds: Dataset, path: Path) -> None:
    """`ds` as a Part 10 file in Explicit VR Little Endian, with the bench's file meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(uid("implementation"))
    meta.ImplementationVersionName = "MINIPACS_BENCH"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
