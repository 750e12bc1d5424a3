"""The inner-validation split of `scripts/bench_transfer.py select` stays inside a training half."""

from __future__ import annotations

import numpy as np

from engine.evaluation.reid_protocols import viper_splits
from scripts.bench_transfer import inner_splits


def test_inner_splits_halve_the_training_persons_only() -> None:
    pids = np.repeat(np.arange(632), 2)
    (train_ids, test_ids), (train2, _) = viper_splits(pids, 2, 0)
    splits = inner_splits(train_ids, 0, 3)
    assert len(splits) == 3
    for fit, val in splits:
        assert len(fit) == len(val) == 158
        assert not np.intersect1d(fit, val).size
        np.testing.assert_array_equal(np.union1d(fit, val), np.sort(train_ids))
        assert not np.intersect1d(np.union1d(fit, val), test_ids).size
    assert not np.array_equal(splits[0][0], splits[1][0])  # repeats differ
    again = inner_splits(train_ids, 0, 3)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again, strict=True))  # seeded
    assert not np.array_equal(inner_splits(train2, 1, 1)[0][0], splits[0][0])
