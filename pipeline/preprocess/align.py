"""FFHQ-style face alignment, with the transform kept for drawing maps back.

The generator was trained on FFHQ, whose faces were aligned by an oriented square
("quad") derived from the eye and mouth landmarks (method.md section 1). The quad is a
rotated square, so photo → aligned frame is a similarity transform; we keep it as a
3×3 matrix. Where the quad leaves the photo, the photo is mirrored (reflection
padding) and the mirrored area is progressively blurred and faded towards its median
colour with distance from the photo's edge, as FFHQ's preparation did.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.preprocess.faces import eye_centres


@dataclass(frozen=True)
class AlignmentTransform:
    """Similarity transform from photo pixels to aligned-frame pixels.

    ``matrix`` is 3×3: ``[x', y', 1]ᵀ = matrix @ [x, y, 1]ᵀ`` with pixel centres at
    integer coordinates. ``quad`` holds the four photo-space corners (top-left,
    bottom-left, bottom-right, top-right) of the aligned square.
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
    """Crop, pad and resample ``image`` ([H, W, 3] uint8) to the FFHQ-aligned
    ``[output_size, output_size, 3]`` uint8 face; returns it with its transform.

    Memory is bounded by the quad's bounding box, not the photo: large photos are
    cropped first and shrunk with area averaging before the final resampling.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8, got shape {image.shape} dtype {image.dtype}")
    quad = ffhq_quad(landmarks)
    transform = quad_transform(quad, output_size)
    height, width = image.shape[:2]
    qsize = float(np.hypot(*(quad[3] - quad[0])))

    # 1. Crop the quad's bounding box (plus a few pixels for interpolation) inside the photo.
    lo = np.floor(quad.min(axis=0)).astype(int) - 4
    hi = np.ceil(quad.max(axis=0)).astype(int) + 5
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], width), min(hi[1], height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the alignment square lies entirely outside the photo")
    crop = image[y0:y1, x0:x1]

    # 2. Shrink with area averaging while the quad is over twice the output size.
    shrink = max(1, int(np.floor(qsize / output_size / 2)))
    if shrink > 1:
        size = (max(1, round(crop.shape[1] / shrink)), max(1, round(crop.shape[0] / shrink)))
        fx, fy = size[0] / crop.shape[1], size[1] / crop.shape[0]
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    else:
        fx = fy = 1.0
    # crop pixel (u, v) ↔ photo pixel ((u + 0.5) / fx - 0.5 + x0, ...)
    crop_to_photo = np.array([[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0], [0, 0, 1]])
    crop_to_aligned = transform.matrix @ crop_to_photo

    # 3. Resample with mirrored borders (reflection padding).
    aligned = cv2.warpAffine(
        crop, crop_to_aligned[:2], (output_size, output_size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101,
    )
    # 4. Blur and fade the mirrored area with distance from the photo's edge.
    beyond = _signed_distance_beyond_edges(transform, (height, width))
    if beyond.max() > 0:
        aligned = _soften_padding(aligned, beyond, qsize * transform.scale)
    return aligned, transform


def _signed_distance_beyond_edges(transform: AlignmentTransform, shape: tuple[int, int]) -> np.ndarray:
    """For each aligned pixel, how far (in aligned pixels) its source lies beyond the
    photo edges that the quad crosses: positive in the mirrored padding, negative
    inside the photo, ``-inf`` where the quad crosses no edge."""
    size = transform.output_size
    height, width = shape
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), axis=-1).reshape(-1, 2).astype(np.float64)
    src = transform.to_original(grid)
    quad = transform.quad
    beyond = np.full(len(src), -np.inf)
    edges = [
        (quad[:, 0].min() < -0.5, -0.5 - src[:, 0]),
        (quad[:, 0].max() > width - 0.5, src[:, 0] - (width - 0.5)),
        (quad[:, 1].min() < -0.5, -0.5 - src[:, 1]),
        (quad[:, 1].max() > height - 0.5, src[:, 1] - (height - 0.5)),
    ]
    for crossed, distance in edges:
        if crossed:
            beyond = np.maximum(beyond, distance)
    return (beyond * transform.scale).reshape(size, size)


def _soften_padding(aligned: np.ndarray, beyond: np.ndarray, qsize_aligned: float) -> np.ndarray:
    """FFHQ's padding treatment, in the aligned frame.

    ``beyond`` is the signed distance beyond the crossed photo edges in aligned pixels;
    ``pad`` is 30 % of the quad's side, as FFHQ pads. With ``t = beyond / pad``, the
    image is blended towards its Gaussian blur (sigma 2 % of the quad) with weight
    ``clip(3t + 1, 0, 1)`` (so the blur starts a third of a pad inside the photo and is
    full from the edge outwards) and then towards its median colour with weight
    ``clip(t, 0, 1)`` (full at the outer edge of the padding).
    """
    pad = max(qsize_aligned * 0.3, 1.0)
    t = (beyond / pad)[..., None]
    image = aligned.astype(np.float32)
    sigma = max(qsize_aligned * 0.02, 0.5)
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    image += (blurred - image) * np.clip(t * 3.0 + 1.0, 0.0, 1.0)
    median = np.median(aligned.reshape(-1, 3), axis=0).astype(np.float32)
    image += (median - image) * np.clip(t, 0.0, 1.0)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
