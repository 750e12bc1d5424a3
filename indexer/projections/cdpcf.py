"""C-DPCF: camera-specific discriminative pooling of convolutional features.

After Matsukawa & Suzuki, "Convolutional feature transfer via camera-specific discriminative
pooling for person re-identification" (ICPR 2020). Where each choice comes from:

- Searching public material (the code and pages corpora of our search tool, and the GitHub
  index) found no text of the paper beyond its title and no code, so the details below are ours,
  built from what the paper's title and the issue (issue 11) state: a weight map over the spatial
  locations of a layer's map, learned per camera from training identities so that the pooled
  features separate identities across cameras; learning sped up by a random projection of the
  channels; several layers; XQDA after.
- Criterion (ours, in the spirit of the same authors' XQDA line): for the weight maps of all
  cameras stacked in v = [w_1; ...; w_K], the pooled feature of image i is X_i^T w_{cam(i)} (X_i:
  S locations x C channels). We maximise the generalised Rayleigh quotient
  v^T Sigma_T v / v^T Sigma_P v, where Sigma_P sums the squared differences of the pooled features
  of same-person pairs from different cameras and Sigma_T those of all cross-camera pairs (the
  total scatter of LDA, restricted to pairs across cameras as XQDA counts them). Its maximisers are
  the top generalised eigenvectors; we keep `maps` of them, i.e. several weight maps per camera.
- Both scatters are sums of S x S blocks X_i X_j^T, computed from per-camera (and per-person,
  per-camera) sums, so no pair is visited: the cost is that of the N Gram blocks X_i X_i^T,
  O(N S^2 C). The random projection (Johnson-Lindenstrauss, Gaussian, C -> `proj_dim`) replaces
  X_i by X_i R inside those Gram blocks only, which keeps their inner products in expectation and
  divides the learning cost by C / proj_dim. The learned maps pool the full C channels.
- A camera not seen in training (or unknown, as at query time in a gallery) uses the mean of the
  learned camera maps: camera-agnostic pooling.
- Each (layer, map) block of the output is L2-normalised and the blocks concatenated with equal
  weight, as the multi-layer features are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.linalg

from indexer.projections.xqda import load_npz, save_npz_atomic

logger = logging.getLogger(__name__)

Shapes = list[tuple[int, int]]


def _split(X: np.ndarray, shapes: Shapes) -> list[np.ndarray]:
    """(N, sum S*C) rows -> per layer (N, S, C) views."""
    total = sum(s * c for s, c in shapes)
    if X.ndim != 2 or X.shape[1] != total:
        raise ValueError(f"C-DPCF expects (N, {total}) grid maps for layers {shapes}, got {X.shape}")
    out, start = [], 0
    for s, c in shapes:
        out.append(X[:, start:start + s * c].reshape(len(X), s, c))
        start += s * c
    return out


def cross_camera_scatters(
    Y: np.ndarray, pids: np.ndarray, camids: np.ndarray, cams: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(Sigma_T, Sigma_P, total pairs, positive pairs) over cross-camera pairs, (K S) x (K S).

    Y: (N, S, d) maps. A pair (i in camera a, j in camera b) adds the quadratic form of
    ||Y_i^T w_a - Y_j^T w_b||^2 to blocks (a, a), (b, b), (a, b) and (b, a).
    """
    n, s, _ = Y.shape
    k = len(cams)
    cam_index = np.searchsorted(cams, camids)
    gram = np.einsum("nsd,ntd->nst", Y, Y)  # (N, S, S): the costly step, O(N S^2 d)

    def scatter(groups: np.ndarray) -> tuple[np.ndarray, int]:
        """Scatter of cross-camera pairs within each group (one group: all images)."""
        out = np.zeros((k * s, k * s))
        pairs = 0
        for g in np.unique(groups):
            rows = groups == g
            A = np.zeros((k, s, s))
            m = np.zeros((k, s, Y.shape[2]))
            cnt = np.zeros(k, np.int64)
            np.add.at(A, cam_index[rows], gram[rows])
            np.add.at(m, cam_index[rows], Y[rows])
            np.add.at(cnt, cam_index[rows], 1)
            for a in range(k):
                for b in range(a + 1, k):
                    if cnt[a] == 0 or cnt[b] == 0:
                        continue
                    sa, sb = slice(a * s, (a + 1) * s), slice(b * s, (b + 1) * s)
                    cross = m[a] @ m[b].T
                    out[sa, sa] += cnt[b] * A[a]
                    out[sb, sb] += cnt[a] * A[b]
                    out[sa, sb] -= cross
                    out[sb, sa] -= cross.T
                    pairs += int(cnt[a] * cnt[b])
        return out, pairs

    total, n_t = scatter(np.zeros(n, np.int64))
    positive, n_p = scatter(pids)
    return total, positive, n_t, n_p


