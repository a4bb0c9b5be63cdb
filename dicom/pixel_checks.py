"""Checking a photo's pixel data against its header before decoding it.

Decoders accept much that contradicts the header: a JPEG stream under a JPEG-LS or JPEG 2000
transfer syntax, a frame whose own dimensions differ from Rows/Columns, a stream with no
end-of-image marker, an item length that runs past the file, colours labelled RGB in a JPEG
that says YCbCr. :func:`plan_decoding` finds these and either refuses the photo with a
:class:`PhotoDecodeError` (one sentence for the clinician, detail for the log) or returns the
:class:`DecodePlan` to decode under, with a note for the report when it had to correct a
mislabelled colour model.

Corrections made (each says so in the report): a JPEG/JPEG-LS frame whose own markers (JFIF,
Adobe APP14, component ids 'R','G','B') contradict the header's colour model is decoded under
the stream's; a JPEG labelled YBR_ICT/YBR_RCT (JPEG 2000 terms) is decoded as YCbCr; native
data labelled YBR_FULL whose values are impossible as YCbCr is decoded as RGB (see
:func:`rgb_mislabelled_as_ybr`). Everything else that disagrees is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom.codestream import CodestreamError, StreamKind, encapsulated_fragments, first_frame, inspect_stream
from pipeline.errors import UnreadableImageError

#: Largest image decoded (pixels): a 100-megapixel RGB frame is 300 MB as uint8.
MAX_PIXELS = 100_000_000
#: Colour models with three samples per pixel, and with one.
COLOUR_MODELS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
GREY_MODELS = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
#: Which coding processes each compressed transfer syntax may carry.
STREAM_KINDS = {
    JPEGBaseline8Bit: (StreamKind.JPEG_BASELINE, StreamKind.JPEG_EXTENDED),
    JPEGExtended12Bit: (StreamKind.JPEG_BASELINE, StreamKind.JPEG_EXTENDED),
    JPEGLossless: (StreamKind.JPEG_LOSSLESS,),
    JPEGLosslessSV1: (StreamKind.JPEG_LOSSLESS,),
    JPEGLSLossless: (StreamKind.JPEG_LS,),
    JPEGLSNearLossless: (StreamKind.JPEG_LS,),
    JPEG2000Lossless: (StreamKind.JPEG_2000,),
    JPEG2000: (StreamKind.JPEG_2000,),
}
#: Share of pixels that must be impossible as YCbCr before native YBR_FULL data is read as RGB.
IMPOSSIBLE_YBR_SHARE = 0.02


class PhotoDecodeError(UnreadableImageError):
    """The DICOM object has missing, corrupt or unsupported pixel data.

    The message is one sentence for the clinician; ``detail`` keeps the decoder's
    own words for the logs.
    """

    code = "unreadable_dicom_pixels"

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class DecodePlan:
    """How to decode frame 0: under ``photometric`` (the header's, or a correction) with ``notes``
    (one sentence per correction, for the report). ``check_ybr_gamut``: native YBR_FULL data,
    to be tested with :func:`rgb_mislabelled_as_ybr` after decoding raw."""

    photometric: str
    rows: int
    columns: int
    samples: int
    notes: tuple[str, ...] = ()
    check_ybr_gamut: bool = False


def _int(ds: Dataset, keyword: str, default: int = 0) -> int:
    try:
        value = ds.get(keyword, default)
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError, OverflowError):
        raise PhotoDecodeError(f"The photo's header has an unreadable {keyword} value.") from None


def transfer_syntax(ds: Dataset) -> UID | None:
    file_meta = getattr(ds, "file_meta", None)
    syntax = getattr(file_meta, "TransferSyntaxUID", None) if file_meta is not None else None
    return UID(str(syntax)) if syntax else None


def encapsulation_problem(ds: Dataset) -> str | None:
    """Why ``ds``'s Pixel Data is not validly encapsulated for its transfer syntax, or None.

    Only judges an element still as read from bytes (a raw element): encapsulated Pixel Data
    must have undefined length (PS3.5 A.4); dcmtk refuses it otherwise, and so do we.
    """
    syntax = transfer_syntax(ds)
    try:
        element = ds.get_item("PixelData")
    except Exception:  # noqa: BLE001 - unreadable element: the decoder will say so
        return None
    if syntax is None or not syntax.is_encapsulated or not isinstance(element, RawDataElement):
        return None
    if element.length != 0xFFFFFFFF:
        return (f"the Pixel Data has an explicit length ({element.length} bytes) but the transfer syntax "
                f"{syntax.name} needs encapsulated fragments of undefined length")
    return None


def plan_decoding(ds: Dataset) -> DecodePlan:
    """Check ``ds``'s image header and (for compressed data) frame 0's codestream; see the module doc.

    Raises:
        PhotoDecodeError: the pixel data cannot be decoded reliably; the message names the reason.
    """
    if "PixelData" not in ds:
        raise PhotoDecodeError("The photo has no Pixel Data (7FE0,0010).")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    samples = _int(ds, "SamplesPerPixel")
    allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    if rows < 1 or columns < 1:
        raise PhotoDecodeError(f"The photo's image has no usable size (Rows={rows}, Columns={columns}).")
    if rows * columns > MAX_PIXELS:
        raise PhotoDecodeError(f"The photo is {columns}×{rows} pixels, more than the {MAX_PIXELS // 1_000_000} "
                               "megapixels this service reads.")
    if photometric in COLOUR_MODELS and samples != 3 or photometric in GREY_MODELS and samples != 1:
        raise PhotoDecodeError(f"The photo's header is inconsistent: {photometric} needs "
                               f"{3 if photometric in COLOUR_MODELS else 1} samples per pixel but it says {samples}.")
    if photometric not in COLOUR_MODELS + GREY_MODELS:
        raise PhotoDecodeError(f"The photo's colour format {photometric[:32]!r} is not supported.")
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise PhotoDecodeError(f"The photo's sample size is not supported (Bits Allocated {allocated}, "
                               f"Bits Stored {stored}).")
    if photometric == "PALETTE COLOR":
        missing = [colour for colour in ("Red", "Green", "Blue")
                   if f"{colour}PaletteColorLookupTableDescriptor" not in ds
                   or (f"{colour}PaletteColorLookupTableData" not in ds
                       and f"Segmented{colour}PaletteColorLookupTableData" not in ds)]
        if missing:
            raise PhotoDecodeError(f"The photo's colour lookup table (PALETTE COLOR) lacks its "
                                   f"{' and '.join(m.lower() for m in missing)} part.")
    plan = DecodePlan(photometric, rows, columns, samples)
    syntax = transfer_syntax(ds)
    if syntax is None:
        raise PhotoDecodeError("The photo has no transfer syntax, so its pixel data cannot be read.")
    if not syntax.is_encapsulated:
        _check_native_length(ds, plan, allocated)
        return DecodePlan(photometric, rows, columns, samples, check_ybr_gamut=photometric == "YBR_FULL")
    problem = encapsulation_problem(ds)
    if problem:
        raise PhotoDecodeError("The photo's compressed pixel data are not encoded as DICOM requires.", problem)
    return _check_stream(ds, plan, syntax)


def _check_native_length(ds: Dataset, plan: DecodePlan, allocated: int) -> None:
    frames = max(1, _int(ds, "NumberOfFrames", 1))
    per_pixel = 2 if plan.photometric == "YBR_FULL_422" else plan.samples
    frame_bytes = plan.rows * plan.columns * per_pixel * allocated // 8
    try:
        actual = len(ds.PixelData)
    except Exception as exc:  # noqa: BLE001 - value unreadable
        raise PhotoDecodeError("The photo's pixel data could not be read.", f"{type(exc).__name__}") from exc
    if actual < frame_bytes * frames:
        raise PhotoDecodeError(
            f"The photo's pixel data are incomplete: {actual} bytes where its header ({plan.columns}×{plan.rows}, "
            f"{plan.samples} samples of {allocated} bits, {frames} frame(s)) needs {frame_bytes * frames}.")


def _check_stream(ds: Dataset, plan: DecodePlan, syntax: UID) -> DecodePlan:
    if syntax == RLELossless:
        return plan
    try:
        items = encapsulated_fragments(bytes(ds.PixelData))
        frame = first_frame(items, max(1, _int(ds, "NumberOfFrames", 1)))
        info = inspect_stream(frame)
    except CodestreamError as exc:
        raise PhotoDecodeError("The photo's compressed pixel data are damaged, so the image cannot be read.",
                               str(exc)) from exc
    allowed = STREAM_KINDS.get(syntax)
    if allowed is not None and info.kind not in allowed:
        raise PhotoDecodeError(
            f"The photo's compressed image is a {info.kind.value} stream but its header declares {syntax.name}; "
            "the sending system mislabelled it.", f"stream {info.kind.name} under {syntax}")
    if (info.rows, info.columns) != (plan.rows, plan.columns):
        raise PhotoDecodeError(
            f"The photo's compressed image is {info.columns}×{info.rows} pixels but its header says "
            f"{plan.columns}×{plan.rows}, so it cannot be read reliably.")
    if info.components != plan.samples:
        raise PhotoDecodeError(
            f"The photo's compressed image has {info.components} colour component(s) but its header says "
            f"{plan.samples}, so it cannot be read reliably.")
    if not info.complete:
        raise PhotoDecodeError("The photo's compressed image is cut short (it has no end marker), so part of "
                               "it is missing.", f"{info.kind.name} frame of {len(frame)} bytes without EOI")
    if plan.samples != 3 or info.kind is StreamKind.JPEG_2000:
        return plan
    return _colour_correction(plan, info.colour, syntax)


def _colour_correction(plan: DecodePlan, stream_colour: str | None, syntax: UID) -> DecodePlan:
    ybr = "YBR_FULL_422" if syntax == JPEGBaseline8Bit else "YBR_FULL"
    label = plan.photometric
    if stream_colour == "YBR" and label not in ("YBR_FULL", "YBR_FULL_422"):
        target, why = ybr, "its JPEG stream declares YCbCr colours"
    elif stream_colour == "RGB" and label != "RGB":
        target, why = "RGB", "its JPEG stream declares RGB colours"
    elif stream_colour is None and label in ("YBR_ICT", "YBR_RCT"):
        target, why = ybr, f"{label} applies to JPEG 2000 only and a JPEG stream holds YCbCr unless it says otherwise"
    else:
        return plan
    note = f"The photo was decoded as {target} although its header says {label}: {why}."
    return DecodePlan(target, plan.rows, plan.columns, plan.samples, (*plan.notes, note))


def rgb_mislabelled_as_ybr(raw: np.ndarray) -> float:
    """The share of pixels of ``raw`` ([H, W, 3] samples as stored, labelled YBR_FULL) that are
    impossible as YCbCr: their RGB (ITU-R BT.601 full range) lies more than 8 levels outside 0..255.

    Every colour a camera records maps inside that range, so a large share means the data are
    not YCbCr at all; RGB data mislabelled YBR_FULL gives large shares (grey, white and dark
    areas alone do).
    """
    if raw.ndim != 3 or raw.shape[-1] != 3:
        raise ValueError(f"raw must be [H, W, 3], got {raw.shape}")
    high = float((1 << (raw.dtype.itemsize * 8)) - 1) if raw.dtype.kind == "u" else 255.0
    sample = raw[:: max(1, raw.shape[0] // 256), :: max(1, raw.shape[1] // 256)].astype(np.float64) * (255.0 / high)
    y, cb, cr = sample[..., 0], sample[..., 1] - 128.0, sample[..., 2] - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    outside = ((rgb < -8.0) | (rgb > 263.0)).any(axis=-1)
    return float(outside.mean())
