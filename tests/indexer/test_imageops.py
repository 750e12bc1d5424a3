"""The shared image helpers keep each extractor's resize behaviour."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from indexer.imageops import check_rgb, l2_normalize, resize_by, resize_to


def _image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resize_rules() -> None:
    image = _image(40, 30)
    # GOG: either side shrinking -> area filter; LOMO: only when both do
    wide = (60, 20)  # (width, height): wider, shorter
    np.testing.assert_array_equal(resize_to(image, wide, shrink_if="any", enlarge="cubic"),
                                  cv2.resize(image, wide, interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(resize_to(image, wide, shrink_if="both"),
                                  cv2.resize(image, wide, interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(resize_by(image, 0.5), cv2.resize(image, (15, 20),
                                                                    interpolation=cv2.INTER_AREA))
    assert resize_by(image, 0.1, min_side=32).shape == (32, 32, 3)
    flipped = image[:, ::-1]  # a view OpenCV alone refuses
    assert resize_to(flipped, (10, 10)).shape == (10, 10, 3)


def test_check_rgb_and_l2() -> None:
    with pytest.raises(ValueError, match=r"crop 2: expected an \(H, W, 3\) uint8 RGB array"):
        check_rgb(np.zeros((4, 4), np.uint8), "crop 2")
    with pytest.raises(ValueError, match="dtype float32"):
        check_rgb(np.zeros((4, 4, 3), np.float32))
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    out = l2_normalize(x, axis=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
