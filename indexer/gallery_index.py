"""A gallery's FAISS index life-cycle: the PCA-whitening learned from its own vectors, and the
two-phase, crash-safe switch to an index rebuilt from the stored raw vectors.

A landmark gallery whose configuration asks for it (`"whitening"`) learns PCA-whitening from its own
stored global vectors once it holds enough images, and learns it again each time it has grown by
the configured factor; the FAISS index is then rebuilt from the stored raw vectors. The switch is
two-phase: the new index is written under a name tied to the new configuration, the configuration
is committed, and only then is the index moved into place, so a run killed in between is rolled
forward (or back) by `finish_projection_switch`.

The same switch turns an exact index into an approximate one as the gallery grows past a size
threshold (`refresh_index`; kinds and thresholds in `storage.vector_index`), and trains it again
as it keeps growing. Each switch names a new index generation in the configuration.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from indexer.config import WHITENING_DEFAULTS  # the gallery configuration schema holds them
from indexer.projections import pca_whitening
from indexer.projections.gallery import load_projector
from storage.gallery_files import GalleryFiles
from storage.models import Gallery
from storage.vector_index import (
    FLAT_MAX,
    MEMORY_BUDGET_MB,
    TARGET_RECALL,
    IndexSpec,
    VectorIndex,
    choose_spec,
)

log = logging.getLogger(__name__)


# When a gallery's index is rebuilt as another kind (storage.vector_index.choose_spec); a gallery's
# configuration may override these under "index_policy".
INDEX_DEFAULTS: dict[str, Any] = {
    "flat_max": FLAT_MAX,  # exact search below this many images
    "memory_budget_mb": MEMORY_BUDGET_MB,  # float vectors above this: 8-bit codes, then PQ
    "growth": 2.0,  # an approximate index is trained again once the gallery is this many times larger
    "target_recall": TARGET_RECALL,  # recall@10 against exact search its parameters are tuned to
}


def refresh_whitening(
    session: Session, gallery: Gallery, files: GalleryFiles, index: VectorIndex
) -> VectorIndex:
    """Learn the gallery's PCA-whitening again if its configuration asks and it has grown enough.

    Returns the index to use from now on (the same one when nothing was learned).
    """
    if not gallery.config.get("whitening"):
        return index
    spec = {**WHITENING_DEFAULTS, **gallery.config["whitening"]}
    ids = index.ids()
    fitted_on = int((gallery.config.get("projection") or {}).get("images", 0))
    if len(ids) < spec["min_images"] or (fitted_on and len(ids) < spec["refit_growth"] * fitted_on):
        return index
    raw = _stored_globals(files, ids)  # read once: learned from (a sample of), then projected
    sample = raw
    if len(raw) > spec["max_sample"]:
        sample = raw[np.sort(np.random.default_rng(0).choice(len(raw), spec["max_sample"],
                                                             replace=False))]
    model = pca_whitening.fit(sample, spec["dim"], whiten=True, shrinkage=spec["shrinkage"])
    name = f"whitening-{time.time_ns()}.npz"
    model.save(files.path(name))
    log.info("learned PCA-whitening of %s from %d global vectors (%d dims)", gallery.name,
             len(sample), model.projection.shape[0])
    projection = {"kind": pca_whitening.PCAWhitening.kind, "file": name, "images": len(ids)}
    new_index = switch_projection(session, gallery, files, {**gallery.config, "projection": projection},
                                  ids.tolist(), raw)
    _remove_unused_whitening(files, gallery.config)
    return new_index


def pending_index_path(files: GalleryFiles, config: dict[str, Any]) -> Path | None:
    """Where an index rebuilt for the configuration waits to be moved into place: a name tied to
    the configuration's index generation (galleries from before generations: its projection)."""
    tag = (config.get("index") or {}).get("generation")
    if tag is None and config.get("projection"):
        tag = Path(config["projection"]["file"]).stem
    return files.path(f"{files.index_path.name}.{tag}") if tag else None


def switch_projection(
    session: Session, gallery: Gallery, files: GalleryFiles, config: dict[str, Any], ids: list[int],
    raw: np.ndarray | None = None,
) -> VectorIndex:
    """Give the gallery configuration `config` (a new projection) and an index rebuilt to match.

    `raw` holds the stored global vectors of `ids` when the caller has read them already.
    """
    index = _project_stored(files, config, ids, raw)
    generation = Path(config["projection"]["file"]).stem
    return _switch(session, gallery, files, config, index, generation)


