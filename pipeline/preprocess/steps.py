"""Photo → aligned face, landmarks, pose and region masks (method.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import FaceTooSmallError
from pipeline.preprocess.align import AlignmentTransform, align_face
from pipeline.preprocess.faces import DetectionSettings, FaceModels, detect_face, eye_centres
from pipeline.preprocess.masks import region_masks
from pipeline.preprocess.pose import HeadPose, PoseLimits, check_frontal, estimate_pose


@dataclass(frozen=True)
class PreprocessSettings:
    output_size: int = 1024
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    pose_limits: PoseLimits = field(default_factory=PoseLimits)

    def __post_init__(self) -> None:
        if not isinstance(self.output_size, int) or not 16 <= self.output_size <= 4096:
            raise ValueError(f"output_size must be an integer in 16..4096, got {self.output_size!r}")


@dataclass(frozen=True)
class PreprocessResult:
    """Everything preprocessing learns about one photo.

    ``aligned``: ``[S, S, 3]`` uint8 RGB; landmarks ``[68, 2]`` (x, y) in photo and
    aligned pixels; ``masks``: region name → ``[S, S]`` bool.
    """

    aligned: np.ndarray
    transform: AlignmentTransform
    landmarks_original: np.ndarray
    landmarks_aligned: np.ndarray
    detector_score: float
    faces_found: int
    pose: HeadPose
    masks: dict[str, np.ndarray]
    original_shape: tuple[int, int]

    def landmarks_json(self) -> dict:
        """The ``landmarks.json`` record of the CLI contract."""
        return {
            "original": np.round(self.landmarks_original, 2).tolist(),
            "aligned": np.round(self.landmarks_aligned, 2).tolist(),
            "detector_score": round(self.detector_score, 4),
            "faces_found": self.faces_found,
            "pose": self.pose.to_dict(),
            "transform": self.transform.to_dict(),
            "original_shape": list(self.original_shape),
        }


def preprocess(image: np.ndarray, models: FaceModels, settings: PreprocessSettings = PreprocessSettings()) -> PreprocessResult:
    """Detect, check, align and mask the best face in ``image`` ([H, W, 3] uint8 RGB).

    Raises the typed errors of :mod:`pipeline.errors`: NoFaceError, FaceTooSmallError,
    ImplausibleLandmarksError, NotFrontalError.
    """
    detection = detect_face(image, models, settings.detection)
    right_eye, left_eye = eye_centres(detection.landmarks)
    eye_distance = float(np.hypot(*(left_eye - right_eye)))
    minimum = settings.detection.min_eye_distance_px
    if eye_distance < minimum:
        raise FaceTooSmallError(
            f"The face is too small: its eyes are {eye_distance:.0f} px apart and at least {minimum:.0f} px are needed."
        )
    pose = estimate_pose(detection.landmarks, image.shape[:2])
    check_frontal(pose, settings.pose_limits)
    aligned, transform = align_face(image, detection.landmarks, settings.output_size)
    landmarks_aligned = transform.to_aligned(detection.landmarks)
    return PreprocessResult(
        aligned=aligned,
        transform=transform,
        landmarks_original=detection.landmarks,
        landmarks_aligned=landmarks_aligned,
        detector_score=detection.score,
        faces_found=detection.faces_found,
        pose=pose,
        masks=region_masks(landmarks_aligned, settings.output_size),
        original_shape=(int(image.shape[0]), int(image.shape[1])),
    )