def discriminative_maps(
    Sigma_T: np.ndarray, Sigma_P: np.ndarray, maps: int, reg: float
) -> np.ndarray:
    """The `maps` top generalised eigenvectors of (Sigma_T, Sigma_P + reg * mean diag * I)."""
    ridge = reg * max(float(np.trace(Sigma_P)) / len(Sigma_P), 1e-30)
    B = Sigma_P + ridge * np.eye(len(Sigma_P))
    values, vectors = scipy.linalg.eigh(Sigma_T, B)
    order = np.argsort(values)[::-1][:maps]
    return vectors[:, order]


class CDPCF:
    """Camera-specific discriminative pooling, learned from labelled training identities.

    Input rows are grid maps of several layers, flattened location-major (`shapes`: (S, C) per
    layer, as `indexer.extractors.transfer.cdpcf_maps_batch` writes them).
    """

    kind = "cdpcf"

    def __init__(self, shapes: Shapes, maps: int = 2, proj_dim: int | None = 64, reg: float = 1e-3,
                 seed: int = 0) -> None:
        if maps < 1:
            raise ValueError(f"maps must be >= 1, got {maps}")
        self.shapes = [(int(s), int(c)) for s, c in shapes]
        self.maps, self.proj_dim, self.reg, self.seed = maps, proj_dim, reg, seed
        self.cams_: np.ndarray | None = None
        self.weights_: list[np.ndarray] = []  # per layer (K + 1, S, maps); row K = camera mean

    def fit(self, X: np.ndarray, pids: np.ndarray, camids: np.ndarray) -> CDPCF:
        """Learn each layer's weight maps per camera from (N, D) grid maps, person and camera ids."""
        pids, camids = np.asarray(pids), np.asarray(camids)
        if not len(X) == len(pids) == len(camids):
            raise ValueError(f"{len(X)} rows, {len(pids)} person ids and {len(camids)} camera ids")
        cams = np.unique(camids)
        if len(cams) < 2:
            raise ValueError("C-DPCF learns from pairs across cameras: training images of at least "
                             "two cameras are needed")
        rng = np.random.default_rng(self.seed)
        self.cams_, self.weights_ = cams, []
        for layer, (s, c) in zip(_split(np.asarray(X, np.float64), self.shapes), self.shapes,
                                 strict=True):
            Y = layer
            if self.proj_dim is not None and self.proj_dim < c:
                R = rng.standard_normal((c, self.proj_dim)) / np.sqrt(self.proj_dim)
                Y = layer @ R
            Sigma_T, Sigma_P, n_t, n_p = cross_camera_scatters(Y, pids, camids, cams)
            if n_p == 0:
                raise ValueError("no person is seen by two cameras in the training set")
            V = discriminative_maps(Sigma_T / n_t, Sigma_P / n_p, self.maps, self.reg)
            W = V.reshape(len(cams), s, V.shape[1])
            self.weights_.append(np.concatenate([W, W.mean(axis=0, keepdims=True)]))
        logger.info("C-DPCF: %d layers, %d cameras, %d maps each", len(self.shapes), len(cams),
                    self.maps)
        return self

    def transform(self, X: np.ndarray, camids: np.ndarray | None = None) -> np.ndarray:
        """(N, sum_layers maps * C) pooled features; unknown cameras use the mean map."""
        if self.cams_ is None:
            raise RuntimeError("C-DPCF is not fitted: call fit() or load() first")
        n = len(X)
        k = len(self.cams_)
        index: np.ndarray = np.full(n, k)
        if camids is not None:
            camids = np.asarray(camids)
            pos = np.clip(np.searchsorted(self.cams_, camids), 0, k - 1)
            index = np.where(self.cams_[pos] == camids, pos, k)
        blocks = []
        for layer, W in zip(_split(np.asarray(X, np.float64), self.shapes), self.weights_,
                            strict=True):
            pooled = np.einsum("nsc,nsm->nmc", layer, W[index])  # (N, maps, C)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=2, keepdims=True), 1e-12)
            blocks.append(pooled.reshape(n, -1))
        return (np.concatenate(blocks, axis=1) / np.sqrt(len(self.shapes) * self.maps)).astype(
            np.float32)

    def save(self, path: str | Path) -> None:
        """Write the fitted maps to one .npz, atomically."""
        if self.cams_ is None:
            raise RuntimeError("C-DPCF is not fitted")
        arrays = {f"w{i}": w for i, w in enumerate(self.weights_)}
        save_npz_atomic(path, kind=np.array(self.kind), cams=self.cams_,
                        shapes=np.array(self.shapes), maps=np.array(self.maps), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> CDPCF:
        """Read maps written by save()."""
        a = load_npz(path, cls.kind)
        model = cls([tuple(x) for x in a["shapes"].tolist()], maps=int(a["maps"]))
        model.cams_ = a["cams"]
        model.weights_ = [a[f"w{i}"] for i in range(len(model.shapes))]
        return model
