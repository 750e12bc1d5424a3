"""XQDA: planted subspace recovery, equality with the direct D x D computation, embed, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from engine.evaluation.reid_metrics import evaluate_rank
from indexer.projections.xqda import XQDA, pair_covariances, psd_factor, xqda_subspace

PLANTED = [4, 17, 31]


def planted_data(
    rng: np.random.Generator, n_ids: int, per_cam: int, dim: int = 50, nuisance: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identity in 3 of `dim` dims (std 3, image noise 0.1); large independent noise elsewhere."""
    ids = np.repeat(np.arange(n_ids), 2 * per_cam)
    cams = np.tile(np.repeat([0, 1], per_cam), n_ids)
    X = rng.normal(0.0, nuisance, (len(ids), dim))
    X[:, PLANTED] = rng.normal(0.0, 3.0, (n_ids, 3))[ids] + rng.normal(0.0, 0.1, (len(ids), 3))
    return X, ids, cams


def rank1(dist: np.ndarray, ids: np.ndarray, cams: np.ndarray) -> float:
    q, g = cams == 0, cams == 1
    return float(evaluate_rank(dist, ids[q], ids[g], cams[q], cams[g]).cmc[0])


def test_recovers_planted_subspace() -> None:
    rng = np.random.default_rng(0)
    X, ids, cams = planted_data(rng, 100, 2)
    Xt, ids_t, cams_t = planted_data(rng, 100, 1)  # held-out identities
    model = XQDA().fit(X, ids, cams)
    assert model.W_ is not None
    W = model.W_ / np.linalg.norm(model.W_, axis=0)
    energy_on_planted = (W[PLANTED, :3] ** 2).sum(axis=0)
    assert (energy_on_planted > 0.99).all()
    assert model.latent_[2] > 100 > 2 > model.latent_[3]  # type: ignore[index]
    q, g = cams_t == 0, cams_t == 1
    xqda_rank1 = rank1(model.distance(Xt[q], Xt[g]), ids_t, cams_t)
    euclid_rank1 = rank1(((Xt[q][:, None] - Xt[g][None]) ** 2).sum(-1), ids_t, cams_t)
    assert xqda_rank1 >= 0.9
    assert euclid_rank1 <= 0.2


