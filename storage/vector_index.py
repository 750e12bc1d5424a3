"""FAISS index of one gallery and descriptor type, keyed by SQL image ids, saved atomically.

Three kinds, chosen by gallery size and memory (`choose_spec`, after the faiss wiki's "Guidelines to
choose an index" and "Indexing 1M vectors"; thresholds measured by scripts/bench_scale.py):

- `flat`: exact search, for small galleries (`IndexIDMap2` over `IndexFlat`);
- `ivf`: an inverted file (K ~ 4 sqrt(N) lists, an HNSW quantizer from K = 4096 on) of 4-bit
  fast-scan product codes (`PQ{D/4}x4fs`, an eighth of a byte per dimension, scanned with SIMD
  lookups) that give a shortlist of `k_factor` x k, re-scored exactly against a second store of
  the vectors: full ones (`Refine(Flat)`) where they fit the memory budget, 8-bit scalar-quantised
  ones (`Refine(SQ8)`, a quarter of the bytes) where they do not. This is the faiss wiki's choice
  for 1M-10M vectors (`IVF..,PQ..x4fs,RFlat`); scanning fast-scan codes costs a fifth to a tenth of
  scanning SQ8 or float codes at the same recall, which is bounded by the lists probed, not by the
  codes (scripts/bench_scale.py). Small galleries (below `FAST_SCAN_MIN`, where the codes cannot be
  trained) and indexes written before keep plain lists of `Flat` or `SQ8` codes (`IVF{K},SQ8`);
- `ivfpq`: OPQ-rotated product codes (`OPQ{M},IVF{K},PQ{M}`) where even SQ8 does not fit.

IVF indexes keep our ids themselves; a hash-table direct map gives `reconstruct` and `remove` for
plain lists. Fast-scan lists are never edited in place (faiss 1.15 misplaces codes added after a
removal from them): a removed vector's entry stays in its list as a tombstone, the refining store
(an `IndexIDMap2`, which gives `reconstruct`) forgets it, and a shortlist drops ids it does not hold
and repeats of an id added again. Once tombstones pass `COMPACT_AT` of the live vectors the lists
are rebuilt from the store.
An approximate index is trained from the gallery's own vectors, and its search parameters (`nprobe`,
the HNSW quantizer's `efSearch`, and for fast-scan lists the shortlist's `k_factor`) are chosen when
it is built: the smallest that reaches recall@10 >= `target_recall` against exact search on a
held-back sample of those vectors (`tune`). Kind, parameters and the recall measured are stored
with the index, in a small header of the same file (files without it, written before, are exact
indexes and load as before).

The index on disk is always a CPU index; `search` moves a copy to the GPU when a faiss GPU build and
a GPU are present (`_to_gpu`, the one place that asks). Faiss' GPU indexes cannot remove vectors and
search at most k = 2048, so edits stay on the CPU copy and k is capped on the GPU.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from storage.atomic import atomic_write

log = logging.getLogger(__name__)

GPU_MAX_K = 2048
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
KINDS = ("flat", "ivf", "ivfpq")
MAGIC = b"TANSAKU-FAISS 1\n"

# Measured on 1280-d whitened GeM-like vectors (scripts/bench_scale.py, README): below this an
# exact scan is fast enough and an IVF's clusters are too few to pay off.
FLAT_MAX = 20_000
MEMORY_BUDGET_MB = 2048.0  # vectors held in RAM by one gallery's index, at most
TARGET_RECALL = 0.95
FAST_SCAN_MIN = 10_000  # fewer vectors than this cannot train 4-bit codes well: plain lists
COMPACT_AT = 0.1  # fast-scan lists are rebuilt once dead entries pass this share of live ones
K_FACTORS = (2, 4, 8, 16, 32)  # fast-scan shortlist per result re-scored by the refining store


def gpu_count() -> int:
    """Number of GPUs faiss can use (0 for a CPU-only build)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


