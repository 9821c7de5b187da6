"""Reading DICOM Part 10 objects without decoding their pixel data.

pydicom parses the header; a small structural walk then checks that the rest
of the dataset (pixel data, items, trailing elements) is complete by reading
only element headers and seeking over values. pydicom has no such check, and
reading a 1 GB cine to find out whether it was truncated would hold it in
memory, which is why this walk is written here.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from archive.errors import InvalidInstance

#: Implementation Class UID written into the File Meta of every stored object.
# A UUID-derived root (PS3.5 B.2): minipacs has no registered org root.
IMPLEMENTATION_CLASS_UID = UID("2.25.261358411426359307150392651447306092329")
IMPLEMENTATION_VERSION_NAME = "MINIPACS_01"

_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_MAX_DEPTH = 32

Buffer = bytes | bytearray | memoryview | mmap.mmap


@dataclass(frozen=True)
class ParsedObject:
    """The header of an object, and where its dataset starts in the stream."""

    header: Dataset
    transfer_syntax: UID
    dataset_offset: int
    total_size: int


def parse(stream: BinaryIO) -> ParsedObject:
    """Parse the header of the Part 10 (or bare) dataset in `stream` and check it is complete.

    Raises InvalidInstance for anything that is not a whole DICOM dataset.
    """
    total = _size_of(stream)
    meta, offset = _read_file_meta(stream)
    transfer_syntax = _transfer_syntax(meta)
    if transfer_syntax is not None and transfer_syntax != DeflatedExplicitVRLittleEndian:
        # The common case: check the structure first, then let pydicom read
        # the header from where the dataset starts (skipping dcmread's second
        # pass over the preamble and File Meta).
        stream.seek(offset)
        _check_complete(stream, total, transfer_syntax)
        stream.seek(offset)
        implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
        header = _read_header(lambda: read_dataset(
            stream, implicit, little, stop_when=_at_pixel_data, defer_size=_DEFER_SIZE
        ))  # fmt: skip
    else:
        stream.seek(0)
        header = _read_header(
            lambda: dcmread(stream, stop_before_pixels=True, force=True, defer_size=_DEFER_SIZE)
        )
        if transfer_syntax is None:
            transfer_syntax = _guess_transfer_syntax(header)
        stream.seek(offset)
        if transfer_syntax == DeflatedExplicitVRLittleEndian:
            # pydicom has inflated the whole dataset into memory already; the
            # inflated bytes can be as truncated as any other dataset.
            inflated = _inflate(stream)
            _check_complete(io.BytesIO(inflated), len(inflated), ExplicitVRLittleEndian)
        else:
            _check_complete(stream, total, transfer_syntax)
    if len(header) == 0:
        raise InvalidInstance("the dataset is empty")
    stream.seek(0)
    return ParsedObject(header, transfer_syntax, offset, total)


# A large non-pixel value (an embedded PDF, a private blob) is skipped over
# rather than read into memory.
_DEFER_SIZE = "256 KB"


def _read_header(read: Callable[[], Dataset]) -> Dataset:
    try:
        return read()
    except InvalidInstance:
        raise
    except Exception as exc:
        raise InvalidInstance(f"cannot parse the dataset: {_describe(exc)}") from exc


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for a stored object.

    Deterministic for a given (SOP Class, SOP Instance, Transfer Syntax), so
    the same dataset received twice gives the same bytes and the same SHA-256
    whoever sent it (the sender is recorded in the index instead). Encoded
    here rather than with pydicom's writer, which costs over a millisecond
    per object on the ingest path; the test suite reads it back with pydicom.
    """
    elements = b"".join((
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid_bytes(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid_bytes(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid_bytes(transfer_syntax)),
        _meta_element(0x0012, b"UI", _uid_bytes(IMPLEMENTATION_CLASS_UID)),
        _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")),
    ))  # fmt: skip
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(elements)))
    return b"\x00" * 128 + b"DICM" + group_length + elements


def _uid_bytes(uid: str) -> bytes:
    data = uid.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _size_of(stream: BinaryIO) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(0)
        return size


def _read_file_meta(stream: BinaryIO) -> tuple[Dataset | None, int]:
    """Return the File Meta group (or None) and the offset of the dataset proper."""
    stream.seek(0)
    try:
        preamble = read_preamble(stream, force=True)
        start = stream.tell()
        group = stream.read(2)
        stream.seek(start)
        if group != b"\x02\x00":
            if preamble is not None:
                raise InvalidInstance("the file has a DICM prefix but no File Meta Information")
            return None, 0

        def not_group_2(tag: BaseTag, vr: str | None, length: int) -> bool:
            return tag.group != 2

        meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, stop_when=not_group_2)
        return meta, stream.tell()
    except InvalidInstance:
        raise
    except Exception as exc:
        raise InvalidInstance(f"cannot read the File Meta Information: {_describe(exc)}") from exc


def _transfer_syntax(meta: Dataset | None) -> UID | None:
    if meta is None:
        return None
    value = meta.get("TransferSyntaxUID")
    if not value:
        raise InvalidInstance("the File Meta Information has no Transfer Syntax UID")
    return UID(str(value).strip("\x00 "))


