"""PCA and PCA-whitening: whitened outputs, orthonormal PCA, the affine form, shrinkage."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.projections import pca_whitening


def _correlated(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(123).normal(size=(6, 6)) * np.array([5, 3, 2, 1, 0.5, 0.2])
    return rng.normal(size=(n, 6)) @ mixing.T + np.arange(6)


def test_whitening_gives_identity_covariance_on_held_out_data() -> None:
    model = pca_whitening.fit(_correlated(20000, 0))
    held_out = model.apply(_correlated(20000, 1))
    assert held_out.shape == (20000, 6) and held_out.dtype == np.float32
    np.testing.assert_allclose(np.cov(held_out.T), np.eye(6), atol=0.05)
    np.testing.assert_allclose(held_out.mean(axis=0), 0, atol=0.05)
    raw_cov = np.cov(_correlated(20000, 1).T)
    assert np.abs(raw_cov - np.eye(6)).max() > 1.0  # the input was far from white


def test_pca_without_whitening_is_an_orthonormal_variance_ordered_projection() -> None:
    x = _correlated(5000, 2)
    model = pca_whitening.fit(x, dim=3, whiten=False)
    np.testing.assert_allclose(model.projection @ model.projection.T, np.eye(3), atol=1e-10)
    assert np.all(np.diff(model.eigenvalues) < 0)
    np.testing.assert_allclose(model.apply(x).var(axis=0, ddof=1), model.eigenvalues, rtol=1e-5)


def test_rank_deficient_data_is_reconstructed_exactly_from_its_subspace() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 5)) + 7.0  # a 2-d plane in 5-d
    model = pca_whitening.fit(x, dim=2, whiten=False)
    back = model.apply(x).astype(np.float64) @ model.projection + model.mean
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_affine_form_equals_apply_and_refits_agree() -> None:
    x = _correlated(300, 4)
    model = pca_whitening.fit(x, dim=4, shrinkage=0.1)
    weight, bias = model.as_affine()
    np.testing.assert_allclose(x @ weight.T + bias, model.apply(x), rtol=1e-4, atol=1e-4)
    again = pca_whitening.fit(x, dim=4, shrinkage=0.1)
    np.testing.assert_array_equal(again.projection, model.projection)  # signs are fixed


def test_shrinkage_damps_low_variance_components() -> None:
    x = _correlated(2000, 5)
    plain = pca_whitening.fit(x).apply(x).var(axis=0, ddof=1)
    shrunk = pca_whitening.fit(x, shrinkage=1.0).apply(x).var(axis=0, ddof=1)
    np.testing.assert_allclose(plain, 1.0, rtol=1e-4)
    assert shrunk[-1] < 0.1 < shrunk[0] < 1.0  # the weakest direction is no longer blown up


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        pca_whitening.fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="dim must be in 1..3"):
        pca_whitening.fit(np.zeros((5, 3)), dim=4)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        pca_whitening.fit(_correlated(10, 0)).apply(np.zeros((2, 5)))


def test_file_round_trip_and_embedding_for_inner_product_search(tmp_path) -> None:
    x = _correlated(300, 4)
    model = pca_whitening.fit(x, shrinkage=1.0)
    model.save(tmp_path / "w.npz")
    back = pca_whitening.PCAWhitening.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(back.projection, model.projection)
    np.testing.assert_array_equal(back.mean, model.mean)
    y = back.embed(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    direction = model.apply(x)
    np.testing.assert_allclose(y, direction / np.linalg.norm(direction, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    np.savez(tmp_path / "other.npz", kind=np.array("xqda"))
    with pytest.raises(ValueError, match="not 'pca-whitening'"):
        pca_whitening.PCAWhitening.load(tmp_path / "other.npz")
