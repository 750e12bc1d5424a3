"""k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), from the distances of whichever metric is in use.

The final distance is (1 - lambda) * Jaccard + lambda * original, where the Jaccard distance
compares k-reciprocal neighbour sets encoded as Gaussian-weighted vectors (Eq. 7-12 of the paper)
after local query expansion over the k2 nearest neighbours. As in the authors' released code (and
torchreid / fast-reid, which copy it), the joint query+gallery distance matrix is first divided
by each column's maximum, and a candidate's own (k1/2)-reciprocal set joins the expansion when at
least 2/3 of it lies in the probe's k1-reciprocal set. Defaults: k1 = 20, k2 = 6, lambda = 0.3.

The encoding V is a dense (N, N) array for N = queries + gallery: fine for VIPeR-sized sets (632
images, 3 MB); a Market-1501 test set (19,281 images) would need about 3 GB.
"""

from __future__ import annotations

import numpy as np

K1, K2, LAMBDA = 20, 6, 0.3


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """The k-reciprocal neighbours of i: among its k+1 nearest, those that have i in theirs."""
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[(backward == i).any(axis=1)]


def encode(dist: np.ndarray, k1: int = K1, k2: int = K2) -> np.ndarray:
    """(N, N) rows V_i: Gaussian-weighted k-reciprocal sets with expansion, then local QE (k2)."""
    n = len(dist)
    rank = np.argsort(dist, axis=1, kind="stable")
    V = np.zeros((n, n))
    half = int(np.around(k1 / 2))
    for i in range(n):
        recip = _reciprocal(rank, i, k1)
        expanded = recip
        for c in recip:
            cand = _reciprocal(rank, int(c), half)
            if len(np.intersect1d(cand, recip)) > 2.0 / 3.0 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        weight = np.exp(-dist[i, expanded])
        V[i, expanded] = weight / weight.sum()
    if k2 > 1:
        V = V[rank[:, :k2]].mean(axis=1)
    return V


def jaccard(Vq: np.ndarray, V: np.ndarray) -> np.ndarray:
    """1 - sum(min) / sum(max) between rows of Vq (M, N) and of V (N', N), rows summing to one.

    Only the support of each query row counts in sum(min) (the paper's inverted index, Eq. 12),
    so the cost is N' x |support| per query, not N' x N.
    """
    out = np.empty((len(Vq), len(V)))
    for i, row in enumerate(Vq):
        support = np.flatnonzero(row)
        inter = np.minimum(V[:, support], row[support]).sum(axis=1)
        out[i] = 1.0 - inter / (2.0 - inter)
    return out


def k_reciprocal_rerank(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray,
    k1: int = K1, k2: int = K2, lambda_value: float = LAMBDA,
) -> np.ndarray:
    """Re-ranked (Nq, Ng) distances from query-gallery, query-query and gallery-gallery distances.

    Distances must be non-negative (squared Euclidean or a learned quadratic metric); only their
    order and ratios to each column's maximum matter.
    """
    q_g, q_q, g_g = (np.asarray(d, np.float64) for d in (q_g, q_q, g_g))
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ValueError(f"distance shapes do not fit: q_g {q_g.shape}, q_q {q_q.shape}, "
                         f"g_g {g_g.shape}")
    if min(k1, k2) < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    full = np.maximum(full, 0.0)
    # the released code divides by column maxima then transposes: each row by its own maximum
    full = full / np.maximum(full.max(axis=1, keepdims=True), 1e-12)
    V = encode(full, min(k1, nq + ng - 1), min(k2, nq + ng))
    jac = jaccard(V[:nq], V[nq:])
    return (1.0 - lambda_value) * jac + lambda_value * full[:nq, nq:]


def rerank_shortlist(query: np.ndarray, shortlist: np.ndarray) -> np.ndarray:
    """Re-ranked distances of a shortlist's vectors (N, D) to a query vector (D,).

    Query time has one query, so the re-ranking works within the shortlist (the query's FAISS
    neighbours): squared L2 distances among them, which are the learned metric's distances for a
    projected person gallery. k1 and k2 shrink with a short list (k1 at most a third of it).
    """
    shortlist = np.asarray(shortlist, np.float64)
    q = np.asarray(query, np.float64).reshape(1, -1)
    n = len(shortlist)
    if n < 3:
        return ((shortlist - q) ** 2).sum(axis=1)
    sq = (shortlist ** 2).sum(axis=1)
    g_g = np.maximum(sq[:, None] + sq[None, :] - 2 * shortlist @ shortlist.T, 0.0)
    q_g = ((shortlist - q) ** 2).sum(axis=1)[None]
    k1 = max(1, min(K1, n // 3))
    return k_reciprocal_rerank(q_g, np.zeros((1, 1)), g_g, k1=k1, k2=min(K2, k1))[0]
