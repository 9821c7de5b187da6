"""archive.part10: parsing every transfer syntax family, refusing damaged objects,
and the File Meta Information we write in front of every stored dataset."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
    RLELossless,
)

from archive import part10
from archive.errors import InvalidInstance
from tests.archive.helpers import bare, make_dataset, part10 as to_part10
from tests.conftest import testdata as bundled

FAMILIES = [
    ("CT_small.dcm", ExplicitVRLittleEndian),
    ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
    ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
    ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
    ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit),
    ("JPEG-lossy.dcm", JPEGExtended12Bit),
    ("SC_rgb_jpeg_gdcm.dcm", JPEGLosslessSV1),
    ("JPEGLSNearLossless_08.dcm", JPEGLSNearLossless),
    ("JPEG2000.dcm", JPEG2000),
    ("GDCMJ2K_TextGBR.dcm", JPEG2000Lossless),
    ("MR_small_RLE.dcm", RLELossless),
]

# (7FE0,0010) OB of undefined length: encapsulated pixel data in explicit VR LE.
ENCAPSULATED_PIXEL_DATA = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"


def parse_bytes(data: bytes) -> part10.ParsedObject:
    return part10.parse(io.BytesIO(data))


def meta_end(data: bytes) -> int:
    """Offset of the dataset proper in a Part 10 file, from its group length."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return 144 + int.from_bytes(data[140:144], "little")


@pytest.mark.parametrize(("name", "transfer_syntax"), FAMILIES, ids=[n for n, _ in FAMILIES])
def test_parses_every_transfer_syntax_family(name: str, transfer_syntax: str) -> None:
    path = bundled(name)
    data = path.read_bytes()
    expected = dcmread(path, stop_before_pixels=True)
    with open(path, "rb") as stream:
        parsed = part10.parse(stream)
        assert stream.tell() == 0  # left rewound for the caller
    assert parsed.transfer_syntax == transfer_syntax
    assert parsed.dataset_offset == meta_end(data)
    assert parsed.total_size == len(data)
    assert parsed.header.SOPInstanceUID == expected.SOPInstanceUID
    assert parsed.header.SOPClassUID == expected.SOPClassUID
    assert "PixelData" not in parsed.header  # pixel data is never read
    # The same answer from an in-memory stream (no fileno()).
    again = parse_bytes(data)
    assert (again.transfer_syntax, again.dataset_offset, again.total_size) == (
        parsed.transfer_syntax, parsed.dataset_offset, parsed.total_size)  # fmt: skip


@pytest.mark.parametrize(
    ("implicit", "little", "transfer_syntax"),
    [
        (True, True, ImplicitVRLittleEndian),
        (False, True, ExplicitVRLittleEndian),
        (False, False, ExplicitVRBigEndian),
    ],
)
def test_bare_dataset_without_preamble_or_meta(implicit: bool, little: bool, transfer_syntax: str) -> None:
    ds = make_dataset(pixel_bytes=512)
    data = bare(ds, implicit=implicit, little=little)
    parsed = parse_bytes(data)
    assert parsed.transfer_syntax == transfer_syntax
    assert parsed.dataset_offset == 0
    assert parsed.total_size == len(data)
    assert parsed.header.SOPInstanceUID == ds.SOPInstanceUID
    assert str(parsed.header.PatientName) == "Nguyễn^Văn An"


def test_bare_truncated_dataset_is_refused() -> None:
    data = bare(make_dataset(pixel_bytes=512))
    with pytest.raises(InvalidInstance, match="truncated"):
        parse_bytes(data[:-100])


# --- damaged objects ------------------------------------------------------------


def test_cut_inside_the_file_meta() -> None:
    data = bundled("CT_small.dcm").read_bytes()
    for cut in (140, 150, 200, meta_end(data) - 3):
        with pytest.raises(InvalidInstance):
            parse_bytes(data[:cut])


def test_cut_inside_the_dataset_header() -> None:
    data = bundled("CT_small.dcm").read_bytes()
    start = meta_end(data)
    for cut in (start + 3, start + 9, start + 50, start + 400):
        # Depending on where the cut falls: "empty", "truncated", or a value
        # pydicom cannot decode (a cut Specific Character Set).
        with pytest.raises(InvalidInstance):
            parse_bytes(data[:cut])


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_cut_mid_native_pixel_data(name: str) -> None:
    data = bundled(name).read_bytes()
    for cut in (len(data) - 1, len(data) - 1000, len(data) // 2 + 2000):
        with pytest.raises(InvalidInstance, match="truncated"):
            parse_bytes(data[:cut])


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "GDCMJ2K_TextGBR.dcm",
                                  "MR_small_RLE.dcm"])  # fmt: skip
