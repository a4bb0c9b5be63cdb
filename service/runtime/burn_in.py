"""The Secondary Capture picture: heatmap on the photo with a burned-in legend and score.

PACS viewers show Secondary Captures as plain pictures, so everything a clinician
needs to read the image is drawn into its pixels: the colour scale with its units,
the score and what it measures, and — for non-clinical models — a banner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.compare.render import heatmap_to_rgb

_BANNER_RED = (200, 0, 0)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's bundled fonts (no system fonts needed)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size=size)


def compose_secondary_capture(
    overlay: np.ndarray,
    *,
    score: float,
    vmax: float,
    caption: str,
    non_clinical_label: str = "",
    calibrated: str = "",
) -> np.ndarray:
    """``overlay`` ([H, W, 3] uint8, heatmap already on the photo) with a legend
    panel added below it: colour bar 0…``vmax`` (squared YCbCr error per pixel),
    the score, ``caption`` (what was scored, model identity) and the banner.
    Returns a new [H + panel, W, 3] uint8 image."""
    if overlay.ndim != 3 or overlay.shape[2] != 3 or overlay.dtype != np.uint8:
        raise ValueError(f"overlay must be [H, W, 3] uint8, got {overlay.shape} {overlay.dtype}")
    if not np.isfinite(score):
        raise ValueError(f"score must be finite, got {score!r}")
    if not (np.isfinite(vmax) and vmax > 0):
        raise ValueError(f"vmax must be positive and finite, got {vmax!r}")
    height, width = overlay.shape[:2]
    unit = max(12, width // 48)
    lines = 4 + (1 if calibrated else 0)
    panel_height = unit * (2 * lines + 3) + (unit * 3 if non_clinical_label else 0)
    canvas = Image.new("RGB", (width, height + panel_height), (0, 0, 0))
    canvas.paste(Image.fromarray(overlay), (0, 0))
    draw = ImageDraw.Draw(canvas)
    big, small = _font(int(unit * 1.4)), _font(unit)
    y = height + unit // 2
    if non_clinical_label:
        draw.rectangle([0, y - unit // 2, width, y + unit * 2.5], fill=_BANNER_RED)
        draw.text((unit, y), non_clinical_label, fill=(255, 255, 255), font=big)
        y += unit * 3
    draw.text((unit, y), f"Cleft appraisal score S = {score:.3f}  (higher = closer to normal)", fill=(255, 255, 255), font=big)
    y += int(unit * 2.2)
    if calibrated:
        draw.text((unit, y), calibrated, fill=(255, 255, 255), font=small)
        y += int(unit * 1.8)
    bar_width = width - 2 * unit
    ramp = np.linspace(0.0, vmax, bar_width)[None, :].repeat(unit, axis=0)
    canvas.paste(Image.fromarray(heatmap_to_rgb(ramp, vmax)), (unit, y))
    y += unit + 4
    draw.text((unit, y), "0", fill=(255, 255, 255), font=small)
    label = f"{vmax:.0f}" if vmax >= 10 else f"{vmax:.3g}"
    text_width = draw.textlength(label, font=small)
    draw.text((unit + bar_width - text_width, y), label, fill=(255, 255, 255), font=small)
    middle = "squared colour difference per pixel (YCbCr, eroded)"
    draw.text((unit + (bar_width - draw.textlength(middle, font=small)) / 2, y), middle, fill=(200, 200, 200), font=small)
    y += int(unit * 1.8)
    for text in caption.split("\n"):
        draw.text((unit, y), text, fill=(200, 200, 200), font=small)
        y += int(unit * 1.5)
    return np.asarray(canvas)