def refresh_index(
    session: Session, gallery: Gallery, files: GalleryFiles, index: VectorIndex
) -> VectorIndex:
    """Rebuild the gallery's index as the kind its size asks for (`choose_spec`) when it has
    crossed a threshold, or when an approximate index has grown `growth` times since it was
    trained (its lists and parameters are then learned again). Same two-phase switch as the
    whitening; returns the index to use from now on."""
    policy = {**INDEX_DEFAULTS, **(gallery.config.get("index_policy") or {})}
    n = len(index)
    spec = choose_spec(n, index.dim, policy["memory_budget_mb"], policy["flat_max"])
    built_on = int((gallery.config.get("index") or {}).get("images", 0))
    grown = spec.kind != "flat" and built_on > 0 and n >= policy["growth"] * built_on
    if spec.kind == index.spec.kind and not grown:
        return index
    ids = index.ids()
    index = _project_stored(files, gallery.config, ids.tolist(), spec=spec,
                            target_recall=policy["target_recall"])
    log.info("rebuilt the index of %s as %s for %d images (recall@10 %.3f, %s)", gallery.name,
             spec.factory(index.dim), n, index.tuning.recall_at_10, index.tuning.params)
    return _switch(session, gallery, files, dict(gallery.config), index, f"index-{time.time_ns()}")


def _switch(
    session: Session, gallery: Gallery, files: GalleryFiles, config: dict[str, Any],
    index: VectorIndex, generation: str,
) -> VectorIndex:
    """Write `index` under a name tied to `generation`, commit `config` naming it, move it into place."""
    config = {**config, "index": {"kind": index.spec.kind, "factory": index.spec.factory(index.dim),
                                  "images": len(index), "generation": generation,
                                  "recall_at_10": index.tuning.recall_at_10}}
    pending = pending_index_path(files, config)
    assert pending is not None
    index.save(pending)
    gallery.config = config
    session.commit()
    _move_into_place(pending, files.index_path)
    return index


def _move_into_place(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def finish_projection_switch(files: GalleryFiles, config: dict[str, Any]) -> None:
    """Complete a projection switch that was cut short: an index rebuilt for the committed
    projection is moved into place; one rebuilt for a projection never committed is dropped, and
    so is a whitening learned but never committed."""
    pending = pending_index_path(files, config)
    for leftover in files.root.glob(f"{files.index_path.name}.*"):
        if leftover == pending:
            log.info("finishing an interrupted projection switch: %s", leftover.name)
            _move_into_place(leftover, files.index_path)
        else:
            leftover.unlink(missing_ok=True)
    _remove_unused_whitening(files, config)


def _remove_unused_whitening(files: GalleryFiles, config: dict[str, Any]) -> None:
    """Delete whitening files the configuration does not name (replaced, or never committed)."""
    current = (config.get("projection") or {}).get("file")
    for learned in files.root.glob("whitening-*.npz"):
        if learned.name != current:
            learned.unlink(missing_ok=True)


def _stored_globals(files: GalleryFiles, ids: Any) -> np.ndarray:
    """The raw global vectors of `ids` from the feature store, (N, D) float32."""
    store = files.features()
    return np.stack([store.get(int(i))["global"] for i in ids]).astype(np.float32)


def _project_stored(
    files: GalleryFiles, config: dict[str, Any], ids: list[int], raw: np.ndarray | None = None,
    spec: IndexSpec | None = None, target_recall: float | None = None,
) -> VectorIndex:
    """A new index of the stored raw global vectors of `ids`, through the config's projection:
    of the kind `spec` (default: what the gallery's size and policy choose)."""
    projector = load_projector(config, files.root)
    raw = _stored_globals(files, ids) if raw is None else raw
    vectors = projector(raw) if projector else raw
    del raw
    policy = {**INDEX_DEFAULTS, **(config.get("index_policy") or {})}
    spec = spec or choose_spec(len(vectors), vectors.shape[1], policy["memory_budget_mb"],
                               policy["flat_max"])
    return VectorIndex.build(np.asarray(ids, dtype=np.int64), vectors, config["metric"], spec,
                             target_recall or policy["target_recall"])


def rebuild_index(files: GalleryFiles, config: dict[str, Any], ids: list[int]) -> VectorIndex:
    """Rebuild the gallery's FAISS index from the raw vectors in its feature store (no extraction).

    Used when the vectors no longer fit the index; the new index replaces the old one atomically.
    """
    index = _project_stored(files, config, ids)
    index.save(files.index_path)
    return index
