"""match_pair: one pair re-matched as re-ranking does, with the inlier correspondences."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

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


def _shortlist(seed: int = 1) -> tuple[LocalFeatures, list[LocalFeatures]]:
    """A query with scores, its true match at shortlist position 3, and unrelated candidates."""
    query, match, _ = _pair(seed)
    rng = np.random.default_rng(seed)
    query = LocalFeatures(query.keypoints, query.descriptors,
                          rng.uniform(size=len(query)).astype(np.float32))
    others = []
    for _ in range(5):
        d = rng.normal(size=(120, 32)).astype(np.float32)
        others.append(LocalFeatures(rng.uniform(0, 400, (120, 2)).astype(np.float32),
                                    d / np.linalg.norm(d, axis=1, keepdims=True)))
    return query, others[:3] + [match] + others[3:]


def test_screening_verifies_the_chosen_candidates_exactly_as_exhaustive_matching() -> None:
    query, shortlist = _shortlist()
    # against all of each candidate's features: the strong query features' matches are reused
    exhaustive = replace(RERANK_MODES["ours"], screen_features=None, screen_candidate_features=None)
    full = count_inliers(query, shortlist, exhaustive)
    # 30 of 120 query features screen; the first candidate and the best screened one are kept
    screened = count_inliers(query, shortlist, replace(exhaustive, screen_features=30,
                                                       screen_global=1, screen_keep=1))
    assert full[3] >= 70
    assert screened[3] == full[3]  # the true match: same matches, same seeded verification
    assert screened[0] == full[0]  # kept as the global first
    assert screened[[1, 2, 4, 5]].tolist() == [-1, -1, -1, -1]  # screened out: not verified
    # keeping every candidate gives exhaustive matching's counts
    everything = replace(exhaustive, screen_features=30, screen_global=0, screen_keep=6)
    assert count_inliers(query, shortlist, everything).tolist() == full.tolist()


def test_screening_against_the_candidates_strongest_features_verifies_the_chosen_in_full() -> None:
    query, shortlist = _shortlist()
    exhaustive = replace(RERANK_MODES["ours"], screen_features=None)
    full = count_inliers(query, shortlist, exhaustive)
    own = replace(exhaustive, screen_features=30, screen_global=1, screen_keep=1,
                  screen_candidate_features=40)
    screened = count_inliers(query, shortlist, own)
    assert screened[3] == full[3] and screened[0] == full[0]  # matched afresh, in full
    assert screened[[1, 2, 4, 5]].tolist() == [-1, -1, -1, -1]
    assert own.name.endswith("screen30-1+1x40+verified-qe2")


def test_strongest_features_are_chosen_by_score_in_stored_order() -> None:
    from matcher.rerank import _strongest

    feats = LocalFeatures(np.arange(10, dtype=np.float32).reshape(5, 2), np.eye(5, 4, dtype=np.float32),
                          np.array([0.1, 0.9, 0.3, 0.8, 0.2], np.float32))
    assert _strongest(feats, 2).scores.tolist() == pytest.approx([0.9, 0.8])
    assert _strongest(feats, 9) is feats
    unscored = LocalFeatures(feats.keypoints, feats.descriptors)
    assert _strongest(unscored, 2).keypoints.tolist() == feats.keypoints[:2].tolist()


def test_screening_is_off_where_it_cannot_save_work() -> None:
    query, shortlist = _shortlist()
    conf = replace(RERANK_MODES["ours"], screen_features=30, screen_global=3, screen_keep=3)
    full = count_inliers(query, shortlist, replace(conf, screen_features=None))
    # six candidates, all of which would be kept; the mutual check needs every query feature
    assert count_inliers(query, shortlist, conf).tolist() == full.tolist()
    assert not replace(conf, mutual=True).screens


def test_screened_candidates_are_the_global_head_and_the_most_screening_matches() -> None:
    from matcher.rerank import _screened_candidates

    conf = replace(RERANK_MODES["ours"], screen_global=2, screen_keep=2)
    # positions 0, 1 always; then 5 (9 matches) and 3 (7, before 4's 7 by global order)
    assert _screened_candidates([0, 9, 1, 7, 7, 9], conf).tolist() == [0, 1, 3, 5]


def test_screening_settings_that_would_screen_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match="screen_candidate_features"):
        replace(RERANK_MODES["ours"], screen_candidate_features=0)
    with pytest.raises(ValueError, match="screen_features"):
        replace(RERANK_MODES["ours"], screen_features=0)
    assert replace(RERANK_MODES["ours"], screen_features=None).screens is False
