"""viewer.render against pydicom's own pixel pipeline, pixel by pixel, on real and synthetic images.

References come from pydicom (`apply_modality_lut`, `apply_windowing`, `apply_voi`,
`convert_color_space`, `apply_color_lut`) or from the PS3.3 C.11.2 formulas written
out here, never from viewer.render itself. Grayscale results may differ from the
reference by at most one grey level: pydicom windows into the stored-value range
(e.g. 0..4095) and the reference rescales that to 0..255 in float64, while render
maps straight to 0..255, so the two round at slightly different points and a value
that lands on .5 can round either way. Colour results must match exactly.
"""

from __future__ import annotations

import copy
import io
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.processing import (
    apply_color_lut, apply_modality_lut, apply_voi, apply_windowing, convert_color_space,
)  # fmt: skip
from pydicom.pixels.utils import pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, SecondaryCaptureImageStorage, generate_uid

from viewer.render import (
    MAX_VIEWPORT, NoImage, RenderError, RenderRequest, UnsupportedImage, Viewport, Window,
    display_pixels, parse_quality, parse_viewport, parse_window, render, thumbnail,
)  # fmt: skip

SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"


def data_file(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, name
    return str(path)


def synthetic(pixels: npt.NDArray[Any], photometric: str = "MONOCHROME2", bits_stored: int | None = None,
              **attributes: Any) -> Dataset:  # fmt: skip
    """An uncompressed Secondary Capture image holding `pixels` (frames first when 3-D and grayscale)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ramp(shape: tuple[int, ...], low: int, high: int, dtype: str) -> npt.NDArray[Any]:
    """Every value from low to high, spread over an image of `shape`."""
    return np.linspace(low, high, int(np.prod(shape))).round().astype(dtype).reshape(shape)


def windowed_reference(ds: Dataset, frame: int = 0) -> npt.NDArray[np.float64]:
    """pydicom's Modality LUT then windowing, rescaled from apply_windowing's output range to 0..255."""
    values = apply_modality_lut(pixel_array(ds, index=frame), ds)
    shown = apply_windowing(values, ds)
    # apply_windowing's output range: the Modality LUT's, else the stored range through the rescale.
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, 2.0 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1
    elif ds.PixelRepresentation == 0:
        low, high = 0.0, 2.0**ds.BitsStored - 1
    else:
        low, high = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        low, high = (v * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for v in (low, high))
    return np.asarray(np.rint((shown - low) / (high - low) * 255), dtype=np.float64)


def with_window(ds: Dataset, center: float, width: float, function: str | None = None) -> Dataset:
    out = copy.deepcopy(ds)
    out.WindowCenter, out.WindowWidth = center, width
    if function:
        out.VOILUTFunction = function
    return out


def max_difference(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


# --- grayscale: Modality LUT, VOI, MONOCHROME1 ----------------------------------------------


@pytest.mark.parametrize(("name", "window"), [
    ("MR_small.dcm", None),                       # header window, signed 16-bit
    ("MR_small_RLE.dcm", None),
    ("MR_small_jp2klossless.dcm", None),
    ("MR_small_jpeg_ls_lossless.dcm", None),
    ("MR_small_bigendian.dcm", None),
    ("693_J2KI.dcm", None),                       # JPEG 2000, 14 of 16 bits, rescale -1024
    ("J2K_pixelrep_mismatch.dcm", None),          # multi-valued header window: the first one
    ("CT_small.dcm", (40.0, 400.0)),              # no header window: the request's
    ("JPGExtended.dcm", (1000.0, 1500.0)),        # JPEG extended 12-bit
    ("JPEGLSNearLossless_16.dcm", (30000.0, 40000.0)),
])  # fmt: skip
def test_grayscale_matches_pydicom_windowing(name: str, window: tuple[float, float] | None) -> None:
    ds = dcmread(data_file(name))
    ours = display_pixels(ds, 0, Window(*window) if window else None)
    reference = windowed_reference(with_window(ds, *window) if window else ds)
    assert ours.dtype == np.uint8 and ours.flags.c_contiguous
    assert max_difference(ours, reference) <= 1


def test_first_of_several_header_windows_and_the_stored_file_read_as_a_stream() -> None:
    path = SAMPLES / "ct" / "CT_010.dcm"
    ds = dcmread(path)
    assert list(ds.WindowCenter) == [40, 500]
    with open(path, "rb") as stream:
        ours = display_pixels(stream, 0)
    assert max_difference(ours, windowed_reference(with_window(ds, 40, 80))) <= 1


def test_request_window_overrides_the_header() -> None:
    ds = dcmread(data_file("MR_small.dcm"))  # header: 600 / 1600
    ours = display_pixels(ds, 0, Window(300, 200))
    assert max_difference(ours, windowed_reference(with_window(ds, 300, 200))) <= 1
    assert max_difference(ours, display_pixels(ds, 0)) > 50


def test_linear_exact_and_sigmoid_follow_the_ps3_3_formulas() -> None:
    ds = dcmread(data_file("CT_small.dcm"))
    x = apply_modality_lut(ds.pixel_array, ds)
    c, w = 40.0, 350.0
    exact = np.clip((x - c) / w + 0.5, 0, 1) * 255  # C.11.2.1.3.2
    with np.errstate(over="ignore"):
        sigmoid = 255 / (1 + np.exp(-4 * (x - c) / w))  # C.11.2.1.3.1
    assert max_difference(display_pixels(ds, 0, Window(c, w, "LINEAR_EXACT")), np.rint(exact)) <= 1
    assert max_difference(display_pixels(ds, 0, Window(c, w, "SIGMOID")), np.rint(sigmoid)) <= 1
    # The header's VOI LUT Function is honoured too, and agrees with pydicom.
    for function in ("LINEAR_EXACT", "SIGMOID"):
        reference = windowed_reference(with_window(ds, c, w, function))
        assert max_difference(display_pixels(with_window(ds, c, w, function)), reference) <= 1


def test_linear_window_of_width_one_is_a_threshold() -> None:
    ds = synthetic(ramp((8, 16), 0, 127, "uint8"))
    shown = display_pixels(ds, 0, Window(64, 1))
    stored = ds.pixel_array
    assert (shown[stored <= 63] == 0).all() and (shown[stored >= 64] == 255).all()


def test_monochrome1_is_inverted_after_the_window() -> None:
    stored = ramp((64, 64), 0, 4095, "uint16")
    mono2 = synthetic(stored, "MONOCHROME2", 12, WindowCenter=2048, WindowWidth=4096)
    mono1 = synthetic(stored, "MONOCHROME1", 12, WindowCenter=2048, WindowWidth=4096)
    shown = display_pixels(mono1)
    assert max_difference(shown, 255 - windowed_reference(mono2)) <= 1
    assert shown[0, 0] == 255 and shown[-1, -1] == 0  # the lowest stored value is white


@pytest.mark.parametrize(("dtype", "low", "high", "bits"), [
    ("int8", -128, 127, 8), ("uint8", 0, 255, 8), ("int16", -2048, 2047, 12), ("uint16", 0, 65535, 16),
])  # fmt: skip
def test_signed_and_unsigned_8_and_16_bit_with_rescale(dtype: str, low: int, high: int, bits: int) -> None:
    ds = synthetic(ramp((32, 40), low, high, dtype), "MONOCHROME2", bits, RescaleSlope=2, RescaleIntercept=-100)
    center, width = (2 * (low + high) / 2 - 100), (high - low) * 1.5
    ours = display_pixels(ds, 0, Window(center, width))
    assert max_difference(ours, windowed_reference(with_window(ds, center, width))) <= 1


def test_32_bit_multi_frame_uses_the_float_path() -> None:
    ds = dcmread(data_file("rtdose.dcm"))  # 15 frames of 32-bit unsigned doses
    window = Window(4e6, 8e6)
    ours = display_pixels(ds, 7, window)
    reference = windowed_reference(with_window(ds, 4e6, 8e6), frame=7)
    assert max_difference(ours, reference) <= 1


def test_modality_lut_sequence() -> None:
    stored = ramp((32, 32), 0, 1023, "uint16")
    table = (4095 * (np.arange(1024) / 1023) ** 2).round().astype(int)  # a non-linear Modality LUT
    lut = Dataset()
    lut.LUTDescriptor = [1024, 0, 16]
    lut.LUTData = table.tolist()
    lut["LUTData"].VR = "US"
    lut.ModalityLUTType = "US"
    ds = synthetic(stored, "MONOCHROME2", 10, ModalityLUTSequence=Sequence([lut]))
    ours = display_pixels(ds, 0, Window(2000, 3000))
    assert max_difference(ours, windowed_reference(with_window(ds, 2000, 3000))) <= 1


@pytest.mark.parametrize(("first", "entries", "bits"), [(0, 4096, 16), (100, 256, 8), (-500, 1000, 12)])
def test_voi_lut_sequence(first: int, entries: int, bits: int) -> None:
    stored = ramp((40, 50), -600, 4095, "int16")
    table = ((2**bits - 1) * np.sqrt(np.arange(entries) / (entries - 1))).round().astype(int)
    lut = Dataset()
    lut.LUTDescriptor = [entries, first, bits]
    lut["LUTDescriptor"].VR = "SS"
    lut.LUTData = table.tolist()
    lut["LUTData"].VR = "US"
    ds = synthetic(stored, "MONOCHROME2", 13, VOILUTSequence=Sequence([lut]))
    # PS3.3 C.11.2.1.1: below the first mapped value the first entry, past the end the last.
    mapped = table[np.clip(stored.astype(int) - first, 0, entries - 1)]
    assert max_difference(display_pixels(ds), np.rint(mapped / (2**bits - 1) * 255)) <= 1
    if bits == 16:  # pydicom 3.0.2 agrees where its index dtype (the table's) holds every index
        assert (apply_voi(stored, ds) == mapped).all()


def test_enhanced_multi_frame_functional_groups_per_frame_window_and_shared_rescale() -> None:
    stored = np.stack([ramp((16, 16), 0, 4095, "uint16")] * 3)
    ds = synthetic(stored, "MONOCHROME2", 12)
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -1024, "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for center, width in [(0, 400), (1000, 2000), (-500, 100)]:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([voi])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    flat = synthetic(stored, "MONOCHROME2", 12, RescaleSlope=1, RescaleIntercept=-1024)
    for index, (center, width) in enumerate([(0, 400), (1000, 2000), (-500, 100)]):
        reference = windowed_reference(with_window(flat, center, width), frame=index)
        assert max_difference(display_pixels(ds, index), reference) <= 1


def test_automatic_window_spreads_the_percentile_range_and_ignores_padding() -> None:
    ds = dcmread(data_file("CT_small.dcm"))  # no window in the header; padding -2000
    stored = ds.pixel_array
    shown = display_pixels(ds)
    assert shown.min() == 0 and shown.max() == 255
    # 0.5 and 99.5 percentiles: only a few percent of the pixels end up clipped at each end.
    assert (shown == 0).mean() < 0.03 and (shown == 255).mean() < 0.03
    assert len(np.unique(shown)) > 150  # the grey range is used, not a few levels
    order = np.argsort(stored, axis=None, kind="stable")
    assert (np.diff(shown.ravel()[order].astype(int)) >= 0).all()  # brighter for higher values
    # Padding pixels do not take part: adding a block of them leaves the image as it was.
    padded = synthetic(np.vstack([stored, np.full((64, 128), -2000, np.int16)]), "MONOCHROME2", 16,
                       PixelPaddingValue=-2000, RescaleSlope=1, RescaleIntercept=-1024)  # fmt: skip
    padded["PixelPaddingValue"].VR = "SS"
    assert (display_pixels(padded)[:128] == shown).all()


def test_flat_image_renders_without_error() -> None:
    assert np.unique(display_pixels(synthetic(np.full((8, 8), 7, np.uint16), bits_stored=12))).size == 1


# --- colour ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "SC_rgb_rle.dcm", "examples_rgb_color.dcm", "ExplVR_BigEnd.dcm",  # RGB; the last one planar configuration 1
    "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_jpeg_dcmtk.dcm",  # YBR
    "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm",
])  # fmt: skip
def test_colour_becomes_rgb_exactly_as_pydicom_converts_it(name: str) -> None:
    ds = dcmread(data_file(name))
    raw = pixel_array(ds, raw=True)
    if ds.PhotometricInterpretation.startswith("YBR"):
        raw = convert_color_space(raw, "YBR_FULL", "RGB")
    expected = raw >> (8 * raw.dtype.itemsize - 8) if raw.dtype != np.uint8 else raw
    assert (display_pixels(ds) == expected).all()


@pytest.mark.parametrize("name", ["SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jls_lossy_line.dcm"])
def test_lossy_colour_is_close_to_the_uncompressed_original(name: str) -> None:
    """A second YBR to RGB conversion would be far off; lossy coding only a little."""
    original = dcmread(data_file("SC_rgb_rle.dcm")).pixel_array.astype(int)
    assert np.abs(display_pixels(data_file(name)).astype(int) - original).mean() < 4


def test_jpeg_2000_ybr_rct_is_rgb_once() -> None:
    ds = dcmread(SAMPLES / "us" / "US_001.dcm")
    rgb = ds.pixel_array
    ds.compress(JPEG2000Lossless, rgb, use_mct=True)
    ds.PhotometricInterpretation = "YBR_RCT"  # PS3.5 8.2.4: the lossless JPEG 2000 colour transform
    assert (display_pixels(io.BytesIO(part10(ds))) == rgb).all()


def test_palette_color() -> None:
    ds = dcmread(data_file("examples_palette.dcm"))  # 16-bit palette entries
    expected = apply_color_lut(ds.pixel_array, ds) >> 8
    assert (display_pixels(ds) == expected).all()


def test_colour_ignores_the_window() -> None:
    ds = dcmread(data_file("SC_rgb_rle.dcm"))
    assert (display_pixels(ds, 0, Window(10, 20)) == ds.pixel_array).all()


# --- sources and frames --------------------------------------------------------------------


def test_dataset_path_stream_and_unseekable_stream_give_the_same_pixels(tmp_path: Path) -> None:
    path = data_file("examples_ybr_color.dcm")  # 30-frame JPEG baseline cine
    from_dataset = display_pixels(dcmread(path), 12)
    data = Path(path).read_bytes()

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: Any) -> int:
            return self._inner.readinto(buffer)

    stream = io.BytesIO(data)
    stream.seek(1234)  # wherever the caller left it: the file starts at offset 0
    for source in (path, Path(path), stream, io.BufferedReader(Unseekable())):
        assert (display_pixels(source, 12) == from_dataset).all()
    assert (from_dataset == pixel_array(path, index=12)).all()
    assert max_difference(from_dataset, display_pixels(path, 0)) > 0


def test_deflated_file_from_a_stream() -> None:
    path = data_file("image_dfl.dcm")
    with open(path, "rb") as stream:
        assert (display_pixels(stream) == display_pixels(dcmread(path))).all()


def test_one_frame_of_a_large_multi_frame_is_read_alone(tmp_path: Path) -> None:
    frames = np.zeros((64, 512, 512), np.uint16)  # 32 MB of pixel data
    frames[40] = ramp((512, 512), 0, 4095, "uint16")
    path = tmp_path / "cine.dcm"
    path.write_bytes(part10(synthetic(frames, "MONOCHROME2", 12)))
    tracemalloc.start()
    try:
        with open(path, "rb") as stream:
            shown = display_pixels(stream, 40, Window(2048, 4096))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shown.max() == 255 and shown.min() == 0
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MB to render one 0.5 MB frame"


def test_no_pixel_data_and_missing_frames_are_not_found(tmp_path: Path) -> None:
    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    report.SOPInstanceUID = generate_uid()
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID
    report.Modality = "SR"
    data = part10(report)
    for source in (dcmread(io.BytesIO(data)), io.BytesIO(data)):
        with pytest.raises(NoImage, match="no pixel data") as caught:
            display_pixels(source)
        assert caught.value.http_status == 404
    ct = data_file("CT_small.dcm")
    for frame in (1, -1):
        with pytest.raises(NoImage, match="has 1 frame"):
            render(ct, frame, RenderRequest())
    with pytest.raises(NoImage, match="there is no frame 31: this instance has 30 frame"):
        display_pixels(data_file("examples_ybr_color.dcm"), 30)


def test_undecodable_pixel_data_is_unsupported() -> None:
    ds = synthetic(ramp((32, 32), 0, 4095, "uint16"), bits_stored=12)
    ds.PixelData = ds.PixelData[:100]  # truncated
    with pytest.raises(UnsupportedImage, match="cannot decode the pixel data") as caught:
        display_pixels(io.BytesIO(part10(ds)))
    assert caught.value.http_status == 501
    odd = synthetic(np.zeros((4, 4, 3), np.uint8), "RGB")
    odd.PhotometricInterpretation = "HSV"  # retired
    with pytest.raises(UnsupportedImage, match="HSV"):
        display_pixels(odd)


# --- encoding, viewport, thumbnail ---------------------------------------------------------


def test_png_holds_exactly_the_display_pixels_and_jpeg_decodes_to_the_right_size() -> None:
    for name, mode in (("CT_small.dcm", "L"), ("SC_rgb_rle.dcm", "RGB")):
        path = data_file(name)
        shown = display_pixels(path, 0, Window(40, 400))
        png = Image.open(io.BytesIO(render(path, 0, RenderRequest("image/png", Window(40, 400)))))
        assert png.format == "PNG" and png.mode == mode and (np.asarray(png) == shown).all()
        jpeg = Image.open(io.BytesIO(render(path, 0, RenderRequest(window=Window(40, 400)))))
        assert jpeg.format == "JPEG" and jpeg.mode == mode and jpeg.size == png.size
        assert np.abs(np.asarray(jpeg).astype(int) - np.asarray(png)).mean() < 3
    small = render(data_file("CT_small.dcm"), 0, RenderRequest(quality=10))
    large = render(data_file("CT_small.dcm"), 0, RenderRequest(quality=95))
    assert len(small) < len(large) / 2


@pytest.mark.parametrize(("name", "viewport", "size"), [
    ("CT_small.dcm", (200, 100), (100, 100)),     # 128x128 fits the smaller side
    ("JPGExtended.dcm", (512, 512), (128, 512)),  # 256 wide, 1024 high: aspect kept
    ("MR_small.dcm", (300, 256), (256, 256)),     # enlarged to fill the viewport
    ("examples_rgb_color.dcm", (64, 64), (64, 48)),
])  # fmt: skip
def test_viewport_fits_and_keeps_the_aspect_ratio(name: str, viewport: tuple[int, int], size: tuple[int, int]) -> None:
    data = render(data_file(name), 0, RenderRequest(viewport=Viewport(*viewport)))
    assert Image.open(io.BytesIO(data)).size == size


def test_viewport_source_region_crops_and_flips() -> None:
    path = data_file("MR_small.dcm")
    shown = display_pixels(path)

    def region(text: str) -> npt.NDArray[Any]:
        request = RenderRequest("image/png", viewport=parse_viewport(text))
        return np.asarray(Image.open(io.BytesIO(render(path, 0, request))))

    assert (region("32,24,16,8,32,24") == shown[8:32, 16:48]).all()
    assert (region("32,24,48,8,-32,24") == shown[8:32, 16:48][:, ::-1]).all()
    assert (region("32,24,16,32,32,-24") == shown[8:32, 16:48][::-1]).all()
    assert (region("48,56,16,8,,") == shown[8:, 16:]).all()  # empty sw, sh: to the image edge
    with pytest.raises(RenderError, match="outside the 64x64 image"):
        region("10,10,100,100,5,5")


def test_thumbnail_is_a_small_jpeg_of_the_middle_frame() -> None:
    for name, size in (("CT_small.dcm", (128, 128)), ("JPGExtended.dcm", (32, 128)), ("MR_small.dcm", (64, 64))):
        image = Image.open(io.BytesIO(thumbnail(data_file(name))))
        assert image.format == "JPEG" and image.size == size  # small images are not enlarged
    assert Image.open(io.BytesIO(thumbnail(SAMPLES / "ct" / "CT_001.dcm", 64))).size == (64, 64)
    frames = np.stack([np.full((32, 32), 10 * i, np.uint16) for i in range(9)])
    cine = synthetic(frames, "MONOCHROME2", 12, WindowCenter=50, WindowWidth=100, VOILUTFunction="LINEAR_EXACT")
    middle = np.asarray(Image.open(io.BytesIO(thumbnail(io.BytesIO(part10(cine))))))
    assert np.abs(middle.astype(int) - 102).max() <= 2  # frame 5 of 9 holds 40: (40 - 50) / 100 + 0.5


# --- query parameters ----------------------------------------------------------------------


def test_parse_window() -> None:
    assert parse_window("40,400") == Window(40, 400, "LINEAR")
    assert parse_window(" -600.5 , 1500 , linear-exact ") == Window(-600.5, 1500, "LINEAR_EXACT")
    assert parse_window("40,400,SIGMOID") == Window(40, 400, "SIGMOID")
    assert parse_window("40,0.5,sigmoid").width == 0.5
    for text, message in [
        ("40", "center,width"), ("1,2,3,4", "center,width"), ("abc,400", "center 'abc' is not a number"),
        ("40,", "width '' is not a number"), ("nan,400", "finite"), ("40,inf", "finite"),
        ("40,0", "must be >= 1"), ("40,-5,SIGMOID", "must be > 0"), ("40,0.5", ">= 1 for LINEAR"),
        ("40,400,gamma", "LINEAR, LINEAR_EXACT, SIGMOID"),
    ]:  # fmt: skip
        with pytest.raises(RenderError, match=message) as caught:
            parse_window(text)
        assert caught.value.http_status == 400


def test_parse_viewport() -> None:
    assert parse_viewport("512,256") == Viewport(512, 256)
    assert parse_viewport("512,512,10,20,100,-50") == Viewport(512, 512, (10, 20, 100, -50))
    assert parse_viewport("512,512,,,,") == Viewport(512, 512, (0, 0, 0, 0))
    for text, message in [
        ("512", "vw,vh"), ("512,512,1,2,3", "vw,vh"), ("a,512", "width 'a' is not a whole number"),
        ("0,512", "width 0: give 1 to 4096"), ("512,5000", "height 5000"), ("512,512,-1,0,10,10", "sx and sy"),
        ("12.5,100", "not a whole number"),
    ]:  # fmt: skip
        with pytest.raises(RenderError, match=message):
            parse_viewport(text)
    assert MAX_VIEWPORT == 4096


def test_parse_quality_and_request_checks() -> None:
    assert parse_quality(" 75 ") == 75
    for text in ("0", "101", "high", ""):
        with pytest.raises(RenderError, match="quality"):
            parse_quality(text)
    with pytest.raises(RenderError, match="image/jpeg, image/png"):
        RenderRequest(media_type="image/gif")
    with pytest.raises(RenderError, match="quality 0"):
        RenderRequest(quality=0)