@dataclass(frozen=True)
class IndexSpec:
    """What to build: the kind and its structure (codes, list count, quantizer)."""

    kind: str = "flat"
    nlist: int = 0  # inverted lists (ivf, ivfpq)
    codes: str = "Flat"  # ivf: what the lists hold: Flat, SQ8 or fast-scan codes (PQ{M}x4fs)
    pq_m: int = 0  # ivfpq: sub-quantisers
    pq_bits: int = 8  # ivfpq: bits per sub-quantiser code
    hnsw_quantizer: bool = False
    refine: str = ""  # ivf: the store re-scoring the shortlist: Flat, SQ8, or none ("")

    def factory(self, dim: int) -> str:
        """The faiss index-factory string of the whole (refining store included)."""
        base = self.lists_factory()
        return f"{base},Refine({self.refine})" if self.refine else base

    def lists_factory(self) -> str:
        """The faiss index-factory string of the inverted file (or exact index) alone."""
        if self.kind == "flat":
            return "Flat"
        quantizer = f"IVF{self.nlist}" + ("_HNSW32" if self.hnsw_quantizer else "")
        if self.kind == "ivf":
            return f"{quantizer},{self.codes}"
        return f"OPQ{self.pq_m},{quantizer},PQ{self.pq_m}x{self.pq_bits}"

    @property
    def fast_scan(self) -> bool:
        return self.codes.endswith("fs")


