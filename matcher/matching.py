"""Putative correspondences between local features: nearest neighbours, Lowe's ratio test, mutual check.

Two exact nearest-neighbour back ends give the same matches: a KD-tree (scipy's cKDTree) and brute
force by matrix product. Brute force is the fast one for 128-d descriptors (a KD-tree degenerates
towards a linear scan in high dimension), and `match_pairs` uses it to match one query against a
whole shortlist, reusing the query's prepared matrix for every candidate.

A match (i, j) pairs query feature i with candidate feature j, where j is i's nearest neighbour among
the candidate's features. Lowe's ratio test (IJCV 2004) keeps it when d1 < ratio * d2, with d1, d2
the Euclidean distances to the nearest and second-nearest neighbour; the mutual check keeps it when i
is also j's nearest neighbour among the query's features; a distance bound keeps it when d1 < bound
(DELF's reference re-ranking matches this way, with no ratio test). `match_pairs` computes the
mutual check unless told not to; query-time re-ranking (`matcher.rerank.RerankConf`, the README's
figures) turns it off and relies on the ratio test. Without either test, many query features
matched to one keypoint of a feature-poor candidate give degenerate homographies with dozens of
"inliers" on unrelated pairs (scripts/bench_matching.py compares the settings).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.spatial import cKDTree

from indexer.features import LocalFeatures

logger = logging.getLogger(__name__)

Method = Literal["brute", "kdtree"]
METHODS: tuple[str, ...] = ("brute", "kdtree")


def _empty_matches() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int64)


def _check_ratio(ratio: float | None) -> None:
    if ratio is not None and not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1] or None, got {ratio}")


def _check_dims(query: LocalFeatures, candidate: LocalFeatures) -> None:
    dq, dc = query.descriptors.shape[1], candidate.descriptors.shape[1]
    if dq != dc:
        raise ValueError(f"descriptor sizes differ: query {dq}, candidate {dc}")


def select_matches(
    nn1: np.ndarray,
    d1_sq: np.ndarray,
    d2_sq: np.ndarray,
    ratio: float | None,
    mutual: np.ndarray | None = None,
    distance_bound: float | None = None,
) -> np.ndarray:
    """Turn per-query nearest neighbours into (M, 2) matches under the ratio, mutual and bound tests.

    nn1: (Nq,) index of each query feature's nearest candidate feature, -1 for none; d1_sq, d2_sq:
    squared distances to the nearest and second-nearest (inf when there is none); mutual: (Nq,)
    bool, whether the query feature is in turn its nearest's nearest; given to apply the check;
    distance_bound: keep only matches nearer than this (None: no bound).
    """
    keep = nn1 >= 0
    if ratio is not None:
        # squared distances avoid a sqrt per feature; d1 < r d2  <=>  d1^2 < r^2 d2^2
        keep &= d1_sq < (ratio * ratio) * d2_sq
    if distance_bound is not None:
        keep &= d1_sq < distance_bound * distance_bound
    if mutual is not None:
        keep &= mutual
    rows = np.flatnonzero(keep)
    return np.stack([rows, nn1[rows]], axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# KD-tree


def match_kdtree(
    query: LocalFeatures,
    candidate: LocalFeatures,
    ratio: float | None = 0.8,
    mutual: bool = True,
    workers: int = 1,
    distance_bound: float | None = None,
) -> np.ndarray:
    """Exact nearest neighbours with a KD-tree on the candidate; returns (M, 2) int64 index pairs.

    With `distance_bound` the tree search itself is bounded (scipy's `distance_upper_bound`, as
    DELF's reference re-ranking does), which prunes most of it.
    """
    _check_ratio(ratio)
    _check_dims(query, candidate)
    if len(query) == 0 or len(candidate) == 0:
        return _empty_matches()
    qd = np.asarray(query.descriptors, dtype=np.float32)
    cd = np.asarray(candidate.descriptors, dtype=np.float32)
    bound = np.inf if distance_bound is None else distance_bound
    dist, idx = cKDTree(cd).query(qd, k=2, workers=workers, distance_upper_bound=bound)
    # a missing neighbour (beyond the bound, or a single candidate feature) is reported as
    # index len(cd) at distance inf; an infinite second distance passes the ratio test
    nn1 = np.where(idx[:, 0] < len(cd), idx[:, 0], -1).astype(np.int64)
    is_mutual = None
    if mutual:
        back = cKDTree(qd).query(cd, k=1, workers=workers)[1]
        is_mutual = back[np.maximum(nn1, 0)] == np.arange(len(nn1))
    return select_matches(nn1, dist[:, 0] ** 2, dist[:, 1] ** 2, ratio, is_mutual, distance_bound)


# ---------------------------------------------------------------------------------------------
# Brute force


@dataclass(frozen=True)
class Neighbours:
    """Each query feature's two nearest candidate features, before any test is applied.

    Keeping this apart from `select_matches` lets one nearest-neighbour pass serve several ratio
    thresholds (scripts/bench_matching.py sweeps them this way).
    """

    nn1: np.ndarray  # (Nq,) index of the nearest candidate feature, -1 if the candidate has none
    d1_sq: np.ndarray  # (Nq,) squared distance to it
    d2_sq: np.ndarray  # (Nq,) squared distance to the second nearest (inf if there is none)
    mutual: np.ndarray | None  # (Nq,) bool: the nearest's nearest is this feature; None: not computed

    def matches(
        self, ratio: float | None, mutual: bool, distance_bound: float | None = None
    ) -> np.ndarray:
        """(M, 2) index pairs that pass the ratio test and, if asked, the mutual check and bound."""
        if mutual and self.mutual is None:
            raise ValueError("mutual check asked for but it was not computed")
        return select_matches(self.nn1, self.d1_sq, self.d2_sq, ratio,
                              self.mutual if mutual else None, distance_bound)


class _PreparedQuery:
    """Query descriptors augmented once so that each candidate costs one matrix product.

    With q' = [q, -1/2] and c' = [c, |c|^2], q'.c' = q.c - |c|^2 / 2 = (|q|^2 - d^2) / 2, so the
    row-wise maximum of Q' C'^T is each query feature's nearest neighbour for descriptors of any norm.
    """

    def __init__(self, descriptors: np.ndarray) -> None:
        q = np.asarray(descriptors, dtype=np.float32)
        self.sq_norms = np.einsum("ij,ij->i", q, q)
        self.aug = np.hstack([q, np.full((len(q), 1), -0.5, np.float32)])
        # the column-wise (mutual) maximum needs -|q|^2/2 added unless all query norms agree
        spread = float(np.ptp(self.sq_norms)) if len(q) else 0.0
        self.needs_row_bias = spread > 1e-5 * max(float(self.sq_norms.max(initial=0)), 1.0)

    def nearest(self, candidate: np.ndarray, mutual: bool) -> Neighbours:
        """Nearest and second-nearest candidate feature of every query feature."""
        c = np.asarray(candidate, dtype=np.float32)
        c_sq = np.einsum("ij,ij->i", c, c)
        S = self.aug @ np.hstack([c, c_sq[:, None]]).T  # (Nq, Nc), larger is nearer
        rows = np.arange(len(S))
        nn1 = S.argmax(axis=1)
        s1 = S[rows, nn1]
        is_mutual = self._mutual(S, nn1, s1) if mutual else None
        if S.shape[1] > 1:
            S[rows, nn1] = -np.inf
            s2 = S.max(axis=1)
        else:
            s2 = np.full(len(S), -np.inf, np.float32)
        d1_sq = np.maximum(self.sq_norms - 2.0 * s1, 0.0)
        d2_sq = np.maximum(self.sq_norms - 2.0 * s2, 0.0)
        return Neighbours(nn1, d1_sq, d2_sq, is_mutual)

    def _mutual(self, S: np.ndarray, nn1: np.ndarray, s1: np.ndarray) -> np.ndarray:
        """Whether each query feature is the nearest query feature of its own nearest neighbour."""
        # A column maximum is one vectorised pass; a column argmax made numpy copy S and matching
        # with the check took 0.84 s instead of 0.39 s (100 candidates, one thread). Equality
        # with the column maximum is the argmax test up to exact ties.
        if self.needs_row_bias:
            bias = 0.5 * self.sq_norms
            return s1 - bias >= (S - bias[:, None]).max(axis=0)[nn1]
        return s1 >= S.max(axis=0)[nn1]


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, found once (None: not installed).

    Finding them walks every loaded library: 18 ms a time, which `threadpool_limits` paid on each
    call, twice per query and worker (more than the screening pass's own matching)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        logger.debug("threadpoolctl not installed; BLAS keeps its own thread count")
        return None
    return ThreadpoolController()


def blas_threads(limit: int | None) -> contextlib.AbstractContextManager:
    """Cap BLAS threads inside the block (threadpoolctl, when installed); None leaves them be."""
    # Per-candidate products are small (1000 x 128 x 1000): on the 2-core test machine two OpenBLAS
    # threads took 0.91 s per shortlist of 100 against 0.42 s for one (scripts/bench_matching.py).
    controller = None if limit is None else _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=limit, user_api="blas")


def brute_neighbours(
    query: LocalFeatures,
    candidates: Sequence[LocalFeatures],
    mutual: bool = False,
    threads: int | None = 1,
) -> list[Neighbours]:
    """Exact two nearest neighbours of the query's features in each candidate, by matrix products.

    threads caps BLAS threads while matching (None: leave BLAS as configured).
    """
    # One product per candidate keeps the (Nq, Nc) block in cache. Measured on 1000 x 100 x ~700
    # RootSIFT, one thread: 0.30 s CPU this way, 0.41 s for one product against the stacked
    # shortlist (top-1 only) and 0.67 s for a padded batched product; their outputs spill to memory.
    for k, cand in enumerate(candidates):
        if cand.descriptors.shape[1] != query.descriptors.shape[1]:
            raise ValueError(
                f"candidate {k}: descriptor size {cand.descriptors.shape[1]}, "
                f"query {query.descriptors.shape[1]}"
            )
    prepared = _PreparedQuery(query.descriptors)
    none = np.full(len(query), -1, np.int64), np.full(len(query), np.inf, np.float32)
    out = []
    with blas_threads(threads):
        for cand in candidates:
            if len(cand) == 0 or len(query) == 0:
                is_mutual = np.zeros(len(query), bool) if mutual else None
                out.append(Neighbours(none[0], none[1], none[1], is_mutual))
            else:
                out.append(prepared.nearest(cand.descriptors, mutual))
    return out


def match_brute(
    query: LocalFeatures,
    candidate: LocalFeatures,
    ratio: float | None = 0.8,
    mutual: bool = True,
) -> np.ndarray:
    """Exact nearest neighbours by one matrix product; returns (M, 2) int64 index pairs."""
    return match_pairs(query, [candidate], "brute", ratio, mutual)[0]


def match_pairs(
    query: LocalFeatures,
    candidates: Sequence[LocalFeatures],
    method: Method = "brute",
    ratio: float | None = 0.8,
    mutual: bool = True,
    workers: int = 1,
    distance_bound: float | None = None,
) -> list[np.ndarray]:
    """Match one query against many candidates; one (M, 2) int64 array of index pairs per candidate.

    ratio=None switches the ratio test off; distance_bound (None: off) drops matches at that
    descriptor distance or farther. workers: threads of the KD-tree search, or the cap on BLAS
    threads during brute force; -1 means all cores for the KD-tree and no cap on BLAS.
    """
    if method not in METHODS:
        raise ValueError(f"unknown matching method {method!r}; valid: {', '.join(METHODS)}")
    _check_ratio(ratio)
    if distance_bound is not None and distance_bound <= 0:
        raise ValueError(f"distance_bound must be > 0 or None, got {distance_bound}")
    if method == "kdtree":
        return [match_kdtree(query, c, ratio, mutual, workers, distance_bound) for c in candidates]
    nbs = brute_neighbours(query, candidates, mutual, threads=workers if workers > 0 else None)
    return [nb.matches(ratio, mutual, distance_bound) for nb in nbs]
