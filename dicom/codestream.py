"""What a compressed frame really is: the headers of JPEG, JPEG-LS and JPEG 2000 codestreams,
and the items of encapsulated Pixel Data.

Hand-written because the decoders accept streams that contradict the DICOM header (a JPEG
under a JPEG-LS transfer syntax, SOF dimensions other than Rows/Columns, no EOI) and
pydicom's fragment readers silently shorten an item whose length runs past the data.
Only headers are parsed; nothing here decodes pixels.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_START = b"\xff\x4f\xff\x51"  # SOC then SIZ


class StreamKind(enum.Enum):
    """The coding process a codestream's own markers declare."""

    JPEG_BASELINE = "JPEG baseline"  # SOF0
    JPEG_EXTENDED = "JPEG extended"  # SOF1
    JPEG_PROGRESSIVE = "JPEG progressive"  # SOF2
    JPEG_LOSSLESS = "JPEG lossless"  # SOF3
    JPEG_OTHER = "JPEG (arithmetic or hierarchical)"  # SOF5-7, SOF9-15
    JPEG_LS = "JPEG-LS"  # SOF55
    JPEG_2000 = "JPEG 2000"  # codestream (SOC, SIZ) or JP2 file
    UNKNOWN = "an unrecognised stream"


_JPEG_SOF = {0xC0: StreamKind.JPEG_BASELINE, 0xC1: StreamKind.JPEG_EXTENDED, 0xC2: StreamKind.JPEG_PROGRESSIVE,
             0xC3: StreamKind.JPEG_LOSSLESS, 0xF7: StreamKind.JPEG_LS,
             **{m: StreamKind.JPEG_OTHER for m in (0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)}}


class CodestreamError(ValueError):
    """The codestream's headers are damaged; the message says where."""


@dataclass(frozen=True)
class StreamInfo:
    """What a frame's codestream declares about itself.

    ``colour`` is what the stream says of its 3 components: ``"YBR"`` (JFIF APP0, or Adobe APP14
    transform 1/2), ``"RGB"`` (Adobe APP14 transform 0, or component ids 'R','G','B'), or None
    when it does not say. ``j2k_mct`` is JPEG 2000's multiple component transform flag.
    """

    kind: StreamKind
    rows: int
    columns: int
    components: int
    precision: int
    complete: bool  #: Ends with an EOI/EOC marker (after padding).
    colour: str | None = None
    j2k_mct: bool | None = None


def inspect_stream(frame: bytes) -> StreamInfo:
    """The header of one compressed frame.

    Raises:
        CodestreamError: the stream is not JPEG, JPEG-LS or JPEG 2000, or its headers are cut short.
    """
    data = bytes(frame)
    if data[:2] == b"\xff\xd8":
        return _inspect_jpeg(data)
    if data.startswith(_JP2_SIGNATURE):
        start = data.find(_J2K_START)
        if start < 0:
            raise CodestreamError("the JP2 file holds no JPEG 2000 codestream")
        return _inspect_j2k(data, start)
    if data.startswith(_J2K_START):
        return _inspect_j2k(data, 0)
    raise CodestreamError(f"the frame starts with bytes {data[:4].hex(' ')}, which begin no JPEG, JPEG-LS "
                          "or JPEG 2000 stream")


def _ends_with_eoi(data: bytes) -> bool:
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _inspect_jpeg(data: bytes) -> StreamInfo:
    offset, app = 2, {}
    try:
        while True:
            while data[offset] == 0xFF and data[offset + 1] == 0xFF:  # fill bytes
                offset += 1
            if data[offset] != 0xFF:
                raise CodestreamError(f"expected a marker at byte {offset} of the JPEG stream")
            marker = data[offset + 1]
            if marker in (0x01, *range(0xD0, 0xD8)):
                offset += 2
                continue
            if marker in (0xD9, 0xDA):
                raise CodestreamError("the JPEG stream has no frame header (SOF) before its image data")
            (length,) = struct.unpack(">H", data[offset + 2: offset + 4])
            segment = data[offset + 4: offset + 2 + length]
            if length < 2 or len(segment) != length - 2:
                raise CodestreamError(f"a JPEG segment at byte {offset} runs past the end of the stream")
            if 0xE0 <= marker <= 0xEF:
                app.setdefault(marker, segment)
            if marker in _JPEG_SOF:
                precision, rows, columns, components = struct.unpack(">BHHB", segment[:6])
                ids = [segment[6 + 3 * i] for i in range(components)] if len(segment) >= 6 + 3 * components else []
                return StreamInfo(_JPEG_SOF[marker], rows, columns, components, precision, _ends_with_eoi(data),
                                  colour=_jpeg_colour(app, ids, components))
            offset += 2 + length
    except (IndexError, struct.error) as exc:
        raise CodestreamError("the JPEG stream ends inside its headers") from exc


