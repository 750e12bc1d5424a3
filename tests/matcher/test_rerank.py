"""match_pair: one pair re-matched as re-ranking does, with the inlier correspondences."""

from __future__ import annotations

import numpy as np

from indexer.features import LocalFeatures
from matcher.rerank import RERANK_MODES, count_inliers, match_pair


def _pair(seed: int = 0) -> tuple[LocalFeatures, LocalFeatures, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, outliers = 80, 40
    kq = rng.uniform(0, 400, (n + outliers, 2)).astype(np.float32)
    H = np.array([[0.9, 0.1, 20.0], [-0.05, 1.1, 5.0], [1e-4, 0.0, 1.0]])
    projected = np.c_[kq[:n], np.ones(n)] @ H.T
    kc = np.vstack([projected[:, :2] / projected[:, 2:], rng.uniform(0, 400, (outliers, 2))])
    desc = rng.normal(size=(n + outliers, 32)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    cand_desc = desc.copy()
    cand_desc[n:] = rng.normal(size=(outliers, 32))  # outlier features match nothing well
    cand_desc[n:] /= np.linalg.norm(cand_desc[n:], axis=1, keepdims=True)
    kq[n:] = rng.uniform(0, 400, (outliers, 2))
    return LocalFeatures(kq, desc), LocalFeatures(kc.astype(np.float32), cand_desc), H


def test_match_pair_returns_the_verified_correspondences() -> None:
    query, candidate, H = _pair()
    conf = RERANK_MODES["ours"]
    pair = match_pair(query, candidate, conf)
    assert pair.inliers == int(count_inliers(query, [candidate], conf)[0])
    assert pair.inliers >= 70 and pair.putative >= pair.inliers
    mapped = np.c_[pair.query_points, np.ones(pair.inliers)] @ H.T
    residual = np.linalg.norm(mapped[:, :2] / mapped[:, 2:] - pair.candidate_points, axis=1)
    assert residual.max() < conf.threshold_px


def test_match_pair_without_matches_is_empty() -> None:
    query, _, _ = _pair()
    empty = LocalFeatures.empty(32)
    pair = match_pair(query, empty, RERANK_MODES["ours"])
    assert pair.inliers == 0 and pair.query_points.shape == (0, 2)
