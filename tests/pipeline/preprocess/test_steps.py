"""Preprocessing on real photos: detection, landmarks, alignment, pose, masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.errors import FaceTooSmallError, NoFaceError, NotFrontalError
from pipeline.preprocess.faces import DetectionSettings, FaceModels, detect_face, eye_centres
from pipeline.preprocess.masks import region_masks
from pipeline.preprocess.photo_io import load_photo
from pipeline.preprocess.pose import PoseLimits
from pipeline.preprocess.steps import PreprocessSettings, preprocess

SIZE = 256


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels()


@pytest.fixture(scope="module")
def obama(faces_dir) -> np.ndarray:
    return load_photo(faces_dir / "obama.jpg")


def real_photos(faces_dir, astronaut_rgb, grace_hopper_path) -> dict[str, np.ndarray]:
    photos = {name: load_photo(faces_dir / f"{name}.jpg") for name in ("obama", "biden", "two_people")}
    photos["astronaut"] = astronaut_rgb
    photos["grace_hopper"] = load_photo(grace_hopper_path)
    return photos


def eye_angle_and_distance(landmarks: np.ndarray) -> tuple[float, float]:
    right, left = eye_centres(landmarks)
    delta = left - right
    return float(np.degrees(np.arctan2(delta[1], delta[0]))), float(np.hypot(*delta))


def test_astronaut_face_not_mission_patch(models, astronaut_rgb):
    # dlib's HOG detector at upsample 1 also fires on the mission patch (lower left).
    candidates = models.detect(astronaut_rgb, DetectionSettings(upsample=1))
    assert len(candidates) >= 2, "the test relies on the patch being a candidate"
    detection = detect_face(astronaut_rgb, models, DetectionSettings(upsample=1))
    left, top, right, bottom = detection.box
    centre = ((left + right) / 2, (top + bottom) / 2)
    # The astronaut's face is centred near (220, 125); the patch near (170, 380).
    assert 170 < centre[0] < 270 and 70 < centre[1] < 180
    assert detection.faces_found == 1
    nose_tip = detection.landmarks[30]
    assert left < nose_tip[0] < right and top < nose_tip[1] < bottom


def test_two_people_reports_both_faces(models, faces_dir):
    detection = detect_face(load_photo(faces_dir / "two_people.jpg"), models)
    assert detection.faces_found == 2


def test_aligned_real_faces_have_level_eyes_a_quarter_apart(models, faces_dir, astronaut_rgb, grace_hopper_path):
    for name, photo in real_photos(faces_dir, astronaut_rgb, grace_hopper_path).items():
        result = preprocess(photo, models, PreprocessSettings(output_size=SIZE))
        assert result.aligned.shape == (SIZE, SIZE, 3) and result.aligned.dtype == np.uint8
        redetected = detect_face(result.aligned, models)  # independent re-detection in the aligned image
        angle, distance = eye_angle_and_distance(redetected.landmarks)
        assert abs(angle) < 3.0, f"{name}: eyes tilted {angle:.2f}°"
        assert SIZE / 4 * 0.85 < distance < SIZE / 4 * 1.15, f"{name}: eye distance {distance:.1f}"
        assert abs(result.pose.yaw) < 20 and abs(result.pose.pitch) < 20


def test_rotated_photo_aligns_to_the_same_face(models, obama):
    height, width = obama.shape[:2]
    centre = (width / 2, height / 2)
    rotation = cv2.getRotationMatrix2D(centre, 20.0, 1.0)
    # Enlarge the canvas so nothing is cut off.
    cos, sin = abs(rotation[0, 0]), abs(rotation[0, 1])
    new_w, new_h = int(height * sin + width * cos), int(height * cos + width * sin)
    rotation[0, 2] += new_w / 2 - centre[0]
    rotation[1, 2] += new_h / 2 - centre[1]
    rotated = cv2.warpAffine(obama, rotation, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    straight = preprocess(obama, models, PreprocessSettings(output_size=SIZE))
    turned = preprocess(rotated, models, PreprocessSettings(output_size=SIZE))
    landmark_shift = np.abs(straight.landmarks_aligned - turned.landmarks_aligned).mean()
    assert landmark_shift < 3.0, f"aligned landmarks moved {landmark_shift:.2f} px on average"
    centre_crop = slice(SIZE // 4, 3 * SIZE // 4)
    difference = np.abs(straight.aligned[centre_crop, centre_crop].astype(float) - turned.aligned[centre_crop, centre_crop]).mean()
    assert difference < 12.0, f"aligned images differ by {difference:.1f} grey levels on average"
    assert abs(abs(turned.pose.roll - straight.pose.roll) - 20.0) < 3.0


def test_transform_maps_back_to_the_photo(models, obama):
    result = preprocess(obama, models, PreprocessSettings(output_size=SIZE))
    back = result.transform.to_original(result.landmarks_aligned)
    np.testing.assert_allclose(back, result.landmarks_original, atol=1e-6)
    # A map that marks the aligned nose tip lands on the photo's nose tip.
    marker = np.zeros((SIZE, SIZE), dtype=np.float32)
    x, y = np.round(result.landmarks_aligned[30]).astype(int)
    marker[y - 2 : y + 3, x - 2 : x + 3] = 1.0
    drawn = result.transform.warp_to_original(marker, obama.shape[:2])
    peak = np.array(np.unravel_index(np.argmax(drawn), drawn.shape))[::-1]
    assert np.hypot(*(peak - result.landmarks_original[30])) < 3.0 / result.transform.scale


def test_padding_is_mirrored_and_softened(models, obama):
    # Crop so the face touches the photo's left edge: the quad must leave the photo.
    detection = detect_face(obama, models)
    left = int(detection.landmarks[:, 0].min()) + 10
    cropped = np.ascontiguousarray(obama[:, left:])
    result = preprocess(cropped, models, PreprocessSettings(output_size=SIZE))
    outside = result.transform.to_original(np.array([[0.0, SIZE / 2]]))[0]
    assert outside[0] < 0, "the test needs the aligned frame to extend beyond the photo"
    strip = result.aligned[:, :8].astype(float)
    assert strip.mean() > 20, "padding must not be black"
    # Softened: the padded strip is smoother than the face region.
    smooth = np.abs(np.diff(strip, axis=0)).mean()
    detail = np.abs(np.diff(result.aligned[:, SIZE // 2 - 4 : SIZE // 2 + 4].astype(float), axis=0)).mean()
    assert smooth < detail


def test_masks_cover_mouth_and_nose_and_exclude_eyes(models, faces_dir, astronaut_rgb, grace_hopper_path):
    for name, photo in real_photos(faces_dir, astronaut_rgb, grace_hopper_path).items():
        result = preprocess(photo, models, PreprocessSettings(output_size=SIZE))
        points = np.round(result.landmarks_aligned).astype(int)
        mouth_nose, face = result.masks["mouth_nose"], result.masks["face_without_eyes"]
        for index in list(range(27, 36)) + list(range(48, 68)):
            x, y = points[index]
            assert mouth_nose[y, x], f"{name}: landmark {index} outside mouth_nose"
        for index in range(36, 48):
            x, y = points[index]
            assert not face[y, x], f"{name}: eye landmark {index} inside face_without_eyes"
            assert not mouth_nose[y, x], f"{name}: eye landmark {index} inside mouth_nose"
        for index in (30, 33, 51, 57):
            x, y = points[index]
            assert face[y, x], f"{name}: landmark {index} missing from face_without_eyes"
        assert 0.02 < mouth_nose.mean() < 0.25 and 0.1 < face.mean() < 0.6


def test_region_masks_validate_shape():
    with pytest.raises(ValueError, match="68, 2"):
        region_masks(np.zeros((5, 2)), 64)


def turn_face(photo: np.ndarray, landmarks: np.ndarray, degrees: float) -> np.ndarray:
    """Synthesise a head turn: map the face onto a vertical cylinder and rotate it."""
    height, width = photo.shape[:2]
    centre = landmarks[27:36, 0].mean()
    radius = (landmarks[16, 0] - landmarks[0, 0]) / 2 * 1.15
    xs = np.arange(width, dtype=np.float64)
    u = np.clip((xs - centre) / radius, -1, 1)
    source = np.where(np.abs(xs - centre) < radius, centre + radius * np.sin(np.arcsin(u) - np.radians(degrees)), xs)
    map_x = np.tile(source.astype(np.float32), (height, 1))
    map_y = np.tile(np.arange(height, dtype=np.float32)[:, None], (1, width))
    return cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def test_turned_face_is_refused_with_its_yaw(models, obama):
    landmarks = detect_face(obama, models).landmarks
    turned = turn_face(obama, landmarks, 50.0)
    with pytest.raises(NotFrontalError, match=r"turned \d+° towards the image's right \(yaw \+\d+°\)"):
        preprocess(turned, models, PreprocessSettings(output_size=SIZE))
    mirrored = np.ascontiguousarray(turned[:, ::-1])
    with pytest.raises(NotFrontalError, match=r"towards the image's left \(yaw -\d+°\)"):
        preprocess(mirrored, models, PreprocessSettings(output_size=SIZE))
    # A looser limit accepts it and reports the pose.
    result = preprocess(turned, models, PreprocessSettings(output_size=SIZE, pose_limits=PoseLimits(max_yaw=60)))
    assert result.pose.yaw > 20


def test_face_too_small_names_the_minimum(models, obama):
    small = cv2.resize(obama, (obama.shape[1] // 3, obama.shape[0] // 3), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceTooSmallError, match="at least 40 px"):
        preprocess(small, models, PreprocessSettings(output_size=SIZE))


def test_no_face_in_a_photo_without_one(models):
    from skimage import data

    with pytest.raises(NoFaceError, match="No face was found"):
        preprocess(np.ascontiguousarray(data.coffee()), models)
    with pytest.raises(NoFaceError):
        preprocess(np.full((300, 300, 3), 128, dtype=np.uint8), models)


def test_huge_photo_detects_on_a_downscaled_copy(models, obama):
    # 4x upscale: 3640×4548 ≈ 16.6 MP; detection still finds the face and the
    # landmarks scale with the photo.
    big = cv2.resize(obama, (obama.shape[1] * 4, obama.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
    small_result = detect_face(obama, models)
    big_result = detect_face(big, models)
    shift = np.abs(big_result.landmarks / 4 - small_result.landmarks)
    assert shift.mean() < 1.5 and shift.max() < 8.0  # the jaw line moves most between resolutions


def test_cnn_detector_option_finds_the_same_face(models, grace_hopper_path):
    photo = load_photo(grace_hopper_path)
    hog = detect_face(photo, models, DetectionSettings())
    from pipeline.preprocess.faces import DetectorKind

    cnn = detect_face(photo, models, DetectionSettings(detector=DetectorKind.CNN, upsample=0))
    assert cnn.faces_found == 1
    assert np.abs(cnn.landmarks - hog.landmarks).mean() < 6.0