def test_cut_mid_encapsulated_fragment(name: str) -> None:
    data = bundled(name).read_bytes()
    pixel = data.index(ENCAPSULATED_PIXEL_DATA) + len(ENCAPSULATED_PIXEL_DATA)
    bot_length = int.from_bytes(data[pixel + 4 : pixel + 8], "little")
    fragment = pixel + 8 + bot_length  # first fragment's item tag
    assert data[fragment : fragment + 4] == b"\xfe\xff\x00\xe0"
    cuts = [
        pixel + 2,  # inside the Basic Offset Table item tag
        fragment,  # right after the offset table, before any fragment
        fragment + 6,  # inside the fragment's item header
        fragment + 8 + 20,  # inside the first fragment's bytes
    ]
    for cut in cuts:
        with pytest.raises(InvalidInstance, match="truncated"):
            parse_bytes(data[:cut])


def test_missing_sequence_delimiter_after_fragments() -> None:
    data = bundled("JPEG2000.dcm").read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    with pytest.raises(InvalidInstance, match="truncated"):
        parse_bytes(data[:-8])


def test_fragment_longer_than_the_file() -> None:
    data = bytearray(bundled("JPEG2000.dcm").read_bytes())
    pixel = data.index(ENCAPSULATED_PIXEL_DATA) + len(ENCAPSULATED_PIXEL_DATA)
    fragment = pixel + 8 + int.from_bytes(data[pixel + 4 : pixel + 8], "little")
    data[fragment + 4 : fragment + 8] = struct.pack("<I", len(data))
    with pytest.raises(InvalidInstance, match="truncated"):
        parse_bytes(bytes(data))


def test_truncated_deflate_stream() -> None:
    data = bundled("image_dfl.dcm").read_bytes()
    start = meta_end(data)
    for cut in (start + 10, (start + len(data)) // 2, len(data) - 20):
        with pytest.raises(InvalidInstance):
            parse_bytes(data[:cut])


def test_deflated_dataset_that_is_itself_truncated() -> None:
    # A sender that deflates a truncated dataset produces a valid deflate
    # stream around an incomplete dataset: the inflated bytes must be checked too.
    ds = make_dataset(pixel_bytes=4096)
    inner = bare(ds, implicit=False)[:-1000]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(inner) + compressor.flush()
    if len(deflated) % 2:
        deflated += b"\x00"
    meta = part10.file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian)
    with pytest.raises(InvalidInstance, match="truncated"):
        parse_bytes(meta + deflated)


def test_complete_deflated_dataset_made_here_is_accepted() -> None:
    ds = make_dataset(pixel_bytes=4096)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(bare(ds, implicit=False)) + compressor.flush()
    if len(deflated) % 2:
        deflated += b"\x00"
    meta = part10.file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian)
    parsed = parse_bytes(meta + deflated)
    assert parsed.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert parsed.dataset_offset == len(meta)
    assert parsed.header.SOPInstanceUID == ds.SOPInstanceUID


def test_garbage_bytes() -> None:
    rng = random.Random(20261120)
    samples = [
        bytes(rng.getrandbits(8) for _ in range(1000)),
        b"This is not a DICOM file, it is a letter to the radiology department.\n" * 20,
        b"\x00" * 132,
        b"\x00" * 128 + b"DICM",
        b"\x00" * 128 + b"DICM" + bytes(rng.getrandbits(8) for _ in range(500)),
        b"%PDF-1.4\n" + bytes(rng.getrandbits(8) for _ in range(2000)),
    ]
    for data in samples:
        with pytest.raises(InvalidInstance):
            parse_bytes(data)


def test_zero_length_and_empty_dataset() -> None:
    with pytest.raises(InvalidInstance, match="empty"):
        parse_bytes(b"")
    ds = make_dataset()
    meta_only = part10.file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    with pytest.raises(InvalidInstance, match="empty"):
        parse_bytes(meta_only)


def test_meta_without_transfer_syntax() -> None:
    with pytest.raises(InvalidInstance, match="Transfer Syntax"):
        parse_bytes(bundled("meta_missing_tsyntax.dcm").read_bytes())


@pytest.mark.parametrize("vr", [b"zz", b"\x00\x00", b"pn", b"P1"])
def test_invalid_explicit_vr(vr: bytes) -> None:
    data = to_part10(make_dataset())
    at = data.index(b"\x10\x00\x10\x00PN")  # (0010,0010) PatientName
    damaged = data[: at + 4] + vr + data[at + 6 :]
    with pytest.raises(InvalidInstance, match="invalid VR"):
        parse_bytes(damaged)


