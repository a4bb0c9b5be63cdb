"""Head pose from 68 landmarks, to refuse views the method does not apply to.

Clinical photo series hold frontal, oblique, profile, basal (worm's-eye) and intraoral
views; only frontal views can be compared with a generated frontal face. We fit a
generic 3-D face (mean adult proportions, millimetres; x to the subject's left, y up,
z towards the camera) to the 2-D landmarks with ``cv2.solvePnP`` and a pinhole camera
whose focal length equals the photo's longer side and whose principal point is the
face's centre (photos are cropped, so the true optical centre is unknown). The generic model is only
approximately right for any one face (and for children), so angles are good to
several degrees: enough to separate frontal from oblique, profile and basal views.

Angles (degrees): yaw > 0 when the face turns towards the image's right (the
subject's left), pitch > 0 when the chin tilts up, roll > 0 when the face tilts
clockwise in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.errors import NotFrontalError

# Generic face, millimetres, origin at the nose tip; landmark index → (x, y, z).
_MODEL_POINTS: dict[int, tuple[float, float, float]] = {
    30: (0.0, 0.0, 0.0),  # nose tip
    33: (0.0, -14.0, -12.0),  # subnasale
    27: (0.0, 28.0, -18.0),  # nasion
    8: (0.0, -66.0, -20.0),  # chin (menton)
    36: (-45.0, 34.0, -27.0),  # subject's right eye, outer corner
    39: (-15.0, 33.0, -22.0),  # subject's right eye, inner corner
    42: (15.0, 33.0, -22.0),  # subject's left eye, inner corner
    45: (45.0, 34.0, -27.0),  # subject's left eye, outer corner
    48: (-25.0, -29.0, -20.0),  # right mouth corner
    54: (25.0, -29.0, -20.0),  # left mouth corner
    51: (0.0, -22.0, -10.0),  # upper lip, top
    57: (0.0, -38.0, -12.0),  # lower lip, bottom
    0: (-70.0, 30.0, -95.0),  # right jaw, at the ear
    16: (70.0, 30.0, -95.0),  # left jaw, at the ear
}
# The model's x runs to the subject's left; image x runs to the image's right, which
# for a face looking at the camera is also the subject's left.


@dataclass(frozen=True)
class HeadPose:
    yaw: float
    pitch: float
    roll: float

    def to_dict(self) -> dict[str, float]:
        return {"yaw": round(self.yaw, 2), "pitch": round(self.pitch, 2), "roll": round(self.roll, 2)}


@dataclass(frozen=True)
class PoseLimits:
    """Largest accepted absolute yaw and pitch in degrees (roll is corrected by
    alignment and not limited)."""

    max_yaw: float = 20.0
    max_pitch: float = 20.0

    def __post_init__(self) -> None:
        for name in ("max_yaw", "max_pitch"):
            value = getattr(self, name)
            if not 0 < value <= 90:
                raise ValueError(f"{name} must be within (0, 90] degrees, got {value!r}")


def estimate_pose(landmarks: np.ndarray, image_shape: tuple[int, int]) -> HeadPose:
    """Yaw, pitch and roll in degrees of the face with ``[68, 2]`` landmarks in a photo of ``(H, W)``."""
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must be [68, 2], got {landmarks.shape}")
    height, width = image_shape
    indices = list(_MODEL_POINTS)
    object_points = np.array([_MODEL_POINTS[i] for i in indices], dtype=np.float64)
    # Model y is up, image y is down: flip y (and z, to keep a right-handed frame
    # whose z points away from the camera as OpenCV expects).
    object_points = object_points * np.array([1.0, -1.0, -1.0])
    image_points = landmarks[indices].astype(np.float64)
    focal = float(max(height, width))
    # Principal point at the face: photos are cropped, so the optical centre is
    # unknown, and what matters is the head's rotation relative to the line of sight.
    centre_x, centre_y = landmarks[indices].mean(axis=0)
    camera = np.array([[focal, 0, centre_x], [0, focal, centre_y], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise NotFrontalError("The head pose could not be estimated from the landmarks.")
    rotation, _ = cv2.Rodrigues(rvec)
    return _angles(rotation)


def _angles(rotation: np.ndarray) -> HeadPose:
    """Decompose R = Rz(roll) · Ry(yaw) · Rx(pitch) (camera frame, x right, y down, z forward)."""
    sy = float(np.clip(-rotation[2, 0], -1.0, 1.0))
    yaw = np.degrees(np.arcsin(sy))
    pitch = np.degrees(np.arctan2(rotation[2, 1], rotation[2, 2]))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    # Sign conventions of the module docstring.
    return HeadPose(yaw=float(-yaw), pitch=float(-pitch), roll=float(roll))


def check_frontal(pose: HeadPose, limits: PoseLimits) -> None:
    """Raise :class:`NotFrontalError` naming the measured angle when beyond the limits."""
    if abs(pose.yaw) > limits.max_yaw:
        side = "right" if pose.yaw > 0 else "left"
        raise NotFrontalError(
            f"The face is turned {abs(pose.yaw):.0f}° towards the image's {side} (yaw {pose.yaw:+.0f}°); "
            f"at most {limits.max_yaw:.0f}° is accepted for a frontal view."
        )
    if abs(pose.pitch) > limits.max_pitch:
        direction = "up" if pose.pitch > 0 else "down"
        raise NotFrontalError(
            f"The head is tilted {abs(pose.pitch):.0f}° {direction} (pitch {pose.pitch:+.0f}°); "
            f"at most {limits.max_pitch:.0f}° is accepted for a frontal view."
        )
