"""A gallery's learned projection: raw descriptors -> the vectors FAISS holds.

Person galleries learn XQDA or kernel XQDA from labelled identities (`tansaku train-projection`);
landmark galleries learn PCA-whitening from their own global vectors, without labels, as they are
indexed. Raw descriptors stay in the feature store, so a projection can be re-learned and the
index rebuilt without extracting anything again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from indexer.projections.kxqda import KXQDA
from indexer.projections.pca_whitening import PCAWhitening
from indexer.projections.xqda import XQDA
from indexer.registry import Registry

# learned from labelled identities (train-projection)
PROJECTIONS: Registry[type[XQDA] | type[KXQDA]] = Registry(
    "projection", {"xqda": XQDA, "kxqda": KXQDA})
# everything a gallery may hold
LOADERS: Registry[type[XQDA] | type[KXQDA] | type[PCAWhitening]] = Registry(
    "projection kind", {**PROJECTIONS.entries, PCAWhitening.kind: PCAWhitening})

Projector = Callable[[np.ndarray], np.ndarray]


def make_projection(kind: str) -> XQDA | KXQDA:
    """An unfitted projection by name."""
    return PROJECTIONS.get(kind)()


def needs_gog_normalizer(method: str) -> bool:
    """GOG's authors remove the training mean and L2-normalise each colour space before XQDA.

    (Superseded by `person_stages.needs_stages`, which also covers fusions and C-DPCF.)"""
    return method == "gog"


def load_projector(config: dict[str, Any], gallery_root: Path) -> Projector | None:
    """The gallery's projection as a function on (N, D) raw descriptors, or None if it has none."""
    spec = config.get("projection")
    if not spec:
        return None
    model = LOADERS.get(spec["kind"]).load(gallery_root / spec["file"])
    if spec.get("stages"):  # learned per-part stages; cameras are unknown here (C-DPCF: mean map)
        from indexer.projections.person_stages import PersonStages

        stages = PersonStages.load(gallery_root / spec["stages"])
        return lambda X: model.embed(stages.transform(np.atleast_2d(X))).astype(np.float32)
    if spec.get("normalizer_mean"):  # galleries trained before PersonStages
        from indexer.extractors.gog import GOGNormalizer

        normalizer = GOGNormalizer()
        normalizer.mean_ = np.load(gallery_root / spec["normalizer_mean"])
        return lambda X: model.embed(normalizer.transform(np.atleast_2d(X))).astype(np.float32)
    return lambda X: model.embed(np.atleast_2d(X)).astype(np.float32)
