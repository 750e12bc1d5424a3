"""CMC / mAP / mINP on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from engine.evaluation.reid_metrics import evaluate_rank


def test_single_query_two_true_matches() -> None:
    # Gallery sorted by distance: pid 2 (0.1), pid 3 (0.3), pid 1 (0.5), pid 1 (0.9).
    # True matches at ranks 3 and 4: AP = (1/3 + 2/4) / 2, INP = 2 / 4.
    dist = np.array([[0.5, 0.1, 0.9, 0.3]])
    s = evaluate_rank(dist, np.array([1]), np.array([1, 2, 1, 3]), np.array([0]),
                      np.array([1, 1, 1, 1]), max_rank=6)
    np.testing.assert_allclose(s.cmc, [0, 0, 1, 1, 1, 1])
    assert s.mAP == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert s.mINP == pytest.approx(0.5)
    assert s.num_valid_queries == 1


def _market_case() -> tuple[np.ndarray, ...]:
    g_pids = np.array([5, -1, 0, 5, 7, 5, 9])
    g_cams = np.array([0, 1, 1, 1, 0, 2, 0])
    q_pids = np.array([5, 7, 9])
    q_cams = np.array([0, 1, 0])
    dist = np.array([
        # q0 (pid 5, cam 0): g0 same id + same cam -> out; g1 junk -> out; g2 distractor is rank 1;
        # true matches g3 (rank 2) and g5 (rank 4), g4 (pid 7, cam 0) rank 3 stays as a negative.
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        # q1 (pid 7, cam 1): order g1 (junk, out), g3, g5, g6, g2, g4 (true, rank 5), g0.
        [0.9, 0.0, 0.5, 0.1, 0.8, 0.2, 0.3],
        # q2 (pid 9, cam 0): its only gallery image g6 is from cam 0 -> no valid match, skipped.
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    ])
    return dist, q_pids, g_pids, q_cams, g_cams


def test_market_rules_same_camera_junk_distractor_and_skipped_query() -> None:
    dist, q_pids, g_pids, q_cams, g_cams = _market_case()
    s = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=8)
    # q0 first hit at rank 2, q1 at rank 5; ranks beyond the 6 kept images stay at 1.
    np.testing.assert_allclose(s.cmc, [0, 0.5, 0.5, 0.5, 1, 1, 1, 1])
    ap = [(1 / 2 + 2 / 4) / 2, 1 / 5]
    inp = [2 / 4, 1 / 5]
    assert s.mAP == pytest.approx(np.mean(ap))
    assert s.mINP == pytest.approx(np.mean(inp))
    assert s.num_valid_queries == 2


def test_ties_keep_gallery_order() -> None:
    s = evaluate_rank(np.zeros((1, 3)), np.array([1]), np.array([2, 1, 1]), np.array([0]),
                      np.array([1, 1, 1]), max_rank=3)
    np.testing.assert_allclose(s.cmc, [0, 1, 1])
    assert s.mINP == pytest.approx(2 / 3)


def _reference(
    dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray,
    g_cams: np.ndarray, max_rank: int,
) -> tuple[np.ndarray, float, float, int]:
    """Plain per-query loop, written independently of the vectorised code."""
    cmcs: list[list[float]] = []
    aps: list[float] = []
    inps: list[float] = []
    for i in range(len(dist)):
        order = np.argsort(dist[i], kind="stable")
        kept = [j for j in order
                if g_pids[j] != -1 and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [r + 1 for r, j in enumerate(kept) if g_pids[j] == q_pids[i]]
        if not hits:
            continue
        cmcs.append([1.0 if hits[0] <= k else 0.0 for k in range(1, max_rank + 1)])
        aps.append(float(np.mean([(n + 1) / r for n, r in enumerate(hits)])))
        inps.append(len(hits) / hits[-1])
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def test_matches_a_plain_loop_over_several_chunks() -> None:
    rng = np.random.default_rng(0)
    nq, ng = 300, 40  # 300 queries: more than one block of the vectorised code
    q_pids, g_pids = rng.integers(-1, 8, nq), rng.integers(-1, 8, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    dist = rng.random((nq, ng))
    s = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    cmc, m_ap, m_inp, valid = _reference(dist, q_pids, g_pids, q_cams, g_cams, 10)
    np.testing.assert_allclose(s.cmc, cmc)
    assert s.mAP == pytest.approx(m_ap)
    assert s.mINP == pytest.approx(m_inp)
    assert s.num_valid_queries == valid


def test_no_valid_query_raises() -> None:
    with pytest.raises(ValueError, match="no query"):
        evaluate_rank(np.zeros((1, 2)), np.array([1]), np.array([1, 2]), np.array([0]),
                      np.array([0, 0]))


def test_shape_mismatch_names_the_argument() -> None:
    with pytest.raises(ValueError, match="g_camids"):
        evaluate_rank(np.zeros((1, 2)), np.array([1]), np.array([1, 2]), np.array([0]),
                      np.array([0]))
