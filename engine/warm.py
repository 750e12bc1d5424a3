"""Warm galleries: opened once and kept (models, FAISS index, rows), refreshed when their files change.

A server answers many queries over the same galleries; opening one costs the model loading and the
index read, which a cold `tansaku query` pays every time. `WarmGalleries.get` returns the gallery
as last opened unless its state on disk has moved on: the FAISS file (and a pending index of a
projection switch) by modification time and size, the gallery's configuration, its indexed rows (count
and latest change) and its latest indexing run. A gallery that changed is opened again, reusing the
loaded models when its extractors are the same.

No half-written state is served: the rows are read first and the index after, and any vector whose
row is not (yet) INDEXED is dropped from the warm copy, so every result has a committed row and
stored features. If opening fails midway (another process is switching the index), the previous
warm copy keeps serving until the next try succeeds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from engine.errors import TansakuError
from indexer.describe import Describer
from storage.feature_store import Arrays, Store
from storage.gallery_files import GalleryFiles
from storage.models import Gallery, Image, ImageStatus, IndexRun

if TYPE_CHECKING:
    from engine.core import Engine, OpenGallery

log = logging.getLogger(__name__)


class SharedFeatureStore:
    """A gallery's feature store whose reads may come from several query threads at once (the
    store's read cache and file handles are guarded by one lock); a warm gallery never writes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()

    def get(self, image_id: int) -> Arrays:
        with self._lock:
            return self._store.get(image_id)

    def get_many(self, image_ids: list[int]) -> list[Arrays]:
        with self._lock:
            return self._store.get_many(image_ids)

    def ids(self) -> set[int]:
        with self._lock:
            return self._store.ids()

    def nbytes(self) -> int:
        return self._store.nbytes()

    def put(self, image_id: int, arrays: Arrays) -> None:
        raise PermissionError("a warm gallery is read-only")

    def delete(self, image_id: int) -> None:
        raise PermissionError("a warm gallery is read-only")

    def flush(self) -> None:
        """Nothing to write."""


@dataclass
class _Entry:
    version: tuple[Any, ...]
    opened: OpenGallery


class WarmGalleries:
    """Open galleries kept between queries, one copy per name, safe to use from many threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._entries: dict[str, _Entry] = {}
        self._describers: dict[str, Describer] = {}
        self._lock = threading.Lock()  # guards the dicts
        self._loading: dict[str, threading.Lock] = {}  # one loader per gallery at a time

    def get(self, name: str) -> OpenGallery:
        """The gallery `name`, opened once and refreshed when its files have changed."""
        gallery = self.engine.get_gallery(name)
        version = self.version(gallery)
        with self._lock:
            entry = self._entries.get(name)
            loading = self._loading.setdefault(name, threading.Lock())
        if entry is not None and entry.version == version:
            return entry.opened
        with loading:
            with self._lock:
                entry = self._entries.get(name)
            if entry is not None and entry.version == version:
                return entry.opened  # another thread has just loaded it
            try:
                opened = self._open(name, gallery)
            except Exception:
                if entry is None:
                    raise
                log.warning("could not refresh gallery %s; serving the copy opened before", name,
                            exc_info=True)
                return entry.opened
            with self._lock:
                self._entries[name] = _Entry(version, opened)
            log.info("gallery %s opened: %d images", name, len(opened.rows))
            return opened

    def forget(self, name: str) -> None:
        """Drop the warm copy of `name` (deleted or renamed)."""
        with self._lock:
            self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Galleries currently warm."""
        with self._lock:
            return sorted(self._entries)

    def version(self, gallery: Gallery) -> tuple[Any, ...]:
        """What identifies the gallery's state on disk; a new value means open it again."""
        from indexer.gallery_index import pending_index_path

        files = GalleryFiles(self.engine.settings.home, gallery.id)
        pending = pending_index_path(files, gallery.config)
        with self.engine.sessions() as session:
            rows = session.execute(
                select(func.count(Image.id), func.max(Image.updated_at)).where(
                    Image.gallery_id == gallery.id, Image.status == ImageStatus.INDEXED)
            ).one()
            last_run = session.execute(
                select(IndexRun.id, IndexRun.finished_at).where(IndexRun.gallery_id == gallery.id)
                .order_by(IndexRun.id.desc()).limit(1)
            ).one_or_none()
        return (gallery.id, json.dumps(gallery.config, sort_keys=True), _stat(files.index_path),
                _stat(pending) if pending else None, tuple(rows), tuple(last_run or ()))

    def _open(self, name: str, gallery: Gallery) -> OpenGallery:
        # the attribute model and the detector are part of a describer too
        key = json.dumps({k: gallery.config.get(k)
                          for k in ("global", "local", "joint", "attributes", "detect")}, sort_keys=True)
        with self._lock:
            describer = self._describers.get(key)
        opened = self.engine.open_gallery(name, describer=describer)
        with self._lock:
            self._describers[key] = opened.describer  # loads the models now, not at the first query
        stale = np.setdiff1d(opened.index.ids(), np.fromiter(opened.rows, np.int64, len(opened.rows)))
        if len(stale):  # vectors saved ahead of their rows' commit: not searchable yet
            opened.index.remove(stale)
        dim = opened.projected_dim()
        if dim != opened.index.dim:  # mid-way through a projection switch by another process
            raise TansakuError(f"gallery {name!r} is being re-indexed ({opened.index.dim}-d index, "
                               f"{dim}-d vectors); try again in a moment")
        opened.store = SharedFeatureStore(opened.store)
        return opened


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size
