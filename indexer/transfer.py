"""Pure maths of CNN feature transfer (no models, no state beyond seeded random maps).

- Multi-layer pooling: each layer's map pooled (GAP or GeM) and L2-normalised as one block.
- SVD-FC / SVD-CAM (Matsukawa et al., "orthonormal class representative vectors", MIRU 2021):
  the 1000-class weights W = U S V^T replaced by the orthonormal factor U V^T (the orthonormal
  matrix nearest W); SVD-FC is the pooled feature times it, SVD-CAM the same at every location.
- MPN-CBP (Matsukawa et al., fusion features of CNNs trained on different datasets): compact
  bilinear pooling of two maps (Gao et al., CVPR 2016: Tensor Sketch of Pham & Pagh 2013, or
  Random Maclaurin of Kar & Karnick 2012), with the matrix square root applied before the
  sketch by MoNet's sub-matrix trick (Gou et al., CVPR 2018): for the S x C local features Z of
  one image, Z' = (Z Z^T)^(-1/4) Z has Z'^T Z' = (Z^T Z)^(1/2), and Z Z^T is only S x S.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from indexer.functional import gem


def pool(fmap: torch.Tensor, how: str = "gap", p: float = 3.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) by global average ("gap"), GeM ("gem") or max ("max") pooling."""
    if how == "gap":
        return fmap.mean(dim=(2, 3))
    if how == "gem":
        return gem(fmap, p)
    if how == "max":
        return fmap.amax(dim=(2, 3))
    raise ValueError(f"unknown pooling {how!r}; valid: gap, gem, max")


def blockwise_l2(blocks: list[torch.Tensor], eps: float = 1e-12) -> torch.Tensor:
    """Each (B, D_i) block L2-normalised, concatenated and scaled so every row has unit norm."""
    out = torch.cat([F.normalize(b, dim=1, eps=eps) for b in blocks], dim=1)
    return out / len(blocks) ** 0.5


def orthonormal_classifier(W: torch.Tensor) -> torch.Tensor:
    """(K, C) classifier weights -> U V^T, the orthonormal matrix nearest W (SVD-FC's weights).

    With K <= C its rows are orthonormal: the class vectors keep their directions' layout but
    no class dominates by norm and no two are correlated.
    """
    U, _, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    return (U @ Vh).to(W.dtype)


def svd_fc(pooled: torch.Tensor, W_orth: torch.Tensor) -> torch.Tensor:
    """(B, C) pooled features -> (B, K) projections on the orthonormal class vectors."""
    return pooled @ W_orth.T


def svd_cam(fmap: torch.Tensor, W_orth: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, K, H, W) orthonormal class activation maps (SVD-FC per location)."""
    return torch.einsum("bchw,kc->bkhw", fmap, W_orth)


def resample(fmap: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A map averaged onto a common (H, W) grid, so maps of two networks align location by location."""
    return F.adaptive_avg_pool2d(fmap, grid)


class TensorSketch:
    """Tensor Sketch of the outer product x y^T (Pham & Pagh 2013), seeded.

    phi(x, y) = IFFT(FFT(C1 x) * FFT(C2 y)) with count sketches C1, C2 (one random bucket and sign
    per input channel); E<phi(x, y), phi(x', y')> = <x, x'><y, y'>.
    """

    def __init__(self, c1: int, c2: int, dim: int, seed: int = 0) -> None:
        if min(c1, c2, dim) < 1:
            raise ValueError(f"channels and dim must be >= 1, got {c1}, {c2}, {dim}")
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.h1, self.s1 = self._hashes(c1, dim, g)
        self.h2, self.s2 = self._hashes(c2, dim, g)

    @staticmethod
    def _hashes(c: int, dim: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        buckets = torch.randint(dim, (c,), generator=g)
        signs = torch.randint(2, (c,), generator=g).float() * 2 - 1
        return buckets, signs

    def _count_sketch(self, x: torch.Tensor, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Each channel added, with its sign, into its bucket: O(C) per vector, not O(C dim)."""
        out = x.new_zeros(*x.shape[:-1], self.dim)
        return out.index_add_(-1, h, x * s.to(x))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(..., c1), (..., c2) -> (..., dim)."""
        fx = torch.fft.rfft(self._count_sketch(x, self.h1, self.s1), dim=-1)
        fy = torch.fft.rfft(self._count_sketch(y, self.h2, self.s2), dim=-1)
        return torch.fft.irfft(fx * fy, n=self.dim, dim=-1)


class RandomMaclaurin:
    """Random Maclaurin features of the outer product (Kar & Karnick 2012), seeded.

    phi(x, y) = (R1 x) * (R2 y) / sqrt(dim) with Rademacher R1, R2; E<phi, phi'> = <x, x'><y, y'>.
    """

    def __init__(self, c1: int, c2: int, dim: int, seed: int = 0) -> None:
        if min(c1, c2, dim) < 1:
            raise ValueError(f"channels and dim must be >= 1, got {c1}, {c2}, {dim}")
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.R1 = torch.randint(2, (c1, dim), generator=g).float() * 2 - 1
        self.R2 = torch.randint(2, (c2, dim), generator=g).float() * 2 - 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(..., c1), (..., c2) -> (..., dim)."""
        return (x @ self.R1.to(x)) * (y @ self.R2.to(y)) / self.dim ** 0.5


SKETCHES: dict[str, type[TensorSketch] | type[RandomMaclaurin]] = {
    "tensor_sketch": TensorSketch, "random_maclaurin": RandomMaclaurin,
}


def matrix_sqrt_features(Z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(B, S, C) local features -> Z' = (Z Z^T)^(-1/4) Z per image, so Z'^T Z' = (Z^T Z)^(1/2).

    MoNet's sub-matrix square root: the eigen-decomposition is of the S x S Gram matrix (S
    locations), never of the C x C bilinear matrix. `eps` (relative to the mean eigenvalue)
    keeps null directions from blowing up.
    """
    Zd = Z.double()
    G = Zd @ Zd.transpose(1, 2)
    lam, U = torch.linalg.eigh(G)
    floor = eps * lam.clamp(min=0).mean(dim=1, keepdim=True).clamp(min=1e-30)
    scale = torch.where(lam > floor, lam.clamp(min=1e-30).pow(-0.25), torch.zeros_like(lam))
    return ((U * scale.unsqueeze(1)) @ U.transpose(1, 2) @ Zd).to(Z.dtype)


def mpn_cbp(
    X: torch.Tensor, Y: torch.Tensor, sketch: TensorSketch | RandomMaclaurin, mpn: bool = True,
) -> torch.Tensor:
    """Compact bilinear pooling of two aligned maps, (B, c1, H, W) and (B, c2, H, W) -> (B, dim).

    With `mpn`, the joint local features [x; y] go through the matrix square root first, so the
    sketch approximates the cross block of (Z^T Z)^(1/2); without it, signed square root on the
    sketch (Gao et al.'s normalisation). Rows are L2-normalised.
    """
    if X.shape[0] != Y.shape[0] or X.shape[2:] != Y.shape[2:]:
        raise ValueError(f"maps must share batch and grid, got {tuple(X.shape)} and {tuple(Y.shape)}")
    c1 = X.shape[1]
    Z = torch.cat([X, Y], dim=1).flatten(2).transpose(1, 2)  # (B, S, c1 + c2)
    if mpn:
        Z = matrix_sqrt_features(Z)
    phi = sketch(Z[..., :c1], Z[..., c1:]).sum(dim=1)
    if not mpn:
        phi = phi.sign() * phi.abs().sqrt()
    return F.normalize(phi, dim=1)
