"""Multi-shot protocol on a synthetic folder: splits, distractors, shots, pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.evaluation.multishot import (
    evaluate_multishot,
    load_multishot,
    multishot_splits,
    pool_rows,
    tracklets,
)


def _folder(root: Path, two_cam: int = 8, one_cam: int = 3, frames: int = 4) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    n = 0
    for pid in range(1, two_cam + one_cam + 1):
        for cam in (1, 2) if pid <= two_cam else (1,):
            for _ in range(frames):
                (images / f"{pid:04d}_c{cam}s1_{n:06d}_00.jpg").write_bytes(b"")
                n += 1
    return root


def test_splits_are_halves_of_the_two_camera_identities(tmp_path: Path) -> None:
    persons = load_multishot(_folder(tmp_path))
    assert len(persons) == 8 * 2 * 4 + 3 * 4
    assert set(persons.camids.tolist()) == {1, 2}  # cameras from 1, as named
    splits, single = multishot_splits(persons.pids, persons.camids, trials=5, seed=0)
    assert single.tolist() == [9, 10, 11]
    assert len(splits) == 5
    for train, test in splits:
        assert len(train) == len(test) == 4
        assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(1, 9))
    assert any(not np.array_equal(splits[0][0], s[0]) for s in splits[1:])
    again, _ = multishot_splits(persons.pids, persons.camids, trials=5, seed=0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again, strict=True))


def test_tracklets_group_person_and_camera() -> None:
    track, t_pid, t_cam = tracklets(np.array([3, 3, 1, 3]), np.array([0, 1, 0, 0]))
    assert t_pid.tolist() == [1, 3, 3] and t_cam.tolist() == [0, 0, 1]
    assert track.tolist() == [1, 2, 0, 1]


def test_pooling() -> None:
    rows = np.array([[1.0, 0.0], [3.0, 4.0]])
    assert pool_rows(rows, "mean").tolist() == [2.0, 2.0]
    assert pool_rows(rows, "max").tolist() == [3.0, 4.0]
    np.testing.assert_allclose(pool_rows(rows, "attention", np.array([0.0, 0.0])), [2.0, 2.0])
    np.testing.assert_allclose(pool_rows(rows, "attention", np.array([0.0, 50.0])), [3.0, 4.0])


def _features(persons, noisy_frame_score: bool = False, seed: int = 0):  # type: ignore[no-untyped-def]
    """Identity-coded rows; one frame in each tracklet is replaced by noise (score -10)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 16))
    X = centres[persons.pids] + 0.05 * rng.normal(size=(len(persons), 16))
    scores = np.zeros(len(persons))
    bad = np.arange(len(persons)) % 4 == 0
    X[bad] = 5 * rng.normal(size=(int(bad.sum()), 16))
    scores[bad] = -10.0
    return X, scores


def test_identity_coded_features_rank_first_and_attention_skips_bad_frames(tmp_path: Path) -> None:
    persons = load_multishot(_folder(tmp_path))
    X, scores = _features(persons)
    att = evaluate_multishot(X, persons, "euclidean", trials=3, shots=None, pooling="attention",
                             frame_scores=scores)
    assert att["rank1"] == 100.0 and att["mAP"] == 100.0 and att["trials"] == 3
    assert att["shots"] == "all" and "3 one-camera persons" in att["protocol"]
    single = evaluate_multishot(X, persons, "euclidean", trials=3, shots=1)
    assert single["rank1"] < 100.0  # one frame in four is noise: single shots miss some
    with pytest.raises(ValueError, match="one score per frame"):
        evaluate_multishot(X, persons, "euclidean", trials=1, pooling="attention")


def test_xqda_learns_on_the_training_half(tmp_path: Path) -> None:
    persons = load_multishot(_folder(tmp_path, two_cam=12))
    X, _ = _features(persons)
    r = evaluate_multishot(X, persons, "xqda", trials=2, shots=2, pooling="mean")
    assert 0.0 < r["rank1"] <= 100.0 and r["shots"] == "2"


def test_each_trial_can_have_its_own_features(tmp_path: Path) -> None:
    persons = load_multishot(_folder(tmp_path))
    X, scores = _features(persons)
    shared = evaluate_multishot(X, persons, "euclidean", trials=3, shots=2, pooling="attention",
                                frame_scores=scores)
    stacked = evaluate_multishot(np.stack([X] * 3), persons, "euclidean", trials=3, shots=2,
                                 pooling="attention", frame_scores=np.stack([scores] * 3))
    assert stacked == shared  # the same frames are drawn either way
    noise = np.random.default_rng(1).normal(size=X.shape)
    worse = evaluate_multishot(np.stack([X, noise, X]), persons, "euclidean", trials=3, shots=2,
                               pooling="attention", frame_scores=np.stack([scores] * 3))
    assert worse["rank1"] < shared["rank1"]  # trial 2 was scored on its own (noise) features
    with pytest.raises(ValueError, match="2 trials given, 3 asked"):
        evaluate_multishot(np.stack([X] * 2), persons, "euclidean", trials=3)
