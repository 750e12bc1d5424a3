"""Folder -> gallery: discovery, incremental planning by content hash, batched extraction, storage.

Crash safety rests on one rule: an image row is INDEXED in SQL only after its vector is in a saved
FAISS file and its features are in the store. Rows are created PENDING first (which gives them their
ids), work is checkpointed (FAISS saved, then SQL committed), and every run starts by reconciling the
three stores, so a run killed at any point is finished by the next one with nothing duplicated.

The gallery's index life-cycle (PCA-whitening learned as it grows, the two-phase, crash-safe index
switch) lives in `indexer.gallery_index`; this module calls it at the start and end of each run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from indexer.config import parse_config  # the gallery configuration schema
from indexer.describe import Describer, to_arrays
from indexer.distributed import Described, SceneDescribed, describe_files, describe_scenes
from indexer.gallery_index import (
    finish_projection_switch,
    rebuild_index,
    refresh_index,
    refresh_whitening,
)
from indexer.images import ImageReadError, content_hash, discover_images
from indexer.naming import parse_person_name
from indexer.projections.gallery import Projector, load_projector
from indexer.scenes import SceneCropper, add_crops, crop_parents, drop_crops
from storage.feature_store import Store
from storage.gallery_files import GalleryFiles
from storage.models import Gallery, Image, ImageStatus, IndexRun, RunStatus, Source, utcnow
from storage.vector_index import VectorIndex

log = logging.getLogger(__name__)


class EmptyFolderError(ValueError):
    """The folder holds no image files."""


class OverlappingSourceError(ValueError):
    """The folder lies inside (or around) another source folder of the gallery."""


class IndexCancelled(Exception):  # noqa: N818 (a request, not a fault)
    """The caller's cancel event was set; the run stopped between batches, its work so far saved."""


# (images done, images to do, the summary so far), called after each batch
ProgressCallback = Callable[[int, int, "IndexSummary"], None]


@dataclass
class IndexSummary:
    """What one run did."""

    gallery: str
    indexed: int = 0
    unchanged: int = 0
    failed: int = 0
    pruned: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


@dataclass
class _Task:
    image_id: int
    path: Path
    rel: str
    digest: str
    size: int


def reconcile(
    session: Session, gallery: Gallery, index: VectorIndex | None, store: Store
) -> int:
    """Bring SQL, FAISS and the feature store into agreement after an interrupted run.

    `index` is None when no FAISS file was ever saved. Returns how many rows go back to PENDING.
    """
    rows = session.scalars(select(Image).where(Image.gallery_id == gallery.id)).all()
    in_index = set(index.ids().tolist()) if index is not None else set()
    on_disk = store.ids()
    indexed = {r.id for r in rows if r.status == ImageStatus.INDEXED}
    stale = [i for i in in_index if i not in indexed]
    if index is not None:
        index.remove(np.array(stale, dtype=np.int64))
    for image_id in on_disk - {r.id for r in rows}:
        store.delete(image_id)
    reset = 0
    detect = bool(gallery.config.get("detect"))
    parents = crop_parents(session, gallery.id) if detect else {}
    by_id = {r.id: r for r in rows}
    for row in rows:
        if detect and row.id not in parents:
            continue  # a scene photo: no vector of its own
        if row.status == ImageStatus.INDEXED and (row.id not in in_index or row.id not in on_disk):
            row.status = ImageStatus.PENDING
            reset += 1
            photo = by_id.get(parents.get(row.id, -1))
            if photo is not None:
                photo.status = ImageStatus.PENDING
    if stale or reset:
        log.info("reconciled %s: %d stale vectors dropped, %d images to redo",
                 gallery.name, len(stale), reset)
    return reset


def source_for(session: Session, gallery: Gallery, folder: Path) -> Source:
    """The gallery's source row for `folder` (absolute), added on first use.

    A folder inside or around one of the gallery's sources is refused: its files would be indexed
    twice under two sources.
    """
    sources = session.scalars(select(Source).where(Source.gallery_id == gallery.id)).all()
    for source in sources:
        if Path(source.root) == folder:
            return source
        if Path(source.root).is_relative_to(folder) or folder.is_relative_to(source.root):
            raise OverlappingSourceError(
                f"{folder} overlaps {source.root}, a folder of gallery {gallery.name!r} already; "
                "index that folder itself, or use another gallery"
            )
    source = Source(gallery_id=gallery.id, root=str(folder))
    session.add(source)
    session.flush()
    return source


