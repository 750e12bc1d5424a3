"""RootSIFT: descriptor maths, keypoint coordinates, boundary checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from indexer.extractors.sift import RootSift, root_descriptors, rootsift


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def blob_image(centres: np.ndarray, shape: tuple[int, int] = (300, 400)) -> np.ndarray:
    """Dark canvas with bright Gaussian blobs (sigma 4 px) at the given (x, y) centres, RGB uint8."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    canvas = np.zeros(shape)
    for x, y in centres:
        canvas += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2))
    gray = np.clip(30 + 200 * canvas, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


BLOBS = np.array([[60.0, 50.0], [200.0, 80.0], [330.0, 60.0], [100.0, 220.0], [290.0, 240.0]])


def test_root_descriptors_match_hand_computation() -> None:
    raw = np.array([[1.0, 3.0, 0.0, 12.0], [4.0, 4.0, 4.0, 4.0]], np.float32)
    # row 0: L1 = 16 -> sqrt([1, 3, 0, 12] / 16); row 1: sqrt(1/4) everywhere
    expected = np.array([[0.25, np.sqrt(3) / 4, 0.0, np.sqrt(12) / 4], [0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(root_descriptors(raw), expected, atol=1e-6)


def test_hellinger_identity() -> None:
    # Euclidean distance between RootSIFT vectors = sqrt(2 - 2 * Hellinger kernel of the L1-SIFT)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (2, 128)).astype(np.float32)
    ra, rb = root_descriptors(np.stack([a, b]))
    hellinger = np.sum(np.sqrt(a / a.sum() * b / b.sum()))
    assert np.sum((ra - rb) ** 2) == pytest.approx(2 - 2 * hellinger, abs=1e-5)


def test_rootsift_descriptors_equal_root_of_opencv_sift(astronaut: np.ndarray) -> None:
    feats = rootsift(astronaut, max_features=300, max_side=None)
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    kps, raw = cv2.SIFT.create(nfeatures=300).detectAndCompute(gray, None)
    order = np.argsort(-np.array([k.response for k in kps]), kind="stable")[:300]
    raw = raw[order].astype(np.float64)
    expected = np.sqrt(raw / raw.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(feats.descriptors, expected, atol=1e-6)
    np.testing.assert_allclose(feats.keypoints, [kps[i].pt for i in order], atol=1e-4)


def test_rootsift_properties(astronaut: np.ndarray) -> None:
    feats = rootsift(astronaut, max_features=200)
    assert len(feats) == 200
    assert feats.descriptors.dtype == np.float32 and feats.keypoints.dtype == np.float32
    assert feats.descriptors.shape == (200, 128)
    assert (feats.descriptors >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-5)
    assert feats.scores is not None and (np.diff(feats.scores) <= 0).all()  # strongest first
    h, w = astronaut.shape[:2]
    assert (feats.keypoints >= -0.5).all() and (feats.keypoints[:, 0] <= w).all()
    assert (feats.keypoints[:, 1] <= h).all()


def test_max_features_keeps_the_strongest(astronaut: np.ndarray) -> None:
    many = rootsift(astronaut, max_features=400, max_side=None)
    few = rootsift(astronaut, max_features=50, max_side=None)
    assert len(few) == 50
    assert many.scores is not None and few.scores is not None
    assert few.scores.min() >= np.sort(many.scores)[-50] - 1e-6


@pytest.mark.parametrize(
    ("max_side", "min_side"), [(None, None), (200, None), (None, 600), (None, 1000)]
)
def test_keypoints_in_original_pixels(max_side: int | None, min_side: int | None) -> None:
    # shrunk 2x or grown 1.5x / 2.5x for detection, every blob centre is still found where it is
    # in the image as given (a missing rescale would put them 50-150% off)
    feats = rootsift(blob_image(BLOBS), max_features=50, max_side=max_side, min_side=min_side)
    gaps = np.linalg.norm(feats.keypoints[:, None, :] - BLOBS[None], axis=2)
    assert gaps.min(axis=0).max() < 1.0


def test_grayscale_and_rgba_inputs(astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    a = rootsift(gray, max_features=100)
    b = rootsift(astronaut, max_features=100)
    c = rootsift(rgba, max_features=100)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(b.descriptors, c.descriptors)


def test_flat_image_gives_empty_features() -> None:
    feats = rootsift(np.full((64, 80, 3), 128, np.uint8))
    assert len(feats) == 0
    assert feats.descriptors.shape == (0, 128) and feats.keypoints.shape == (0, 2)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros(10, np.uint8), "shape"),
    ],
)
def test_bad_images_raise(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rootsift(image)


def test_registry_class_uses_its_settings(astronaut: np.ndarray) -> None:
    extractor = RootSift({"max_features": 64})
    feats = extractor(astronaut)
    assert len(feats) == 64 and extractor.dim == 128
    with pytest.raises(ValueError, match="unknown settings"):
        RootSift({"n_features": 3})
