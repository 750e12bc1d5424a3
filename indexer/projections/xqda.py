"""XQDA: cross-view quadratic discriminant analysis (Liao, Hu, Zhu and Li, CVPR 2015).

Learns a subspace W and a metric M on it from labelled training images such that
d(x, z) = (x - z)^T W M W^T (x - z) is small for two images of one person seen by two cameras.
Sigma_I and Sigma_E are the covariances of the differences of intra-personal and extra-personal
pairs; as in the authors' released XQDA.m, only pairs across two cameras count, lambda = 0.001 is
added to the diagonal of Sigma_I, W keeps the directions whose latent value of
Sigma_I^-1 Sigma_E is above 1, and M = inv(W^T Sigma_I W) - inv(W^T Sigma_E W).

High dimensional features (LOMO: 26,960-d) with a few hundred training images are handled in the
span of the centred training data, which gives the same distances as the D x D computation:
outside that span both covariances vanish, so those directions have latent value 0 and are never
kept. The released code takes a thin QR of the data for this; we eigendecompose the N x N Gram
matrix instead: same span, and on a 632 x 26,960 VIPeR training set the Gram product plus a
632 x 632 eigendecomposition took 3 s against 17-28 s for LAPACK's thin QR (one thread).
No D x D matrix is ever formed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.sparse

from storage.atomic import atomic_write

logger = logging.getLogger(__name__)

Solver = Literal["eig", "svd"]
LAMBDA = 0.001  # the paper's regulariser on the diagonal of Sigma_I


# ----------------------------------------------------------------------------- pure maths


def _group_scatter(Z: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Sum of (z_i - z_j)(z_i - z_j)^T over ordered pairs in one group, and the pair count.

    Equals 2 Z^T (D - A) Z for the same-group indicator A (a graph Laplacian), computed from the
    group sums so no N x N matrix is formed. Pairs i == j add zero and are counted; callers only
    use differences of these sums, in which they cancel.
    """
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    n = len(Z)
    onehot = scipy.sparse.csr_matrix((np.ones(n), (inverse, np.arange(n))), shape=(len(counts), n))
    sums = np.asarray(onehot @ Z)
    scatter = (Z * counts[inverse][:, None]).T @ Z
    scatter -= sums.T @ sums  # in place: r x r matrices are GBs on Market-sized training sets
    scatter *= 2.0
    return scatter, int((counts.astype(np.int64) ** 2).sum())


