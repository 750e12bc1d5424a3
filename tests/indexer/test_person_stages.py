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
