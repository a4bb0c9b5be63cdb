"""Regions of interest from landmarks in the aligned frame (method.md section 5).

The paper masked by hand; we derive the masks from the 68 landmarks so that the
score is reproducible:

- ``mouth_nose``: convex hull of the nose (27–35) and mouth (48–67), dilated by
  ``MOUTH_NOSE_MARGIN`` × the eye distance, so the upper lip, philtrum and nostril
  sills (where a cleft lies) are inside.
- ``face_without_eyes``: convex hull of the jaw line (0–16) and brows (17–26), minus
  each eye's hull dilated by ``EYE_MARGIN`` × the eye distance.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.preprocess.faces import eye_centres
from pipeline.vocabulary import Region

MOUTH_NOSE_MARGIN = 0.12
EYE_MARGIN = 0.15


def region_masks(aligned_landmarks: np.ndarray, size: int) -> dict[Region, np.ndarray]:
    """Boolean ``[size, size]`` masks, keyed by :class:`pipeline.vocabulary.Region` (a str enum,
    so plain region names work as keys too)."""
    if aligned_landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must be [68, 2], got {aligned_landmarks.shape}")
    right_eye, left_eye = eye_centres(aligned_landmarks)
    eye_distance = float(np.hypot(*(left_eye - right_eye)))
    nose_mouth = np.concatenate([aligned_landmarks[27:36], aligned_landmarks[48:68]])
    mouth_nose = _dilate(_hull_mask(nose_mouth, size), MOUTH_NOSE_MARGIN * eye_distance)
    face = _hull_mask(aligned_landmarks[0:27], size)
    eyes = _hull_mask(aligned_landmarks[36:42], size) | _hull_mask(aligned_landmarks[42:48], size)
    face_without_eyes = face & ~_dilate(eyes, EYE_MARGIN * eye_distance)
    return {Region.MOUTH_NOSE: mouth_nose, Region.FACE_WITHOUT_EYES: face_without_eyes}


def _hull_mask(points: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    if radius < 0.5:
        return mask
    # Euclidean dilation: pixels within `radius` of the region.
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return distance <= radius


def mask_outline(mask: np.ndarray) -> list[np.ndarray]:
    """Contours (outer and hole boundaries) of a boolean mask as ``[K, 2]`` (x, y) point arrays, for drawing."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2) for c in contours]
