"""The fast face detection path (faces from a fraction of the frame) against the reference settings."""

from __future__ import annotations

import numpy as np
import pytest

import e2e  # noqa: F401  (torchvision shim before facenet_pytorch)
from e2e.data.faces import (
    PYRAMID_FACTOR,
    REFERENCE_DETECTION,
    REFERENCE_MIN_FACE,
    FaceCropper,
    centre_crop,
    min_face_size,
)
from tests.e2e.data.test_features import BACKGROUND, face_frame, iou


def grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


@pytest.fixture(scope="module")
def croppers():
    return FaceCropper("cpu"), FaceCropper("cpu", **REFERENCE_DETECTION)


@pytest.fixture(scope="module")
def photos():
    return [face_frame("camera")[0], face_frame("astronaut", height=360, width=480)[0], grace_hopper()]


def test_fast_boxes_match_the_reference_on_real_faces(croppers, photos):
    fast, reference = croppers
    for photo in photos:
        (fast_box,), (reference_box,) = fast.largest_boxes([photo]), reference.largest_boxes([photo])
        assert fast_box is not None and reference_box is not None
        assert iou(fast_box, reference_box) >= 0.9, (photo.shape, fast_box, reference_box)


def test_no_face_frames_have_no_face_in_both_modes(croppers):
    rng = np.random.default_rng(0)
    blank = np.full((480, 360, 3), BACKGROUND, np.uint8)
    noise = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    for cropper in croppers:
        faces, found = cropper.crops([blank, noise])
        assert found.tolist() == [False, False]
        np.testing.assert_array_equal(faces[0], centre_crop(blank))


def test_face_size_sets_the_crop_and_fallback_size(photos):
    cropper = FaceCropper("cpu", batch_size=2, face_size=64)
    blank = np.full((480, 360, 3), BACKGROUND, np.uint8)
    faces, found = cropper.crops([photos[0], blank, photos[2]])
    assert faces.shape == (3, 64, 64, 3) and faces.dtype == np.uint8
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(faces[1], centre_crop(blank, 64))


def test_min_face_size_stays_on_the_reference_pyramid():
    assert min_face_size((480, 360, 3), 0.0) == REFERENCE_MIN_FACE
    half = min_face_size((480, 360, 3), 0.22)  # an IEMOCAP half: 4 of the finest levels skipped
    assert half == pytest.approx(REFERENCE_MIN_FACE / PYRAMID_FACTOR**4) and half <= 0.22 * 360
    assert min_face_size((360, 640, 3), 0.22) == half  # the shorter side counts
    assert min_face_size((1080, 1920, 3), 0.22) > 2 * half
    assert min_face_size((40, 40, 3), 0.22) == REFERENCE_MIN_FACE  # never below the reference


@pytest.mark.parametrize("options", [{"face_size": 0}, {"min_face_fraction": -0.1}, {"min_face_fraction": 1.0}])
def test_bad_settings_are_refused(options):
    with pytest.raises(ValueError):
        FaceCropper("cpu", **options)
