"""Retrieval metrics: APs worked by hand, Holidays and revisited ground truth, query cropping."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from engine.evaluation.retrieval_metrics import (
    Query,
    average_precision,
    average_precision_trapezoid,
    average_precisions,
    crop_query,
    holidays_ground_truth,
    load_revisited_ground_truth,
    mean_average_precision,
    revisited_map,
    revisited_queries,
)

HOLIDAYS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "holidays_even"


def _reference_trapezoid_ap(ranked: list[int], ok: list[int], junk: list[int]) -> float:
    """The published loop (revisitop compute_map, compute_ap): positives shift past earlier junk."""
    pos = [r for r, i in enumerate(ranked) if i in ok]
    junk_pos = [r for r, i in enumerate(ranked) if i in junk]
    shifted = [p - sum(j < p for j in junk_pos) for p in pos]
    ap = 0.0
    for j, rank in enumerate(shifted):
        p0 = 1.0 if rank == 0 else j / rank
        p1 = (j + 1) / (rank + 1)
        ap += (p0 + p1) / (2 * len(ok))
    return ap


# ranking 5, 1, 7, 2, 3 with positives {5, 7, 9}: 5 at rank 0, 7 at rank 2, 9 never retrieved.
RANKED = np.array([5, 1, 7, 2, 3])
POSITIVES = {5, 7, 9}


def test_non_interpolated_ap_by_hand() -> None:
    # precision at 5 is 1/1, at 7 is 2/3, 9 missing counts 0: (1 + 2/3 + 0) / 3 = 5/9
    assert average_precision(RANKED, POSITIVES) == pytest.approx(float(Fraction(5, 9)))


def test_trapezoid_ap_by_hand() -> None:
    # 5 (j=0, r=0): (1 + 1/1) / 2 = 1;  7 (j=1, r=2): (1/2 + 2/3) / 2 = 7/12;  9: nothing.
    # (1 + 7/12) / 3 = 19/36
    assert average_precision_trapezoid(RANKED, POSITIVES) == pytest.approx(float(Fraction(19, 36)))


def test_junk_is_removed_before_scoring() -> None:
    # removing 1 gives 5, 7, 2, 3: positives at ranks 0 and 1.
    # non-interpolated: (1 + 2/2 + 0) / 3 = 2/3; trapezoid: (1 + (1/1 + 2/2)/2 + 0) / 3 = 2/3
    assert average_precision(RANKED, POSITIVES, junk=[1]) == pytest.approx(2 / 3)
    assert average_precision_trapezoid(RANKED, POSITIVES, junk={1}) == pytest.approx(2 / 3)
    # junk after the last positive changes nothing
    assert average_precision(RANKED, POSITIVES, junk=[3]) == pytest.approx(5 / 9)


def test_positive_never_retrieved_counts_zero() -> None:
    # a ranking truncated before 7: only 5 is found, (1 + 0 + 0) / 3
    assert average_precision(RANKED[:2], POSITIVES) == pytest.approx(1 / 3)
    assert average_precision_trapezoid(RANKED[:2], POSITIVES) == pytest.approx(1 / 3)
    assert average_precision([1, 2, 3], [4]) == 0.0


def test_perfect_ranking_scores_one_and_schemes_differ_otherwise() -> None:
    assert average_precision([3, 4, 0], [3, 4]) == 1.0
    assert average_precision_trapezoid([3, 4, 0], [3, 4]) == 1.0
    # positive at rank 1 only: non-interpolated 1/2, trapezoid (0/1 + 1/2) / 2 = 1/4
    assert average_precision([0, 3], [3]) == pytest.approx(0.5)
    assert average_precision_trapezoid([0, 3], [3]) == pytest.approx(0.25)


def test_trapezoid_matches_the_published_loop_on_random_rankings() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        ranked = rng.permutation(40)[: rng.integers(5, 41)]
        ids = rng.permutation(40)
        ok, junk = ids[:6].tolist(), ids[6:12].tolist()
        expected = _reference_trapezoid_ap(ranked.tolist(), ok, junk)
        assert average_precision_trapezoid(ranked, ok, junk) == pytest.approx(expected)


def test_invalid_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="no positives"):
        average_precision([1, 2], [])
    with pytest.raises(ValueError, match="both positive and junk"):
        average_precision([1, 2], [1], junk=[1])
    with pytest.raises(ValueError, match="more than once"):
        average_precision([1, 2, 1], [2])


def test_mean_average_precision_skips_queries_without_positives() -> None:
    queries = [
        Query("a", 0, np.array([1]), np.array([0])),  # 1 first after junk 0: AP 1
        Query("b", 1, np.array([], dtype=np.int64), np.array([1])),  # nothing to find: skipped
        Query("c", 2, np.array([3]), np.array([2])),  # 3 at rank 1 after junk: trapezoid 1/4
    ]
    ranks = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 0, 3, 1]])
    aps = average_precisions(ranks, queries)
    assert aps[0] == 1.0 and np.isnan(aps[1]) and aps[2] == pytest.approx(0.25)
    assert mean_average_precision(ranks, queries) == pytest.approx((1 + 0.25) / 2)
    assert mean_average_precision(ranks, queries, "non_interpolated") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="valid"):
        mean_average_precision(ranks, queries, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one row per query"):
        mean_average_precision(ranks[:2], queries)


def test_holidays_ground_truth_from_names() -> None:
    names = [
        "100000.jpg", "100001.jpg", "100002.jpg",  # group 1000: query 0, positives 1, 2
        "sub/100100.jpg", "100101.jpg",  # group 1001: query 3, positive 4 (paths are fine)
        "100200.jpg",  # a query alone in its group: nothing to score, skipped
        "100301.jpg",  # a group without its query image
    ]  # fmt: skip
    queries = holidays_ground_truth(names)
    assert [q.index for q in queries] == [0, 3]
    assert [q.name for q in queries] == ["100000.jpg", "sub/100100.jpg"]
    assert queries[0].positives.tolist() == [1, 2] and queries[0].junk.tolist() == [0]
    assert queries[1].positives.tolist() == [4] and queries[1].junk.tolist() == [3]
    # the query ranked first of its own list is junk, not a hit and not a miss
    ranks = [np.array([0, 2, 5, 1]), np.array([3, 4, 0])]
    # query 0: 2 at rank 0, 1 at rank 2 after removing 0: (1 + (1/2 + 2/3)/2) / 2 = 19/24
    assert mean_average_precision(ranks, queries) == pytest.approx((19 / 24 + 1) / 2)


def test_holidays_ground_truth_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="IMG_1.png"):
        holidays_ground_truth(["100000.jpg", "IMG_1.png"])
    with pytest.raises(ValueError, match="repeated"):
        holidays_ground_truth(["100000.jpg", "a/100000.jpg"])


def _write_gnd(tmp_path: Path) -> Path:
    cfg = {
        "imlist": [f"db_{i}" for i in range(6)],
        "qimlist": ["q0", "q1"],
        "gnd": [
            {"easy": [0, 1], "hard": [2], "junk": [3], "bbx": [1.0, 2.0, 5.0, 6.0]},
            {"easy": [4], "hard": [], "junk": [], "bbx": [0.0, 0.0, 3.0, 3.0]},
        ],
    }
    path = tmp_path / "gnd_toy.pkl"
    path.write_bytes(pickle.dumps(cfg))
    return path


def test_revisited_map_settings_differ_by_construction(tmp_path: Path) -> None:
    gnd = load_revisited_ground_truth(_write_gnd(tmp_path))
    assert gnd.qimlist == ["q0", "q1"] and len(gnd.imlist) == 6
    assert gnd.queries[0].bbx is not None and gnd.queries[0].bbx.tolist() == [1, 2, 5, 6]
    ranks = np.array([[3, 2, 5, 0, 4, 1], [4, 0, 1, 2, 3, 5]])
    # q0 easy: ok {0,1}, junk {3,2} -> 5, 0, 4, 1: ranks 1, 3: ((0 + 1/2)/2 + (1/3 + 2/4)/2)/2 = 1/3
    # q0 medium: ok {0,1,2}, junk {3} -> 2, 5, 0, 4, 1: ranks 0, 2, 4:
    #   (1 + (1/2 + 2/3)/2 + (2/4 + 3/5)/2) / 3 = (1 + 7/12 + 11/20) / 3 = 32/45
    # q0 hard: ok {2}, junk {3,0,1} -> 2 first: 1
    # q1: easy {4} first -> 1 in easy and medium; no hard positive -> skipped in hard
    out = revisited_map(ranks, gnd)
    assert out["mAP_easy"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["mAP_medium"] == pytest.approx((32 / 45 + 1) / 2)
    assert out["mAP_hard"] == pytest.approx(1.0)
    assert revisited_queries(gnd, "hard")[1].positives.size == 0


def test_revisited_validation(tmp_path: Path) -> None:
    gnd = load_revisited_ground_truth(_write_gnd(tmp_path))
    ranks = np.array([[3, 2, 5, 0, 4, 1], [4, 0, 1, 2, 3, 5]])
    with pytest.raises(ValueError, match="transpose"):
        revisited_map(ranks.T, gnd)  # 6 x 2: cirtorch's layout
    with pytest.raises(ValueError, match=r"ranks\[1\]"):
        revisited_map(np.array([[0, 1], [0, 9]]), gnd)
    with pytest.raises(FileNotFoundError, match="nowhere.pkl"):
        load_revisited_ground_truth(tmp_path / "nowhere.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"imlist": [], "qimlist": []}))
    with pytest.raises(ValueError, match=r"bad.pkl.*gnd"):
        load_revisited_ground_truth(bad)


def test_crop_query_rounds_and_clips() -> None:
    image = np.arange(8 * 10 * 3).reshape(8, 10, 3)
    crop = crop_query(image, [1.4, 2.6, 5.5, 6.0])  # -> x 1..6 (5.5 rounds to even 6), y 3..6
    assert crop.shape == (3, 5, 3)
    np.testing.assert_array_equal(crop, image[3:6, 1:6])
    np.testing.assert_array_equal(crop_query(image, [-3, -1, 20, 4]), image[0:4, 0:10])
    with pytest.raises(ValueError, match="leaves nothing"):
        crop_query(image, [5, 5, 5, 7])


@pytest.mark.data
def test_holidays_subset_queries_and_groups() -> None:
    if not HOLIDAYS.is_dir():
        pytest.skip(f"Holidays data not found at {HOLIDAYS}")
    names = sorted(p.name for p in HOLIDAYS.glob("*.jpg"))
    queries = holidays_ground_truth(names)
    assert len(queries) == sum(n.endswith("00.jpg") for n in names)
    for q in queries:
        group = int(q.name[:-4]) // 100
        assert q.positives.size >= 1
        assert all(int(names[i][:-4]) // 100 == group for i in q.positives)
