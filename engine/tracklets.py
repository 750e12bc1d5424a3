"""Gallery tracklets: a person gallery searched as tracklets rather than single images.

A tracklet is every indexed image of one person from one camera, as Market-style names give them
(`PPPP_cCs1_...`, stored as each image's person and camera ids); an image without those ids is a
tracklet of its own. Each tracklet is described by the mean of its frames' vectors as the
gallery's index holds them (after the gallery's projection, so the mean of XQDA-projected
vectors is the projection of the mean), L2-normalised in an inner-product index. A query then
ranks tracklets, exactly: a gallery has far fewer tracklets than images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from storage.models import Image
from storage.vector_index import VectorIndex

__all__ = ["Tracklets", "group_tracklets"]


def group_tracklets(rows: Iterable[Image]) -> list[list[int]]:
    """Image ids grouped by (person, camera), each group in id order, groups by their first id;
    images without both ids stay alone."""
    groups: dict[tuple[int, int] | int, list[int]] = {}
    for row in sorted(rows, key=lambda r: r.id):
        key = (row.person_id, row.camera_id) if (
            row.person_id is not None and row.camera_id is not None) else -row.id - 1
        groups.setdefault(key, []).append(row.id)
    return sorted(groups.values(), key=lambda ids: ids[0])


@dataclass(frozen=True)
class Tracklets:
    """A gallery's tracklets: their member image ids and pooled vectors (rows match)."""

    members: list[list[int]]
    vectors: np.ndarray  # (T, D) float32
    metric: str  # the gallery index's: "ip" (L2-normalised rows) or "l2"

    @classmethod
    def from_index(cls, rows: Iterable[Image], index: VectorIndex) -> Tracklets:
        """Tracklets of the indexed `rows`, pooled from the vectors `index` holds for them."""
        present = set(index.ids().tolist())
        members = [[i for i in ids if i in present] for ids in group_tracklets(rows)]
        members = [ids for ids in members if ids]
        if not members:
            return cls([], np.zeros((0, index.dim), np.float32), index.metric)
        flat = index.reconstruct([i for ids in members for i in ids]).astype(np.float64)
        ends = np.cumsum([len(ids) for ids in members])
        pooled = np.stack([flat[e - len(ids):e].mean(axis=0)
                           for ids, e in zip(members, ends, strict=True)])
        if index.metric == "ip":
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return cls(members, pooled.astype(np.float32), index.metric)

    def __len__(self) -> int:
        return len(self.members)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k best tracklets for a query vector in the index's space: (position, score),
        best first; scores are inner products, or minus squared distances for "l2"."""
        q = np.asarray(vector, np.float32).ravel()
        if self.metric == "ip":
            scores = self.vectors @ (q / max(float(np.linalg.norm(q)), 1e-12))
        else:
            scores = -((self.vectors - q) ** 2).sum(axis=1)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(t), float(scores[t])) for t in order]