def pair_covariances(
    Z: np.ndarray, labels: np.ndarray, cams: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Sigma_I, Sigma_E of pair differences (unregularised) and the intra / extra pair counts.

    With cams, pairs are the image pairs from two different cameras (XQDA's cross-view pairs);
    without, every pair of two distinct images. Counts are of unordered pairs.
    """
    n = len(Z)
    cams = np.arange(n) if cams is None else np.asarray(cams)
    _, label_idx = np.unique(labels, return_inverse=True)
    _, cam_idx = np.unique(cams, return_inverse=True)
    label_cam = label_idx.astype(np.int64) * (cam_idx.max() + 1) + cam_idx
    # intra = same label minus same label and camera; extra = other camera minus intra
    s_intra, c_label = _group_scatter(Z, label_idx)
    s_label_cam, c_label_cam = _group_scatter(Z, label_cam)
    s_intra -= s_label_cam
    del s_label_cam
    s_extra, c_all = _group_scatter(Z, np.zeros(n, np.int64))
    s_cam, c_cam = _group_scatter(Z, cam_idx)
    s_extra -= s_cam
    del s_cam
    s_extra -= s_intra
    c_intra = c_label - c_label_cam
    c_extra = c_all - c_cam - c_intra
    if c_intra == 0:
        raise ValueError("no intra-personal pair across cameras: XQDA needs each training "
                         "identity seen by at least two cameras")
    if c_extra == 0:
        raise ValueError("no extra-personal pair: XQDA needs at least two training identities")
    s_intra /= c_intra
    s_extra /= c_extra
    return s_intra, s_extra, c_intra // 2, c_extra // 2


def xqda_subspace(
    Sigma_I: np.ndarray,
    Sigma_E: np.ndarray,
    lam: float = LAMBDA,
    dims: int | None = None,
    solver: Solver = "eig",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """XQDA on given covariances -> (V (r, q) directions, M (q, q) metric, latent values, sorted).

    solver "eig" solves the generalised problem Sigma_E v = l (Sigma_I + lam I) v as the paper
    states it (then V^T Sigma_I V = I and M = diag(1 - 1/l) is positive definite); "svd" takes the
    left singular vectors of (Sigma_I + lam I)^-1 Sigma_E as the released XQDA.m does, where M is
    in general indefinite.
    """
    S_I = Sigma_I.copy()
    S_I[np.diag_indices_from(S_I)] += lam
    if solver == "eig":
        latent, vectors = scipy.linalg.eigh(Sigma_E, S_I)
    elif solver == "svd":
        vectors, latent, _ = np.linalg.svd(np.linalg.solve(S_I, Sigma_E))
    else:
        raise ValueError(f"unknown solver {solver!r}; valid: 'eig', 'svd'")
    order = np.argsort(latent)[::-1]
    latent, vectors = latent[order], vectors[:, order]
    r = int((latent > 1).sum())
    q = max(1, r) if dims is None or dims <= 0 else min(dims, max(1, r))
    V = vectors[:, :q]
    M = np.linalg.inv(V.T @ S_I @ V) - np.linalg.inv(V.T @ Sigma_E @ V)
    return V, (M + M.T) / 2, latent


def psd_factor(M: np.ndarray) -> tuple[np.ndarray, int]:
    """L with L L^T = M, negative eigenvalues of M clipped to 0; also how many were clipped."""
    eigvals, eigvecs = np.linalg.eigh((M + M.T) / 2)
    clipped = int((eigvals < 0).sum())
    return eigvecs * np.sqrt(np.clip(eigvals, 0.0, None)), clipped


def quadratic_distance(Pq: np.ndarray, Pg: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(Nq, Ng) matrix of (p - g)^T M (p - g) between projected rows."""
    PqM, PgM = Pq @ M, Pg @ M
    dq = np.einsum("ij,ij->i", PqM, Pq)
    dg = np.einsum("ij,ij->i", PgM, Pg)
    return dq[:, None] + dg[None, :] - 2.0 * (PqM @ Pg.T)


def gram_basis(G: np.ndarray, rank_tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """(A, Z) from a Gram / kernel matrix G = U S U^T of N samples, null directions dropped.

    Z = U S^(1/2) (N, r) are the samples' coordinates in an orthonormal basis of their span and
    A = U S^(-1/2) (N, r) maps a row of inner products with the samples, g(x), to x's coordinates
    g(x) @ A. Eigenvalues below rank_tol times the largest are numerical zeros.
    """
    eigvals, eigvecs = np.linalg.eigh((G + G.T) / 2)
    keep = eigvals > rank_tol * max(float(eigvals.max()), 0.0)
    if not keep.any():
        raise ValueError("the training samples span nothing (all identical)")
    eigvals, eigvecs = eigvals[keep], eigvecs[:, keep]
    return eigvecs / np.sqrt(eigvals), eigvecs * np.sqrt(eigvals)


# ----------------------------------------------------------------------------- I/O helpers


def check_training(
    X: np.ndarray, labels: np.ndarray, cams: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate fit() inputs; name the argument that is wrong."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be (N, D), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(X):
        raise ValueError(f"labels has {len(labels)} entries for {len(X)} rows of X")
    if cams is not None:
        cams = np.asarray(cams).reshape(-1)
        if len(cams) != len(X):
            raise ValueError(f"cams has {len(cams)} entries for {len(X)} rows of X")
    return X, labels, cams


def check_query(X: np.ndarray, dim: int, name: str) -> np.ndarray:
    """Validate rows to project against the training dimension."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != dim:
        raise ValueError(f"{name} must be (N, {dim}), got shape {X.shape}")
    return X


def save_npz_atomic(path: str | Path, **arrays: Any) -> None:
    """Write arrays to one .npz atomically (`storage.atomic`: a temporary file, fsynced, renamed)."""
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def load_npz(path: str | Path, kind: str) -> dict[str, np.ndarray]:
    """Read a projection .npz written by save(), checking it holds the expected kind."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    found = str(arrays.get("kind", "?"))
    if found != kind:
        raise ValueError(f"{path} holds a {found!r} projection, not {kind!r}")
    return arrays


# ----------------------------------------------------------------------------- the model


class QuadraticMetric:
    """What XQDA and kernel XQDA share once fitted: a projection and a metric M on it."""

    def project(self, X: np.ndarray, name: str = "X") -> np.ndarray:
        """(N, q) coordinates in the learned subspace (before the metric)."""
        raise NotImplementedError

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(two model-specific arrays, M as learned, its PSD factor L); raises when not fitted."""
        raise NotImplementedError

    def _metric(self) -> tuple[np.ndarray, np.ndarray]:
        """(M as learned, its PSD factor L); raises when not fitted."""
        _, _, M, L = self._fitted()
        return M, L

    def distance(self, Xq: np.ndarray, Xg: np.ndarray) -> np.ndarray:
        """(Nq, Ng) squared learned distances (with M as learned, not clipped)."""
        return quadratic_distance(self.project(Xq, "Xq"), self.project(Xg, "Xg"), self._metric()[0])

    def embed(self, X: np.ndarray) -> np.ndarray:
        """(N, q) rows whose squared L2 distances are the learned distances (M clipped to PSD)."""
        return self.project(X) @ self._metric()[1]


class XQDA(QuadraticMetric):
    """Linear XQDA. fit() on labelled images, then distance() or embed() for FAISS L2 search.

    embed() returns rows whose squared Euclidean distances equal the learned distance with M
    replaced by its nearest positive semi-definite matrix (negative eigenvalues clipped to 0).
    With solver="eig" M is positive definite by construction and nothing is clipped; with
    solver="svd" (the released code's shortcut) M can be indefinite and clipping can change ranks.
    """

    kind = "xqda"

    def __init__(self, lam: float = LAMBDA, dims: int | None = None, solver: Solver = "eig"):
        self.lam, self.dims, self.solver = lam, dims, solver
        self.mean_: np.ndarray | None = None
        self.W_: np.ndarray | None = None  # (D, q) projection
        self.M_: np.ndarray | None = None  # (q, q) metric on the projection
        self.latent_: np.ndarray | None = None
        self.L_: np.ndarray | None = None  # (q, q) PSD factor used by embed()
        self.num_clipped_ = 0

    def fit(self, X: np.ndarray, labels: np.ndarray, cams: np.ndarray | None = None) -> XQDA:
        """Learn W and M from (N, D) features, person labels and (optionally) camera ids."""
        X, labels, cams = check_training(X, labels, cams)
        mean = X.mean(axis=0)
        Xc = X - mean
        if Xc.shape[1] <= len(Xc):  # fewer dimensions than samples: the D x D problem is small
            Z, to_basis = Xc, None
        else:  # the span of the samples, from their N x N Gram matrix; the basis is Xc^T A
            A, Z = gram_basis(Xc @ Xc.T)
            to_basis = A
        Sigma_I, Sigma_E, n_i, n_e = pair_covariances(Z, labels, cams)
        V, M, latent = xqda_subspace(Sigma_I, Sigma_E, self.lam, self.dims, self.solver)
        self._set(mean, V if to_basis is None else Xc.T @ (to_basis @ V), M, latent)
        logger.info("XQDA: %d intra / %d extra pairs, %d of %d dims kept, %d eigenvalues of M "
                    "clipped", n_i, n_e, V.shape[1], Z.shape[1], self.num_clipped_)
        return self

    def _set(self, mean: np.ndarray, W: np.ndarray, M: np.ndarray, latent: np.ndarray) -> None:
        self.mean_, self.W_, self.M_, self.latent_ = mean, W, M, latent
        self.L_, self.num_clipped_ = psd_factor(M)

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.W_ is None or self.M_ is None or self.mean_ is None or self.L_ is None:
            raise RuntimeError("XQDA is not fitted: call fit() or load() first")
        return self.mean_, self.W_, self.M_, self.L_

    def project(self, X: np.ndarray, name: str = "X") -> np.ndarray:
        """(N, q) coordinates in the learned subspace (before the metric)."""
        mean, W, _, _ = self._fitted()
        return (check_query(X, len(mean), name) - mean) @ W

    def save(self, path: str | Path) -> None:
        """Write the model to one .npz, atomically."""
        mean, W, M, _ = self._fitted()
        assert self.latent_ is not None
        save_npz_atomic(path, kind=np.array(self.kind), mean=mean, W=W, M=M,
                        latent=self.latent_, lam=np.array(self.lam), solver=np.array(self.solver))

    @classmethod
    def load(cls, path: str | Path) -> XQDA:
        """Read a model written by save()."""
        a = load_npz(path, cls.kind)
        model = cls(lam=float(a["lam"]), solver=str(a["solver"]))  # type: ignore[arg-type]
        model._set(a["mean"], a["W"], a["M"], a["latent"])
        return model
