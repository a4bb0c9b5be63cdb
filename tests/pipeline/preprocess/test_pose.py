"""Head pose: known rotations of the generic face are recovered; limits refuse."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import NotFrontalError
from pipeline.preprocess import pose as pose_module
from pipeline.preprocess.pose import HeadPose, PoseLimits, check_frontal, estimate_pose


def project_model(yaw: float, pitch: float, roll: float, distance: float = 600.0) -> np.ndarray:
    """Landmarks of the generic face rotated by known angles (module conventions),
    seen by an independent pinhole camera written out by hand."""
    a, b, c = np.radians([yaw, pitch, roll])
    # Model frame: x to the subject's left (image right), y up, z towards the camera.
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])  # nose → image right
    nod = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])  # nose → up (chin up)
    tilt = np.array([[np.cos(c), np.sin(c), 0], [-np.sin(c), np.cos(c), 0], [0, 0, 1]])  # clockwise on screen
    indices = list(pose_module._MODEL_POINTS)
    model = np.array([pose_module._MODEL_POINTS[i] for i in indices])
    rotated = model @ (tilt @ turn @ nod).T
    focal = 1000.0
    depth = distance - rotated[:, 2]
    landmarks = np.zeros((68, 2))
    landmarks[indices] = np.stack([500 + focal * rotated[:, 0] / depth, 500 - focal * rotated[:, 1] / depth], axis=1)
    return landmarks


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 0, 0), (-25, 0, 0), (0, 15, 0), (0, -15, 0), (0, 0, 12), (-20, 10, 5)])
def test_known_rotations_are_recovered(angles):
    estimated = estimate_pose(project_model(*angles), (1000, 1000))
    assert estimated.yaw == pytest.approx(angles[0], abs=2.0)
    assert estimated.pitch == pytest.approx(angles[1], abs=2.0)
    assert estimated.roll == pytest.approx(angles[2], abs=2.0)


def test_limits_name_the_measured_angle():
    check_frontal(HeadPose(19.0, -19.0, 40.0), PoseLimits())  # roll is not limited
    with pytest.raises(NotFrontalError, match=r"turned 27° towards the image's left \(yaw -27°\); at most 20°"):
        check_frontal(HeadPose(-27.0, 0.0, 0.0), PoseLimits())
    with pytest.raises(NotFrontalError, match=r"tilted 31° up \(pitch \+31°\)"):
        check_frontal(HeadPose(0.0, 31.0, 0.0), PoseLimits())
    with pytest.raises(NotFrontalError, match="down"):
        check_frontal(HeadPose(0.0, -12.0, 0.0), PoseLimits(max_pitch=10))


def test_limits_validate():
    with pytest.raises(ValueError, match="max_yaw"):
        PoseLimits(max_yaw=0)
