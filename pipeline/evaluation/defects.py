"""A synthetic cleft-like defect of the upper lip, for the simulation study.

Model. In the aligned frame a unilateral notch runs along the *cleft axis*
from the free margin of the upper lip, P0 (mean of inner-lip landmarks 61, 62),
through the vermilion border, Pv (mean of 50, 51), towards the nostril sill,
P1 (mean of 31, 32): the subject's right side, image left. ``side=LEFT`` (the
subject's left, image right) mirrors the landmarks (63/62, 52/51, 35/34).
Coordinates: u along the axis (0 at P0, growing towards the nose), v across it;
L = |P1 − P0| (lip height), E = the eye distance (face scale).

For a severity s in [0, 1] (0 = none, 1 = complete cleft):

* notch height h = L · (height_min + (1 − height_min) · s): it reaches the
  nostril at s = 1; notch half-width w = E · (half_width_min + (half_width_max
  − half_width_min) · s) (names of :class:`CleftDefectSettings`);
* a smooth backward displacement field D (the output pixel p shows the input at
  p − D(p), bilinear): a lateral pull D_v = A · tanh(v / w) that moves the lip
  edges apart from the axis, A = pull · w · s (pull < 1 keeps the warp
  one-to-one), and an upward lift D_u = B · Λ(u) that retracts the lip margin
  towards the nose next to the notch, B = lift · L · s, Λ a bell that is 1 at
  the margin and 0 at the notch's top;
* shading inside the notch: colours × (1 − darkening · s · φ), with φ a
  Gaussian across the axis (sigma 0.6 w), full strength from the margin to the
  notch's top, fading out over w/2 below the margin and over w above the top;
  and a vermilion interruption: in the vermilion band (about 0 ≤ u ≤ u_v, the
  height of Pv above P0) the colour moves towards its own luminance by
  desaturation · s · φ.

Everything is multiplied by a compact window: the biweight (1 − t²)² of v / 3w
across the axis, times 1 for 0 ≤ u ≤ h falling (biweight) to 0 at
u = −(w + 2B) below the margin and at u = h + w above the notch's top. The
displacement and the shading are smooth (C¹) and vanish outside this window,
whose support is the returned ``region``. Pixels outside ``region`` are copied
unchanged; s = 0 returns an exact copy and an empty region. Pure numpy/OpenCV,
no randomness: the same inputs give the same output bit for bit.

This is a geometric caricature of a cleft lip (a notch with lifted, separated
edges and a dark gap), not an anatomical model; it exists to test whether the
method's score falls and its heatmap points at the lip as a known defect grows.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.preprocess.faces import eye_centres

#: BT.601 luma weights, for the vermilion interruption (desaturation towards luminance).
_LUMA = np.array([0.299, 0.587, 0.114])


class CleftSide(enum.Enum):
    """Side of the face the notch is on, in the subject's terms."""

    #: Subject's right, image left: landmarks 61/62, 50/51, 31/32 (the default).
    RIGHT = "right"
    #: Subject's left, image right: landmarks 62/63, 51/52, 34/35.
    LEFT = "left"


#: Landmark pairs (margin, vermilion border, nostril sill) per side.
_LANDMARKS = {
    CleftSide.RIGHT: ((61, 62), (50, 51), (31, 32)),
    CleftSide.LEFT: ((63, 62), (52, 51), (35, 34)),
}