def _plan(
    session: Session, source: Source, folder: Path, paths: list[Path], summary: IndexSummary
) -> tuple[list[_Task], list[Image]]:
    """Hash every file; create or update rows; return the work to do and rows whose file is gone
    (only the source's: other folders of the gallery are not looked at). Rows of persons
    detected in a photo (`index --detect`) are not files and are left out."""
    crops = set(crop_parents(session, source.gallery_id))
    rows = {r.path: r for r in session.scalars(select(Image).where(Image.source_id == source.id))
            if r.id not in crops}
    tasks: list[_Task] = []
    seen: set[str] = set()
    for path in tqdm(paths, desc="scanning", unit="file", leave=False):
        rel = path.relative_to(folder).as_posix()
        seen.add(rel)
        try:
            digest, size = content_hash(path), path.stat().st_size
        except OSError as exc:
            _record_failure(session, source, rows.get(rel), rel, f"cannot read: {exc}", summary)
            continue
        row = rows.get(rel)
        if row is not None and row.content_hash == digest and row.status == ImageStatus.INDEXED:
            summary.unchanged += 1
            continue
        if row is None:
            row = Image(gallery_id=source.gallery_id, source_id=source.id, path=rel, content_hash=digest,
                        size_bytes=size, status=ImageStatus.PENDING)
            session.add(row)
            rows[rel] = row
        else:
            row.content_hash, row.size_bytes = digest, size
            row.status, row.error = ImageStatus.PENDING, None
        row.person_id, row.camera_id = parse_person_name(path.name)
        tasks.append(_Task(0, path, rel, digest, size))
    session.flush()  # assigns ids to new rows
    for task in tasks:
        task.image_id = rows[task.rel].id
    gone = [row for rel, row in rows.items() if rel not in seen]
    return tasks, gone


def _record_failure(
    session: Session, source: Source | None, row: Image | None, rel: str, reason: str,
    summary: IndexSummary,
) -> None:
    log.warning("skipped %s: %s", rel, reason)
    summary.failed += 1
    summary.failures.append((rel, reason))
    if row is None:
        assert source is not None
        row = Image(gallery_id=source.gallery_id, source_id=source.id, path=rel, content_hash="",
                    size_bytes=0)
        session.add(row)
    row.status, row.error = ImageStatus.FAILED, reason


def _batches(tasks: list[_Task], size: int) -> Iterator[list[_Task]]:
    for start in range(0, len(tasks), size):
        yield tasks[start : start + size]


