"""Nearest-neighbour matching: ratio test, mutual check, KD-tree = brute force, batched = pairwise."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.features import LocalFeatures
from matcher.matching import (
    blas_threads,
    brute_neighbours,
    match_brute,
    match_kdtree,
    match_pairs,
    select_matches,
)


def feats(descriptors: np.ndarray | list[list[float]]) -> LocalFeatures:
    """Features with the given descriptors and dummy keypoints."""
    d = np.asarray(descriptors, np.float32)
    return LocalFeatures(np.zeros((len(d), 2), np.float32), d, np.ones(len(d), np.float32))


def random_feats(rng: np.random.Generator, n: int, dim: int = 32) -> LocalFeatures:
    # non-unit norms on purpose: brute force must be exact for any descriptors
    return feats(rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, size=(n, 1)))


def as_set(matches: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in matches}


def test_ratio_test_by_hand() -> None:
    # query at the origin; candidates at distance 1 and 2 -> ratio d1/d2 = 0.5
    q = feats([[0.0, 0.0]])
    c = feats([[0.0, 2.0], [1.0, 0.0]])
    for match in (match_brute, match_kdtree):
        np.testing.assert_array_equal(match(q, c, ratio=0.6), [[0, 1]])
        assert len(match(q, c, ratio=0.4)) == 0
        np.testing.assert_array_equal(match(q, c, ratio=None), [[0, 1]])


def test_mutual_check_by_hand() -> None:
    # both query features have candidate 0 as nearest; only query 1 is candidate 0's nearest
    q = feats([[0.0, 0.0], [0.9, 0.0]])
    c = feats([[1.0, 0.0], [-5.0, 0.0]])
    for match in (match_brute, match_kdtree):
        assert as_set(match(q, c, ratio=None, mutual=False)) == {(0, 0), (1, 0)}
        assert as_set(match(q, c, ratio=None, mutual=True)) == {(1, 0)}


def test_single_candidate_feature_passes_ratio_test() -> None:
    q, c = feats([[0.0, 0.0], [3.0, 1.0]]), feats([[1.0, 1.0]])
    for match in (match_brute, match_kdtree):
        assert as_set(match(q, c, ratio=0.8, mutual=False)) == {(0, 0), (1, 0)}


def test_distance_bound_by_hand() -> None:
    # DELF's matching: nearest neighbour nearer than the bound, no ratio test
    q = feats([[0.0, 0.0], [5.0, 0.0]])
    c = feats([[0.5, 0.0], [0.6, 0.0]])
    for method in ("brute", "kdtree"):
        (m,) = match_pairs(q, [c], method, ratio=None, mutual=False, distance_bound=0.9)  # type: ignore[arg-type]
        np.testing.assert_array_equal(m, [[0, 0]])  # query 1 is 4.4 away: dropped
        (m,) = match_pairs(q, [c], method, ratio=None, mutual=False, distance_bound=0.5)  # type: ignore[arg-type]
        assert len(m) == 0  # 0.5 is not nearer than 0.5
    with pytest.raises(ValueError, match="distance_bound"):
        match_pairs(q, [c], distance_bound=0.0)


@pytest.mark.parametrize("bound", [4.0, 6.0])
@pytest.mark.parametrize("mutual", [False, True])
def test_bounded_kdtree_equals_bounded_brute_force(bound: float, mutual: bool) -> None:
    rng = np.random.default_rng(2)
    q, c = random_feats(rng, 300), random_feats(rng, 200)
    c.descriptors[:50] = q.descriptors[100:150] + 0.05 * rng.normal(size=(50, 32))
    (brute,) = match_pairs(q, [c], "brute", None, mutual, distance_bound=bound)
    (kd,) = match_pairs(q, [c], "kdtree", None, mutual, distance_bound=bound)
    np.testing.assert_array_equal(brute, kd)
    assert {(100 + k, k) for k in range(50)} <= as_set(brute) and 50 <= len(brute) < len(q)


@pytest.mark.parametrize("ratio", [0.7, 0.9, None])
@pytest.mark.parametrize("mutual", [False, True])
def test_kdtree_equals_brute_force_on_random_data(ratio: float | None, mutual: bool) -> None:
    rng = np.random.default_rng(1)
    q, c = random_feats(rng, 300), random_feats(rng, 200)
    # plant 50 near-duplicates so that the ratio test keeps a real set, not just noise
    c.descriptors[:50] = q.descriptors[100:150] + 0.05 * rng.normal(size=(50, 32))
    brute, kd = match_brute(q, c, ratio, mutual), match_kdtree(q, c, ratio, mutual)
    np.testing.assert_array_equal(brute, kd)
    assert {(100 + k, k) for k in range(50)} <= as_set(brute)
    if ratio is None and not mutual:
        assert len(brute) == len(q)


def test_brute_force_is_exact_nearest_neighbour() -> None:
    rng = np.random.default_rng(2)
    q, c = random_feats(rng, 40, 8), random_feats(rng, 30, 8)
    (nb,) = brute_neighbours(q, [c], mutual=True)
    d2 = ((q.descriptors[:, None, :] - c.descriptors[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(nb.nn1, d2.argmin(1))
    np.testing.assert_allclose(nb.d1_sq, np.sort(d2, 1)[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nb.d2_sq, np.sort(d2, 1)[:, 1], rtol=1e-4, atol=1e-4)
    assert nb.mutual is not None
    np.testing.assert_array_equal(nb.mutual, d2.argmin(0)[d2.argmin(1)] == np.arange(40))
    assert 0 < nb.mutual.sum() < 40  # both outcomes occur, so the check is exercised


@pytest.mark.parametrize("method", ["brute", "kdtree"])
def test_batched_equals_pairwise(method: str) -> None:
    rng = np.random.default_rng(3)
    q = random_feats(rng, 120)
    cands = [random_feats(rng, n) for n in (1, 50, 0, 200)]
    cands[3].descriptors[:30] = q.descriptors[:30] + 0.01
    batched = match_pairs(q, cands, method, ratio=0.8, mutual=True)  # type: ignore[arg-type]
    assert len(batched) == len(cands)
    for cand, got in zip(cands, batched, strict=True):
        np.testing.assert_array_equal(got, match_kdtree(q, cand, 0.8, True))
        np.testing.assert_array_equal(got, match_brute(q, cand, 0.8, True))
    assert len(batched[3]) >= 30 and batched[2].shape == (0, 2)


def test_empty_inputs() -> None:
    rng = np.random.default_rng(4)
    q, empty = random_feats(rng, 10), LocalFeatures.empty(32)
    for method in ("brute", "kdtree"):
        out = match_pairs(q, [empty, q], method)
        assert out[0].shape == (0, 2) and out[0].dtype == np.int64
        assert len(out[1]) == 10  # a set matched against itself: every feature, no ambiguity
        assert match_pairs(empty, [q], method)[0].shape == (0, 2)
    assert match_pairs(q, []) == []


def test_select_matches_layout() -> None:
    nn1 = np.array([2, 0, 1])
    d1, d2 = np.array([1.0, 4.0, 0.0]), np.array([4.0, 4.0, 1.0])
    # ratios 0.5, 1.0, 0.0 -> rows 0 and 2 pass at 0.8; mutual keeps rows whose nn points back
    np.testing.assert_array_equal(select_matches(nn1, d1, d2, 0.8), [[0, 2], [2, 1]])
    mutual = np.array([True, True, False])
    np.testing.assert_array_equal(select_matches(nn1, d1, d2, 0.8, mutual), [[0, 2]])
    np.testing.assert_array_equal(select_matches(nn1, d1, d2, None, mutual), [[0, 2], [1, 0]])
    # -1 marks "no neighbour" (an empty candidate) and never becomes a match
    none = np.array([-1, -1])
    assert select_matches(none, np.full(2, np.inf), np.full(2, np.inf), None).shape == (0, 2)


def test_bad_arguments_name_the_culprit() -> None:
    rng = np.random.default_rng(5)
    q = random_feats(rng, 5, 32)
    with pytest.raises(ValueError, match="candidate 1: descriptor size 16"):
        match_pairs(q, [q, random_feats(rng, 5, 16)])
    with pytest.raises(ValueError, match="valid: brute, kdtree"):
        match_pairs(q, [q], "flann")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ratio"):
        match_pairs(q, [q], ratio=1.5)
    with pytest.raises(ValueError, match="descriptor sizes differ"):
        match_kdtree(q, random_feats(rng, 5, 16))


def test_blas_thread_cap() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with blas_threads(1):
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas)
