"""Turning one frame of a stored DICOM image into a JPEG or PNG for a screen.

This is the pixel pipeline behind DICOMweb /rendered and /thumbnail (PS3.18 8.3.5,
Supplement 203) and WADO-URI: decode one frame, apply the grayscale pipeline of
PS3.4 N.2 (Modality LUT, VOI LUT, MONOCHROME1 inversion) or bring colour to RGB,
crop and scale to the viewport, encode. It knows nothing of HTTP or the archive:
the edge parses the query with `parse_window`, `parse_viewport` and `parse_quality`,
opens the stored file, calls `render` or `thumbnail` and maps a `RenderError` to
its `http_status`. The request objects are frozen, so they can key a cache.

Sources
-------
Every function that reads pixels takes a `Source`:

* a binary stream holding a Part 10 file from offset 0 (what `Archive.open_instance`
  returns): the preferred form, because pydicom then reads the header and only the
  requested frame, so one frame of a 1 GB cine costs one frame's memory;
* a path to such a file (the same, opened here);
* a `pydicom.Dataset` (from `dcmread`): only the requested frame is decoded, but
  its Pixel Data is already in memory, so use it for small or synthetic objects.

Frame indexes are 0-based here; error messages speak of 1-based frame numbers, as
PS3.18 clients do.

Refused with `UnsupportedImage`: pixel data no installed decoder can read, and
photometric interpretations pydicom does not bring to RGB (YBR_PARTIAL_420/422, HSV...).
Not applied: Presentation States and Presentation LUT Shape (MONOCHROME1 is still
inverted), the Enhanced and Supplemental Palette Color LUT modules, overlays, ICC
profiles and annotations.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, TypeAlias, cast

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

__all__ = [
    "MAX_VIEWPORT", "MEDIA_TYPES", "THUMBNAIL_SIZE", "WINDOW_FUNCTIONS",
    "NoImage", "RenderError", "RenderRequest", "Source", "UnsupportedImage", "Viewport", "Window",
    "display_pixels", "parse_quality", "parse_viewport", "parse_window", "render", "thumbnail",
]  # fmt: skip

Source: TypeAlias = "Dataset | BinaryIO | str | os.PathLike[str]"
Pixels: TypeAlias = "npt.NDArray[np.uint8]"

#: The rendered media types we produce (PS3.18 8.7.4: image/jpeg is required, PNG is optional).
MEDIA_TYPES: Final = ("image/jpeg", "image/png")
#: VOI LUT Function values (PS3.3 C.11.2.1.2, C.11.2.1.3).
WINDOW_FUNCTIONS: Final = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
#: Largest viewport side we render: bounds the memory and time one request can take.
MAX_VIEWPORT: Final = 4096
#: Default side of a thumbnail (the image fits in a square of this size).
THUMBNAIL_SIZE: Final = 128

_THUMBNAIL_QUALITY: Final = 80
# zlib level 1 is up to 5x faster than Pillow's default 6 (47 vs 234 ms on a 1536x1536 DX)
# for ~15 % more bytes; a viewer on a slow link asks for JPEG anyway.
_PNG_COMPRESS_LEVEL: Final = 1
# The automatic window looks at about this many pixels: enough for stable percentiles,
# few enough that np.percentile stays around a millisecond on a 5-megapixel DX.
_AUTO_WINDOW_SAMPLE: Final = 1 << 18
_AUTO_WINDOW_PERCENTILES: Final = (0.5, 99.5)
# Photometric interpretations whose frames pydicom hands back as RGB: it converts
# YBR_FULL(_422) itself (as_rgb) and JPEG 2000 decoders undo the ICT/RCT transform.
_RGB_AFTER_DECODE: Final = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
# Attributes the grayscale pipeline reads (PS3.3 C.11.1, C.11.2, C.7.5.1.1.2).
_PIPELINE_KEYWORDS: Final = (
    "PhotometricInterpretation", "BitsStored", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    "PixelPaddingValue", "PixelPaddingRangeLimit",
)  # fmt: skip
# Functional group macros that carry the per-frame Modality and VOI LUT (PS3.3 C.7.6.16.2.9, .10).
_FRAME_MACROS: Final = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


class RenderError(ValueError):
    """A rendering request or object we refuse, with a message fit for the client."""

    #: HTTP status for the HTTP edge: a bad query parameter.
    http_status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoImage(RenderError):
    """The object has no pixel data, or not the frame asked for."""

    http_status = 404


class UnsupportedImage(RenderError):
    """The pixel data cannot be decoded or displayed by this server (codec, colour model)."""

    http_status = 501


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2), as a request's ``window=`` or a header's Window Center/Width."""

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if self.function not in WINDOW_FUNCTIONS:
            raise RenderError(f"window function {self.function[:30]!r}: use one of {', '.join(WINDOW_FUNCTIONS)}")
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise RenderError("window center and width must be finite numbers")
        # PS3.3 C.11.2.1.2.1: LINEAR needs width >= 1; the other two only width > 0.
        if self.function == "LINEAR" and self.width < 1:
            raise RenderError(f"window width {self.width:g} must be >= 1 for LINEAR")
        if self.width <= 0:
            raise RenderError(f"window width {self.width:g} must be > 0")


