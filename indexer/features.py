"""Plain containers that stages hand to each other (no behaviour beyond validation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LocalFeatures:
    """Local features of one image: keypoints in original-image pixels, one descriptor per keypoint."""

    keypoints: np.ndarray  # (N, 2) float32, x then y, in pixels of the image as read from disk
    descriptors: np.ndarray  # (N, D) float32 or float16, one row per keypoint
    scores: np.ndarray | None = None  # (N,) detector response or attention, higher is better

    def __post_init__(self) -> None:
        if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 2:
            raise ValueError(f"keypoints must be (N, 2), got {self.keypoints.shape}")
        if len(self.descriptors) != len(self.keypoints):
            raise ValueError(
                f"{len(self.keypoints)} keypoints but {len(self.descriptors)} descriptors"
            )
        if self.scores is not None and len(self.scores) != len(self.keypoints):
            raise ValueError(f"{len(self.keypoints)} keypoints but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, rows: slice | np.ndarray) -> LocalFeatures:
        """The features at `rows`."""
        scores = None if self.scores is None else self.scores[rows]
        return LocalFeatures(self.keypoints[rows], self.descriptors[rows], scores)

    @classmethod
    def empty(cls, dim: int) -> LocalFeatures:
        """No features (an image too small or too flat to have any)."""
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.float32), np.zeros(0, np.float32))


def strongest_rows(scores: np.ndarray | None, count: int, n: int) -> slice | np.ndarray:
    """Rows of the n strongest of `count` features by score, in stored order: a slice where that
    is a prefix (no scores: the first n; scores stored strongest first, as extractors keep them),
    sorted positions otherwise."""
    if count <= n or scores is None or bool(np.all(scores[1:] <= scores[:-1])):
        return slice(0, min(n, count))
    order = np.argpartition(-np.asarray(scores, np.float32), n - 1)[:n]
    return np.sort(order)
