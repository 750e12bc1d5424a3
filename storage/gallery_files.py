"""Where a gallery's files live under the data folder, and the lock that keeps one writer at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from storage.feature_store import FeatureStore, PackedFeatureStore, Store, migrate_npz


class GalleryBusyError(RuntimeError):
    """Another process holds the gallery's write lock."""


class GalleryFiles:
    """`<home>/galleries/<id>/`: `global.faiss`, `features/` (a packed store) and a write lock."""

    def __init__(self, home: str | Path, gallery_id: int) -> None:
        self.root = Path(home) / "galleries" / str(gallery_id)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def index_path(self) -> Path:
        """The FAISS index of the gallery's global descriptors."""
        return self.root / "global.faiss"

    def features(self, writable: bool = False) -> Store:
        """The gallery's feature store: packed (a gallery from before packing: its `.npz` files
        until `migrate_features` has moved them). Only the holder of `write_lock` may write."""
        folder = self.root / "features"
        if self.unmigrated_features():
            return FeatureStore(folder)
        return PackedFeatureStore(folder, writable=writable)

    def unmigrated_features(self) -> int:
        """How many per-image `.npz` feature files are still to be moved into the packed store."""
        folder = self.root / "features"
        return sum(1 for p in folder.glob("*.npz") if p.stem.isdigit()) if folder.is_dir() else 0

    def migrate_features(self) -> Iterator[int]:
        """Move per-image `.npz` files into the packed store (yields ids; hold `write_lock`)."""
        folder = self.root / "features"
        packed = PackedFeatureStore(folder, writable=True)
        try:
            yield from migrate_npz(FeatureStore(folder), packed)
        finally:
            packed.close()

    def path(self, name: str) -> Path:
        """Another file of the gallery (a learned projection, say)."""
        return self.root / name

    def remove(self) -> None:
        """Delete the gallery's folder and everything in it (call it holding the write lock)."""
        shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the gallery's exclusive lock; fail at once if another process has it."""
        lock_path = self.root / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise GalleryBusyError(f"{self.root} is being written by another process") from exc
            yield
        finally:
            os.close(fd)
