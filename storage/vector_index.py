"""FAISS index of one gallery and descriptor type, keyed by SQL image ids, saved atomically.

The index on disk is always a CPU index; `search` moves a copy to the GPU when a faiss GPU build and
a GPU are present (`_to_gpu`, the one place that asks). Faiss' GPU indexes cannot remove vectors and
search at most k = 2048, so edits stay on the CPU copy and k is capped on the GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np

from storage.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

GPU_MAX_K = 2048
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def gpu_count() -> int:
    """Number of GPUs faiss can use (0 for a CPU-only build)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _to_gpu(index: faiss.IndexIDMap2) -> _GpuSearcher | None:
    """A GPU copy of an IDMap2-wrapped flat index, or None where there is no GPU."""
    if gpu_count() == 0 or not hasattr(faiss, "StandardGpuResources"):
        return None
    resources = faiss.StandardGpuResources()
    inner = faiss.downcast_index(index.index)
    gpu_inner = faiss.index_cpu_to_gpu(resources, 0, inner)
    # Our ids live in the CPU IDMap2; the GPU copy keeps the same order so we map back by position.
    return _GpuSearcher(resources, gpu_inner, faiss.vector_to_array(index.id_map))


class _GpuSearcher:
    """Search-only GPU view of a CPU IDMap2 index: positions mapped back to our ids."""

    def __init__(self, resources: object, index: faiss.Index, ids: np.ndarray) -> None:
        self.resources = resources  # keep alive as long as the GPU index
        self.index = index
        self.ids = ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, positions = self.index.search(queries, min(k, GPU_MAX_K))
        ids = np.where(positions >= 0, self.ids[np.maximum(positions, 0)], -1)
        return scores, ids


class VectorIndex:
    """Exact (flat) FAISS index with 64-bit ids; inner product for L2-normalised descriptors."""

    def __init__(self, dim: int, metric: str = "ip") -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {sorted(METRICS)}")
        self.dim = dim
        self.metric = metric
        flat = faiss.IndexFlat(dim, METRICS[metric])
        self.index: faiss.IndexIDMap2 = faiss.IndexIDMap2(flat)
        self._gpu: _GpuSearcher | None | bool = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids in the index, in insertion order."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under `ids` (an id already present is replaced)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (N, {self.dim}), got {vectors.shape}")
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.remove(ids)
        self.index.add_with_ids(vectors, ids)
        self._gpu = None

    def remove(self, ids: np.ndarray | list[int]) -> int:
        """Remove `ids` where present; returns how many were removed."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0 or len(self) == 0:
            return 0
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        self._gpu = None
        return removed

    def reconstruct(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Stored vectors of `ids`, (N, dim)."""
        return np.stack([self.index.reconstruct(int(i)) for i in ids]) if len(ids) else (
            np.zeros((0, self.dim), np.float32)
        )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; ids are -1 past the end. Higher score = closer for 'ip'."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, len(self)))
        if len(self) == 0:
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        if self._gpu is None:
            self._gpu = _to_gpu(self.index) or False
        if self._gpu:
            return self._gpu.search(queries, k)  # type: ignore[union-attr]
        return self.index.search(queries, k)

    def save(self, path: str | Path) -> None:
        """Write the index to `path` atomically."""
        atomic_write_bytes(path, faiss.serialize_index(self.index).tobytes())

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        """Read an index written by `save`."""
        index = faiss.read_index(str(path))  # returns the concrete (downcast) type, owning its memory
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path} is not a tansaku index (found {type(index).__name__})")
        metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        obj = cls(index.d, metric)
        obj.index = index
        return obj
