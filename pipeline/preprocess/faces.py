"""Face detection and 68-point landmarks with dlib.

Detection runs on a copy of the photo downscaled to at most ``detect_max_side`` pixels,
so a 50 MP photo costs about as much as a 1 MP one; landmarks are then fitted on the
full-resolution photo inside the detected box scaled back up. Every candidate face is
scored and the best one wins (dlib's detectors also fire on emblems, e.g. the mission
patch in ``skimage.data.astronaut()``, so "the first box" is never taken).
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import ImplausibleLandmarksError, ModelError, NoFaceError


class DetectorKind(enum.Enum):
    HOG = "hog"
    CNN = "cnn"


@dataclass(frozen=True)
class DetectionSettings:
    """How faces are found.

    ``threshold`` applies to dlib's detection score (HOG: SVM margin, where real faces
    in our test photos score 1.0 to 2.5 and false positives below 0.2; CNN: MMOD
    confidence). ``upsample`` is the number of 2x upsamplings of the (downscaled)
    detection image; ``None`` upsamples once when that image is smaller than 800 px.
    """

    detector: DetectorKind = DetectorKind.HOG
    threshold: float = 0.3
    upsample: int | None = None
    detect_max_side: int = 1280
    min_eye_distance_px: float = 40.0

    def __post_init__(self) -> None:
        if not isinstance(self.detector, DetectorKind):
            raise TypeError(f"detector must be a DetectorKind, got {self.detector!r}")
        if self.upsample is not None and not 0 <= self.upsample <= 3:
            raise ValueError(f"upsample must be 0..3 or None, got {self.upsample!r}")
        if self.detect_max_side < 128:
            raise ValueError(f"detect_max_side must be at least 128, got {self.detect_max_side!r}")
        if self.min_eye_distance_px <= 0:
            raise ValueError(f"min_eye_distance_px must be positive, got {self.min_eye_distance_px!r}")


@dataclass(frozen=True)
class FaceDetection:
    """The chosen face: box ``(left, top, right, bottom)`` in original pixels,
    detector score, how many faces scored above threshold, and 68 landmarks
    ``[68, 2]`` (x, y) in original pixels, iBUG 300-W order."""

    box: tuple[float, float, float, float]
    score: float
    faces_found: int
    landmarks: np.ndarray


class FaceModels:
    """dlib's detector(s) and the 68-point shape predictor, loaded once and reused.

    The model files ship inside the ``face-recognition-models`` package; nothing is
    downloaded. Construct one per process (loading the CNN detector takes ~0.1 s).
    """

    def __init__(self, predictor_path: Path | None = None, cnn_detector_path: Path | None = None) -> None:
        import dlib

        predictor_path, default_cnn = _packaged_model_paths(predictor_path, cnn_detector_path)
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._cnn_path = default_cnn
        self._cnn = None
        self._predictor = dlib.shape_predictor(str(predictor_path))

    def detect(self, image: np.ndarray, settings: DetectionSettings) -> list[tuple[tuple[float, float, float, float], float]]:
        """All candidate boxes ``((l, t, r, b), score)`` in ``image`` pixels, best first."""
        upsample = settings.upsample
        if upsample is None:
            upsample = 1 if max(image.shape[:2]) < 800 else 0
        candidates: list[tuple[tuple[float, float, float, float], float]] = []
        if settings.detector is DetectorKind.HOG:
            rects, scores, _ = self._hog.run(image, upsample, -0.5)
            for rect, score in zip(rects, scores):
                candidates.append(((rect.left(), rect.top(), rect.right(), rect.bottom()), float(score)))
        else:
            for det in self._cnn_detector()(image, upsample):
                rect = det.rect
                candidates.append(((rect.left(), rect.top(), rect.right(), rect.bottom()), float(det.confidence)))
        candidates.sort(key=lambda item: item[1], reverse=True)
        return candidates

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 landmarks ``[68, 2]`` float64 (x, y) for the face in ``box`` of ``image``."""
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(left, top, right, bottom))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)

    def _cnn_detector(self):
        if self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(self._cnn_path))
        return self._cnn


