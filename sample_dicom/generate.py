#!/usr/bin/env python3
"""Generate the synthetic sample studies shipped in ``sample_dicom/``.

The mini-PACS needs realistic DICOM to exercise ingest, storage, indexing and
viewing, but real patient images can never be committed.  This script builds
three small studies entirely from mathematical phantoms:

* ``ct/``  CT head, 20 axial 512x512 slices, Explicit VR Little Endian;
* ``dx/``  DX chest PA, 1536x1536 12-bit, JPEG 2000 Lossless;
* ``us/``  abdominal ultrasound: one RGB frame (Explicit VR Little Endian)
  and a 30-frame cine loop (JPEG Baseline, YBR_FULL_422).

Everything that could vary between runs is pinned (UIDs derived from names,
fixed dates, seeded RNGs, our own Implementation Class UID) so that
re-running the script yields byte-identical files; the test-suite relies on
that to detect any accidental change.  All text uses ``ISO_IR 192`` (UTF-8)
with Vietnamese names because the archive must round-trip diacritics.

Usage::

    python sample_dicom/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    UID,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

DEFAULT_OUT = Path(__file__).resolve().parent
UID_NAMESPACE = "minipacs/sample_dicom/v1"
IMPLEMENTATION_VERSION = "MINIPACS_SAMPLE"
INSTITUTION = "Bệnh viện Đa khoa huyện Cần Giuộc"
INSTITUTION_ADDRESS = "Thị trấn Cần Giuộc, huyện Cần Giuộc, tỉnh Long An"
SYNTHETIC_NOTE = "Ảnh tổng hợp (synthetic phantom) - không phải dữ liệu bệnh nhân thật"

Float = NDArray[np.float64]


@dataclass(frozen=True)
class Patient:
    """Demographics; ``cccd``/``bhyt`` are the citizen and insurance IDs."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    cccd: str
    bhyt: str


@dataclass(frozen=True)
class Study:
    """Study-level identifiers shared by every instance of one study."""

    key: str
    patient: Patient
    accession: str
    study_id: str
    description: str
    date: str
    time: str
    referring: str

    @property
    def uid(self) -> str:
        """Study Instance UID, derived from the study key (so it is stable)."""
        return uid(self.key, "study")


AN = Patient("Nguyễn^Văn An", "BN26001001", "19680315", "M", "058Y",
             "080068001234", "GD4800123456789")
DAO = Patient("Trần^Thị Đào", "BN26001002", "19750809", "F", "051Y",
              "080175004321", "HC4800987654321")
NHUNG = Patient("Lê^Thị Hồng Nhung", "BN26001003", "19920127", "F", "034Y",
                "080192007788", "DN4800246813579")

CT_STUDY = Study("ct-head", AN, "CT2611200001", "1001",
                 "CT sọ não không tiêm thuốc", "20261120", "081500",
                 "Phạm^Minh Tuấn")
DX_STUDY = Study("dx-chest", DAO, "DX2611200002", "1002",
                 "X-quang ngực thẳng (PA)", "20261120", "093000",
                 "Võ^Thị Mai")
US_STUDY = Study("us-abdomen", NHUNG, "US2611210003", "1003",
                 "Siêu âm ổ bụng tổng quát", "20261121", "140500",
                 "Đặng^Quốc Huy")


def uid(*parts: str) -> str:
    """Deterministic ``2.25.<int>`` UID from a name-based (SHA-1, v5) UUID.

    ``pydicom.uid.generate_uid(prefix=None)`` ignores ``entropy_srcs`` and
    returns a random UUID, so the derivation is done here instead; a v5 UUID
    is a valid ISO/IEC 9834-8 UUID, as Part 5 B.2 requires under ``2.25``.
    """
    name = "/".join((UID_NAMESPACE, *parts))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


def ds_str(value: float) -> str:
    """Format a DS value compactly (DS is limited to 16 characters)."""
    return f"{value:.10g}"


# --------------------------------------------------------------------------
# Shared DICOM scaffolding
# --------------------------------------------------------------------------

