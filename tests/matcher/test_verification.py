"""Geometric verification: known homographies and two-view geometry are recovered, junk is not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from indexer.extractors.sift import rootsift
from matcher.matching import match_pairs
from matcher.verification import SUPPORTED, VERIFIERS, Verification, verify

# a mild perspective warp: rotation, scale, shear and a little keystone
H_TRUE = np.array([[0.9, -0.15, 40.0], [0.12, 0.95, 10.0], [2e-4, -1e-4, 1.0]])


def apply_h(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points by a homography."""
    homog = np.hstack([pts, np.ones((len(pts), 1))]) @ H.T
    return homog[:, :2] / homog[:, 2:]


def grid(width: float, height: float, n: int = 10) -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(0, width, n), np.linspace(0, height, n))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def identity_matches(n: int) -> np.ndarray:
    return np.stack([np.arange(n), np.arange(n)], axis=1)


def sampson(F: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """First-order geometric distance of q^T F p = 0, in pixels."""
    ph, qh = np.hstack([p, np.ones((len(p), 1))]), np.hstack([q, np.ones((len(q), 1))])
    Fp, Ftq = ph @ F.T, qh @ F
    num = np.einsum("ij,ij->i", qh, Fp)
    return np.abs(num) / np.sqrt(Fp[:, 0] ** 2 + Fp[:, 1] ** 2 + Ftq[:, 0] ** 2 + Ftq[:, 1] ** 2)


@pytest.fixture(scope="module")
def warped_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints of astronaut and of its H_TRUE-warped copy, and their putative matches."""
    image = data.astronaut()
    warped = cv2.warpPerspective(image, H_TRUE, (image.shape[1], image.shape[0]))
    fa, fb = rootsift(image, 1000), rootsift(warped, 1000)
    (matches,) = match_pairs(fa, [fb], ratio=0.8)
    return fa.keypoints, fb.keypoints, matches


@pytest.mark.parametrize("method", VERIFIERS)
def test_recovers_known_homography_between_image_and_warp(
    warped_pair: tuple[np.ndarray, np.ndarray, np.ndarray], method: str
) -> None:
    kp_a, kp_b, matches = warped_pair
    result = verify(kp_a, kp_b, matches, method, "homography", threshold_px=3.0)  # type: ignore[arg-type]
    assert result.model is not None
    assert result.inliers > 150 and result.inliers >= 0.8 * len(matches)
    pts = grid(400, 400) + 50  # the part of astronaut that stays inside the warped frame
    err = np.linalg.norm(apply_h(result.model, pts) - apply_h(H_TRUE, pts), axis=1)
    assert err.max() < 2.0
    # inliers are the matches that H_TRUE itself explains
    truth = np.linalg.norm(apply_h(H_TRUE, kp_a[matches[:, 0]]) - kp_b[matches[:, 1]], axis=1)
    assert np.mean(truth[result.inlier_mask] < 3.0) > 0.97


@pytest.fixture(scope="module")
def unrelated_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints of two unrelated photographs and all 1000 nearest-neighbour matches (no test)."""
    a, b = rootsift(data.astronaut(), 1000), rootsift(data.coffee(), 1000)
    (matches,) = match_pairs(a, [b], ratio=None, mutual=False)
    return a.keypoints, b.keypoints, matches


@pytest.mark.parametrize(("method", "model", "threshold", "most"), [
    (method, model, threshold, most)
    for method in VERIFIERS
    for model, threshold, most in (("homography", 4.0, 15), ("fundamental", 1.0, 40),
                                   ("affine", 4.0, 15))
    if model in SUPPORTED[method]
])
def test_unrelated_images_have_few_inliers(
    unrelated_pair: tuple[np.ndarray, np.ndarray, np.ndarray], method: str, model: str,
    threshold: float, most: int,
) -> None:
    # 1000 wrong matches: a homography finds almost no support; F, whose inlier set is a band
    # around a line, picks up a few percent by chance
    kp_a, kp_b, matches = unrelated_pair
    assert len(matches) == 1000
    result = verify(kp_a, kp_b, matches, method, model, threshold)  # type: ignore[arg-type]
    assert result.inliers <= most


@pytest.mark.parametrize("method", VERIFIERS)
def test_synthetic_plane_with_outliers(method: str) -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (200, 2))
    dst = apply_h(H_TRUE, src) + rng.normal(0, 0.5, (200, 2))
    dst[140:] = rng.uniform(0, 500, (60, 2))  # 30% outliers
    result = verify(src, dst, identity_matches(200), method, "homography", threshold_px=3.0)  # type: ignore[arg-type]
    assert 133 <= result.inliers <= 145
    assert result.inlier_mask[:140].mean() > 0.95
    assert result.model is not None
    pts = grid(500, 500)
    assert np.abs(apply_h(result.model, pts) - apply_h(H_TRUE, pts)).max() < 2.0


