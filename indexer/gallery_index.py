"""A gallery's FAISS index life-cycle: the PCA-whitening learned from its own vectors, and the
two-phase, crash-safe switch to an index rebuilt from the stored raw vectors.

A landmark gallery whose configuration asks for it (`"whitening"`) learns PCA-whitening from its own
stored global vectors once it holds enough images, and learns it again each time it has grown by
the configured factor; the FAISS index is then rebuilt from the stored raw vectors. The switch is
two-phase: the new index is written under a name tied to the new configuration, the configuration
is committed, and only then is the index moved into place, so a run killed in between is rolled
forward (or back) by `finish_projection_switch`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from indexer.projections import pca_whitening
from indexer.projections.gallery import load_projector
from storage.gallery_files import GalleryFiles
from storage.models import Gallery
from storage.vector_index import VectorIndex

log = logging.getLogger(__name__)

WHITENING_DEFAULTS: dict[str, Any] = {
    "min_images": 300,  # no whitening below this: raw global vectors (fewer over-fit it)
    "refit_growth": 1.5,  # learn it again once the gallery is this many times larger
    "dim": None,  # components kept (None: all the data supports, min(N - 1, D))
    "shrinkage": 1.0,  # eigenvalue floor, x their mean (see pca_whitening.fit)
    "max_sample": 20000,  # vectors it is learned from, at most
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
    """Where an index rebuilt for the configuration's projection waits to be moved into place."""
    spec = config.get("projection")
    return files.path(f"{files.index_path.name}.{Path(spec['file']).stem}") if spec else None


def switch_projection(
    session: Session, gallery: Gallery, files: GalleryFiles, config: dict[str, Any], ids: list[int],
    raw: np.ndarray | None = None,
) -> VectorIndex:
    """Give the gallery configuration `config` (a new projection) and an index rebuilt to match.

    `raw` holds the stored global vectors of `ids` when the caller has read them already.
    """
    pending = pending_index_path(files, config)
    assert pending is not None
    index = _project_stored(files, config, ids, raw)
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
    files: GalleryFiles, config: dict[str, Any], ids: list[int], raw: np.ndarray | None = None
) -> VectorIndex:
    """A new index of the stored raw global vectors of `ids`, through the config's projection."""
    projector = load_projector(config, files.root)
    raw = _stored_globals(files, ids) if raw is None else raw
    vectors = projector(raw) if projector else raw
    index = VectorIndex(vectors.shape[1], config["metric"])
    index.add(np.asarray(ids, dtype=np.int64), vectors)
    return index


def rebuild_index(files: GalleryFiles, config: dict[str, Any], ids: list[int]) -> VectorIndex:
    """Rebuild the gallery's FAISS index from the raw vectors in its feature store (no extraction).

    Used when the vectors no longer fit the index; the new index replaces the old one atomically.
    """
    index = _project_stored(files, config, ids)
    index.save(files.index_path)
    return index