def base_dataset(study: Study, series: int, instance: int, sop_class: str,
                 modality: str) -> Dataset:
    """Patient, study, series, equipment and SOP common attributes.

    Split out so that every instance of every study carries the identical
    demographic block, which is what the archive's indexer keys on.
    """
    p = study.patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(study.key, f"series{series}", f"image{instance}")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.date
    ds.AcquisitionDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.ReferringPhysicianName = study.referring
    ds.TimezoneOffsetFromUTC = "+0700"
    ds.StudyDescription = study.description
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = "BVDKCG"
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = p.age
    ds.OtherPatientIDsSequence = other_ids(p)
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = uid(study.key, f"series{series}")
    ds.StudyID = study.study_id
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.ImageComments = SYNTHETIC_NOTE
    return ds


def other_ids(p: Patient) -> DicomSequence:
    """CCCD (citizen ID) and BHYT (health insurance) as Other Patient IDs."""
    items = []
    for value, issuer in ((p.cccd, "CCCD"), (p.bhyt, "BHYT")):
        item = Dataset()
        item.PatientID = value
        item.IssuerOfPatientID = issuer
        item.TypeOfPatientID = "TEXT"
        items.append(item)
    return DicomSequence(items)


def set_equipment(ds: Dataset, manufacturer: str, model: str, station: str,
                  serial: str, software: str) -> None:
    """General Equipment module."""
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.StationName = station
    ds.DeviceSerialNumber = serial
    ds.SoftwareVersions = software


def set_pixel_module(ds: Dataset, rows: int, cols: int, *, photometric: str,
                     samples: int, bits_stored: int, signed: bool = False) -> None:
    """Image Pixel module attributes (everything except Pixel Data)."""
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)


