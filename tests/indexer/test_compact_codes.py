"""Compact local-feature codes round-trip within their step; keypoint selection keeps the budget."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.describe import UINT8_SCALE, Description, StoredLocal, local_from_arrays, to_arrays
from indexer.extractors.sift import rootsift, select_keypoints
from indexer.features import LocalFeatures
from storage.feature_store import decode_arrays, encode_arrays
from tests.conftest import sample_image


def test_uint8_rootsift_codes_round_trip_within_half_a_step() -> None:
    local = rootsift(sample_image("astronaut", 320), max_features=300)
    desc = Description(np.ones(4, np.float32), local)
    arrays = decode_arrays(encode_arrays(to_arrays(desc, "uint8")))
    assert arrays["descriptors"].dtype == np.uint8 and arrays["scores"].dtype == np.float16
    back = local_from_arrays(arrays)
    err = np.abs(back.descriptors - local.descriptors).max()
    assert err <= 0.5 / UINT8_SCALE + 1e-7
    np.testing.assert_array_equal(back.keypoints, local.keypoints)
    # nearest neighbours survive the codes: each descriptor is still closest to itself
    sims = back.descriptors @ local.descriptors.T
    assert (sims.argmax(axis=1) == np.arange(len(local))).mean() > 0.99
    local_bytes = sum(a.nbytes for k, a in arrays.items() if k != "global")
    assert local_bytes == len(local) * (128 + 8 + 2)


def test_uint8_codes_refuse_negative_descriptors() -> None:
    local = LocalFeatures(np.zeros((1, 2), np.float32), -np.ones((1, 4), np.float32) / 2)
    with pytest.raises(ValueError, match="non-negative"):
        to_arrays(Description(np.ones(2, np.float32), local), "uint8")


def test_keypoint_selection_keeps_k_by_response_or_spread_over_the_grid() -> None:
    rng = np.random.default_rng(0)
    crowded = rng.random((90, 2)) * 10  # a strong textured corner
    spread = rng.random((30, 2)) * 100
    keypoints = np.vstack([crowded, spread]).astype(np.float32)
    scores = np.concatenate([np.linspace(2, 1, 90), np.linspace(0.9, 0.1, 30)]).astype(np.float32)
    strongest = select_keypoints(keypoints, scores, 40, (100, 100), "response")
    assert strongest.tolist() == list(range(40))
    spread_out = select_keypoints(keypoints, scores, 40, (100, 100), "grid")
    assert len(spread_out) == 40 and len(set(spread_out.tolist())) == 40
    assert (spread_out >= 90).sum() > 10  # the rest of the image gets a share
    assert np.all(np.diff(spread_out) > 0)  # in the given (strongest-first) order
    assert len(select_keypoints(keypoints[:5], scores[:5], 40, (100, 100), "grid")) == 5
    with pytest.raises(ValueError, match="selection"):
        select_keypoints(keypoints, scores, 4, (100, 100), "random")


def test_rootsift_grid_selection_draws_from_a_larger_pool() -> None:
    image = sample_image("coffee", 320)
    grid = rootsift(image, max_features=100, select="grid", pool=400)
    plain = rootsift(image, max_features=100)
    assert len(grid) == len(plain) == 100
    assert not np.array_equal(grid.keypoints, plain.keypoints)


def test_uint4_codes_round_trip_within_half_a_level_and_halve_the_bytes() -> None:
    from indexer.describe import UINT4_SCALE

    local = rootsift(sample_image("chelsea", 320), max_features=300)
    arrays = to_arrays(Description(np.ones(4, np.float32), local), "uint4")
    assert arrays["descriptors_u4"].shape == (len(local), 64)
    back = local_from_arrays(decode_arrays(encode_arrays(arrays)))
    clipped = np.minimum(local.descriptors, 15 / UINT4_SCALE)
    assert np.abs(back.descriptors - clipped).max() <= 0.5 / UINT4_SCALE + 1e-6
    sims = back.descriptors @ local.descriptors.T
    assert (sims.argmax(axis=1) == np.arange(len(local))).mean() > 0.95


@pytest.mark.parametrize("dtype", ["uint4", "float16"])
def test_a_stored_record_decodes_its_strongest_rows_alone_as_the_full_decode_has_them(dtype) -> None:
    local = rootsift(sample_image("astronaut", 320), max_features=200)
    arrays = decode_arrays(encode_arrays(to_arrays(Description(np.ones(4, np.float32), local), dtype)))
    full = local_from_arrays(arrays)
    stored = StoredLocal(arrays)
    head = stored.strongest(50)
    assert len(head) == 50 and stored._full is None  # nothing decoded whole
    rows = np.argsort(-full.scores.astype(np.float32), kind="stable")[:50]
    assert set(map(tuple, head.keypoints.tolist())) == set(map(tuple, full.keypoints[rows].tolist()))
    np.testing.assert_array_equal(head.descriptors, full.descriptors[np.sort(rows)])  # stored order
    np.testing.assert_array_equal(stored.full().descriptors, full.descriptors)
    assert len(stored.strongest(500)) == len(full)  # fewer than asked: all of them
