"""Drawing landmarks and region outlines onto the original photo, for review."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from pipeline.preprocess.align import AlignmentTransform
from pipeline.preprocess.masks import mask_outline
from pipeline.vocabulary import Region

#: Outline colours (RGB) per region.
REGION_COLOURS: dict[Region, tuple[int, int, int]] = {
    Region.MOUTH_NOSE: (255, 64, 64),
    Region.FACE_WITHOUT_EYES: (64, 160, 255),
}
LANDMARK_COLOUR = (255, 255, 0)


def draw_landmarks_and_regions(
    photo: np.ndarray,
    landmarks: np.ndarray,
    masks: Mapping[str, np.ndarray],
    transform: AlignmentTransform,
) -> np.ndarray:
    """A copy of ``photo`` ([H, W, 3] uint8 RGB) with the 68 landmarks (photo
    coordinates, ``[68, 2]``), the aligned square and each aligned-frame mask's outline
    mapped back onto the photo. Line widths scale with the face size."""
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"photo must be [H, W, 3] uint8, got shape {photo.shape} dtype {photo.dtype}")
    canvas = photo.copy()
    thickness = max(1, int(round(2.0 / transform.scale * transform.output_size / 512)))
    radius = max(1, thickness + 1)
    quad = np.round(transform.quad).astype(np.int32)
    cv2.polylines(canvas, [quad], isClosed=True, color=(255, 255, 255), thickness=thickness, lineType=cv2.LINE_AA)
    for name, mask in masks.items():
        colour = REGION_COLOURS.get(name, (0, 255, 0))
        for contour in mask_outline(mask):
            points = np.round(transform.to_original(contour.astype(np.float64))).astype(np.int32)
            cv2.polylines(canvas, [points], isClosed=True, color=colour, thickness=thickness, lineType=cv2.LINE_AA)
    for x, y in np.round(landmarks).astype(int):
        cv2.circle(canvas, (int(x), int(y)), radius, LANDMARK_COLOUR, thickness=-1, lineType=cv2.LINE_AA)
    return canvas


def heatmap_on_photo(
    photo: np.ndarray,
    heatmap: np.ndarray,
    mask: np.ndarray,
    transform: AlignmentTransform,
    *,
    alpha: float = 0.6,
    vmax: float | None = None,
) -> np.ndarray:
    """The aligned-frame ``heatmap`` ([S, S]) drawn back onto the original ``photo``
    ([H, W, 3] uint8) inside the region ``mask`` ([S, S] bool), with the region's
    outline. ``vmax`` fixes the colour scale (default: the map's own, inside the mask)."""
    from pipeline.compare.render import display_vmax, overlay_heatmap

    if vmax is None:
        vmax = display_vmax(heatmap, mask)
    warped = np.maximum(transform.warp_to_original(heatmap.astype(np.float32), photo.shape[:2]), 0.0)
    warped_mask = transform.warp_to_original(mask.astype(np.float32), photo.shape[:2]) >= 0.5
    canvas = overlay_heatmap(photo, warped, alpha, warped_mask, vmax=vmax)
    thickness = max(1, int(round(2.0 / transform.scale * transform.output_size / 512)))
    for contour in mask_outline(mask):
        points = np.round(transform.to_original(contour.astype(np.float64))).astype(np.int32)
        cv2.polylines(canvas, [points], isClosed=True, color=(255, 255, 255), thickness=thickness, lineType=cv2.LINE_AA)
    return canvas
