"""k-reciprocal re-ranking on a case small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from matcher.kreciprocal import k_reciprocal_rerank, rerank_shortlist

# one query q; gallery t (true match), f (a closer false match), x, y. f, x, y form a tight
# cluster, so q is not among f's 2 nearest neighbours while it is among t's.
Q_G = np.array([[0.5, 0.4, 0.9, 0.9]])
Q_Q = np.zeros((1, 1))
G_G = np.array([
    [0.0, 0.9, 1.0, 1.0],
    [0.9, 0.0, 0.1, 0.1],
    [1.0, 0.1, 0.0, 0.1],
    [1.0, 0.1, 0.1, 0.0],
])


def test_k_reciprocal_jaccard_matches_the_hand_computed_value() -> None:
    # k1 = 2: R(q) = {q, t}, R(t) = {t, q}, R(f) = {f, x, y}. Rows divided by their maxima:
    # V_q on (q, t) = (1, e^-(0.5/0.9)) / sum, V_t on (t, q) = (1, e^-0.5) / sum.
    vq = np.array([1.0, np.exp(-0.5 / 0.9)])
    vq /= vq.sum()
    vt = np.array([np.exp(-0.5), 1.0])  # on (q, t)
    vt /= vt.sum()
    inter = np.minimum(vq, vt).sum()
    expected_t = 1.0 - inter / (2.0 - inter)  # about 0.410
    d = k_reciprocal_rerank(Q_G, Q_Q, G_G, k1=2, k2=1, lambda_value=0.0)
    assert d[0, 0] == pytest.approx(expected_t, abs=1e-9)
    assert d[0, 1] == pytest.approx(1.0)  # disjoint reciprocal sets
    assert np.argmin(d[0]) == 0  # the true match now ranks first; originally f did
    assert np.argmin(Q_G[0]) == 1


def test_lambda_one_keeps_the_original_order() -> None:
    d = k_reciprocal_rerank(Q_G, Q_Q, G_G, k1=2, k2=1, lambda_value=1.0)
    assert np.allclose(d, Q_G / 0.9)  # the query row divided by its maximum


def test_shapes_and_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="shapes"):
        k_reciprocal_rerank(Q_G, Q_Q, G_G[:3, :3])
    with pytest.raises(ValueError, match="lambda"):
        k_reciprocal_rerank(Q_G, Q_Q, G_G, lambda_value=2.0)


def test_rerank_shortlist_is_the_re_ranking_of_its_squared_distances() -> None:
    g = np.array([[0.8], [0.82], [0.84], [0.86], [-1.0], [-1.1], [3.0], [3.1], [3.2]])
    d = rerank_shortlist(np.array([0.0]), g)
    g_g = (g - g.T) ** 2
    expected = k_reciprocal_rerank((g.T ** 2), np.zeros((1, 1)), g_g, k1=3, k2=3)[0]
    assert np.allclose(d, expected)
    # too short to re-rank: plain squared distances
    assert rerank_shortlist(np.array([0.0]), g[:2]).tolist() == pytest.approx([0.64, 0.6724])
