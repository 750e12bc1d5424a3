"""PCA and PCA-whitening learned from unlabelled descriptors (Jegou & Chum, ECCV 2012).

`fit(x)` learns a mean and a projection; `apply` maps descriptors to `projection @ (x - mean)`.
With whitening the projected components have unit variance, which is what DELG's whitening FC
layer starts from before any training; without it the projection is plain PCA, which stands in
for DELG's autoencoder until that is trained. The affine map is what a linear layer holds, so a
fitted model converts to a `nn.Linear` / 1x1 conv weight and bias (`as_affine`).

A landmark gallery can also hold a whitening as its projection (`embed`: whitened, then
L2-normalised for inner-product search), learned from its own stored global vectors and refreshed
as it grows (`indexer.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from indexer.imageops import l2_normalize


@dataclass(frozen=True)
class PCAWhitening:
    """A learned affine projection: y = projection @ (x - mean)."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (d, D)
    eigenvalues: np.ndarray  # (d,) variance of each kept component before whitening

    kind: ClassVar[str] = "pca-whitening"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project descriptors (N, D) -> (N, d), float32."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected (N, {self.mean.shape[0]}) descriptors, got {x.shape}")
        return ((x - self.mean) @ self.projection.T).astype(np.float32)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Project descriptors (N, D) and L2-normalise the rows: vectors for inner-product search."""
        return l2_normalize(self.apply(x), axis=1).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write to one .npz, atomically."""
        from indexer.projections.xqda import save_npz_atomic

        save_npz_atomic(path, kind=np.array(self.kind), mean=self.mean, projection=self.projection,
                        eigenvalues=self.eigenvalues)

    @classmethod
    def load(cls, path: str | Path) -> PCAWhitening:
        """Read a file written by `save`."""
        from indexer.projections.xqda import load_npz

        a = load_npz(path, cls.kind)
        return cls(a["mean"], a["projection"], a["eigenvalues"])

    def as_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight (d, D), bias (d,)) of the same map as a linear layer: W x + b."""
        weight = self.projection.astype(np.float32)
        return weight, (-self.projection @ self.mean).astype(np.float32)


def fit(
    x: np.ndarray, dim: int | None = None, whiten: bool = True, shrinkage: float = 0.0
) -> PCAWhitening:
    """Learn PCA (whiten=False) or PCA-whitening from descriptors x (N, D).

    `dim` keeps the leading components (default: all that the data can support, min(N - 1, D)).
    `shrinkage` adds `shrinkage * mean eigenvalue` to every eigenvalue before whitening, so that
    components of tiny variance (noise, when N is small) are not blown up to unit variance.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"PCA needs at least 2 descriptors as (N, D), got {x.shape}")
    n, d_in = x.shape
    dim = min(n - 1, d_in) if dim is None else dim
    if not 1 <= dim <= d_in:
        raise ValueError(f"dim must be in 1..{d_in}, got {dim}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be non-negative, got {shrinkage}")
    mean = x.mean(axis=0)
    centred = x - mean
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred / (n - 1))
    order = np.argsort(eigenvalues)[::-1][:dim]
    eigenvalues, vectors = np.maximum(eigenvalues[order], 0.0), vectors[:, order]
    # eigenvectors have arbitrary signs: fix them so refits on the same data agree exactly
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(dim)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    projection = vectors.T
    if whiten:
        floor = shrinkage * eigenvalues.mean() + 1e-12
        projection = projection / np.sqrt(eigenvalues + floor)[:, None]
    return PCAWhitening(mean, projection, eigenvalues)