def write(ds: Dataset, path: Path, transfer_syntax: str) -> Path:
    """Write a Part 10 file with a fully pinned File Meta Information group."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(uid("implementation"))
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------
# Phantom geometry helpers
# --------------------------------------------------------------------------

def ellipse_r(x: Float, y: Float, cx: float, cy: float, a: float,
              b: float) -> Float:
    """Normalised elliptical radius: < 1 inside the ellipse, 1 on its edge."""
    return np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)


def soft(d: Float, width: float) -> Float:
    """Sigmoid edge: ~1 where ``d`` > 0, ~0 where ``d`` < 0 (blurry borders)."""
    return 1.0 / (1.0 + np.exp(-np.clip(d / width, -60, 60)))


def to_12bit(a: Float) -> NDArray[np.uint16]:
    """Round and clip to the 0..4095 range of a BitsStored=12 image."""
    out: NDArray[np.uint16] = np.clip(np.rint(a), 0, 4095).astype(np.uint16)
    return out


def box_blur(a: Float, ry: int, rx: int) -> Float:
    """Separable box blur (edge-padded), used to give speckle a grain size."""
    for axis, r in ((0, ry), (1, rx)):
        if r <= 0:
            continue
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
        n = a.shape[axis]
        hi = np.take(c, range(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lo = np.take(c, range(0, n), axis=axis)
        a = (hi - lo) / (2 * r + 1)
    return a


# --------------------------------------------------------------------------
# CT head
# --------------------------------------------------------------------------

CT_SIZE = 512
CT_SLICES = 20
CT_SPACING = 0.44921875          # 230 mm reconstruction diameter / 512
CT_STEP = 5.0                    # slice thickness == spacing, contiguous
CT_Z0 = -50.0                    # table position of the most caudal slice


def ct_head_slice(t: float, rng: np.random.Generator) -> NDArray[np.uint16]:
    """HU phantom of one axial head slice, returned as stored (HU + 1024).

    ``t`` runs 0 (skull base) to 1 (vertex); the head is an ellipsoid so the
    section shrinks towards the vertex, ventricles appear mid-way and the
    frontal sinus only at the base, so scrolling the stack looks plausible.
    """
    c = (np.arange(CT_SIZE) - (CT_SIZE - 1) / 2) * CT_SPACING
    x, y = np.meshgrid(c, c)                     # mm, y grows posteriorly
    s = float(np.sqrt(max(1 - ((t - 0.25) / 0.85) ** 2, 0.05)))
    a, b, cy = 72 * s, 92 * s, 4.0
    hu = np.full(x.shape, -1000.0)
    hu[ellipse_r(x, y, 0, cy, a, b) < 1] = 40            # scalp
    hu[ellipse_r(x, y, 0, cy, a - 5, b - 5) < 1] = 1000  # skull
    ai, bi = a - 11, b - 11
    rb = ellipse_r(x, y, 0, cy, ai, bi)
    theta = np.arctan2(y - cy, x)
    gyri = 0.012 * np.sin(26 * theta + 9 * t) + 0.008 * np.sin(41 * theta)
    hu[rb < 1] = 8                                       # CSF rim
    hu[rb < 0.975 + gyri] = 39                           # cortex
    hu[rb < 0.9 + 2 * gyri] = 29                         # white matter
    hu[(np.abs(x) < 0.8) & (rb < 0.95) & (np.abs(y - cy) > 25 * s)] = 60  # falx
    add_ventricles(hu, x, y, t)
    if t < 0.2:                                          # frontal sinus air
        hu[ellipse_r(x, y, 0, cy - b + 14, 16, 7) < 1] = -950
    hu += rng.normal(0.0, 3.0, hu.shape)
    return to_12bit(hu + 1024)


def add_ventricles(hu: Float, x: Float, y: Float, t: float) -> None:
    """Lateral ventricles (mid slices) and third ventricle (lower slices)."""
    lateral = max(0.0, 1 - ((t - 0.5) / 0.2) ** 2)
    if lateral > 0:
        for side in (-1, 1):
            r = ellipse_r(x, y, side * 10, -4, 6 * lateral + 1, 24 * lateral + 2)
            hu[r < 1] = 5
    if 0.25 < t < 0.4:
        hu[ellipse_r(x, y, 0, 6, 2.0, 10) < 1] = 5


def ct_dataset(index: int, pixels: NDArray[np.uint16]) -> Dataset:
    """One CT Image Storage instance with realistic acquisition tags."""
    z = CT_Z0 + index * CT_STEP
    ds = base_dataset(CT_STUDY, 2, index + 1, CTImageStorage, "CT")
    set_equipment(ds, "SIEMENS", "SOMATOM go.Now", "CTGN-CANGIUOC",
                  "100234", "syngo CT VA40A")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = "Sọ não 5mm H30s"
    ds.ProtocolName = "Head Routine"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.ScanOptions = "AXIAL"
    ds.SliceThickness = ds_str(CT_STEP)
    ds.SpacingBetweenSlices = ds_str(CT_STEP)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = "230"
    ds.DistanceSourceToDetector = "1113"
    ds.DistanceSourceToPatient = "595"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "145"
    ds.RotationDirection = "CW"
    ds.ExposureTime = 1000
    ds.XRayTubeCurrent = 250
    ds.Exposure = 250
    ds.FilterType = "0"
    ds.GeneratorPower = 30
    ds.FocalSpots = "0.7"
    ds.ConvolutionKernel = "H30s"
    ds.CTDIvol = 52.3
    ds.CTDIPhantomTypeCodeSequence = [
        code("113690", "DCM", "IEC Head Dosimetry Phantom")]
    ds.FrameOfReferenceUID = uid(CT_STUDY.key, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    origin = ds_str(-(CT_SIZE - 1) / 2 * CT_SPACING)
    ds.ImagePositionPatient = [origin, origin, ds_str(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = ds_str(z)
    ds.PixelSpacing = [ds_str(CT_SPACING), ds_str(CT_SPACING)]
    set_pixel_module(ds, CT_SIZE, CT_SIZE, photometric="MONOCHROME2",
                     samples=1, bits_stored=12)
    ds.WindowCenter = ["40", "500"]
    ds.WindowWidth = ["80", "2500"]
    ds.WindowCenterWidthExplanation = ["BRAIN", "BONE"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = pixels.tobytes()
    return ds


def build_ct(out: Path) -> list[Path]:
    """Write the 20-slice head CT series."""
    rng = np.random.default_rng(20261120)
    files = []
    for i in range(CT_SLICES):
        pixels = ct_head_slice(i / (CT_SLICES - 1), rng)
        files.append(write(ct_dataset(i, pixels),
                           out / "ct" / f"CT_{i + 1:03d}.dcm",
                           ExplicitVRLittleEndian))
    return files


# --------------------------------------------------------------------------
# DX chest
# --------------------------------------------------------------------------

DX_SIZE = 1536
DX_SPACING = 0.28                 # mm at the detector -> 430 mm field


def chest_phantom(rng: np.random.Generator) -> NDArray[np.uint16]:
    """12-bit PA chest radiograph phantom (MONOCHROME2: bright = dense).

    Built as a sum of soft-edged attenuation shapes (body, lungs, heart,
    spine, ribs, clavicles) so edges look radiographic without a blur pass.
    Columns run towards the patient's left, as on a PA viewing box.
    """
    c = np.arange(DX_SIZE) * DX_SPACING
    x, y = np.meshgrid(c - c[-1] / 2, c)          # mm; x: patient left
    body = soft(1 - ellipse_r(x, y, 0, 270, 180, 270), 0.02)
    body = np.maximum(body, soft(55 - np.abs(x), 3) * soft(160 - y, 3))
    width = 42 + 26 * np.clip((y - 80) / 190, 0, 1)   # apices are narrow
    lungs = sum(soft(1 - ellipse_r(x, y, s * 82, 210, width, 130), 0.04)
                for s in (-1, 1))
    heart = soft(1 - ellipse_r(x, y, 24, 300, 72, 62), 0.03)
    mediastinum = soft(34 - np.abs(x - 4), 4) * soft(y - 70, 6) * soft(320 - y, 6)
    spine = soft(19 - np.abs(x), 2) * (0.85 + 0.15 * np.cos(y / 28 * 2 * np.pi))
    density = (1.0 * body - 0.6 * lungs * (1 - 0.7 * heart) + 0.3 * heart
               + 0.35 * mediastinum * (1 - heart) + 0.3 * spine * body
               + ribs(x, y) * body)
    density += 0.04 * np.sin(x / 140) + rng.normal(0.0, 0.004, x.shape)
    return to_12bit(200 + 1700 * density)


def ribs(x: Float, y: Float) -> Float:
    """Posterior rib arcs and clavicles: thin soft bands over the lungs."""
    out = np.zeros_like(x)
    ax = np.abs(x)
    lateral = soft(150 - ax, 6) * soft(ax - 18, 3)
    for k in range(10):
        centre = 95 + 27 * k + 0.0045 * (ax - 20) ** 2 - 0.15 * ax
        out += 0.16 * soft(5.5 - np.abs(y - centre), 1.2) * lateral
    clavicle = 88 - 0.12 * (ax - 30) + 0.0012 * (ax - 90) ** 2
    out += 0.3 * soft(7 - np.abs(y - clavicle), 1.5) * soft(165 - ax, 5) * soft(ax - 25, 3)
    return out


def build_dx(out: Path) -> list[Path]:
    """Write the DX chest PA image, JPEG 2000 lossless encoded."""
    ds = base_dataset(DX_STUDY, 1, 1, DigitalXRayImageStorageForPresentation, "DX")
    set_equipment(ds, "Canon Inc.", "CXDI-710C Wireless", "DX-PHONG2",
                  "CX710-2231", "CXDI NE 3.10")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SeriesDescription = "Ngực thẳng PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageLaterality = "U"
    ds.PatientOrientation = ["L", "F"]
    ds.AnatomicRegionSequence = [code("51185008", "SCT", "Thorax")]
    ds.ViewCodeSequence = [code("399348003", "SCT", "postero-anterior")]
    ds.AcquisitionContextSequence = []
    ds.KVP = "120"
    ds.ExposureTime = 8
    ds.XRayTubeCurrent = 320
    ds.Exposure = 3
    ds.DistanceSourceToDetector = "1800"
    ds.PositionerType = "COLUMN"
    ds.ImagerPixelSpacing = [ds_str(DX_SPACING), ds_str(DX_SPACING)]
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = "CXDI710C-01"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    set_pixel_module(ds, DX_SIZE, DX_SIZE, photometric="MONOCHROME2",
                     samples=1, bits_stored=12)
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = "1900"
    ds.WindowWidth = "3200"
    ds.PresentationLUTShape = "IDENTITY"
    pixels = chest_phantom(np.random.default_rng(20261120 + 2))
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg",
                generate_instance_uid=False)
    return [write(ds, out / "dx" / "DX_001.dcm", JPEG2000Lossless)]


def code(value: str, scheme: str, meaning: str) -> Dataset:
    """A single coded-entry item (Code Value / Scheme / Meaning)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# --------------------------------------------------------------------------
