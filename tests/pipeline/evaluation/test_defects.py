"""The cleft-like defect model: identity at level 0, growth with severity, confinement, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.defects import CleftDefectSettings, CleftSide, cleft_geometry, implant_cleft
from pipeline.preprocess.faces import FaceModels
from pipeline.preprocess.photo_io import load_photo
from pipeline.preprocess.steps import PreprocessSettings, preprocess
from pipeline.preprocess.template import template_landmarks

SEVERITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def aligned_face(faces_dir):
    result = preprocess(load_photo(faces_dir / "obama.jpg"), FaceModels(), PreprocessSettings(output_size=256))
    return result.aligned, result.landmarks_aligned


def _documented_window(landmarks: np.ndarray, size: int, severity: float, side: CleftSide) -> np.ndarray:
    """The module docstring's window, computed here from the landmarks independently of the module."""
    settings = CleftDefectSettings()
    pairs = {CleftSide.RIGHT: ((61, 62), (31, 32)), CleftSide.LEFT: ((63, 62), (35, 34))}[side]
    margin = landmarks[list(pairs[0])].mean(axis=0)
    nostril = landmarks[list(pairs[1])].mean(axis=0)
    lip = np.linalg.norm(nostril - margin)
    eyes = np.linalg.norm(landmarks[42:48].mean(axis=0) - landmarks[36:42].mean(axis=0))
    w = eyes * (settings.half_width_min + (settings.half_width_max - settings.half_width_min) * severity)
    h = lip * (settings.height_min + (1 - settings.height_min) * severity)
    lift = settings.lift * lip * severity
    axis = (nostril - margin) / lip
    ys, xs = np.mgrid[0:size, 0:size]
    rel = np.stack([xs - margin[0], ys - margin[1]], axis=-1)
    u = rel @ axis
    v = rel @ np.array([-axis[1], axis[0]])
    return (np.abs(v) < 3 * w + 1e-9) & (u > -(w + 2 * lift) - 1e-9) & (u < h + w + 1e-9)


def test_level_zero_is_the_identity(aligned_face):
    image, landmarks = aligned_face
    defect = implant_cleft(image, landmarks, 0.0)
    np.testing.assert_array_equal(defect.image, image)
    assert defect.image is not image and not defect.region.any()


@pytest.mark.parametrize("side", list(CleftSide))
def test_changes_grow_with_severity_and_stay_in_the_documented_region(aligned_face, side):
    image, landmarks = aligned_face
    changed_counts = []
    for severity in SEVERITIES:
        defect = implant_cleft(image, landmarks, severity, side=side)
        changed = np.any(defect.image != image, axis=2)
        assert not np.any(changed & ~defect.region), "a pixel outside the region changed"
        window = _documented_window(landmarks, image.shape[0], severity, side)
        if severity > 0:
            assert np.all(window[defect.region]), "the region leaves the documented window"
            assert defect.region.sum() >= 0.9 * window.sum()
        changed_counts.append(int(changed.sum()))
    assert changed_counts[0] == 0
    assert all(a < b for a, b in zip(changed_counts, changed_counts[1:])), changed_counts
    # The notch is on the named side of the face (image left = subject's right).
    centre_x = landmarks[51, 0]
    region_x = np.nonzero(implant_cleft(image, landmarks, 1.0, side=side).region)[1].mean()
    assert (region_x < centre_x) if side is CleftSide.RIGHT else (region_x > centre_x)


def test_the_notch_darkens_with_severity():
    # On a uniform image the warp changes nothing, so only the shading shows.
    landmarks = template_landmarks(256)
    image = np.full((256, 256, 3), 180, np.uint8)
    geometry = cleft_geometry(landmarks)
    x, y = np.round(geometry.margin + geometry.axis * 0.5 * geometry.lip_height).astype(int)
    values = [int(implant_cleft(image, landmarks, s).image[y, x].mean()) for s in SEVERITIES]
    assert values[0] == 180 and all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < 180 * (1 - 0.8 * CleftDefectSettings().darkening)


def test_deterministic_and_validated(aligned_face):
    image, landmarks = aligned_face
    first = implant_cleft(image, landmarks, 0.6)
    second = implant_cleft(image.copy(), landmarks.copy(), 0.6)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.region, second.region)
    with pytest.raises(ValueError):
        implant_cleft(image, landmarks, 1.5)
    with pytest.raises(TypeError):
        implant_cleft(image.astype(np.float32), landmarks, 0.5)
    with pytest.raises(ValueError):
        implant_cleft(image, landmarks[:60], 0.5)
    with pytest.raises(ValueError):
        CleftDefectSettings(pull=1.0)


def test_works_on_template_landmarks_of_a_small_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    landmarks = template_landmarks(64)
    defect = implant_cleft(image, landmarks, 1.0)
    changed = np.any(defect.image != image, axis=2)
    assert 0 < changed.sum() <= defect.region.sum() < 0.1 * 64 * 64
    rows, cols = np.nonzero(defect.region)
    # Between the nostrils (y of 31-35) and the lower lip (y of 57), left of the centre column.
    assert landmarks[31:36, 1].min() - 4 < rows.mean() < landmarks[57, 1]
    assert cols.mean() < landmarks[51, 0]