class _Checkpointer:
    """Flushes the feature store, saves FAISS, then commits SQL, at most every `every` seconds
    (and when asked to force)."""

    def __init__(self, session: Session, index: VectorIndex, files: GalleryFiles, every: float,
                 store: Store):
        self.session, self.index, self.files, self.every = session, index, files, every
        self.store = store
        self.last = time.monotonic()
        self.dirty = False

    def __call__(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < self.every:
            return
        if self.dirty:
            self.store.flush()
            self.index.save(self.files.index_path)
        self.session.commit()
        self.last, self.dirty = time.monotonic(), False


def _scene_rows(
    batch: list[_Task], found: list[SceneDescribed], session: Session, index: VectorIndex,
    store: Store,
) -> tuple[list[_Task], list[Described]]:
    """Photos and the people found in them -> (crop tasks, their descriptions); unreadable photos
    stay in the batch as failures. Here, in the writer, each photo's old crops are dropped and its
    people become crop rows, so their ids come from this process alone (see scenes.py)."""
    tasks: list[_Task] = []
    described: list[Described] = []
    for task, (head, people) in zip(batch, found, strict=True):
        if people is None:
            assert isinstance(head, ImageReadError)
            tasks.append(task)
            described.append((head, None))
    for task, (head, people) in zip(batch, found, strict=True):
        if people is None:
            continue
        photo = session.get(Image, task.image_id)
        assert photo is not None and not isinstance(head, ImageReadError)
        drop_crops(session, photo.id, index, store)
        rows = add_crops(session, photo, people.boxes, people.scores)
        for row, shape, desc in zip(rows, people.shapes, people.descriptions, strict=True):
            tasks.append(_Task(row.id, task.path, row.path, task.digest, 0))
            described.append((shape, desc))
        photo.height, photo.width = head
        photo.status, photo.error = ImageStatus.INDEXED, None
    return tasks, described


def _describe_here(
    batch: list[_Task], describer: Describer, pool: ThreadPoolExecutor
) -> list[Described]:
    """Read and describe a batch in this process (files read by two threads)."""
    return describe_files(describer, [t.path for t in batch], pool.map)


def _process_batch(
    batch: list[_Task], described: list[Described], session: Session, index: VectorIndex,
    store: Store, summary: IndexSummary, projector: Projector | None, local_dtype: str,
) -> None:
    """Store what was made of a batch: features, vectors, rows (the single writer)."""
    good = [(t, shape, d) for t, (shape, d) in zip(batch, described, strict=True) if d is not None]
    for task, (result, desc) in zip(batch, described, strict=True):
        if desc is None:
            assert isinstance(result, ImageReadError)
            row = session.get(Image, task.image_id)
            assert row is not None
            index.remove(np.array([task.image_id]))
            store.delete(task.image_id)
            _record_failure(session, None, row, task.rel, result.reason, summary)
    if not good:
        return
    for task, _, desc in good:
        store.put(task.image_id, to_arrays(desc, local_dtype))
    ids = np.array([t.image_id for t, _, _ in good], dtype=np.int64)
    vectors = np.stack([d.global_vector for _, _, d in good])
    index.add(ids, projector(vectors) if projector else vectors)
    for task, shape, _ in good:
        row = session.get(Image, task.image_id)
        assert row is not None
        row.height, row.width = shape  # type: ignore[misc]
        row.status, row.error = ImageStatus.INDEXED, None
    summary.indexed += len(good)


def index_folder(
    folder: Path,
    gallery: Gallery,
    sessions: sessionmaker[Session],
    home: Path,
    describer_factory: Callable[[dict[str, Any]], Describer] = Describer,
    prune: bool = False,
    batch_size: int = 16,
    checkpoint_seconds: float = 30.0,
    ray_address: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    contained: bool = False,
) -> IndexSummary:
    """Index `folder` into `gallery` incrementally; see the module docstring for the guarantees.

    With `ray_address` the images are described by Ray Data workers (`indexer.distributed`;
    "local" starts a local Ray instance) and this process stays the single writer. `progress` is
    told after each batch how far the run is; `cancel`, checked between batches, stops the run as
    Ctrl-C does (`IndexCancelled`; the work so far is saved). `contained` skips files whose real
    path lies outside `folder` (symbolic links pointing out).
    """
    folder = folder.resolve()
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    paths = [p for p in discover_images(folder) if not contained or _inside(p, folder)]
    if not paths:
        raise EmptyFolderError(f"no image files found in {folder}")
    files = GalleryFiles(home, gallery.id)
    summary = IndexSummary(gallery=gallery.name)
    started = time.monotonic()
    with files.write_lock(), sessions() as session:
        fresh = session.get(Gallery, gallery.id)  # the stored row, not the caller's (maybe stale) copy
        if fresh is None:
            raise ValueError(f"gallery {gallery.name!r} does not exist")
        gallery = fresh
        finish_projection_switch(files, gallery.config)
        source = source_for(session, gallery, folder)
        run = IndexRun(gallery_id=gallery.id, root=str(folder), status=RunStatus.RUNNING)
        session.add(run)
        _migrate_features(files)
        store = files.features(writable=True)
        index = VectorIndex.load(files.index_path) if files.index_path.exists() else None
        reconcile(session, gallery, index, store)
        tasks, gone = _plan(session, source, folder, paths, summary)
        describer = describer_factory(gallery.config) if tasks else None
        projector = load_projector(gallery.config, files.root)
        if index is not None and describer is not None:
            expected = describer.dim
            if projector is not None:
                expected = projector(np.zeros((1, expected), np.float32)).shape[1]
            if index.dim != expected:
                log.warning("index of %s has %d dims, expected %d: rebuilding it",
                            gallery.name, index.dim, expected)
                index = rebuild_index(files, gallery.config, index.ids().tolist())
        if index is None:
            dim = describer.dim if describer else 1
            if projector is not None:
                dim = projector(np.zeros((1, dim), np.float32)).shape[1]
            index = VectorIndex(dim, gallery.config["metric"])
        checkpoint = _Checkpointer(session, index, files, checkpoint_seconds, store)
        try:
            if prune:
                _prune(session, gone, index, store, summary)
            _run_tasks(tasks, describer, session, index, store, summary, checkpoint, batch_size,
                       projector, ray_address, progress, cancel)
            checkpoint(force=True)  # what was indexed is safe before the whitening is learned
            checkpoint.index = index = refresh_whitening(session, gallery, files, index)
            checkpoint.index = index = refresh_index(session, gallery, files, index)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt | IndexCancelled)
            run.status = RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED
            _finish(run, summary, checkpoint)
            raise
        run.status = RunStatus.COMPLETED
        _finish(run, summary, checkpoint)
    summary.seconds = time.monotonic() - started
    return summary