def brute_force_covariances(
    X: np.ndarray, labels: np.ndarray, cams: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sigma_I, Sigma_E by enumerating every cross-camera pair."""
    intra: list[np.ndarray] = []
    extra: list[np.ndarray] = []
    for i in range(len(X)):
        for j in range(i + 1, len(X)):
            if cams[i] != cams[j]:
                d = X[i] - X[j]
                (intra if labels[i] == labels[j] else extra).append(np.outer(d, d))
    return np.mean(intra, axis=0), np.mean(extra, axis=0)


def test_pair_covariances_match_enumeration() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(15, 4))
    labels = rng.integers(0, 5, 15)
    cams = rng.integers(0, 3, 15)
    S_I, S_E, _, _ = pair_covariances(X, labels, cams)
    ref_I, ref_E = brute_force_covariances(X, labels, cams)
    np.testing.assert_allclose(S_I, ref_I, atol=1e-12)
    np.testing.assert_allclose(S_E, ref_E, atol=1e-12)


def test_without_cams_every_pair_counts() -> None:
    rng = np.random.default_rng(2)
    X, labels = rng.normal(size=(9, 3)), np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    S_I, S_E, n_i, n_e = pair_covariances(X, labels, None)
    ref_I, ref_E = brute_force_covariances(X, labels, np.arange(9))
    np.testing.assert_allclose(S_I, ref_I, atol=1e-12)
    np.testing.assert_allclose(S_E, ref_E, atol=1e-12)
    assert (n_i, n_e) == (3 + 1 + 3, 36 - 7)


def direct_distances(
    X: np.ndarray, labels: np.ndarray, cams: np.ndarray, Xq: np.ndarray, Xg: np.ndarray,
    lam: float = 0.001,
) -> tuple[np.ndarray, int]:
    """The paper's computation in the full D x D space, from enumerated pairs."""
    S_I, S_E = brute_force_covariances(X, labels, cams)
    S_I = S_I + lam * np.eye(X.shape[1])
    latent, V = scipy.linalg.eigh(S_E, S_I)
    V = V[:, np.argsort(latent)[::-1][: int((latent > 1).sum())]]
    M = np.linalg.inv(V.T @ S_I @ V) - np.linalg.inv(V.T @ S_E @ V)
    P, G = Xq @ V, Xg @ V
    return ((P[:, None] - G[None]) @ M * (P[:, None] - G[None])).sum(-1), V.shape[1]


def test_sample_space_equals_direct_dxd() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(16, 40)) + 5.0  # D > N: the sample-space path; offset: centring matters
    labels, cams = np.repeat(np.arange(8), 2), np.tile([0, 1], 8)
    Xq, Xg = rng.normal(size=(5, 40)), rng.normal(size=(6, 40))
    model = XQDA().fit(X, labels, cams)
    ref, dims = direct_distances(X, labels, cams, Xq, Xg)
    assert model.W_.shape == (40, dims)  # type: ignore[union-attr]
    np.testing.assert_allclose(model.distance(Xq, Xg), ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("solver", ["eig", "svd"])
def test_embed_distances_equal_distance(solver: str) -> None:
    rng = np.random.default_rng(4)
    X, ids, cams = planted_data(rng, 30, 1, dim=60)  # D > N
    model = XQDA(solver=solver).fit(X, ids, cams)  # type: ignore[arg-type]
    Xq, Xg = rng.normal(size=(7, 60)), rng.normal(size=(9, 60))
    eq, eg = model.embed(Xq), model.embed(Xg)
    l2 = ((eq[:, None] - eg[None]) ** 2).sum(-1)
    if model.num_clipped_ == 0:
        np.testing.assert_allclose(l2, model.distance(Xq, Xg), rtol=1e-8, atol=1e-8)
    else:  # clipping only ever removes the negative part: embedded distances are not smaller
        assert (l2 >= model.distance(Xq, Xg) - 1e-8).all()


def test_eig_solver_metric_is_positive_definite() -> None:
    rng = np.random.default_rng(5)
    X, ids, cams = planted_data(rng, 30, 1)
    model = XQDA().fit(X, ids, cams)
    assert model.num_clipped_ == 0
    assert np.linalg.eigvalsh(model.M_).min() > 0  # type: ignore[arg-type]


def test_psd_factor_clips_negative_eigenvalues() -> None:
    R = np.array([[0.6, -0.8], [0.8, 0.6]])  # a rotation, so M is not diagonal
    M = R @ np.diag([2.0, -1.0]) @ R.T
    L, clipped = psd_factor(M)
    assert clipped == 1
    np.testing.assert_allclose(L @ L.T, R @ np.diag([2.0, 0.0]) @ R.T, atol=1e-12)


def test_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    X, ids, cams = planted_data(rng, 20, 1)
    model = XQDA(solver="svd").fit(X, ids, cams)
    path = tmp_path / "sub" / "xqda.npz"
    model.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["xqda.npz"]  # no temp file left behind
    loaded = XQDA.load(path)
    assert loaded.solver == "svd"
    # equal up to BLAS summation order (the loaded arrays may take other kernel paths); a stored
    # parameter off by float32 rounding would be 1e-7 relative, 1000 x the tolerance
    np.testing.assert_allclose(loaded.distance(X[:3], X[3:]), model.distance(X[:3], X[3:]),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(loaded.embed(X), model.embed(X), rtol=1e-10, atol=1e-10)


def test_subspace_dims_cap_and_fallback() -> None:
    S_I, S_E = np.diag([1.0, 1.0, 1.0]), np.diag([5.0, 3.0, 0.5])
    V, M, latent = xqda_subspace(S_I, S_E, lam=0.0)
    np.testing.assert_allclose(latent, [5.0, 3.0, 0.5])
    np.testing.assert_allclose(M, np.diag([1 - 1 / 5, 1 - 1 / 3]))
    assert xqda_subspace(S_I, S_E, lam=0.0, dims=1)[0].shape == (3, 1)
    assert xqda_subspace(S_I, 0.1 * S_I, lam=0.0)[0].shape == (3, 1)  # none above 1: keep one


def test_errors_name_the_culprit(tmp_path: Path) -> None:
    X, rng = np.zeros((4, 3)), np.random.default_rng(7)
    with pytest.raises(ValueError, match="labels"):
        XQDA().fit(X, np.arange(3))
    with pytest.raises(ValueError, match="intra-personal"):
        XQDA().fit(rng.normal(size=(4, 3)), np.arange(4), np.array([0, 1, 0, 1]))
    with pytest.raises(RuntimeError, match="not fitted"):
        XQDA().embed(X)
    Xf, ids, cams = planted_data(rng, 10, 1, dim=40)
    with pytest.raises(ValueError, match=r"Xg must be \(N, 40\)"):
        XQDA().fit(Xf, ids, cams).distance(Xf, Xf[:, :4])
