"""Query time: FAISS shortlist, then optional geometric re-ranking with stored local features."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from indexer.describe import Description, StoredLocal, local_from_arrays
from indexer.features import LocalFeatures
from matcher.rerank import (
    Candidate,
    RerankConf,
    StageTimes,
    count_inliers,
    expanded_query,
    order_by_inliers,
)
from storage.feature_store import Store
from storage.vector_index import VectorIndex


@dataclass(frozen=True)
class Hit:
    """One ranked result: gallery image id, global similarity, and inliers where re-ranked.

    After re-ranking, `score` of an unverified image is its similarity to the expanded query.
    """

    image_id: int
    score: float
    inliers: int | None = None


@dataclass
class SearchResult:
    """Ranked hits and where the time went."""

    hits: list[Hit]
    times: dict[str, float] = field(default_factory=dict)


def load_local_features(store: Store, image_ids: list[int], workers: int = 2) -> list[LocalFeatures]:
    """Stored local features of a shortlist, decoded to float32 in `workers` threads (decoding, a
    numpy gather per image, frees the GIL; reading is one pread each, in file order)."""
    arrays = store.get_many(image_ids)
    workers = max(1, min(workers, len(arrays) // 8))
    if workers == 1:
        return [local_from_arrays(a) for a in arrays]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(local_from_arrays, arrays))


class Searcher:
    """Searches one gallery: its FAISS index and its feature store."""

    def __init__(self, index: VectorIndex, store: Store, conf: RerankConf | None = None):
        self.index = index
        self.store = store
        self.conf = conf or RerankConf()

    def search(
        self,
        query: Description,
        top_k: int = 10,
        shortlist: int = 100,
        rerank: bool = True,
        exclude: frozenset[int] = frozenset(),
        vector: np.ndarray | None = None,
        kreciprocal: bool = False,
    ) -> SearchResult:
        """Rank the gallery for `query`; `vector` overrides the query's global vector (projections).

        `kreciprocal` re-ranks the global shortlist by k-reciprocal encoding (person galleries,
        which have no local features to verify)."""
        times = StageTimes()
        start = time.perf_counter()
        depth = max(top_k, shortlist) + len(exclude)
        vec = query.global_vector if vector is None else vector
        hits = self._global(vec, depth, exclude)
        start = times.add("search", start)
        if rerank and query.local is not None and hits:
            head = hits[:shortlist]
            candidates = self._load([h.image_id for h in head])
            times.add("loading", start)
            inliers = count_inliers(query.local, candidates, self.conf, times)
            start = time.perf_counter()
            order = order_by_inliers(inliers, self.conf.min_inliers)
            verified = [Hit(head[k].image_id, head[k].score, int(inliers[k])) for k in order
                        if inliers[k] >= self.conf.min_inliers]
            hits = verified + self._unverified(vec, hits, head, inliers, verified, depth, exclude)
            times.add("expansion", start)
        if kreciprocal and hits:
            hits = self._kreciprocal(vec, hits, shortlist)
            times.add("kreciprocal", start)
        return SearchResult(hits[:top_k], times.seconds)

    def _load(self, image_ids: list[int]) -> list[Candidate]:
        """The shortlist's stored records, read now and decoded by the matching threads as far as
        re-ranking needs them (`StoredLocal`); decoded in full here where no screening decodes
        less."""
        if self.conf.screens and self.conf.screen_candidate_features is not None:
            return [StoredLocal(a) for a in self.store.get_many(image_ids)]
        return list(load_local_features(self.store, image_ids, self.conf.workers))

    def _kreciprocal(self, vec: np.ndarray, hits: list[Hit], shortlist: int) -> list[Hit]:
        """The shortlist in k-reciprocal order (scores: minus the re-ranked distance), then the rest."""
        from matcher.kreciprocal import rerank_shortlist

        head = hits[:shortlist]
        dist = rerank_shortlist(vec, self.index.reconstruct([h.image_id for h in head]))
        order = np.argsort(dist, kind="stable")
        return [Hit(head[k].image_id, -float(dist[k]), head[k].inliers) for k in order] + \
            hits[shortlist:]

    def _global(self, vec: np.ndarray, depth: int, exclude: frozenset[int]) -> list[Hit]:
        """FAISS ranking, best first, with similarity-like scores (higher is closer)."""
        scores, ids = self.index.search(vec[None], depth)
        sign = -1.0 if self.index.metric == "l2" else 1.0
        return [Hit(int(i), sign * float(s)) for i, s in zip(ids[0], scores[0], strict=True)
                if i >= 0 and int(i) not in exclude]

    def _unverified(
        self, vec: np.ndarray, hits: list[Hit], head: list[Hit], inliers: np.ndarray,
        verified: list[Hit], depth: int, exclude: frozenset[int],
    ) -> list[Hit]:
        """Everything not verified, in the order of the (expanded) global query."""
        done = {h.image_id for h in verified}
        counts = {h.image_id: int(n) for h, n in zip(head, inliers, strict=True) if n >= 0}
        if self.conf.expansion and verified:
            top = [h.image_id for h in verified[: self.conf.expansion]]
            hits = self._global(expanded_query(vec, self.index.reconstruct(top)), depth, exclude)
        return [Hit(h.image_id, h.score, counts.get(h.image_id)) for h in hits
                if h.image_id not in done]