def test_element_length_running_past_the_end() -> None:
    data = to_part10(make_dataset())
    short_vr = struct.pack("<HH2sH", 0x0011, 0x0010, b"LO", 100) + b"ABCD"
    long_vr = struct.pack("<HH2sHI", 0x0011, 0x1010, b"UT", 0, 1000) + b"ABCD"
    for tail in (short_vr, long_vr):
        with pytest.raises(InvalidInstance, match="truncated"):
            parse_bytes(data + tail)


def test_item_running_past_its_sequence() -> None:
    # A defined-length sequence whose item claims more bytes than the sequence holds.
    item_body = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 2) + b"T1"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, len(item_body) + 4) + item_body
    seq = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, len(item)) + item
    data = to_part10(make_dataset()) + seq + struct.pack("<HH2sH", 0x0040, 0xA731, b"LO", 2) + b"XX"
    with pytest.raises(InvalidInstance):
        parse_bytes(data)


# --- nesting ------------------------------------------------------------------------


def _nested_explicit(depth: int, undefined: bool) -> bytes:
    """`depth` levels of ContentSequence (0040,A730), each item holding one CodeValue."""
    inner = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 2) + b"X "
    for _ in range(depth):
        if undefined:
            item = (struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
                    + struct.pack("<HHI", 0xFFFE, 0xE00D, 0))  # fmt: skip
            seq = (struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + item
                   + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))  # fmt: skip
        else:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            seq = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, len(item)) + item
        inner = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 2) + b"X " + seq
    return inner


def _with_nesting(depth: int, undefined: bool) -> bytes:
    return to_part10(make_dataset()) + _nested_explicit(depth, undefined)


@pytest.mark.parametrize("undefined", [True, False], ids=["undefined-length", "defined-length"])
def test_reasonable_nesting_is_accepted(undefined: bool) -> None:
    parsed = parse_bytes(_with_nesting(20, undefined))
    assert parsed.header.ContentSequence[0].CodeValue == "X"


@pytest.mark.parametrize("undefined", [True, False], ids=["undefined-length", "defined-length"])
@pytest.mark.parametrize("depth", [40, 3000])
def test_deep_nesting_is_refused(depth: int, undefined: bool) -> None:
    with pytest.raises(InvalidInstance):
        parse_bytes(_with_nesting(depth, undefined))


def test_pydicom_written_sequences_are_walked() -> None:
    ds = make_dataset()
    item = Dataset()
    item.CodeValue = "T-A0100"
    item.CodingSchemeDesignator = "SRT"
    ds.ProcedureCodeSequence = Sequence([item])
    parsed = parse_bytes(to_part10(ds))
    assert parsed.header.ProcedureCodeSequence[0].CodeValue == "T-A0100"


# --- file_meta_bytes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sop_instance", "transfer_syntax"),
    [
        ("1.2.826.0.1.3680043.10.9999.3.1", ExplicitVRLittleEndian),  # odd length
        ("1.2.826.0.1.3680043.10.9999.3.10", JPEG2000Lossless),  # even length
        ("2.25.261358411426359307150392651447306092329", ImplicitVRLittleEndian),
    ],
)
def test_file_meta_reads_back_with_pydicom(
    sop_instance: str, transfer_syntax: str, tmp_path: Path
) -> None:
    data = part10.file_meta_bytes(CTImageStorage, sop_instance, transfer_syntax)
    assert data[:128] == b"\x00" * 128 and data[128:132] == b"DICM"
    stream = io.BytesIO(data[132:])
    (tmp_path / "meta.dcm").write_bytes(data)
    meta = read_file_meta_info(tmp_path / "meta.dcm")
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.MediaStorageSOPInstanceUID == sop_instance
    assert meta.TransferSyntaxUID == transfer_syntax
    assert meta.ImplementationClassUID == part10.IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == part10.IMPLEMENTATION_VERSION_NAME
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    # The group length counts every byte after itself.
    assert meta.FileMetaInformationGroupLength == len(data) - 132 - 12
    assert stream.read(4) == b"\x02\x00\x00\x00"
    assert len(data) % 2 == 0
    # UIDs are padded with NUL, not space (PS3.5 9.1).
    if len(sop_instance) % 2:
        assert (sop_instance + "\x00").encode() in data


def test_file_meta_is_deterministic_and_parses_in_front_of_a_dataset() -> None:
    ds = make_dataset(pixel_bytes=256)
    a = part10.file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    b = part10.file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    assert a == b
    assert a != part10.file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian)
    whole = a + bare(ds, implicit=False)
    back = dcmread(io.BytesIO(whole))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.PixelData == ds.PixelData
    parsed = parse_bytes(whole)
    assert parsed.dataset_offset == len(a)