# Ultrasound abdomen
# --------------------------------------------------------------------------

US_ROWS, US_COLS = 480, 640
US_MM_PER_PX = 0.372              # 16 cm displayed depth over 430 rows
US_APEX = (320.0, -60.0)          # virtual apex of the curved-array fan
US_R0, US_R1 = 100.0, 530.0       # fan radii in pixels
US_HALF_ANGLE = np.deg2rad(35.0)
US_FRAMES = 30
US_FRAME_TIME_MS = 50.0


def fan_geometry() -> tuple[Float, Float, Float]:
    """Radius (px), angle (rad) and in-fan mask for every display pixel."""
    yy, xx = np.mgrid[0:US_ROWS, 0:US_COLS].astype(np.float64)
    r = np.hypot(xx - US_APEX[0], yy - US_APEX[1])
    th = np.arctan2(xx - US_APEX[0], yy - US_APEX[1])
    inside = (r >= US_R0) & (r <= US_R1) & (np.abs(th) <= US_HALF_ANGLE)
    return r, th, inside.astype(np.float64)


def echo_map(r: Float, th: Float, shift: float) -> Float:
    """Echogenicity of a right-subcostal liver view, moved by breathing.

    Liver parenchyma, an anechoic gallbladder with posterior enhancement,
    a portal vein with bright walls and a bright diaphragm arc.
    """
    x = r * np.sin(th) * US_MM_PER_PX
    y = (r * np.cos(th) - US_R0) * US_MM_PER_PX - shift   # depth in mm
    e = 0.55 + 0.05 * np.sin(x / 9) * np.cos(y / 13)
    gb = ellipse_r(x, y, -22, 62, 15, 24)
    beyond_gb = (np.abs(x + 22) < 12) & (y > 80)
    e = np.where(beyond_gb, e * 1.35, e)
    e = np.where(gb < 1, 0.03, e)
    pv = ellipse_r(x, y, 28, 88, 8, 6)
    e = np.where((pv > 1) & (pv < 1.25), 1.0, e)
    e = np.where(pv <= 1, 0.04, e)
    diaphragm = 135 + 0.004 * x ** 2
    e = np.where(np.abs(y - diaphragm) < 2.5, 1.8, e)
    return e