def _nlist(n: int) -> int:
    """Inverted lists for n vectors: a power of two near 4 sqrt(n) (the wiki's 4..16 sqrt(N)),
    and no more than n / 39, so that k-means has its 39 training points per list."""
    near = 2 ** round(math.log2(max(4.0 * math.sqrt(n), 64.0)))
    return int(min(near, 2 ** math.floor(math.log2(max(n // 39, 1)))))


def choose_spec(
    n: int, dim: int, memory_budget_mb: float = MEMORY_BUDGET_MB, flat_max: int = FLAT_MAX
) -> IndexSpec:
    """The index for a gallery of n vectors of `dim` (see the module docstring)."""
    if n < flat_max:
        return IndexSpec("flat")
    nlist = _nlist(n)
    hnsw = nlist >= 4096
    mb = n * dim / 2**20
    fs_m = fast_scan_m(dim) if n >= FAST_SCAN_MIN else 0
    fs_mb = n * fs_m / 2 / 2**20  # 4 bits per sub-quantiser
    for store, mb_per in (("Flat", 4 * mb), ("SQ8", mb)):
        if fs_m and mb_per + fs_mb <= memory_budget_mb:
            return IndexSpec("ivf", nlist, f"PQ{fs_m}x4fs", hnsw_quantizer=hnsw, refine=store)
        if not fs_m and mb_per <= memory_budget_mb:
            return IndexSpec("ivf", nlist, store, hnsw_quantizer=hnsw)
    pq_m = max(m for m in (8, 16, 32, 48, 64, 96, 128) if dim % m == 0 and m <= dim)
    return IndexSpec("ivfpq", nlist, pq_m=pq_m, hnsw_quantizer=hnsw)


def fast_scan_m(dim: int) -> int:
    """Fast-scan sub-quantisers for `dim`: 4 dimensions each (2 per byte of code), or 0 where
    `dim` has no divisor near that (the codes would be too coarse or too long)."""
    for m in range(dim // 4, dim // 8, -1):
        if m >= 2 and dim % m == 0 and m % 2 == 0:
            return m
    return 0


@dataclass
class Tuning:
    """Search parameters chosen at build time and the recall they reached."""

    params: dict[str, int] = field(default_factory=dict)
    recall_at_10: float = 1.0
    sample: int = 0  # held-back vectors it was measured on
    target: float = TARGET_RECALL


def _to_gpu(index: faiss.Index) -> _GpuSearcher | None:
    """A GPU copy of the index for searching, or None where there is no GPU (or it cannot move)."""
    if gpu_count() == 0 or not hasattr(faiss, "StandardGpuResources"):
        return None
    resources = faiss.StandardGpuResources()
    try:
        if isinstance(index, faiss.IndexIDMap2):
            inner = faiss.index_cpu_to_gpu(resources, 0, faiss.downcast_index(index.index))
            # Our ids live in the CPU IDMap2; the GPU copy keeps the same order: map back by position.
            return _GpuSearcher(resources, inner, faiss.vector_to_array(index.id_map))
        return _GpuSearcher(resources, faiss.index_cpu_to_gpu(resources, 0, index), None)
    except RuntimeError as exc:  # e.g. an HNSW quantizer has no GPU version
        log.info("searching on the CPU: %s", exc)
        return None


class _GpuSearcher:
    """Search-only GPU view of a CPU index: positions mapped back to our ids where needed."""

    def __init__(self, resources: object, index: faiss.Index, ids: np.ndarray | None) -> None:
        self.resources = resources  # keep alive as long as the GPU index
        self.index = index
        self.ids = ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, positions = self.index.search(queries, min(k, GPU_MAX_K))
        if self.ids is None:
            return scores, positions
        ids = np.where(positions >= 0, self.ids[np.maximum(positions, 0)], -1)
        return scores, ids


class VectorIndex:
    """A gallery's FAISS index with 64-bit ids; inner product for L2-normalised descriptors.

    `VectorIndex(dim, metric)` is an empty exact index; `VectorIndex.build` trains and tunes the
    index `choose_spec` picks for a set of vectors.
    """

    def __init__(self, dim: int, metric: str = "ip") -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {sorted(METRICS)}")
        self.dim = dim
        self.metric = metric
        self.spec = IndexSpec("flat")
        self.tuning = Tuning()
        self.index: Any = faiss.IndexIDMap2(faiss.IndexFlat(dim, METRICS[metric]))
        self.refine: Any = None  # ivf with a refining store: IndexIDMap2 over Flat or SQ8
        self.k_factor = K_FACTORS[-1]
        self.removed: set[int] = set()  # ids with only dead entries in fast-scan lists
        self._gpu: _GpuSearcher | None | bool = None

    # building ----------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, metric: str = "ip", spec: IndexSpec | None = None,
        target_recall: float = TARGET_RECALL, sample: int = 500, seed: int = 0,
        memory_budget_mb: float = MEMORY_BUDGET_MB,
    ) -> VectorIndex:
        """An index of `vectors` under `ids`: trained on them, tuned to `target_recall` at 10."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        dim = vectors.shape[1]
        spec = spec or choose_spec(len(vectors), dim, memory_budget_mb)
        obj = cls(dim, metric)
        if spec.kind == "flat":
            obj.add(ids, vectors)
            return obj
        rng = np.random.default_rng(seed)
        held = np.sort(rng.choice(len(vectors), min(sample, len(vectors) // 10), replace=False))
        trainable = np.setdiff1d(np.arange(len(vectors)), held)
        # the wiki: 30 to 256 training vectors per list
        most = min(len(trainable), 64 * max(spec.nlist, 1))
        obj = cls.trained(spec, vectors[np.sort(rng.choice(trainable, most, replace=False))],
                          metric, seed)
        obj.index.add_with_ids(vectors, ids)
        if obj.refine is not None:
            obj.refine.add_with_ids(vectors, ids)
        obj.tuning = obj.tune(vectors[held], ids[held], vectors, ids, target_recall)
        return obj

    @classmethod
    def trained(cls, spec: IndexSpec, train: np.ndarray, metric: str = "ip", seed: int = 0) -> VectorIndex:
        """An empty approximate index of `spec`, trained on `train` (vectors are added after)."""
        train = np.ascontiguousarray(train, dtype=np.float32)
        dim = train.shape[1]
        obj = cls(dim, metric)
        index = faiss.index_factory(dim, spec.lists_factory(), METRICS[metric])
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        index.train(train)
        if not spec.fast_scan:  # fast-scan lists cannot keep one; they remove by scanning
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        if spec.refine:
            store = faiss.index_factory(dim, spec.refine, METRICS[metric])
            store.train(train)
            obj.refine = faiss.IndexIDMap2(store)
        obj.index, obj.spec = index, spec
        return obj

    def tune(
        self, queries: np.ndarray, query_ids: np.ndarray, vectors: np.ndarray | None = None,
        ids: np.ndarray | None = None, target: float = TARGET_RECALL, k: int = 10,
        truth: np.ndarray | None = None,
    ) -> Tuning:
        """Choose the smallest `nprobe` whose recall@k against exact search reaches `target` (with
        a refining store: at the longest shortlist, then the shortest shortlist that still does).

        The exact neighbours are searched in `vectors` (all the indexed vectors, under `ids`), or
        given as `truth` (ids, (Q, >= k + 1), best first); each query's own id is left out."""
        if self.spec.kind == "flat":
            return Tuning()
        nlist = faiss.extract_index_ivf(self.index).nlist
        if len(queries) == 0:  # too few vectors to hold any back: scan every list (exact)
            self._set_params(nlist)
            return Tuning(self._params(), 1.0, 0, target)
        if truth is None:
            assert vectors is not None and ids is not None
            _, positions = faiss.knn(queries, vectors, k + 1, metric=METRICS[self.metric])
            truth = np.where(positions >= 0, ids[np.maximum(positions, 0)], -1)
        expected = [set(row[row != q][:k].tolist()) for row, q in zip(truth, query_ids, strict=True)]
        recall, nprobe = 0.0, 1
        self.k_factor = K_FACTORS[-1]
        for nprobe in _probe_ladder(nlist):
            self._set_params(nprobe)
            recall = self.recall(queries, query_ids, expected, k)
            if recall >= target:
                break
        if self.refine is not None and recall >= target:
            for k_factor in K_FACTORS:
                self.k_factor = k_factor
                shorter = self.recall(queries, query_ids, expected, k)
                if shorter >= target:
                    recall = shorter
                    break
        if recall < target:
            log.warning("%s reaches recall@%d %.3f < %.2f at nprobe=%d", self.spec.factory(self.dim),
                        k, recall, target, nprobe)
        return Tuning(self._params(), round(recall, 4), len(queries), target)

    def recall(
        self, queries: np.ndarray, query_ids: np.ndarray, expected: list[set[int]], k: int = 10
    ) -> float:
        """Mean recall@k of the index's answers against `expected` (each query's own id left out)."""
        _, found = self.search(queries, k + 1)
        return float(np.mean([
            len(exp & set(row[row != q][:k].tolist())) / max(len(exp), 1)
            for exp, row, q in zip(expected, found, query_ids, strict=True)
        ]))

    def _set_params(self, nprobe: int) -> None:
        ivf = faiss.extract_index_ivf(self.index)
        ivf.nprobe = nprobe
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = max(2 * nprobe, 32)
        self._gpu = None

    def _params(self) -> dict[str, int]:
        if self.spec.kind == "flat":
            return {}
        ivf = faiss.extract_index_ivf(self.index)
        params = {"nprobe": int(ivf.nprobe)}
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            params["efSearch"] = int(quantizer.hnsw.efSearch)
        if self.refine is not None:
            params["k_factor"] = self.k_factor
        return params

    # contents ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int((self.index if self.refine is None else self.refine).ntotal)

    def _ivf(self) -> faiss.IndexIVF | None:
        return None if self.spec.kind == "flat" else faiss.extract_index_ivf(self.index)

    def ids(self) -> np.ndarray:
        """All ids in the index (insertion order for an exact index, list order otherwise)."""
        ivf = self._ivf()
        if ivf is None or self.refine is not None:
            idmap = self.index if ivf is None else self.refine
            return faiss.vector_to_array(idmap.id_map).astype(np.int64)
        lists: Any = ivf.invlists
        parts = []
        for list_no in range(ivf.nlist):
            size = lists.list_size(list_no)
            if size:
                ptr = lists.get_ids(list_no)
                parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                lists.release_ids(list_no, ptr)
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

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
        if self.refine is not None:
            self.refine.add_with_ids(vectors, ids)
            self.removed.difference_update(ids.tolist())
        self._gpu = None

    def remove(self, ids: np.ndarray | list[int]) -> int:
        """Remove `ids` where present; returns how many were removed."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0 or len(self) == 0:
            return 0
        self._gpu = None
        if self.refine is not None:  # tombstones in the lists (module docstring)
            removed = int(self.refine.remove_ids(faiss.IDSelectorBatch(ids)))
            self.removed.update(ids.tolist())
            if self.index.ntotal - len(self) > COMPACT_AT * len(self):
                self._compact()
            return removed
        # an IVF's hash-table direct map removes by an explicit id array only
        flat = self.spec.kind == "flat"
        selector = faiss.IDSelectorBatch(ids) if flat else faiss.IDSelectorArray(ids)
        return int(self.index.remove_ids(selector))

    def _compact(self, chunk: int = 65_536) -> None:
        """Rebuild fast-scan lists from the refining store's vectors: no dead entries left."""
        self.index.reset()  # keeps the coarse quantizer and the codebooks
        ids = self.ids()
        for start in range(0, len(ids), chunk):
            part = ids[start: start + chunk]
            self.index.add_with_ids(self.refine.reconstruct_batch(part), part)
        self.removed.clear()

    def reconstruct(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Stored vectors of `ids`, (N, dim) (decoded, so approximate for SQ8 / PQ codes)."""
        source = self.index if self.refine is None else self.refine
        return np.stack([source.reconstruct(int(i)) for i in ids]) if len(ids) else (
            np.zeros((0, self.dim), np.float32)
        )

    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM: codes and ids, plus centroids (approximately, for HNSW)."""
        ivf = self._ivf()
        if ivf is None:
            return len(self) * (self.dim * 4 + 8)
        quantizer = ivf.nlist * self.dim * 4 * (2 if self.spec.hnsw_quantizer else 1)
        lists = len(self) * (int(ivf.code_size) + 8)
        if self.refine is None:
            return lists + quantizer
        store = faiss.downcast_index(self.refine.index)
        # codes, the id map, and its reverse (a hash map: ~32 bytes an entry)
        return lists + quantizer + len(self) * (int(store.sa_code_size()) + 8 + 32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; ids are -1 past the end. Higher score = closer for 'ip'."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, len(self)))
        if len(self) == 0:
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        if self._gpu is None:
            self._gpu = _to_gpu(self.index) or False
        searcher = self._gpu or self.index
        if self.refine is None:
            return searcher.search(queries, k)  # type: ignore[union-attr]
        _, shortlist = searcher.search(queries, k * self.k_factor)  # type: ignore[union-attr]
        return self._rescore(queries, shortlist, k)

    def _rescore(self, queries: np.ndarray, shortlist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best k of each query's shortlist by the refining store's vectors."""
        scores = np.full((len(queries), k), -np.inf if self.metric == "ip" else np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        dead = np.fromiter(self.removed, np.int64, len(self.removed))
        for row, (query, candidates) in enumerate(zip(queries, shortlist, strict=True)):
            candidates = np.unique(candidates[candidates >= 0])  # an id added again: twice
            if len(dead):
                candidates = candidates[~np.isin(candidates, dead)]
            if len(candidates) == 0:
                continue
            vectors = self.refine.reconstruct_batch(candidates)
            if self.metric == "ip":
                found = vectors @ query
                order = np.argsort(-found, kind="stable")[:k]
            else:
                found = ((vectors - query) ** 2).sum(axis=1)
                order = np.argsort(found, kind="stable")[:k]
            scores[row, : len(order)], ids[row, : len(order)] = found[order], candidates[order]
        return scores, ids

    # files -------------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """What is stored with the index: its kind, structure and tuned parameters."""
        return {"spec": asdict(self.spec), "metric": self.metric, "tuning": asdict(self.tuning)}

    def save(self, path: str | Path) -> None:
        """Write the header and the index to `path` atomically."""
        blob = faiss.serialize_index(self.index).tobytes()
        refine = b"" if self.refine is None else faiss.serialize_index(self.refine).tobytes()
        header = self.header()
        if refine:
            header["parts"] = [len(blob), len(refine)]  # the lists, then the refining store
            header["removed"] = sorted(self.removed)
        head = json.dumps(header).encode()
        with atomic_write(path) as handle:
            handle.write(MAGIC + len(head).to_bytes(4, "little") + head)
            handle.write(blob)
            handle.write(refine)

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        """Read an index written by `save` (or a bare exact index written before headers)."""
        data = np.fromfile(path, dtype=np.uint8)
        header: dict[str, Any] = {}
        if data[: len(MAGIC)].tobytes() == MAGIC:
            size = int.from_bytes(data[len(MAGIC): len(MAGIC) + 4].tobytes(), "little")
            start = len(MAGIC) + 4
            header = json.loads(data[start: start + size].tobytes())
            data = data[start + size:]
        refine = None
        if "parts" in header:
            size = header["parts"][0]
            refine = faiss.deserialize_index(data[size:])
            data = data[:size]
        index = faiss.deserialize_index(data)
        del data
        spec = IndexSpec(**header.get("spec", {}))
        if spec.kind == "flat" and not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path} is not a tansaku index (found {type(index).__name__})")
        metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        obj = cls(index.d, metric)
        obj.index, obj.spec, obj.refine = index, spec, refine
        obj.tuning = Tuning(**header["tuning"]) if "tuning" in header else Tuning()
        if spec.kind != "flat" and "nprobe" in obj.tuning.params:
            obj._set_params(obj.tuning.params["nprobe"])
        obj.k_factor = int(obj.tuning.params.get("k_factor", K_FACTORS[-1]))
        obj.removed = set(header.get("removed", []))
        return obj


def _probe_ladder(nlist: int) -> list[int]:
    """nprobe values tried in turn: 1, 2, 3, 4, 6, 8, 12, ... up to nlist."""
    ladder, p = [], 1
    while p < nlist:
        ladder.append(p)
        if p >= 2:
            ladder.append(p + p // 2)
        p *= 2
    ladder.append(nlist)
    return sorted(set(x for x in ladder if x <= nlist))