def _packaged_model_paths(predictor: Path | None, cnn: Path | None) -> tuple[Path, Path]:
    if predictor is None or cnn is None:
        try:
            with warnings.catch_warnings():  # it imports the deprecated pkg_resources
                warnings.simplefilter("ignore")
                import face_recognition_models as models
        except ImportError as error:  # pragma: no cover - declared dependency
            raise ModelError("The face-recognition-models package is not installed.") from error
        predictor = predictor or Path(models.pose_predictor_model_location())
        cnn = cnn or Path(models.cnn_face_detector_model_location())
    for path in (predictor, cnn):
        if not Path(path).is_file():
            raise ModelError(f"The face model file {path} is missing.")
    return Path(predictor), Path(cnn)


def detect_face(image: np.ndarray, models: FaceModels, settings: DetectionSettings = DetectionSettings()) -> FaceDetection:
    """Find the best-scoring face in ``image`` ([H, W, 3] uint8 RGB) and its landmarks.

    Raises:
        NoFaceError: no candidate scores at or above ``settings.threshold``.
        ImplausibleLandmarksError: the landmark fit does not look like a face.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8, got shape {image.shape} dtype {image.dtype}")
    small, scale = _downscale(image, settings.detect_max_side)
    candidates = models.detect(small, settings)
    accepted = [c for c in candidates if c[1] >= settings.threshold]
    if not accepted:
        best = f" (best candidate scored {candidates[0][1]:.2f})" if candidates else ""
        raise NoFaceError(f"No face was found in the photo{best}; the detection threshold is {settings.threshold:.2f}.")
    box_small, score = accepted[0]
    box = tuple(float(v) / scale for v in box_small)
    landmarks = models.landmarks(image, box)  # full resolution
    check_landmarks(landmarks, box)
    return FaceDetection(box=box, score=score, faces_found=len(accepted), landmarks=landmarks)


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    longest = max(image.shape[:2])
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the subject's right eye (landmarks 36-41, image left) and left eye (42-47)."""
    return landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)


def check_landmarks(landmarks: np.ndarray, box: tuple[float, float, float, float]) -> None:
    """Refuse landmark fits that cannot be a face seen from the front.

    Checks, in the face's own frame (x along the eye line): the eyes are apart and
    in image-left/right order, the nose tip and mouth lie below the eyes, the mouth
    below the nose, the chin below the mouth, and the points stay near the box.
    """
    if landmarks.shape != (68, 2) or not np.all(np.isfinite(landmarks)):
        raise ImplausibleLandmarksError(f"The landmark fit returned {landmarks.shape} points instead of 68 finite ones.")
    right_eye, left_eye = eye_centres(landmarks)
    axis = left_eye - right_eye
    distance = float(np.hypot(*axis))
    left, top, right, bottom = box
    box_size = max(right - left, bottom - top, 1.0)
    if distance < 0.15 * box_size:
        raise ImplausibleLandmarksError(
            f"The eyes were placed {distance:.0f} px apart in a {box_size:.0f} px face box; the landmark fit failed."
        )
    ux = axis / distance
    uy = np.array([-ux[1], ux[0]])  # points down the face for an upright face
    def depth(point: np.ndarray) -> float:
        return float((point - (right_eye + left_eye) / 2) @ uy)
    nose, mouth, chin = landmarks[30], landmarks[48:68].mean(axis=0), landmarks[8]
    if not (0 < depth(nose) < depth(mouth) < depth(chin)):
        raise ImplausibleLandmarksError("The landmarks do not have nose, mouth and chin below the eyes in that order.")
    margin = 0.75 * box_size
    if (landmarks[:, 0].min() < left - margin or landmarks[:, 0].max() > right + margin
            or landmarks[:, 1].min() < top - margin or landmarks[:, 1].max() > bottom + margin):
        raise ImplausibleLandmarksError("The landmarks reach far outside the detected face.")
