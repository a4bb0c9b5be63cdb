"""FFHQ face alignment, numerically as FFHQ's preparation recipe, with the transform kept for drawing maps back.

The generator was trained on FFHQ, whose faces were aligned by an oriented square ("quad") derived
from the eye and mouth landmarks (method.md section 1) by NVlabs' ffhq-dataset ``recreate_aligned_images``.
We follow that recipe step by step, in its order (S: output size):

1. Quad: from the 68 landmarks (:func:`ffhq_quad`), side ``qsize``.
2. Shrink: ``shrink = ⌊qsize / S / 2⌋``; above 1, the photo is resized by ``1/shrink`` (sizes rounded)
   with PIL's Lanczos filter and the quad and qsize are divided by ``shrink``.
3. Crop: the quad's bounding box grown by ``border = max(round(0.1·qsize), 3)``, clipped to the photo.
4. Pad: if the quad plus border leaves the crop by more than ``border − 4`` pixels on some side, all
   four sides are reflect-padded by at least ``round(0.3·qsize)``; the image is blended towards its
   Gaussian blur (σ = 0.02·qsize) with weight clip(3·mask + 1) and then towards the padded image's
   median colour with weight clip(mask), mask growing from 0 at the photo's edge to 1 at the padded
   image's edge; rounded to uint8.
5. Resample: the quad is warped bilinearly to a T×T square, truncated to uint8 as PIL's sampler does,
   and resized to S×S with PIL's Lanczos filter: supersampled, then low-passed, so nothing aliases.

Exactly as the recipe: the quad, the shrink (including its ``quad / shrink`` convention, which samples
a square up to one shrunk pixel, under half an output pixel, from the nominal quad; ``transform`` records
the square actually sampled), the crop, the padding amounts, mask, weights and median, the rounding
points, and PIL's Lanczos filters. Different, each measured against an independent implementation of
the recipe (tests/pipeline/preprocess/ffhq_recipe.py, benchmarks/alignment_fidelity.py):

* The photo is cropped before it is shrunk: PIL resizes only the crop plus the filter's reach, its
  ``box`` placing the samples where the whole photo's resize puts them (±1 grey level in under 0.02 %
  of the pixels), so a 50 MP photo is never resized whole.
* The blur is computed on a grid of ⌊σ/8⌋-pixel cells when σ ≥ 16 (:func:`_blurred_cells`), within
  0.15 grey levels of scipy's exact filter, and only the bands where a weight is positive are blended.
* T = 4·S instead of a fixed 4096 (the same at the clinical S = 1024). The shrink keeps the quad below
  4·S pixels, so with T = 4·S the bilinear stage never decimates and the Lanczos stage always reduces
  by 4, the ratios FFHQ's 1024² faces were made with, at a cost growing with S² (a fixed 4096 would
  warp 16.8 Mpx for a 64² face). Against the recipe's 4096 at 256² and 64² this adds 0.1–0.17 (8-bit²)
  to the mean squared difference (0.02–0.04 with T = 4096), about uint8 rounding noise (1/12).
* The warp is OpenCV's bilinear ``warpAffine`` (positions to 1/32 pixel) in strips of rows instead of
  PIL's QUAD transform in one piece, so memory stays bounded for any S.

Measured on five real photos with the quad 0.8–4× the output (upscaled ones with grain): mean squared
difference to the recipe in the central half 0.04–0.07 (8-bit²) at 1024², 0.12–0.24 at 256² and 64²;
Laplacian energy 0.996–1.008× the recipe's. The single bilinear warp used before differed by 0.57–107
with 1.0–8.2× the Laplacian energy. Peak memory beyond a 50 MP photo at 1024²: 0.16 GB with the quad
inside the photo, 0.5 GB for a 3.9·S quad leaving it (the worst case; the recipe as written: 2.8 GB).
Time at 1024² on 2 cores: 0.4–0.5 s for 12–50 MP photos with the quad inside (0.05–0.35 s before;
benchmarks/preprocess.py), 2.4 s for that worst case (0.26 s before, 94 s for the recipe as written).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from pipeline.preprocess.faces import eye_centres

SUPERSAMPLING = 4  # T = SUPERSAMPLING · S, FFHQ's 4096 / 1024
_LANCZOS_SUPPORT = 3.0  # PIL's Lanczos kernel reaches 3 output pixels either side
_STRIP_SAMPLES = 1 << 22  # T-frame samples per warp strip (48 MB as float32 RGB)


@dataclass(frozen=True)
class AlignmentTransform:
    """Affine transform from photo pixels to aligned-frame pixels (a similarity up to the shrink's
    size rounding, under 0.05 %).

    ``matrix`` is 3×3: ``[x', y', 1]ᵀ = matrix @ [x, y, 1]ᵀ`` with pixel centres at integer
    coordinates. ``quad`` holds the four photo-space corners (top-left, bottom-left, bottom-right,
    top-right) of the aligned square, i.e. the outer corners of its pixel grid mapped back.
    """

    matrix: np.ndarray
    output_size: int
    quad: np.ndarray

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Map ``[K, 2]`` photo points (x, y) into the aligned frame."""
        return _apply(self.matrix, points)

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map ``[K, 2]`` aligned-frame points back into photo pixels."""
        return _apply(np.linalg.inv(self.matrix), points)

    @property
    def scale(self) -> float:
        """Aligned pixels per photo pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))

    def warp_to_original(self, aligned_map: np.ndarray, original_shape: tuple[int, int], fill: float = 0.0) -> np.ndarray:
        """Draw a map given in the aligned frame (``[S, S]`` or ``[S, S, C]``) onto the
        photo's geometry ``(H, W)``; pixels outside the aligned square get ``fill``."""
        if aligned_map.shape[:2] != (self.output_size, self.output_size):
            raise ValueError(f"map must be {self.output_size}×{self.output_size}, got {aligned_map.shape}")
        height, width = original_shape
        data = aligned_map.astype(np.float32) if aligned_map.dtype not in (np.float32, np.uint8) else aligned_map
        return cv2.warpAffine(
            data, self.matrix[:2], (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=fill,
        )

    def to_dict(self) -> dict:
        return {"matrix": self.matrix.tolist(), "output_size": self.output_size, "quad": self.quad.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "AlignmentTransform":
        return cls(np.asarray(data["matrix"], dtype=np.float64), int(data["output_size"]), np.asarray(data["quad"], dtype=np.float64))


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be [K, 2], got {pts.shape}")
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ alignment square for 68 landmarks: ``[4, 2]`` corners (TL, BL, BR, TR).

    Centre slightly below the eye midpoint (10 % of the eye-to-mouth vector); axis
    from the eye-to-eye vector and the eye-to-mouth vector turned by 90°; half side
    the larger of 2× the eye distance and 1.8× the eye-to-mouth distance.
    """
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must be [68, 2], got {landmarks.shape}")
    if not np.all(np.isfinite(landmarks)):
        raise ValueError("landmarks must be finite numbers")
    right_eye, left_eye = eye_centres(landmarks)  # image left, image right
    eye_mid = (right_eye + left_eye) / 2
    eye_to_eye = left_eye - right_eye
    mouth_mid = (landmarks[48] + landmarks[54]) / 2
    eye_to_mouth = mouth_mid - eye_mid
    # The horizontal axis blends the eye line with the eye-mouth line turned by -90°.
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x_axis /= np.hypot(*x_axis)
    x_axis *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    centre = eye_mid + eye_to_mouth * 0.1
    return np.stack([centre - x_axis - y_axis, centre - x_axis + y_axis, centre + x_axis + y_axis, centre + x_axis - y_axis])


def quad_transform(quad: np.ndarray, output_size: int) -> AlignmentTransform:
    """The similarity mapping the quad's corners onto the output square's corners.

    The quad's edges map onto the outer edges of the pixel grid, so the corners land
    at -0.5 and ``size - 0.5`` in pixel-centre coordinates.
    """
    if output_size < 8:
        raise ValueError(f"output_size must be at least 8, got {output_size!r}")
    top_left, _, _, top_right = quad
    side = np.hypot(*(top_right - top_left))
    cos, sin = (top_right - top_left) / side
    scale = output_size / side
    rotation = np.array([[cos, sin], [-sin, cos]]) * scale
    offset = np.array([-0.5, -0.5]) - rotation @ top_left
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = rotation, offset
    return AlignmentTransform(matrix=matrix, output_size=output_size, quad=np.asarray(quad, dtype=np.float64))


def align_face(image: np.ndarray, landmarks: np.ndarray, output_size: int) -> tuple[np.ndarray, AlignmentTransform]:
    """Shrink, crop, pad and resample ``image`` ([H, W, 3] uint8) to the FFHQ-aligned
    ``[output_size, output_size, 3]`` uint8 face, as FFHQ's recipe; returns it with its transform.

    Memory is bounded by the quad (at most ~4·S pixels a side after the shrink), not the photo.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8, got shape {image.shape} dtype {image.dtype}")
    if not isinstance(output_size, (int, np.integer)) or output_size < 8:
        raise ValueError(f"output_size must be an integer of at least 8, got {output_size!r}")
    quad = ffhq_quad(landmarks)
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    crop, quad, qsize, photo_to_crop = _shrunk_crop(image, quad, qsize, output_size)
    padded, offset = _pad_and_soften(crop, quad, qsize)
    quad = quad + offset
    supersampled = SUPERSAMPLING * output_size
    aligned = _warp_antialiased(padded, quad, supersampled, output_size)
    # photo → crop → padded → T-frame → S-frame (PIL's resize maps pixel centres (i + ½)·S/T − ½).
    ratio = output_size / supersampled
    t_to_s = np.array([[ratio, 0, 0.5 * ratio - 0.5], [0, ratio, 0.5 * ratio - 0.5], [0, 0, 1]])
    matrix = t_to_s @ quad_transform(quad, supersampled).matrix @ _translation(*offset) @ photo_to_crop
    corners = np.array([[-0.5, -0.5], [-0.5, output_size - 0.5], [output_size - 0.5] * 2, [output_size - 0.5, -0.5]])
    quad_in_photo = _apply(np.linalg.inv(matrix), corners)
    return aligned, AlignmentTransform(matrix=matrix, output_size=int(output_size), quad=quad_in_photo)


def _shrunk_crop(
    image: np.ndarray, quad: np.ndarray, qsize: float, output_size: int
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Steps 2 and 3: the recipe's shrunk and cropped photo ``[h, w, 3]`` uint8, the quad and its
    side in its pixels, and the 3×3 matrix from photo pixels to its pixels (pixel centres).

    Crops before shrinking: PIL resizes only the crop plus the filter's reach, with ``box`` placing
    the samples where the whole photo's resize puts them, so the result equals the recipe's.
    """
    height, width = image.shape[:2]
    shrink = int(np.floor(qsize / output_size * 0.5))
    photo_to_shrunk = np.eye(3)
    shrunk_size = np.array([width, height])
    if shrink > 1:
        shrunk_size = np.array([int(np.rint(width / shrink)), int(np.rint(height / shrink))])
        step = np.array([width, height]) / shrunk_size  # photo pixels per shrunk pixel
        quad, qsize = quad / shrink, qsize / shrink  # the recipe's convention, kept (see the module docstring)
        photo_to_shrunk = np.array([[1 / step[0], 0, 0.5 / step[0] - 0.5],
                                    [0, 1 / step[1], 0.5 / step[1] - 0.5], [0, 0, 1]])
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.maximum(np.floor(quad.min(axis=0)).astype(int) - border, 0)
    hi = np.minimum(np.ceil(quad.max(axis=0)).astype(int) + border, shrunk_size)
    if np.any(hi <= lo):
        raise ValueError("the alignment square lies entirely outside the photo")
    if shrink > 1:
        reach = _LANCZOS_SUPPORT * step + 1  # photo pixels the filter reads beyond a shrunk pixel's span
        src_lo = np.maximum(np.floor(lo * step - reach).astype(int), 0)
        src_hi = np.minimum(np.ceil(hi * step + reach).astype(int), [width, height])
        region = Image.fromarray(np.ascontiguousarray(image[src_lo[1] : src_hi[1], src_lo[0] : src_hi[0]]))
        box = (*(lo * step - src_lo), *(hi * step - src_lo))
        crop = np.asarray(region.resize(tuple(int(v) for v in hi - lo), Image.Resampling.LANCZOS, box=box))
    else:
        crop = image[lo[1] : hi[1], lo[0] : hi[0]]
    return crop, quad - lo, qsize, _translation(-lo[0], -lo[1]) @ photo_to_shrunk


def _pad_and_soften(crop: np.ndarray, quad: np.ndarray, qsize: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: the recipe's padding. Returns the ``[h', w', 3]`` uint8 image the quad is sampled
    from and the (x, y) offset of ``crop`` inside it (zero when no padding is needed).

    mask = max(mask_x, mask_y) is 1 at the padded image's edge, 0 at the photo's edge and negative
    inside; the blur's weight clip(3·mask + 1) and the fade's clip(mask) are positive only in bands
    along the edges, so only those are blended (:func:`_blend_bands`). One float32 channel and its
    copy for the median are the working set (the recipe holds the padded image, its blur and its
    mask in floats, all channels at once).
    """
    height, width = crop.shape[:2]
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pads = np.array([max(-lo[0] + border, 0), max(-lo[1] + border, 0),
                     max(hi[0] - width + border, 0), max(hi[1] - height + border, 0)])  # left, top, right, bottom
    if pads.max() <= border - 4:
        return crop, np.zeros(2)
    pads = np.maximum(pads, int(np.rint(qsize * 0.3)))
    left, top, right, bottom = (int(p) for p in pads)
    padded = cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_REFLECT_101)  # = numpy's 'reflect'
    rows, cols = padded.shape[:2]
    x, y = np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64)
    mask_x = 1.0 - np.minimum(x / left, (cols - 1 - x) / right)
    mask_y = 1.0 - np.minimum(y / top, (rows - 1 - y) / bottom)
    blur_weights = (np.clip(mask_x * 3.0 + 1.0, 0.0, 1.0), np.clip(mask_y * 3.0 + 1.0, 0.0, 1.0))
    fade_weights = (np.clip(mask_x, 0.0, 1.0), np.clip(mask_y, 0.0, 1.0))
    cells, factor = _blurred_cells(padded, qsize * 0.02)
    values = np.empty((rows, cols), dtype=np.float32)
    scratch = np.empty(rows * cols, dtype=np.float32)
    for channel in range(3):
        np.copyto(values, padded[..., channel])
        _blend_bands(values, lambda r, c, k=channel: _upsampled_cells(cells[..., k], factor, r, c), *blur_weights)
        np.copyto(scratch, values.ravel())
        median = _median_in_place(scratch)
        _blend_bands(values, lambda r, c, m=median: m, *fade_weights)
        for r, c in _bands(*blur_weights):  # only the bands changed; values there stay within 0..255
            padded[r, c, channel] = np.rint(values[r, c])
    return padded, np.array([left, top], dtype=np.float64)


def _bands(weight_x: np.ndarray, weight_y: np.ndarray, samples: int = 1 << 20) -> list[tuple[slice, slice]]:
    """Row strips (about ``samples`` pixels each) covering where ``max(weight_x[x], weight_y[y]) > 0``:
    each weight is zero on one middle interval, so that is a top, a bottom, a left and a right band."""
    rows, cols = len(weight_y), len(weight_x)
    zero_rows, zero_cols = np.flatnonzero(weight_y == 0), np.flatnonzero(weight_x == 0)
    top, bottom = (int(zero_rows[0]), int(zero_rows[-1]) + 1) if len(zero_rows) else (rows, rows)
    left, right = (int(zero_cols[0]), int(zero_cols[-1]) + 1) if len(zero_cols) else (cols, cols)
    strips = []
    regions = [(0, top, 0, cols), (bottom, rows, 0, cols), (top, bottom, 0, left), (top, bottom, right, cols)]
    for r0, r1, c0, c1 in regions:
        step = max(1, samples // max(c1 - c0, 1))
        strips += [(slice(s, min(s + step, r1)), slice(c0, c1)) for s in range(r0, r1, step) if c1 > c0]
    return strips


def _blend_bands(values: np.ndarray, target, weight_x: np.ndarray, weight_y: np.ndarray) -> None:
    """``values += (target − values) · max(weight_x[x], weight_y[y])`` in place on ``[H, W]`` float32,
    where the weight is positive; ``target(rows, cols)`` gives the target for a pair of slices."""
    weight_x, weight_y = weight_x.astype(np.float32), weight_y.astype(np.float32)
    for r, c in _bands(weight_x, weight_y):
        change = target(r, c) - values[r, c]
        change *= np.maximum(weight_x[None, c], weight_y[r, None])
        values[r, c] += change


def _blurred_cells(image: np.ndarray, sigma: float) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.gaussian_filter(image, [sigma, sigma, 0])`` (mode 'reflect', truncate 4) of a
    ``[H, W, C]`` uint8 image, on a grid of k×k-pixel cells aligned with the top-left corner; returns
    the float32 cells and k. Read it back with :func:`_upsampled_cells`.

    Hand-written because the exact filter costs O(σ) per pixel and σ grows with the quad (about 20 s
    for σ = 60 on a 25 Mpx padded photo). k = ⌊σ/8⌋: cell means, a blur with the remaining variance,
    bilinear interpolation back; within 0.15 grey levels of scipy (rms 0.012). The bottom and right
    are first extended by reflection as far as the blur reaches, so every edge mirrors as scipy's
    does. Below σ = 16, k = 1: OpenCV's separable filter with scipy's kernel (within 2e-4).
    """
    height, width = image.shape[:2]
    factor = max(int(sigma // 8), 1)
    # The cell means add variance k²/12, bilinear interpolation k²/6 (in pixels²).
    rest = float(np.sqrt((sigma / factor) ** 2 - 0.25)) if factor > 1 else sigma
    radius = int(4.0 * rest + 0.5)
    reach = (radius + 1) * factor if factor > 1 else 0
    rows, cols = -(-(height + reach) // factor), -(-(width + reach) // factor)
    cells = np.empty((rows, cols, image.shape[2]), dtype=np.float32)
    step = max(1, (1 << 22) // (cols * factor * factor))  # cell rows per strip of about 4 Mpx
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        source_rows = np.arange(r0 * factor, r1 * factor)
        source_rows = np.where(source_rows < height, source_rows, 2 * height - 1 - source_rows)  # reach < height
        strip = cv2.copyMakeBorder(image[source_rows], 0, 0, 0, cols * factor - width, cv2.BORDER_REFLECT)
        cells[r0:r1] = cv2.resize(strip.astype(np.float32), (cols, r1 - r0), interpolation=cv2.INTER_AREA)  # means
    kernel = (2 * radius + 1, 2 * radius + 1)
    blurred = cv2.GaussianBlur(cells, kernel, rest, sigmaY=rest, borderType=cv2.BORDER_REFLECT)
    return blurred, factor


def _upsampled_cells(cells: np.ndarray, factor: int, rows: slice, cols: slice) -> np.ndarray:
    """Pixels ``[rows, cols]`` of the bilinear interpolation of ``[R, C]`` cells of ``factor``² pixels
    (pixel x reads cell coordinate (x + ½)/k − ½, clamped at the edges), computed from the cells
    around them only; equal to upsampling the whole grid at once."""
    if factor == 1:
        return cells[rows, cols]
    r0, c0 = max(rows.start // factor - 1, 0), max(cols.start // factor - 1, 0)
    r1, c1 = min((rows.stop - 1) // factor + 2, cells.shape[0]), min((cols.stop - 1) // factor + 2, cells.shape[1])
    part = np.ascontiguousarray(cells[r0:r1, c0:c1])
    up = cv2.resize(part, ((c1 - c0) * factor, (r1 - r0) * factor), interpolation=cv2.INTER_LINEAR)
    return up[rows.start - r0 * factor : rows.stop - r0 * factor, cols.start - c0 * factor : cols.stop - c0 * factor]


def _translation(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)


def _median_in_place(values: np.ndarray) -> np.float32:
    """``np.median`` of a flat float32 array, reordering it; hand-written as one partition and a max,
    about 4× faster than numpy's two-index partition on the 10–50 Mpx padded photos."""
    middle = values.size // 2
    values.partition(middle)
    if values.size % 2:
        return np.float32(values[middle])
    return np.float32((float(values[middle]) + float(values[:middle].max())) / 2)


def _warp_antialiased(source: np.ndarray, quad: np.ndarray, supersampled: int, output_size: int) -> np.ndarray:
    """Step 5: warp ``quad`` of ``source`` bilinearly to ``supersampled``² and Lanczos-resize to
    ``output_size``², in strips of output rows.

    Each strip is warped with the rows the Lanczos filter reaches (PIL's resize with ``box`` reads past
    the box, so strips join as one resize would). The warp runs in float32 and is truncated to uint8,
    as PIL's bilinear QUAD transform does (rounding instead would brighten the face by half a level).
    """
    to_t = quad_transform(quad, supersampled).matrix
    from_t = np.linalg.inv(to_t)
    ratio = supersampled // output_size
    reach = int(np.ceil(_LANCZOS_SUPPORT * ratio)) + 1
    rows_per_strip = max(1, _STRIP_SAMPLES // (supersampled * ratio))
    height, width = source.shape[:2]
    out = np.empty((output_size, output_size, 3), dtype=np.uint8)
    for j0 in range(0, output_size, rows_per_strip):
        j1 = min(j0 + rows_per_strip, output_size)
        t0, t1 = max(j0 * ratio - reach, 0), min(j1 * ratio + reach, supersampled)
        # The part of the source this strip samples, as float32.
        corners = _apply(from_t, np.array([[-1.0, t0 - 1], [supersampled, t0 - 1], [-1.0, t1], [supersampled, t1]]))
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 3, [width, height])
        part = source[y0:y1, x0:x1].astype(np.float32)
        strip_matrix = _translation(0, -t0) @ to_t @ _translation(x0, y0)
        warped = cv2.warpAffine(part, strip_matrix[:2], (supersampled, t1 - t0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
        strip = Image.fromarray(warped.astype(np.uint8))  # truncates, as PIL's bilinear sampler
        box = (0, j0 * ratio - t0, supersampled, j1 * ratio - t0)
        out[j0:j1] = np.asarray(strip.resize((output_size, j1 - j0), Image.Resampling.LANCZOS, box=box))
    return out