@dataclass(frozen=True)
class Viewport:
    """Fit the image (or its source region) into ``width`` x ``height``, keeping its aspect ratio.

    ``region`` is PS3.18's (sx, sy, sw, sh) in image pixels: the top-left corner and
    the size of the part to show. A negative sw or sh takes the region to the left
    of / above (sx, sy) and flips it; 0 means "to the image edge".
    """

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        for name, side in (("width", self.width), ("height", self.height)):
            if not 1 <= side <= MAX_VIEWPORT:
                raise RenderError(f"viewport {name} {side}: give 1 to {MAX_VIEWPORT} pixels")
        if self.region is not None and (self.region[0] < 0 or self.region[1] < 0):
            raise RenderError("viewport source region: sx and sy must not be negative")


@dataclass(frozen=True)
class RenderRequest:
    """What to render: media type, window (grayscale only), viewport and JPEG quality."""

    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90

    def __post_init__(self) -> None:
        if self.media_type not in MEDIA_TYPES:
            raise RenderError(f"media type {self.media_type!r}: this server renders {', '.join(MEDIA_TYPES)}")
        if not 1 <= self.quality <= 100:
            raise RenderError(f"quality {self.quality}: give 1 to 100")


# --- query parameters (PS3.18 8.3.5.1) --------------------------------------------------


def parse_window(text: str) -> Window:
    """``window=center,width[,function]``; function is linear, linear-exact or sigmoid, any case."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise RenderError(f"window {text[:60]!r}: give center,width or center,width,function (e.g. 40,400)")
    center, width = (_number(p, "window " + name) for p, name in zip(parts, ("center", "width")))
    function = parts[2].upper().replace("-", "_") if len(parts) == 3 and parts[2] else "LINEAR"
    return Window(center, width, function)


def parse_viewport(text: str) -> Viewport:
    """``viewport=vw,vh`` or ``vw,vh,sx,sy,sw,sh``; empty sx/sy mean 0, empty sw/sh the image edge."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise RenderError(f"viewport {text[:60]!r}: give vw,vh or vw,vh,sx,sy,sw,sh (e.g. 512,512)")
    width, height = (_integer(p, "viewport " + name) for p, name in zip(parts, ("width", "height")))
    region = None
    if len(parts) == 6:
        names = ("sx", "sy", "sw", "sh")
        sx, sy, sw, sh = (_integer(p, f"viewport {n}") if p else 0 for p, n in zip(parts[2:], names))
        region = (sx, sy, sw, sh)
    return Viewport(width, height, region)


def parse_quality(text: str) -> int:
    """``quality=`` 1..100 (PS3.18 8.3.5.1.2); only JPEG uses it."""
    quality = _integer(text.strip(), "quality")
    if not 1 <= quality <= 100:
        raise RenderError(f"quality {quality}: give 1 to 100")
    return quality


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RenderError(f"{what} {text[:30]!r} is not a number") from None
    if not math.isfinite(value):
        raise RenderError(f"{what} must be a finite number, not {text[:30]!r}")
    return value


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RenderError(f"{what} {text[:30]!r} is not a whole number") from None


