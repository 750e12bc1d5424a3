"""Tests for the GOG descriptor (indexer/extractors/gog.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from indexer.extractors.gog import (
    COLOR_SPACES,
    GOGNormalizer,
    color_space_slices,
    column_weights,
    gog,
    gog_batch,
    gog_dim,
    gradient_orientation_map,
    half_vectorize,
    log_gaussian_embedding,
    patch_gaussians,
    region_gaussians,
    rgb_to_hsv,
    rgb_to_lab,
    strip_rows,
    to_model_size,
)


def _person(rng: np.random.Generator, height: int = 128, width: int = 48) -> np.ndarray:
    """A synthetic pedestrian: colour bands down the body, a darker torso, pixel noise."""
    bands = rng.integers(0, 256, size=(8, 3))
    image = np.repeat(bands, height // 8, axis=0)[:, None, :].repeat(width, axis=1).astype(float)
    x = np.abs(np.arange(width) - (width - 1) / 2) / width
    image *= (0.6 + 0.8 * x)[None, :, None]  # brighter background toward the sides
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- shape, dtype, determinism


def test_fusion_has_the_published_dimension() -> None:
    assert gog_dim() == 27622
    assert {s: gog_dim((s,)) for s in COLOR_SPACES} == {
        "rgb": 7567, "lab": 7567, "hsv": 7567, "nrng": 4921
    }
    slices = color_space_slices()
    assert slices["nrng"] == slice(3 * 7567, 27622)


def test_gog_shape_dtype_and_determinism() -> None:
    image = _person(np.random.default_rng(0))
    first = gog(image)
    assert first.shape == (27622,) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, gog(image))
    rgb_only = gog(image, color_spaces=("rgb",))
    # the same numbers up to BLAS blocking (other matrix shapes); a block of another colour space
    # or pixel would differ by ~1e-2
    np.testing.assert_allclose(rgb_only, first[:7567], rtol=1e-5, atol=1e-6)


def test_batch_matches_single_and_resizes_any_size() -> None:
    rng = np.random.default_rng(1)
    small, big = _person(rng), _person(rng, 256, 96)
    batch = gog_batch([small, big], color_spaces=("lab", "nrng"))
    assert batch.shape == (2, 7567 + 4921) and batch.dtype == np.float32
    # equal up to BLAS blocking, which depends on the batch size; another image's row or another
    # resize would differ by ~1e-2
    np.testing.assert_allclose(batch[0], gog(small, ("lab", "nrng")), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch[1], gog(to_model_size(big), ("lab", "nrng")), rtol=1e-5, atol=1e-6)
    assert gog_batch([], color_spaces=("rgb",)).shape == (0, 7567)


def test_bad_inputs_name_the_culprit() -> None:
    good = _person(np.random.default_rng(2))
    with pytest.raises(ValueError, match="uint8"):
        gog(good.astype(np.float32))
    with pytest.raises(ValueError, match=r"images\[1\].*\(H, W, 3\)"):
        gog_batch([good, good[..., 0]])
    with pytest.raises(ValueError, match="'xyz'.*rgb"):
        gog(good, color_spaces=("xyz",))
    with pytest.raises(ValueError, match="string"):
        gog(good, color_spaces="rgb")


# ---------------------------------------------------------------- the SPD embedding


def test_embedding_of_a_diagonal_gaussian_worked_by_hand() -> None:
    # mu = 0, S = diag(a, b): P = (ab)^(-1/3) diag(a, b, 1), so log P = diag(log a, log b, 0) - L.
    a, b = 4.0, 0.5
    L = (np.log(a) + np.log(b)) / 3
    expected = [np.log(a) - L, 0, 0, np.log(b) - L, 0, -L]
    got = log_gaussian_embedding(np.zeros(2), np.diag([a, b]))
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_embedding_with_a_mean_worked_by_hand() -> None:
    # d = 1, sigma^2 = 1, mu = sqrt 2: P = [[3, sqrt2], [sqrt2, 1]] (det 1, trace 4), whose
    # eigenvalues are 2 +- sqrt3, so log P = c (P - 2I) with c = ln(2 + sqrt3) / sqrt3.
    c = np.log(2 + np.sqrt(3)) / np.sqrt(3)
    got = log_gaussian_embedding(np.array([np.sqrt(2)]), np.array([[1.0]]))
    np.testing.assert_allclose(got, [c, np.sqrt(2) * np.sqrt(2) * c, -c], atol=1e-12)


def test_embedding_matches_scipy_logm_on_random_gaussians() -> None:
    rng = np.random.default_rng(3)
    A = rng.normal(size=(5, 4, 4))
    S = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(4)
    mu = rng.normal(size=(5, 4))
    got = log_gaussian_embedding(mu, S)
    for i in range(5):
        P = np.block([[S[i] + np.outer(mu[i], mu[i]), mu[i][:, None]], [mu[i][None, :], np.ones((1, 1))]])
        P *= np.linalg.det(S[i]) ** (-1 / 5)
        np.testing.assert_allclose(got[i], half_vectorize(scipy.linalg.logm(P).real), atol=1e-9)


def test_half_vectorize_keeps_the_frobenius_norm() -> None:
    M = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    v = half_vectorize(M)
    np.testing.assert_allclose(v, [1, 2 * np.sqrt(2), 3 * np.sqrt(2), 4, 5 * np.sqrt(2), 6])
    assert np.isclose(np.linalg.norm(v), np.linalg.norm(M))


# ---------------------------------------------------------------- vectorised statistics vs loops


def test_patch_gaussians_equal_a_naive_loop() -> None:
    rng = np.random.default_rng(4)
    features = rng.random((2, 10, 8, 3))
    means, covs = patch_gaussians(features, k=5, p=2)
    assert means.shape == (2, 5, 4, 3) and covs.shape == (2, 5, 4, 3, 3)
    for n in range(2):
        for i, r in enumerate(range(0, 10, 2)):
            for j, c in enumerate(range(0, 8, 2)):
                patch = features[n, max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3].reshape(-1, 3)
                np.testing.assert_allclose(means[n, i, j], patch.mean(axis=0), atol=1e-12)
                np.testing.assert_allclose(covs[n, i, j], np.cov(patch.T), atol=1e-12)


def test_region_gaussians_equal_a_naive_loop() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(1, 16, 6, 3))
    weights = column_weights(6)
    strips = strip_rows(16)
    assert strips == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 12), (10, 14), (12, 16)]
    means, covs = region_gaussians(vectors, weights, strips)
    for s, (top, bottom) in enumerate(strips):
        block = vectors[0, top:bottom].reshape(-1, 3)
        w = np.tile(weights, bottom - top)
        mean = (w[:, None] * block).sum(axis=0) / w.sum()
        cov = sum(wi * np.outer(v - mean, v - mean) for wi, v in zip(w, block, strict=True)) / w.sum()
        np.testing.assert_allclose(means[0, s], mean, atol=1e-12)
        np.testing.assert_allclose(covs[0, s], cov, atol=1e-12)


def test_column_weights_follow_gog_m() -> None:
    w = column_weights(24)
    x = np.arange(1, 25)
    np.testing.assert_allclose(w, np.exp(-((x - 12) ** 2) / 72) / (6 * np.sqrt(2 * np.pi)))
    assert np.argmax(w) == 11  # x = 12 (one-based), the centre of GOG.m
    np.testing.assert_array_equal(column_weights(5, use_weight=False), np.ones(5))


# ---------------------------------------------------------------- pixel features


def test_gradient_bins_of_ramps() -> None:
    ramp = np.tile(np.arange(8, dtype=float), (6, 1))  # brighter to the right: gx = 2, gy = 0
    votes = gradient_orientation_map(ramp)
    np.testing.assert_allclose(votes[1:-1, 1:-1], np.broadcast_to([0, 0, 0, 2.0], (4, 6, 4)))
    down = ramp.T.copy()  # brighter downward: gy = X(y-1) - X(y+1) = -2, orientation 2 pi -> bin 0
    votes = gradient_orientation_map(down)
    np.testing.assert_allclose(votes[1:-1, 1:-1], np.broadcast_to([2.0, 0, 0, 0], (6, 4, 4)))
    diagonal = gradient_orientation_map(ramp + np.arange(6)[:, None])
    # gx = 2, gy = -2: atan2(2, -2) + pi = 7 pi / 4, halfway between the bins at 3 pi / 2 and 2 pi
    np.testing.assert_allclose(diagonal[2, 3], np.sqrt(8) * np.array([0.5, 0, 0, 0.5]))


def test_colour_conversions_match_scikit_image() -> None:
    color = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, size=(9, 7, 3)).astype(np.uint8)
    rgb[0, 0] = [40, 40, 40]  # grey: hue and saturation 0
    # scikit-image rounds the sRGB matrix so that grey is off by ~1e-3 in a, b; ours keeps it 0
    np.testing.assert_allclose(rgb_to_lab(rgb), color.rgb2lab(rgb), atol=1e-2)
    np.testing.assert_allclose(rgb_to_lab(rgb)[0, 0, 1:], 0, atol=1e-4)
    np.testing.assert_allclose(rgb_to_hsv(rgb), color.rgb2hsv(rgb), atol=1e-9)
    # MATLAB's rgb2hsv on primaries, a secondary and grey (hue 0 where saturation is 0)
    known = np.array([[[255, 0, 0], [0, 255, 255], [0, 0, 255], [51, 51, 51]]], np.uint8)
    np.testing.assert_allclose(rgb_to_hsv(known)[0],
                               [[0, 1, 1], [0.5, 1, 1], [2 / 3, 1, 1], [0, 0, 0.2]], atol=1e-12)


# ---------------------------------------------------------------- behaviour of the descriptor


def test_horizontal_flip_barely_changes_the_descriptor() -> None:
    rng = np.random.default_rng(7)
    people = [_person(rng) for _ in range(5)]
    X = gog_batch(people + [people[0][:, ::-1].copy()])
    Z = GOGNormalizer().fit(X[:5]).transform(X)
    cos_flip = float(Z[0] @ Z[5]) / 4  # four unit-length colour blocks
    cos_other = max(float(Z[0] @ Z[i]) / 4 for i in range(1, 5))
    assert cos_flip > 0.8  # after mean removal, where different people score below 0
    assert 1 - cos_flip < 0.2 * (1 - cos_other)


def test_normalizer_centres_and_scales_each_colour_space() -> None:
    rng = np.random.default_rng(8)
    X = rng.normal(3.0, 1.0, size=(5, gog_dim(("rgb", "nrng")))).astype(np.float32)
    norm = GOGNormalizer(("rgb", "nrng"))
    with pytest.raises(RuntimeError, match="before fit"):
        norm.transform(X)
    Z = norm.fit_transform(X)
    for block in (slice(0, 7567), slice(7567, 7567 + 4921)):
        np.testing.assert_allclose(np.linalg.norm(Z[:, block], axis=1), 1.0, rtol=1e-5)
    centred = X[0].astype(np.float64) - X.mean(axis=0)
    np.testing.assert_allclose(Z[0, :7567], centred[:7567] / np.linalg.norm(centred[:7567]), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 12488\)"):
        norm.transform(X[:, :10])
