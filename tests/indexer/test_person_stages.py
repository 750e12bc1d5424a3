"""Learned per-part stages of person methods: GOG's normaliser, fusion normalisation, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.extractors.gog import GOGNormalizer, gog_dim
from indexer.projections.person_stages import PersonStages, needs_stages


def test_which_methods_learn_a_stage() -> None:
    assert needs_stages("gog") and needs_stages("cdpcf") and needs_stages("gog+lomo")
    assert not needs_stages("lomo") and not needs_stages("layers")


def test_fusion_normalises_each_part_after_its_own_stage(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dims = (gog_dim(), 5)
    X = rng.random((6, sum(dims)))
    pids, cams = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 0, 1, 0, 1])
    stages = PersonStages("gog+lomo", dims).fit(X, pids, cams)
    out = stages.transform(X)
    gog, lomo = out[:, :dims[0]], out[:, dims[0]:]
    assert np.allclose(np.linalg.norm(gog, axis=1), 1) and np.allclose(np.linalg.norm(lomo, axis=1), 1)
    assert np.allclose(lomo, X[:, dims[0]:] / np.linalg.norm(X[:, dims[0]:], axis=1, keepdims=True))
    # GOG's part: its authors' normaliser (training mean out, each colour space L2), then L2
    expected = GOGNormalizer().fit(X[:, :dims[0]]).transform(X[:, :dims[0]])
    assert np.allclose(gog, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    stages.save(tmp_path / "s.npz")
    assert np.allclose(PersonStages.load(tmp_path / "s.npz").transform(X), out)
    with pytest.raises(ValueError, match="descriptors are"):
        stages.transform(X[:, :-1])


def test_a_fused_abn_block_is_centred_on_the_training_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    dims = (4, 6)
    X = rng.random((8, sum(dims))) + 3.0  # a common offset, as a network's embeddings share
    pids, cams = np.repeat(np.arange(4), 2), np.tile([0, 1], 4)
    train = np.arange(6)
    stages = PersonStages("lomo+abn:/nets/abn.pt", dims).fit(X[train], pids[train], cams[train])
    out = stages.transform(X)
    centred = X[:, 4:] - X[train, 4:].mean(axis=0)  # the training rows' mean, not all rows'
    assert np.allclose(out[:, 4:], centred / np.linalg.norm(centred, axis=1, keepdims=True))
    stages.save(tmp_path / "s.npz")
    assert np.allclose(PersonStages.load(tmp_path / "s.npz").transform(X), out)
    # alone the network learns nothing (a shift changes no distance); stages stored before fused
    # ABN blocks were centred still load, and keep them as they were
    assert not needs_stages("abn:/nets/abn.pt")
    old = dict(np.load(tmp_path / "s.npz"))
    del old["1_mean"]
    np.savez(tmp_path / "old.npz", **old)
    plain = X[:, 4:] / np.linalg.norm(X[:, 4:], axis=1, keepdims=True)
    assert np.allclose(PersonStages.load(tmp_path / "old.npz").transform(X)[:, 4:], plain)