def _inside(path: Path, folder: Path) -> bool:
    if path.resolve().is_relative_to(folder):
        return True
    log.warning("skipped %s: it links to a file outside %s", path, folder)
    return False


def _migrate_features(files: GalleryFiles) -> None:
    """Move a gallery's per-image `.npz` feature files (before packing) into its packed store."""
    count = files.unmigrated_features()
    if not count:
        return
    log.info("migrating %d feature files of %s into a packed store", count, files.root)
    with logging_redirect_tqdm():
        for _ in tqdm(files.migrate_features(), total=count, desc="migrating features", unit="img"):
            pass


def _run_tasks(
    tasks: list[_Task], describer: Describer | None, session: Session, index: VectorIndex,
    store: Store, summary: IndexSummary, checkpoint: _Checkpointer, batch_size: int,
    projector: Projector | None, ray_address: str | None = None,
    progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
) -> None:
    if progress is not None:
        progress(0, len(tasks), summary)
    if not tasks or describer is None:
        return
    detect = describer.config.get("detect")
    cropper = SceneCropper(detect) if detect else None
    checkpoint(force=True)  # the PENDING rows exist before any extraction starts
    local_dtype = parse_config(describer.config).store.local  # the schema holds the default
    with ThreadPoolExecutor(max_workers=2) as pool, logging_redirect_tqdm(), tqdm(
        total=len(tasks), desc="indexing", unit="img"
    ) as bar:
        done = 0

        def batches() -> Iterator[list[_Task]]:  # checked before a batch is described
            for batch in _batches(tasks, batch_size):
                if cancel is not None and cancel.is_set():
                    raise IndexCancelled(f"cancelled after {done} of {len(tasks)} images")
                yield batch

        # (tasks stored, their descriptions, files of the folder they came from): a scene photo's
        # tasks are its person crops, while progress counts files
        results: Iterator[tuple[list[Any], list[Described], int]]
        if cropper is not None and ray_address is None:
            results = ((*_scene_rows(b, describe_scenes(describer, cropper, [t.path for t in b],
                                                        pool.map), session, index, store), len(b))
                       for b in batches())
        elif ray_address is None:
            results = ((b, _describe_here(b, describer, pool), len(b)) for b in batches())
        else:
            from indexer.distributed import describe_on_ray

            on_ray = describe_on_ray(tasks, describer.config, ray_address, batch_size)
            if cropper is not None:  # people found and described on Ray, their rows made here
                results = ((*_scene_rows(b, d, session, index, store), len(b)) for b, d in on_ray)
            else:
                results = ((b, d, len(b)) for b, d in on_ray)
        for batch, described, files in results:
            _process_batch(batch, described, session, index, store, summary, projector,
                           local_dtype)
            checkpoint.dirty = True
            checkpoint()
            bar.update(files)
            done += files
            if progress is not None:
                progress(done, len(tasks), summary)


def _prune(
    session: Session, gone: list[Image], index: VectorIndex, store: Store,
    summary: IndexSummary,
) -> None:
    index.remove(np.array([row.id for row in gone], dtype=np.int64))
    for row in gone:
        drop_crops(session, row.id, index, store)
        store.delete(row.id)
        session.delete(row)
    summary.pruned = len(gone)


def _finish(run: IndexRun, summary: IndexSummary, checkpoint: _Checkpointer) -> None:
    run.indexed, run.unchanged = summary.indexed, summary.unchanged
    run.failed, run.pruned = summary.failed, summary.pruned
    run.finished_at = utcnow()
    checkpoint.dirty = True
    checkpoint(force=True)