def two_view(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projections of random 3-D points in two calibrated views, and the true F."""
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    R, _ = cv2.Rodrigues(np.array([0.05, -0.2, 0.03]))
    t = np.array([1.0, 0.1, 0.2])
    X = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(4, 9, n)])
    x1 = X @ K.T
    x2 = (X @ R.T + t) @ K.T
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K).T @ tx @ R @ np.linalg.inv(K)
    return x1[:, :2] / x1[:, 2:], x2[:, :2] / x2[:, 2:], F / np.linalg.norm(F)


FITS_F = [m for m in VERIFIERS if "fundamental" in SUPPORTED[m]]
FITS_AFFINE = [m for m in VERIFIERS if "affine" in SUPPORTED[m]]


@pytest.mark.parametrize("method", FITS_F)
def test_fundamental_matrix_of_a_3d_scene(method: str) -> None:
    rng = np.random.default_rng(1)
    p, q, F_true = two_view(rng, 300)
    clean_p, clean_q = p.copy(), q.copy()
    q = q + rng.normal(0, 0.3, q.shape)
    q[200:] = rng.uniform(0, 640, (100, 2))  # a third are outliers
    result = verify(p, q, identity_matches(300), method, "fundamental", threshold_px=1.0)  # type: ignore[arg-type]
    assert result.model is not None
    assert result.inlier_mask[:200].mean() > 0.9 and result.inlier_mask[200:].mean() < 0.1
    # the fitted F explains the noise-free correspondences to well under a pixel
    assert np.median(sampson(result.model, clean_p[:200], clean_q[:200])) < 0.5
    assert np.median(sampson(F_true, clean_p[:200], clean_q[:200])) < 1e-6


@pytest.mark.parametrize("method", FITS_AFFINE)
def test_recovers_an_affine_map_among_outliers(method: str) -> None:
    rng = np.random.default_rng(5)
    A = np.array([[0.8, -0.3, 40.0], [0.25, 1.1, -15.0], [0.0, 0.0, 1.0]])
    src = rng.uniform(0, 400, (150, 2))
    dst = apply_h(A, src) + rng.normal(0, 0.5, (150, 2))
    dst[100:] = rng.uniform(0, 400, (50, 2))  # a third are outliers
    result = verify(src, dst, identity_matches(150), method, "affine",  # type: ignore[arg-type]
                    threshold_px=3.0)
    assert 95 <= result.inliers <= 105
    assert result.inlier_mask[:100].mean() > 0.95 and result.inlier_mask[100:].mean() < 0.1
    assert result.model is not None
    np.testing.assert_allclose(result.model, A, atol=0.5)


@pytest.mark.parametrize(("method", "model", "n"), [
    (method, model, n)
    for method in VERIFIERS
    for model, n in (("homography", 0), ("homography", 3), ("fundamental", 7), ("fundamental", 0),
                     ("affine", 3), ("affine", 0))
    if model in SUPPORTED[method]
])
def test_too_few_matches_give_zero(method: str, model: str, n: int) -> None:
    rng = np.random.default_rng(2)
    pts = rng.uniform(0, 100, (10, 2))
    result = verify(pts, pts + 1, identity_matches(n), method, model)  # type: ignore[arg-type]
    assert result.inliers == 0 and result.model is None
    assert result.inlier_mask.shape == (n,)


@pytest.mark.parametrize("method", VERIFIERS)
def test_empty_features(method: str) -> None:
    none = np.zeros((0, 2), np.float32)
    result = verify(none, none, np.zeros((0, 2), np.int64), method)  # type: ignore[arg-type]
    assert result == Verification(0, None, result.inlier_mask) and len(result.inlier_mask) == 0


@pytest.mark.parametrize("method", VERIFIERS)
def test_degenerate_points_do_not_crash(method: str) -> None:
    # all matches on one line, or all on one point: no homography, and no exception
    line = np.column_stack([np.linspace(0, 100, 20), np.linspace(0, 50, 20)])
    same = np.ones((20, 2))
    for a, b in ((line, line * 2), (same, same)):
        result = verify(a, b, identity_matches(20), method, "homography")  # type: ignore[arg-type]
        assert isinstance(result.inliers, int) and result.inlier_mask.shape == (20,)


@pytest.mark.parametrize("method", VERIFIERS)
def test_deterministic(method: str) -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 500, (80, 2))
    dst = apply_h(H_TRUE, src) + rng.normal(0, 1.0, (80, 2))
    dst[40:] = rng.uniform(0, 500, (40, 2))
    runs = [verify(src, dst, identity_matches(80), method) for _ in range(3)]  # type: ignore[arg-type]
    for other in runs[1:]:
        assert other.inliers == runs[0].inliers
        np.testing.assert_array_equal(other.inlier_mask, runs[0].inlier_mask)
        np.testing.assert_array_equal(other.model, runs[0].model)


def test_bad_arguments_name_the_culprit() -> None:
    pts = np.zeros((5, 2))
    with pytest.raises(ValueError, match="valid: degensac, magsac, ransac"):
        verify(pts, pts, identity_matches(5), "lmeds")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: homography, fundamental, affine"):
        verify(pts, pts, identity_matches(5), model="similarity")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="degensac does not fit affine"):
        verify(pts, pts, identity_matches(5), "degensac", "affine")
    with pytest.raises(ValueError, match="ransac does not fit fundamental"):
        verify(pts, pts, identity_matches(5), "ransac", "fundamental")
    with pytest.raises(ValueError, match="out of range"):
        verify(pts, pts, identity_matches(6))
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        verify(pts, pts, np.arange(5))


@pytest.mark.parametrize("method", VERIFIERS)
def test_min_matches_skips_small_sets(method: str) -> None:
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 500, (20, 2))
    dst = apply_h(H_TRUE, src)
    for min_matches, expected in ((20, 20), (21, 0)):
        result = verify(src, dst, identity_matches(20), method,  # type: ignore[arg-type]
                        min_matches=min_matches)
        assert result.inliers == expected