def _jpeg_colour(app: dict[int, bytes], ids: list[int], components: int) -> str | None:
    if components != 3:
        return None
    adobe = app.get(0xEE, b"")
    if adobe.startswith(b"Adobe") and len(adobe) >= 12:
        return "RGB" if adobe[11] == 0 else "YBR"
    if ids in ([82, 71, 66], [114, 103, 98]):  # 'RGB' / 'rgb'
        return "RGB"
    if app.get(0xE0, b"").startswith(b"JFIF"):
        return "YBR"
    return None


def _inspect_j2k(data: bytes, start: int) -> StreamInfo:
    try:
        (length,) = struct.unpack(">H", data[start + 4: start + 6])
        siz = data[start + 6: start + 4 + length]
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", siz[2:18])
        (components,) = struct.unpack(">H", siz[34:36])
        precision = (siz[36] & 0x7F) + 1
        mct = None
        cod = data.find(b"\xff\x52", start + 4 + length)
        if cod >= 0:
            mct = bool(data[cod + 4 + 4])  # Lcod(2) Scod(1) progression(1) layers(2) MCT(1)
    except (IndexError, struct.error) as exc:
        raise CodestreamError("the JPEG 2000 codestream ends inside its SIZ header") from exc
    if xsiz < xosiz or ysiz < yosiz:
        raise CodestreamError("the JPEG 2000 image offset lies outside the image")
    return StreamInfo(StreamKind.JPEG_2000, ysiz - yosiz, xsiz - xosiz, components, precision,
                      _ends_with_eoi(data), j2k_mct=mct)


# ----------------------------------------------------------------------- encapsulated items


def encapsulated_fragments(value: bytes) -> list[bytes]:
    """The fragments of an encapsulated Pixel Data value (Basic Offset Table first, as the items come).

    Raises:
        CodestreamError: an item tag is not (FFFE,E000) or an item's length runs past the data.
    """
    data, offset, items = memoryview(value), 0, []
    while offset < len(data):
        if len(data) - offset < 8:
            raise CodestreamError(f"the Pixel Data ends with {len(data) - offset} stray bytes after item "
                                  f"{len(items)}")
        tag, (length,) = bytes(data[offset: offset + 4]), struct.unpack("<I", data[offset + 4: offset + 8])
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM:
            raise CodestreamError(f"Pixel Data item {len(items)} has tag {tag.hex(' ')} instead of (FFFE,E000)")
        remaining = len(data) - offset - 8
        if length > remaining:
            raise CodestreamError(f"Pixel Data item {len(items)} declares {length} bytes but only {remaining} "
                                  "remain in the file")
        items.append(bytes(data[offset + 8: offset + 8 + length]))
        offset += 8 + length
    if not items:
        raise CodestreamError("the encapsulated Pixel Data has no items (not even a Basic Offset Table)")
    return items


def first_frame(items: list[bytes], number_of_frames: int) -> bytes:
    """Frame 0 from the items of ``encapsulated_fragments`` (Basic Offset Table first)."""
    table, fragments = items[0], items[1:]
    if not fragments:
        raise CodestreamError("the encapsulated Pixel Data holds no fragment after its Basic Offset Table")
    if number_of_frames <= 1:
        return b"".join(fragments)
    if len(table) >= 8 and len(table) % 4 == 0:
        offsets = struct.unpack(f"<{len(table) // 4}I", table)
        frame, position = [], 0
        for fragment in fragments:
            if position >= offsets[1]:
                break
            frame.append(fragment)
            position += 8 + len(fragment)
        return b"".join(frame)
    if len(fragments) == number_of_frames:
        return fragments[0]
    frame = []
    for fragment in fragments:
        frame.append(fragment)
        if _ends_with_eoi(fragment):
            break
    return b"".join(frame)