def speckle_field(rng: np.random.Generator, margin: int) -> Float:
    """Fully developed speckle, laterally elongated, larger than the display.

    Blurring a complex Gaussian field and taking its magnitude gives Rayleigh
    statistics with a grain size (blurring the magnitude would wash out the
    contrast).  The margin lets each frame take a shifted window so the
    speckle moves with the tissue, as on a real scanner, not flicker.
    """
    shape = (US_ROWS + 2 * margin, US_COLS + 2 * margin)
    re, im = (box_blur(rng.normal(0.0, 1.0, shape), 2, 4) for _ in range(2))
    amp: Float = np.hypot(re, im)
    return amp / float(amp.mean())


def us_frame(geom: tuple[Float, Float, Float], speckle: Float,
             phase: float) -> NDArray[np.uint8]:
    """Render one RGB display frame at breathing ``phase`` (0..1)."""
    r, th, inside = geom
    shift = 6.0 * np.sin(2 * np.pi * phase)
    margin = (speckle.shape[0] - US_ROWS) // 2
    dy = int(round(shift / US_MM_PER_PX))
    spk = speckle[margin - dy:margin - dy + US_ROWS, margin:margin + US_COLS]
    depth_gain = np.exp(-(r - US_R0) / 900.0)
    amp = echo_map(r, th, shift) * spk * depth_gain
    grey = np.log1p(12 * amp) / np.log1p(12 * 2.0) * 235 * inside
    rgb = np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2)
    add_overlays(rgb)
    frame: NDArray[np.uint8] = np.rint(rgb).astype(np.uint8)
    return frame


def add_overlays(rgb: Float) -> None:
    """Scanner furniture: grey-scale bar, 1 cm depth ticks, orange marker."""
    rgb[60:316, 8:18, :] = np.linspace(255, 0, 256)[:, None, None]
    for cm in range(17):
        row = int(round(US_R0 + US_APEX[1] + cm * 10 / US_MM_PER_PX))
        if row < US_ROWS:
            width = 9 if cm % 5 == 0 else 5
            rgb[row:row + 2, 628 - width:628, :] = 220
    yy, xx = np.mgrid[0:US_ROWS, 0:US_COLS]
    rgb[(xx - 60) ** 2 + (yy - 30) ** 2 < 36] = (255, 140, 0)


