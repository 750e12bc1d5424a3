"""Per-image arrays (global descriptor, keypoints, local descriptors) in one folder, keyed by image id.

One small `.npz` file per image: written atomically, so an interrupted run never leaves a torn entry,
and a re-run only writes what is new (hloc keeps features keyed by image the same way).
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from pathlib import Path

import numpy as np

from storage.atomic import atomic_write_bytes


class FeatureStore:
    """Arrays of each image under `root/<id>.npz`, with a small read cache for query-time re-ranking."""

    # ~270 KB per image with 1000 float16 RootSIFT: 512 entries keep a shortlist's worth of images
    # (and a small gallery whole) in about 140 MB.
    def __init__(self, root: str | Path, cache_size: int = 512) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size

    def _path(self, image_id: int) -> Path:
        return self.root / f"{int(image_id)}.npz"

    def put(self, image_id: int, arrays: dict[str, np.ndarray]) -> None:
        """Store `arrays` for `image_id`, replacing what was there."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwds
        atomic_write_bytes(self._path(image_id), buffer.getvalue())
        self._cache.pop(int(image_id), None)

    def get(self, image_id: int) -> dict[str, np.ndarray]:
        """Arrays stored for `image_id`; KeyError when there are none."""
        key = int(image_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self._path(key)
        if not path.exists():
            raise KeyError(f"no stored features for image id {key} in {self.root}")
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        self._cache[key] = arrays
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arrays

    def delete(self, image_id: int) -> None:
        """Forget `image_id` (no error if absent)."""
        self._cache.pop(int(image_id), None)
        with contextlib.suppress(FileNotFoundError):
            self._path(image_id).unlink()

    def ids(self) -> set[int]:
        """Ids with stored arrays."""
        return {int(p.stem) for p in self.root.glob("*.npz") if p.stem.isdigit()}

    def nbytes(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.root.glob("*.npz"))