# --- the public pipeline ---------------------------------------------------------------


def display_pixels(source: Source, frame: int = 0, window: Window | None = None) -> Pixels:
    """Frame `frame` (0-based) of `source` as 8-bit display values.

    Returns a C-contiguous uint8 array: (rows, columns) for MONOCHROME1/2, after the
    Modality LUT, the VOI (`window`, else the header's first window, else its VOI LUT
    Sequence, else the 0.5-99.5 percentile range of the frame) and MONOCHROME1
    inversion; (rows, columns, 3) RGB for colour, where `window` does not apply.
    """
    header, pixels, index = _read(source, frame)
    return _display(header, pixels, index, window)


def render(source: Source, frame: int, request: RenderRequest) -> bytes:
    """Frame `frame` (0-based) of `source` rendered per `request`, encoded as ``request.media_type``.

    The viewport scales the image (or its region) up or down to fit, keeping the aspect
    ratio, as PS3.18 asks; the encoded image has the fitted size, not the viewport's.
    """
    image = Image.fromarray(display_pixels(source, frame, request.window))
    if request.viewport is not None:
        image = _fit(_crop(image, request.viewport.region), request.viewport.width, request.viewport.height)
    return _encode(image, request.media_type, request.quality)


def thumbnail(source: Source, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG of the middle frame with the default window, fitting in `size` x `size` (Supplement 203).

    The middle frame, because the first frame of a cine or an Enhanced CT/MR is often a
    blank run-in or the edge of the volume. Small images are not enlarged.
    """
    if not 1 <= size <= MAX_VIEWPORT:
        raise RenderError(f"thumbnail size {size}: give 1 to {MAX_VIEWPORT} pixels")
    header, pixels, index = _read(source, None)
    image = Image.fromarray(_display(header, pixels, index, None))
    if max(image.size) > size:
        image = _fit(image, size, size)
    return _encode(image, "image/jpeg", _THUMBNAIL_QUALITY)


# --- reading one frame -----------------------------------------------------------------


def _read(source: Source, frame: int | None) -> tuple[Dataset, npt.NDArray[Any], int]:
    """The header, the decoded frame and its index (`frame`, or the middle one for None)."""
    if isinstance(source, Dataset):
        return _read_dataset(source, frame)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return _read_stream(file, frame)
    # pydicom seeks to the frame it needs: a network body must be spooled first.
    stream = cast(BinaryIO, source)
    return _read_stream(stream if stream.seekable() else io.BytesIO(stream.read()), frame)


def _read_dataset(ds: Dataset, frame: int | None) -> tuple[Dataset, npt.NDArray[Any], int]:
    if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise NoImage("this instance has no pixel data to render")
    if not getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID"):
        raise UnsupportedImage("this dataset has no Transfer Syntax UID: its pixel data cannot be decoded")
    index = _frame_index(ds, frame)
    return ds, _decode(lambda: pixel_array(ds, index=index), ds), index


def _read_stream(stream: BinaryIO, frame: int | None) -> tuple[Dataset, npt.NDArray[Any], int]:
    stream.seek(0)
    try:
        header = dcmread(stream, stop_before_pixels=True)
    except Exception as exc:
        raise UnsupportedImage(f"the stored object is not readable DICOM: {exc}") from exc
    if header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        # pydicom can only decode a deflated dataset once it is inflated as a whole.
        stream.seek(0)
        return _read_dataset(dcmread(stream), frame)
    # dcmread stops in front of the pixel data element's tag: group 7FE0 in either byte order.
    if stream.read(2) not in (b"\xe0\x7f", b"\x7f\xe0"):
        raise NoImage("this instance has no pixel data to render")
    index = _frame_index(header, frame)
    return header, _decode(lambda: pixel_array(stream, index=index), header), index


def _frame_index(header: Dataset, frame: int | None) -> int:
    try:
        count = max(int(header.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        count = 1
    if frame is None:
        return count // 2
    if not 0 <= frame < count:
        raise NoImage(f"there is no frame {frame + 1}: this instance has {count} frame(s)")
    return frame


def _decode(decode: Callable[[], npt.NDArray[Any]], header: Dataset) -> npt.NDArray[Any]:
    try:
        return decode()
    except Exception as exc:  # pydicom and its plugins raise anything from ValueError to RuntimeError
        syntax = header.file_meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise UnsupportedImage(f"cannot decode the pixel data ({name}): {str(exc)[:300]}") from exc


# --- to display values -----------------------------------------------------------------


def _display(header: Dataset, pixels: npt.NDArray[Any], index: int, window: Window | None) -> Pixels:
    photometric = str(header.get("PhotometricInterpretation", "")).strip().upper()
    if pixels.ndim == 3:
        if photometric not in _RGB_AFTER_DECODE:
            raise UnsupportedImage(f"photometric interpretation {photometric} is not supported")
        return _rgb8(pixels, int(header.get("BitsStored") or 8))
    if photometric == "PALETTE COLOR":
        return _palette(pixels, header)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImage(f"photometric interpretation {photometric or '(none)'} is not supported")
    return _grayscale(_frame_view(header, index), pixels, window)


def _rgb8(pixels: npt.NDArray[Any], bits_stored: int) -> Pixels:
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    shift = max(min(bits_stored, pixels.dtype.itemsize * 8) - 8, 0)
    return np.ascontiguousarray(pixels >> shift, dtype=np.uint8)


def _palette(pixels: npt.NDArray[Any], header: Dataset) -> Pixels:
    try:
        rgb = apply_color_lut(pixels, header)
    except Exception as exc:
        raise UnsupportedImage(f"cannot apply the palette color lookup table: {exc}") from exc
    if rgb.shape[-1] == 4:  # an alpha palette: a screen shows the colours
        rgb = rgb[..., :3]
    if rgb.dtype != np.uint8 and rgb.max() > 255:
        # 16-bit entries; some writers declare 16 bits and store 8-bit values, which stay as they are.
        rgb = rgb >> 8
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _frame_view(header: Dataset, index: int) -> Dataset:
    """The pipeline attributes that apply to frame `index`.

    Enhanced multi-frame objects carry rescale and window in functional groups (PS3.3
    C.7.6.16): per-frame values override shared ones, which override the top level.
    """
    view = Dataset()
    if file_meta := getattr(header, "file_meta", None):
        view.file_meta = file_meta  # the byte order of OW LUT Data
    for keyword in _PIPELINE_KEYWORDS:
        if keyword in header:
            view.add(header[keyword])
    groups = []
    if shared := header.get("SharedFunctionalGroupsSequence"):
        groups.append(shared[0])
    if (per_frame := header.get("PerFrameFunctionalGroupsSequence")) and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for macro in _FRAME_MACROS:
            if items := group.get(macro):
                for element in items[0]:
                    view.add(element)
    return view


def _grayscale(view: Dataset, pixels: npt.NDArray[Any], window: Window | None) -> Pixels:
    """Modality LUT, VOI, MONOCHROME1 inversion: through a lookup table for 8/16-bit data.

    For integers of 16 bits or fewer the pipeline runs once over every value the
    dtype can hold (at most 65536) and the frame is mapped by indexing: about 10x
    faster than float arithmetic over a 5-megapixel frame, and exactly the same values.
    The table is laid out in the order of the unsigned reinterpretation of the dtype,
    so signed frames index it without an offset.
    """
    pixels = pixels.astype(pixels.dtype.newbyteorder("="), copy=False)
    as_table = pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2
    if as_table:
        unsigned = np.dtype(f"u{pixels.dtype.itemsize}")
        domain = np.arange(1 << (8 * unsigned.itemsize), dtype=unsigned).view(pixels.dtype)
        values = _modality(view, domain)

        def sample() -> npt.NDArray[np.float64]:
            return cast("npt.NDArray[np.float64]", values[_sample(view, pixels).view(unsigned)])
    else:
        values = _modality(view, np.nan_to_num(pixels))

        def sample() -> npt.NDArray[np.float64]:
            return _modality(view, np.nan_to_num(_sample(view, pixels)))

    shown = _voi(view, values, window, sample)
    gray = np.rint(shown * 255).astype(np.uint8)
    if str(view.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        np.subtract(255, gray, out=gray)  # PS3.3 C.7.6.3.1.2: minimum is white, after the VOI
    if as_table:
        return cast("Pixels", gray[pixels.view(unsigned)])
    return gray


def _modality(view: Dataset, stored: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """PS3.3 C.11.1: Modality LUT Sequence, else Rescale Slope/Intercept, else identity."""
    if view.get("ModalityLUTSequence"):
        first, table = _lut(view, view.ModalityLUTSequence[0], "Modality LUT Sequence")
        return _look_up(table, first, stored)
    values = stored.astype(np.float64)
    slope, intercept = _float(view.get("RescaleSlope")), _float(view.get("RescaleIntercept"))
    if slope is not None and slope != 1:
        values *= slope
    if intercept:
        values += intercept
    return values


def _lut(view: Dataset, item: Dataset, what: str) -> tuple[int, npt.NDArray[np.float64]]:
    """The first mapped value and the entries of a Modality or VOI LUT (PS3.3 C.11.1.1.1, C.11.2.1.1).

    Read here rather than with pydicom's apply_* helpers, which keep indexes in the
    table's own dtype (an 8-bit table of 4096 entries wraps around).
    """
    try:
        entries, first, _ = (int(v) for v in item.LUTDescriptor)
        entries = entries or 1 << 16  # 0 means 2**16 entries
        if first >= 0x8000 and int(view.get("PixelRepresentation") or 0) == 1:
            first -= 0x10000  # a signed first value read as US
        data = item["LUTData"].value
        if isinstance(data, (bytes, bytearray)):  # OW: one entry a 16-bit word, in the dataset's byte order
            syntax = getattr(view, "file_meta", Dataset()).get("TransferSyntaxUID")
            order = ">" if syntax is not None and not syntax.is_little_endian else "<"
            table = np.frombuffer(data, dtype=f"{order}u2", count=entries)
        else:
            table = np.asarray(data if isinstance(data, (MultiValue, list)) else [data], dtype=np.int64)
        if table.size != entries:
            raise ValueError(f"{table.size} LUT Data entries where the LUT Descriptor says {entries}")
    except Exception as exc:
        raise UnsupportedImage(f"cannot read the {what}: {exc}") from exc
    return first, table.astype(np.float64)


def _look_up(table: npt.NDArray[np.float64], first: int, values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Values below the first mapped one take the first entry, values past the end the last."""
    index = np.clip(np.rint(values), first, first + table.size - 1).astype(np.int64) - first
    return cast("npt.NDArray[np.float64]", table[index])


def _sample(view: Dataset, pixels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Every n-th row and column, about `_AUTO_WINDOW_SAMPLE` pixels, without padding values."""
    step = max(1, math.ceil(math.sqrt(pixels.size / _AUTO_WINDOW_SAMPLE)))
    sample = pixels[::step, ::step].ravel()
    padding = _float(view.get("PixelPaddingValue"))
    if padding is not None:  # CT's outside-the-scan-circle value would drag the window down
        limit = _float(view.get("PixelPaddingRangeLimit"))
        low, high = (padding, padding) if limit is None else sorted((padding, limit))
        kept = sample[(sample < low) | (sample > high)]
        if kept.size:
            sample = kept
    return sample


def _voi(view: Dataset, values: npt.NDArray[np.float64], window: Window | None,
         sample: Callable[[], npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:  # fmt: skip
    """PS3.4 N.2.1.1 VOI LUT: the request's window, the header's, its VOI LUT, or automatic; in [0, 1]."""
    window = window or _header_window(view)
    if window is not None:
        return _windowed(values, window)
    if view.get("VOILUTSequence"):
        return _voi_lut(view, values)
    return _windowed(values, _auto_window(sample()))


def _header_window(view: Dataset) -> Window | None:
    """The first Window Center/Width; a malformed one is skipped rather than failing the render."""
    center, width = _float(view.get("WindowCenter")), _float(view.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(view.get("VOILUTFunction") or "LINEAR").strip().upper()
    try:
        return Window(center, width, function if function in WINDOW_FUNCTIONS else "LINEAR")
    except RenderError:
        return None


def _auto_window(values: npt.NDArray[np.float64]) -> Window:
    """The 0.5-99.5 percentile range, so a few hot or dead pixels do not flatten the image."""
    if not values.size:
        return Window(0.0, 1.0, "LINEAR_EXACT")
    low, high = (float(v) for v in np.percentile(values, _AUTO_WINDOW_PERCENTILES))
    if high <= low:  # a small bright object on a flat background: show everything
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return Window(low, 1.0, "LINEAR_EXACT")
    return Window((low + high) / 2, high - low, "LINEAR_EXACT")


def _windowed(values: npt.NDArray[np.float64], window: Window) -> npt.NDArray[np.float64]:
    """PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.1 (SIGMOID), C.11.2.1.3.2 (LINEAR_EXACT), scaled to [0, 1]."""
    center, width = window.center, window.width
    if window.function == "SIGMOID":
        # 1 / (1 + exp(-4 (x - c) / w)) written with tanh, which cannot overflow.
        return 0.5 + 0.5 * np.tanh(2 * (values - center) / width)
    if window.function == "LINEAR_EXACT":
        shown = (values - center) / width + 0.5
    elif width > 1:
        shown = (values - (center - 0.5)) / (width - 1) + 0.5
    else:  # width 1: a threshold at c - 0.5
        return (values > center - 0.5).astype(np.float64)
    return np.clip(shown, 0.0, 1.0, out=shown)


def _voi_lut(view: Dataset, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """PS3.3 C.11.2.1.1: the first VOI LUT of the sequence, its output scaled to [0, 1].

    The output range is 2**bits - 1 for the LUT Descriptor's bits, unless the data
    contradicts it: values beyond it, or the common 12-bit table labelled 16-bit,
    which would otherwise show almost black.
    """
    item = view.VOILUTSequence[0]
    first, table = _lut(view, item, "VOI LUT Sequence")
    bits = int(item.LUTDescriptor[2])
    used = int(table.max()).bit_length()
    if used > bits or (bits == 16 and used <= 12):
        bits = max(used, 1)
    return _look_up(table, first, values) / ((1 << bits) - 1)


def _float(value: Any) -> float | None:
    """The first value of a numeric attribute, or None when absent or unreadable."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- geometry and encoding -------------------------------------------------------------


def _crop(image: Image.Image, region: tuple[int, int, int, int] | None) -> Image.Image:
    if region is None:
        return image
    sx, sy, sw, sh = region
    left, right = _span(sx, sw, image.width)
    top, bottom = _span(sy, sh, image.height)
    if right <= left or bottom <= top:
        raise RenderError(f"viewport source region {region} lies outside the {image.width}x{image.height} image")
    image = image.crop((left, top, right, bottom))
    if sw < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def _span(start: int, length: int, size: int) -> tuple[int, int]:
    """[begin, end) of one side of the region, clamped to the image."""
    begin, end = (start, start + length) if length > 0 else (start + length, start) if length < 0 else (start, size)
    return max(begin, 0), min(end, size)


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    if scale < 1:
        # reducing_gap: Pillow first box-reduces by an integer factor, then Lanczos does the rest.
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image.resize(size, Image.Resampling.BICUBIC)


def _encode(image: Image.Image, media_type: str, quality: int) -> bytes:
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, "PNG", compress_level=_PNG_COMPRESS_LEVEL)
    else:
        image.save(out, "JPEG", quality=quality, optimize=False)
    return out.getvalue()