def us_common(ds: Dataset, frames: int) -> None:
    """Equipment, image and region-calibration tags shared by both US SOPs."""
    set_equipment(ds, "SAMSUNG MEDISON CO., LTD.", "HS40", "US-PHONG5",
                  "S0HS40-8812", "v2.01.00")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    ds.SeriesDescription = "Ổ bụng"
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.TransducerData = ["CA1-7AD", "", ""]
    ds.ProcessingFunction = "Abdomen"
    set_pixel_module(ds, US_ROWS, US_COLS, photometric="RGB", samples=3,
                     bits_stored=8)
    ds.SequenceOfUltrasoundRegions = [us_region()]
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = ds_str(US_FRAME_TIME_MS)
        ds.FrameIncrementPointer = 0x00181063           # -> Frame Time
        ds.CineRate = int(1000 / US_FRAME_TIME_MS)
        ds.RecommendedDisplayFrameRate = int(1000 / US_FRAME_TIME_MS)
        ds.PreferredPlaybackSequencing = 0
        ds.StartTrim = 1
        ds.StopTrim = frames


def us_region() -> Dataset:
    """US Region Calibration: the fan is tissue, 2D, calibrated in cm."""
    reg = Dataset()
    reg.RegionSpatialFormat = 1
    reg.RegionDataType = 1
    reg.RegionFlags = 0
    reg.RegionLocationMinX0 = int(US_APEX[0] - US_R1 * np.sin(US_HALF_ANGLE))
    reg.RegionLocationMinY0 = int(US_R0 + US_APEX[1])
    reg.RegionLocationMaxX1 = int(US_APEX[0] + US_R1 * np.sin(US_HALF_ANGLE))
    reg.RegionLocationMaxY1 = US_ROWS - 1
    reg.PhysicalUnitsXDirection = 3
    reg.PhysicalUnitsYDirection = 3
    reg.PhysicalDeltaX = US_MM_PER_PX / 10
    reg.PhysicalDeltaY = US_MM_PER_PX / 10
    # The reference pixel (fan apex) is relative to the region's top-left.
    reg.ReferencePixelX0 = int(US_APEX[0]) - reg.RegionLocationMinX0
    reg.ReferencePixelY0 = int(US_APEX[1]) - reg.RegionLocationMinY0
    reg.TransducerFrequency = 3500
    return reg


def jpeg_baseline(frame: NDArray[np.uint8], quality: int = 85) -> bytes:
    """Encode an RGB frame as baseline JPEG with 4:2:2 chroma (YBR_FULL_422)."""
    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=quality,
                                       subsampling=1, optimize=False,
                                       progressive=False)
    return buf.getvalue()


def build_us(out: Path) -> list[Path]:
    """Write the single RGB frame and the JPEG Baseline cine loop."""
    rng = np.random.default_rng(20261121)
    geom = fan_geometry()
    speckle = speckle_field(rng, margin=24)

    still = base_dataset(US_STUDY, 1, 1, UltrasoundImageStorage, "US")
    us_common(still, 1)
    still.LossyImageCompression = "00"
    still.PixelData = us_frame(geom, speckle, 0.0).tobytes()
    files = [write(still, out / "us" / "US_001.dcm", ExplicitVRLittleEndian)]

    cine = base_dataset(US_STUDY, 1, 2, UltrasoundMultiFrameImageStorage, "US")
    us_common(cine, US_FRAMES)
    fragments = [jpeg_baseline(us_frame(geom, speckle, i / US_FRAMES))
                 for i in range(US_FRAMES)]
    cine.PhotometricInterpretation = "YBR_FULL_422"
    cine.LossyImageCompression = "01"
    ratio = US_FRAMES * US_ROWS * US_COLS * 3 / sum(map(len, fragments))
    cine.LossyImageCompressionRatio = f"{ratio:.2f}"
    cine.LossyImageCompressionMethod = "ISO_10918_1"
    cine.PixelData = encapsulate(fragments, has_bot=True)
    cine["PixelData"].VR = "OB"
    files.append(write(cine, out / "us" / "US_002_cine.dcm", JPEGBaseline8Bit))
    return files


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

def generate(out: Path) -> list[Path]:
    """Generate all studies under ``out``; return the files written."""
    return build_ct(out) + build_dx(out) + build_us(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: generate, then list files and sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output directory (default: the sample_dicom/ folder)")
    args = parser.parse_args(argv)
    files = generate(args.out)
    total = sum(p.stat().st_size for p in files)
    for p in files:
        print(f"{p.stat().st_size:>10,d}  {p}")
    print(f"{total:>10,d}  total ({len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