def _guess_transfer_syntax(header: Dataset) -> UID:
    implicit, little = header.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _inflate(stream: BinaryIO) -> bytes:
    """The raw-deflated rest of `stream` (PS3.5 A.5), refusing a truncated deflate stream."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(stream.read()) + inflater.flush()
    except zlib.error as exc:
        raise InvalidInstance(f"cannot inflate the dataset: {exc}") from exc
    if not inflater.eof:
        raise InvalidInstance("the deflated dataset is truncated")
    return data


def _check_complete(stream: BinaryIO, end: int, transfer_syntax: UID) -> None:
    """Walk the dataset from the stream's position to `end` (see _Walker)."""
    if not transfer_syntax.is_transfer_syntax:
        raise InvalidInstance(f"unknown transfer syntax {transfer_syntax}")
    start = stream.tell()
    with _view(stream, end) as buffer:
        walker = _Walker(buffer, end, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian)
        walker.pos = start
        walker.elements(end, depth=0, implicit=walker.implicit)


@contextmanager
def _view(stream: BinaryIO, end: int) -> Iterator[Buffer]:
    """The first `end` bytes of `stream` without copying them: a memory map of a file.

    Only the pages the walk touches (element headers, item tags) are read,
    so a 1 GB cine costs a few kilobytes of reading, not a gigabyte.
    """
    if end == 0:
        yield b""
        return
    try:
        mapped = mmap.mmap(stream.fileno(), end, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        position = stream.tell()
        stream.seek(0)
        data = stream.read(end)
        stream.seek(position)
        yield data
        return
    try:
        yield mapped
    finally:
        mapped.close()


class _Walker:
    """Visit element headers, stepping over values, and fail on anything truncated.

    Works on an in-memory view (a memory map for files): the walk visits
    every element of every dataset received, and struct.unpack_from on a
    buffer costs a fraction of a read() call per element.
    """

    def __init__(self, buffer: Buffer, end: int, implicit: bool, little: bool) -> None:
        self.buffer = buffer
        self.end = end
        self.pos = 0
        self.implicit = implicit
        order = "<" if little else ">"
        self._tag_length = struct.Struct(order + "HHI")
        self._tag_vr_short = struct.Struct(order + "HH2sH")
        self._long = struct.Struct(order + "I")

    def _need(self, n: int) -> None:
        if self.pos + n > self.end:
            raise InvalidInstance("the dataset is truncated")

    def elements(self, end: int, depth: int, implicit: bool) -> None:
        """Walk elements up to `end`, or up to an Item Delimiter when `end` is undefined."""
        if depth > _MAX_DEPTH:
            raise InvalidInstance("sequences are nested too deeply")
        while end == _UNDEFINED or self.pos < end:
            self._need(8)
            vr: bytes | None = None
            if implicit:
                group, element, length = self._tag_length.unpack_from(self.buffer, self.pos)
            else:
                group, element, vr, length = self._tag_vr_short.unpack_from(self.buffer, self.pos)
            self.pos += 8
            tag = (group << 16) | element
            if tag == _ITEM_DELIMITER:
                if end != _UNDEFINED:
                    raise InvalidInstance("unexpected Item Delimitation Item")
                return
            if group == 0xFFFE and vr is not None:  # item tags carry no VR even in explicit VR
                vr = None
                (length,) = self._long.unpack_from(self.buffer, self.pos - 4)
            elif vr is not None:
                if not (vr.isalpha() and vr.isupper()):
                    raise InvalidInstance(f"invalid VR {vr!r} in element ({group:04X},{element:04X})")
                if vr in _LONG_VRS:
                    self._need(4)
                    (length,) = self._long.unpack_from(self.buffer, self.pos)
                    self.pos += 4
            if length == _UNDEFINED:
                if vr not in (None, b"SQ", b"OB", b"OW", b"UN"):
                    raise InvalidInstance(f"undefined length on VR {vr!r}")
                # UN of undefined length holds implicit VR little endian data (PS3.5 6.2.2).
                fragments = vr in (b"OB", b"OW") or group == 0x7FE0  # pixel data, even as UN
                self.items(depth + 1, implicit=implicit or vr == b"UN", fragments=fragments)
            elif vr == b"SQ" or (vr is None and _is_sequence(tag)):
                # Defined-length sequences are walked too: their items must fit
                # and their nesting counts against _MAX_DEPTH.
                self.items(depth + 1, implicit, fragments=False, end=self.pos + length)
            else:
                self._skip(length)
        if self.pos != end:
            raise InvalidInstance("an element runs past the end of its container")

    def items(self, depth: int, implicit: bool, fragments: bool, end: int = _UNDEFINED) -> None:
        """Walk the items of a sequence or of encapsulated pixel data (`fragments`).

        `end` is where a defined-length sequence ends; an undefined-length one
        ends at its Sequence Delimitation Item.
        """
        if depth > _MAX_DEPTH:
            raise InvalidInstance("sequences are nested too deeply")
        while end == _UNDEFINED or self.pos < end:
            self._need(8)
            group, element, length = self._tag_length.unpack_from(self.buffer, self.pos)
            self.pos += 8
            tag = (group << 16) | element
            if tag == _SEQUENCE_DELIMITER and end == _UNDEFINED:
                return
            if tag != _ITEM:
                raise InvalidInstance(f"expected an item, found tag {tag:08X}")
            if length == _UNDEFINED:
                self.elements(_UNDEFINED, depth, implicit)
            elif fragments:
                self._skip(length)
            else:
                item_end = self.pos + length
                if item_end > self.end:
                    raise InvalidInstance("the dataset is truncated")
                self.elements(item_end, depth, implicit)
        if self.pos != end:
            raise InvalidInstance("an item runs past the end of its sequence")

    def _skip(self, length: int) -> None:
        if self.pos + length > self.end:
            raise InvalidInstance("the dataset is truncated")
        self.pos += length


def _is_sequence(tag: int) -> bool:
    """True when the dictionary says `tag` is a sequence (implicit VR carries no VR)."""
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False  # private or unknown: its value is skipped unread


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__

