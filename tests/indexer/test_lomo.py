"""Tests of the LOMO descriptor (indexer/extractors/lomo.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from indexer.extractors.lomo import (
    LomoConfig,
    descriptor_dim,
    hsv_codes,
    joint_code,
    lomo,
    lomo_batch,
    max_occurrence,
    msrcp,
    msrcr,
    siltp_codes,
)

DIM = 26960
HSV_DIM = 512 * 40  # 8^3 bins x (24 + 11 + 5) window rows
SILTP_DIM = 81 * 40  # per radius
VIPER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "viper"


def _person(seed: int, height: int = 128, width: int = 48) -> np.ndarray:
    """A crude 'person': horizontal bands of random colours with a little texture."""
    rng = np.random.default_rng(seed)
    bounds = np.sort(rng.choice(np.arange(8, height - 8), size=5, replace=False))
    band = np.searchsorted(bounds, np.arange(height))
    colours = rng.integers(20, 236, size=(6, 3))
    image = colours[band][:, None, :].repeat(width, axis=1).astype(np.float64)
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_shape_dtype_and_part_norms() -> None:
    x = lomo(_person(0))
    assert x.shape == (DIM,) and x.dtype == np.float32
    assert descriptor_dim() == DIM
    # log(x + 1) of counts is non-negative; HSV and each SILTP radius are unit vectors on their own.
    assert x.min() >= 0
    parts = np.split(x, [HSV_DIM, HSV_DIM + SILTP_DIM])
    assert [p.size for p in parts] == [HSV_DIM, SILTP_DIM, SILTP_DIM]
    np.testing.assert_allclose([np.linalg.norm(p) for p in parts], 1.0, atol=1e-5)


def test_any_size_is_resized_and_batch_matches_single() -> None:
    images = [_person(1, 200, 80), _person(2, 64, 30)[:, ::-1], _person(3)]
    batch = lomo_batch(images)
    assert batch.shape == (3, DIM) and batch.dtype == np.float32
    for image, row in zip(images, batch, strict=True):
        # up to summation order, which may depend on the batch; another crop differs by ~1e-2
        np.testing.assert_allclose(lomo(image), row, rtol=1e-5, atol=1e-7)
    assert lomo_batch([]).shape == (0, DIM)


def test_deterministic() -> None:
    image = _person(4)
    np.testing.assert_array_equal(lomo(image), lomo(image.copy()))


def test_horizontal_flip_barely_changes_the_descriptor() -> None:
    a, b = _person(5), _person(6)
    xa, xa_flip, xb = lomo_batch([a, a[:, ::-1].copy(), b])
    same, other = _cosine(xa, xa_flip), _cosine(xa, xb)
    assert same > 0.9
    assert 1 - same < 0.5 * (1 - other)


def test_siltp_codes_by_hand() -> None:
    # Centre 0.5, tau 0.3: below 0.35 -> 1, above 0.65 -> 2, else 0.
    gray = np.full((3, 3), 0.5)
    gray[1, 2] = 0.2  # right: darker -> 1 x 1
    gray[0, 1] = 0.8  # up: brighter -> 2 x 3
    gray[1, 0] = 0.6  # left: within tolerance -> 0 x 9
    gray[2, 1] = 0.7  # down: brighter -> 2 x 27
    codes = siltp_codes(gray, tau=0.3, radius=1)
    assert codes[1, 1] == 1 + 2 * 3 + 0 * 9 + 2 * 27
    # Top-left corner (0.5): right (0.8) brighter -> 2; up and left are the replicated pixel
    # itself -> 0; down (0.6) -> 0.
    assert codes[0, 0] == 2
    # Scale invariance: multiplying the image by a constant changes no code.
    np.testing.assert_array_equal(siltp_codes(3.7 * gray, 0.3, 1), codes)


def test_siltp_radius_reaches_the_right_neighbours() -> None:
    gray = np.full((7, 7), 0.5)
    gray[3, 6] = 0.1  # three to the right of the centre
    gray[6, 3] = 0.9  # three below
    codes = siltp_codes(gray, tau=0.3, radius=3)
    assert codes[3, 3] == 1 * 1 + 2 * 27
    with pytest.raises(ValueError, match="radius 5"):
        siltp_codes(np.ones((8, 8)), 0.3, 5)


def test_max_occurrence_takes_the_row_maximum() -> None:
    # One row of windows (height 10) and three windows across (width 20: left edges 0, 5, 10).
    codes = np.zeros((1, 10, 20), np.int64)
    codes[0, :, 0:5] = 1  # 50 pixels of code 1, only inside the first window
    codes[0, :6, 15:20] = 2  # 30 pixels of code 2, only inside the third window
    codes[0, :, 5:7] = 2  # 20 more, shared by the first and second windows
    hist = max_occurrence(codes, num_bins=3, block=10, step=5)
    assert hist.shape == (1, 1, 3)
    # Windows count code 1: 50, 0, 0 and code 2: 20, 20, 30; code 0 fills the rest: 30, 80, 70.
    # Each bin keeps its own best window, so the result is no single window's histogram.
    np.testing.assert_array_equal(hist[0, 0], [80, 50, 30])


def test_max_occurrence_matches_a_loop() -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 5, size=(2, 23, 17))
    hist = max_occurrence(codes, num_bins=5, block=10, step=5)
    tops, lefts = range(0, 23 - 9, 5), range(0, 17 - 9, 5)
    assert hist.shape == (2, len(tops), 5)
    for n in range(2):
        for r, top in enumerate(tops):
            windows = [
                np.bincount(codes[n, top : top + 10, left : left + 10].ravel(), minlength=5)
                for left in lefts
            ]
            np.testing.assert_array_equal(hist[n, r], np.max(windows, axis=0))


def test_hsv_bins_of_pure_colours() -> None:
    pixels = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0], [128, 128, 128]]]])
    bins = hsv_codes(pixels.astype(np.uint8))[0, 0]
    # hue 0, 1/3, 2/3 of the circle -> bins 0, 2, 5; saturation 1 -> 7; black and grey -> 0.
    np.testing.assert_array_equal(bins[:, 0], [0, 2, 5, 0, 0])
    np.testing.assert_array_equal(bins[:, 1], [7, 7, 7, 0, 0])
    np.testing.assert_array_equal(bins[:, 2], [7, 7, 7, 0, 4])
    assert joint_code(bins)[1] == (7 * 8 + 7) * 8 + 2


@pytest.mark.parametrize("method", [msrcr, msrcp])
def test_retinex_cancels_a_global_change_of_brightness(method) -> None:
    image = _person(8)[None]
    darker = np.round(image * 0.5).astype(np.uint8)
    config = LomoConfig()
    diff = np.abs(method(image, config).astype(int) - method(darker, config).astype(int))
    raw_diff = np.abs(image.astype(int) - darker.astype(int))
    # The raw pixels move by half their value; after Retinex they barely move.
    assert raw_diff.mean() > 40
    assert diff.mean() < 0.15 * raw_diff.mean()


def test_retinex_makes_the_descriptor_robust_to_brightness() -> None:
    image = _person(9)
    darker = np.round(image * 0.5).astype(np.uint8)
    robust = _cosine(*lomo_batch([image, darker]))  # the default has Retinex
    plain = _cosine(*lomo_batch([image, darker], replace(LomoConfig(), retinex="none")))
    assert robust > 0.9
    assert 1 - robust < 0.5 * (1 - plain)


def test_bad_inputs_name_the_culprit() -> None:
    good = _person(10)
    with pytest.raises(ValueError, match=r"image 1: expected an \(H, W, 3\) uint8 RGB array"):
        lomo_batch([good, good.astype(np.float32)])
    with pytest.raises(ValueError, match=r"image 0: expected an \(H, W, 3\) uint8 RGB array"):
        lomo(good[..., 0])
    with pytest.raises(ValueError, match="valid: \\['msrcp', 'msrcr', 'none'\\]"):
        lomo(good, replace(LomoConfig(), retinex="bogus"))


@pytest.mark.data
def test_viper_same_person_is_closer_than_others() -> None:
    """Without any learning, a person's two views are closer than random pairs (first 40 ids)."""
    if not VIPER.is_dir():
        pytest.skip(f"VIPeR not found at {VIPER}")
    import cv2

    def read(camera: str) -> list[np.ndarray]:
        images = []
        for path in sorted((VIPER / camera).glob("*.bmp"))[:40]:
            bgr = cv2.imread(str(path))
            assert bgr is not None, f"unreadable {path}"
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return images

    a, b = lomo_batch(read("cam_a")), lomo_batch(read("cam_b"))
    similarity = a @ b.T
    ranks = (similarity > np.diag(similarity)[:, None]).sum(axis=1)
    assert np.mean(ranks) < 0.15 * len(a)  # chance would be about half; LOMO gets ~0.06