@dataclass(frozen=True)
class CleftDefectSettings:
    """Shape constants of the defect (see the module docstring for their role)."""

    half_width_min: float = 0.02  # × eye distance, as s → 0
    half_width_max: float = 0.08  # × eye distance, at s = 1
    height_min: float = 0.35  # × lip height, as s → 0
    pull: float = 0.8  # lateral pull, × half-width, at s = 1 (< 1: one-to-one warp)
    lift: float = 0.3  # lift of the margin, × lip height, at s = 1
    darkening: float = 0.55  # fraction of brightness removed on the axis at s = 1
    desaturation: float = 0.6  # fraction of vermilion colour removed on the axis at s = 1

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"CleftDefectSettings.{name} must be a finite number, got {value!r}")
        if not 0 < self.half_width_min <= self.half_width_max:
            raise ValueError(f"need 0 < half_width_min <= half_width_max, got {self.half_width_min}, {self.half_width_max}")
        if not 0 < self.height_min <= 1:
            raise ValueError(f"height_min must be in (0, 1], got {self.height_min}")
        if not 0 <= self.pull < 1:
            raise ValueError(f"pull must be in [0, 1) to keep the warp one-to-one, got {self.pull}")
        for name in ("lift", "darkening", "desaturation"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class CleftGeometry:
    """Where the notch lies: points (x, y) in aligned pixels and sizes in pixels."""

    margin: np.ndarray  # P0, [2]
    vermilion: np.ndarray  # Pv, [2]
    nostril: np.ndarray  # P1, [2]
    axis: np.ndarray  # unit vector from P0 towards P1, [2]
    across: np.ndarray  # unit vector across the axis, towards image right, [2]
    lip_height: float  # L
    eye_distance: float  # E


@dataclass(frozen=True)
class CleftDefect:
    """The result of :func:`implant_cleft`.

    image: [S, S, 3] uint8 RGB with the defect; region: bool [S, S], the window
    outside which the image is unchanged (empty at severity 0); severity in [0, 1];
    half_width, height, lift: the notch's sizes in pixels.
    """

    image: np.ndarray
    region: np.ndarray
    severity: float
    side: CleftSide
    geometry: CleftGeometry
    half_width: float
    height: float
    lift: float


def cleft_geometry(aligned_landmarks: np.ndarray, side: CleftSide = CleftSide.RIGHT) -> CleftGeometry:
    """The cleft axis of a face from its 68 aligned-frame landmarks ([68, 2], x, y)."""
    points = np.asarray(aligned_landmarks, dtype=np.float64)
    if points.shape != (68, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"aligned_landmarks must be [68, 2] finite, got shape {points.shape}")
    if not isinstance(side, CleftSide):
        raise TypeError(f"side must be a CleftSide, got {side!r}")
    (m1, m2), (v1, v2), (n1, n2) = _LANDMARKS[side]
    margin = (points[m1] + points[m2]) / 2
    vermilion = (points[v1] + points[v2]) / 2
    nostril = (points[n1] + points[n2]) / 2
    along = nostril - margin
    lip_height = float(np.hypot(*along))
    right_eye, left_eye = eye_centres(points)
    eye_distance = float(np.hypot(*(left_eye - right_eye)))
    if lip_height < 1e-6 or eye_distance < 1e-6:
        raise ValueError("the landmarks put the nostril on the lip margin or the eyes together; no cleft axis")
    axis = along / lip_height
    across = np.array([-axis[1], axis[0]])
    if across[0] < 0:
        across = -across
    return CleftGeometry(margin, vermilion, nostril, axis, across, lip_height, eye_distance)


def _biweight(t: np.ndarray) -> np.ndarray:
    """(1 − t²)² for |t| < 1, else 0: a C¹ bell with compact support."""
    inside = np.clip(1.0 - t * t, 0.0, None)
    return inside * inside


def implant_cleft(
    aligned_rgb: np.ndarray,
    aligned_landmarks: np.ndarray,
    severity: float,
    *,
    side: CleftSide = CleftSide.RIGHT,
    settings: CleftDefectSettings = CleftDefectSettings(),
) -> CleftDefect:
    """Implant the cleft-like notch at ``severity`` (0 = none … 1 = complete).

    aligned_rgb: [S, S, 3] uint8 RGB aligned face; aligned_landmarks: [68, 2]
    (x, y) in its pixels (detected or :mod:`pipeline.preprocess.template`).
    """
    if not isinstance(aligned_rgb, np.ndarray) or aligned_rgb.dtype != np.uint8:
        raise TypeError(f"aligned_rgb must be a uint8 numpy array, got {getattr(aligned_rgb, 'dtype', type(aligned_rgb).__name__)}")
    if aligned_rgb.ndim != 3 or aligned_rgb.shape[2] != 3 or aligned_rgb.shape[0] < 8 or aligned_rgb.shape[1] < 8:
        raise ValueError(f"aligned_rgb must be [H, W, 3] with H, W >= 8, got shape {aligned_rgb.shape}")
    if isinstance(severity, bool) or not isinstance(severity, (int, float, np.floating)) or not 0.0 <= float(severity) <= 1.0:
        raise ValueError(f"severity must be a number in [0, 1], got {severity!r}")
    severity = float(severity)
    geometry = cleft_geometry(aligned_landmarks, side)
    s, length, scale = severity, geometry.lip_height, geometry.eye_distance
    half_width = scale * (settings.half_width_min + (settings.half_width_max - settings.half_width_min) * s)
    height = length * (settings.height_min + (1.0 - settings.height_min) * s)
    lift = settings.lift * length * s
    if severity == 0.0:
        return CleftDefect(aligned_rgb.copy(), np.zeros(aligned_rgb.shape[:2], bool), 0.0, side, geometry,
                           half_width, height, 0.0)

    rows, cols = aligned_rgb.shape[:2]
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    dx, dy = xs - geometry.margin[0], ys - geometry.margin[1]
    u = dx * geometry.axis[0] + dy * geometry.axis[1]
    v = dx * geometry.across[0] + dy * geometry.across[1]

    reach_across = 3.0 * half_width
    below, above = half_width + 2.0 * lift, half_width
    window_v = _biweight(v / reach_across)
    window_u = np.where(u < 0, _biweight(u / below), np.where(u > height, _biweight((u - height) / above), 1.0))
    window = window_u * window_v
    region = window > 0

    # Backward displacement: output p shows the input at p − D(p).
    pull = settings.pull * half_width * s
    lateral = pull * np.tanh(v / half_width) * window
    lift_profile = np.where(u < 0, _biweight(u / below), _biweight(u / height)) * window_v
    upward = lift * lift_profile
    map_x = xs - lateral * geometry.across[0] - upward * geometry.axis[0]
    map_y = ys - lateral * geometry.across[1] - upward * geometry.axis[1]
    warped = cv2.remap(aligned_rgb, map_x.astype(np.float32), map_y.astype(np.float32),
                       interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    # The gap is dark from just below the margin to the notch's top, fading out over w/2 below the margin.
    along_notch = np.where(u < 0, _biweight(u / (0.5 * half_width)), window_u)
    notch = np.exp(-(v * v) / (2.0 * (0.6 * half_width) ** 2)) * along_notch * window_v
    vermilion_height = max(float((geometry.vermilion - geometry.margin) @ geometry.axis), 1.0)
    band_centre, band_reach = vermilion_height / 2.0, vermilion_height / 2.0 + half_width
    vermilion_band = _biweight((u - band_centre) / band_reach)
    colours = warped.astype(np.float64)
    luminance = colours @ _LUMA
    fade = (settings.desaturation * s * notch * vermilion_band)[..., None]
    colours = colours * (1.0 - fade) + luminance[..., None] * fade
    colours *= (1.0 - settings.darkening * s * notch)[..., None]
    shaded = np.clip(np.rint(colours), 0, 255).astype(np.uint8)
    image = np.where(region[..., None], shaded, aligned_rgb)
    return CleftDefect(image, region, severity, side, geometry, half_width, height, lift)
