"""Kernel XQDA: XQDA in the feature space of an RBF kernel (after Matsukawa & Suzuki, MVA 2019).

A projection direction is a combination of the mapped training images, w = sum_i a_i phi(x_i),
so everything is expressed through the training kernel matrix K. We work in the empirical kernel
map: with K = U S U^T, the training images have coordinates U S^(1/2) in an orthonormal basis of
span{phi(x_i)}, and a new image x has S^(-1/2) U^T k(x), k(x)_i = k(x_i, x). Linear XQDA on these
coordinates is kernel XQDA with the regulariser lambda a^T K a (lambda I on Sigma_I in feature
space, as in linear XQDA); Ali & Chaudhuri's public k-XQDA code puts 1e-7 I on the coefficients
instead. The RBF bandwidth follows that code: k(x, y) = exp(-|x - y|^2 / (2 s^2)) with
2 s^2 = the mean squared distance between training images.

The model keeps its training images (N x D), since every query needs its kernel row against them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from indexer.projections.xqda import (
    LAMBDA,
    QuadraticMetric,
    Solver,
    check_query,
    check_training,
    gram_basis,
    load_npz,
    pair_covariances,
    psd_factor,
    save_npz_atomic,
    xqda_subspace,
)

logger = logging.getLogger(__name__)

def sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(Na, Nb) squared Euclidean distances, clipped at 0 against round-off."""
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d, 0.0)


def rbf_kernel(A: np.ndarray, B: np.ndarray, two_sigma2: float) -> np.ndarray:
    """exp(-|a - b|^2 / (2 sigma^2)) between the rows of A and B."""
    return np.exp(-sq_distances(A, B) / two_sigma2)


class KXQDA(QuadraticMetric):
    """Kernel XQDA with an RBF kernel; same API as XQDA (fit, distance, embed, save, load).

    embed() returns rows whose squared Euclidean distances equal the learned distance with M
    replaced by its nearest positive semi-definite matrix (negative eigenvalues clipped to 0);
    with solver="eig" M is positive definite and nothing is clipped.
    """

    kind = "kxqda"

    def __init__(
        self,
        lam: float = LAMBDA,
        dims: int | None = None,
        solver: Solver = "eig",
        two_sigma2: float | None = None,
    ):
        self.lam, self.dims, self.solver, self.two_sigma2 = lam, dims, solver, two_sigma2
        self.X_: np.ndarray | None = None  # (N, D) training images: kernel rows need them
        self.A_: np.ndarray | None = None  # (N, q) kernel row -> learned subspace
        self.M_: np.ndarray | None = None
        self.L_: np.ndarray | None = None
        self.latent_: np.ndarray | None = None
        self.bandwidth_ = 0.0  # 2 sigma^2 actually used
        self.num_clipped_ = 0

    def fit(self, X: np.ndarray, labels: np.ndarray, cams: np.ndarray | None = None) -> KXQDA:
        """Learn the kernel subspace and metric from (N, D) features, labels and camera ids."""
        X, labels, cams = check_training(X, labels, cams)
        d2 = sq_distances(X, X)
        n = len(X)
        bandwidth = self.two_sigma2 or float(d2.sum() / max(n * (n - 1), 1))
        if bandwidth <= 0:
            raise ValueError("all training images are identical: the RBF bandwidth is 0")
        basis, Z = gram_basis(np.exp(-d2 / bandwidth))
        Sigma_I, Sigma_E, n_i, n_e = pair_covariances(Z, labels, cams)
        V, M, latent = xqda_subspace(Sigma_I, Sigma_E, self.lam, self.dims, self.solver)
        self._set(X, basis @ V, M, latent, bandwidth)
        logger.info("KXQDA: %d intra / %d extra pairs, kernel rank %d, %d dims kept, "
                    "%d eigenvalues of M clipped", n_i, n_e, Z.shape[1], V.shape[1],
                    self.num_clipped_)
        return self

    def _set(
        self, X: np.ndarray, A: np.ndarray, M: np.ndarray, latent: np.ndarray, bandwidth: float
    ) -> None:
        self.X_, self.A_, self.M_, self.latent_, self.bandwidth_ = X, A, M, latent, bandwidth
        self.L_, self.num_clipped_ = psd_factor(M)

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.X_ is None or self.A_ is None or self.M_ is None or self.L_ is None:
            raise RuntimeError("KXQDA is not fitted: call fit() or load() first")
        return self.X_, self.A_, self.M_, self.L_

    def project(self, X: np.ndarray, name: str = "X") -> np.ndarray:
        """(N, q) coordinates in the learned subspace (before the metric)."""
        X_train, A, _, _ = self._fitted()
        X = check_query(X, X_train.shape[1], name)
        return rbf_kernel(X, X_train, self.bandwidth_) @ A

    def save(self, path: str | Path) -> None:
        """Write the model (training images included) to one .npz, atomically."""
        X, A, M, _ = self._fitted()
        assert self.latent_ is not None
        save_npz_atomic(path, kind=np.array(self.kind), X=X, A=A, M=M, latent=self.latent_,
                        lam=np.array(self.lam), solver=np.array(self.solver),
                        bandwidth=np.array(self.bandwidth_))

    @classmethod
    def load(cls, path: str | Path) -> KXQDA:
        """Read a model written by save()."""
        a = load_npz(path, cls.kind)
        model = cls(lam=float(a["lam"]), solver=str(a["solver"]))  # type: ignore[arg-type]
        model._set(a["X"], a["A"], a["M"], a["latent"], float(a["bandwidth"]))
        return model
