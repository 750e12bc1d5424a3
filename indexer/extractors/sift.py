"""RootSIFT local features (Arandjelovic & Zisserman, CVPR 2012) on OpenCV's SIFT detector.

RootSIFT L1-normalises each SIFT descriptor and takes the element-wise square root, so that the
Euclidean distance between RootSIFT vectors equals the Hellinger kernel distance between the SIFT
histograms; every RootSIFT vector has unit L2 norm, so brute-force matching can use dot products.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import cv2
import numpy as np

from indexer.extractors.base import LocalExtractor
from indexer.features import LocalFeatures
from indexer.imageops import resize_by

logger = logging.getLogger(__name__)

SIFT_DIM = 128
_EPS = 1e-12


def root_descriptors(sift: np.ndarray) -> np.ndarray:
    """Map raw SIFT descriptors (N, 128) to RootSIFT: L1-normalise, then element-wise sqrt."""
    sift = np.asarray(sift, dtype=np.float32)
    if sift.ndim != 2:
        raise ValueError(f"SIFT descriptors must be (N, D), got shape {sift.shape}")
    # SIFT bins are non-negative; the clip only guards against float noise from other producers.
    sift = np.clip(sift, 0.0, None)
    l1 = sift.sum(axis=1, keepdims=True)
    return np.sqrt(sift / np.maximum(l1, _EPS)).astype(np.float32)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return an 8-bit single-channel view of an RGB(A) or grayscale uint8 image."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"image must be HxW or HxWx3/4, got shape {image.shape}")


def _working_scale(shape: tuple[int, ...], max_side: int | None, min_side: int | None) -> float:
    """Factor applied to the image before detection: shrink past max_side, grow below min_side."""
    longest = max(shape[:2])
    if max_side is not None and longest > max_side:
        return max_side / longest
    if min_side is not None and longest < min_side:
        return min_side / longest
    return 1.0


def _resize(gray: np.ndarray, scale: float) -> np.ndarray:
    return resize_by(gray, scale)  # OpenCV's pixel-centre mapping: see _to_original


SELECTIONS = ("response", "grid")


def select_keypoints(
    keypoints: np.ndarray, scores: np.ndarray | None, k: int, shape: tuple[int, int],
    method: str = "response", cells: int = 4,
) -> np.ndarray:
    """Positions of the k keypoints to keep, in their given order.

    `response`: the k with the highest scores. `grid`: spread over the image (height, width =
    `shape`) cut into cells x cells: every cell's strongest first, then every cell's second, and
    so on (ties by score), so that a textured corner cannot take the whole budget.
    """
    if method not in SELECTIONS:
        raise ValueError(f"unknown keypoint selection {method!r}; valid: {', '.join(SELECTIONS)}")
    n = len(keypoints)
    if n <= k:
        return np.arange(n)
    score = np.zeros(n, np.float32) if scores is None else np.asarray(scores, np.float32)
    by_score = np.argsort(-score, kind="stable")
    if method == "response":
        return np.sort(by_score[:k])
    h, w = max(shape[0], 1), max(shape[1], 1)
    cx = np.clip((keypoints[:, 0] * cells / w).astype(int), 0, cells - 1)
    cy = np.clip((keypoints[:, 1] * cells / h).astype(int), 0, cells - 1)
    cell = (cy * cells + cx)[by_score]
    rank = np.zeros(n, np.int64)  # position of each keypoint within its cell, strongest first
    seen = np.zeros(cells * cells, np.int64)
    for j, c in enumerate(cell):
        rank[j] = seen[c]
        seen[c] += 1
    order = np.lexsort((np.arange(n), rank))  # by rank in cell, then by score
    return np.sort(by_score[order[:k]])


def rootsift(
    image: np.ndarray,
    max_features: int = 800,
    max_side: int | None = 1024,
    min_side: int | None = None,
    select: str = "response",
    pool: int | None = None,
) -> LocalFeatures:
    """Detect SIFT keypoints, keep the max_features strongest by response, return RootSIFT.

    The image (RGB or grayscale uint8) is resized so that its longer side lies within
    [min_side, max_side] (either bound may be None); keypoints are mapped back to the pixels of the
    image as given, with OpenCV's convention that pixel centres sit at integer coordinates.

    The landmark profile asks for 1000 features (`indexer.profiles`), the setting behind the
    README's re-ranked Holidays mAP; scripts/bench_matching.py compares feature counts by
    inlier-count mAP and matching time. Upscaling small images (`min_side`) finds more features at
    about 3x the extraction time, so it is left to the caller.

    `select` chooses which max_features of OpenCV's `pool` strongest (default max_features) are
    kept (`select_keypoints`).
    """
    if max_features < 1:
        raise ValueError(f"max_features must be >= 1, got {max_features}")
    gray = to_gray(image)
    scale = _working_scale(gray.shape, max_side, min_side)
    work = gray if scale == 1.0 else _resize(gray, scale)
    # nfeatures makes OpenCV keep the strongest keypoints, but it keeps ties and adds extra
    # orientations, so the count is trimmed again below.
    pool = max(pool or max_features, max_features)
    detector = cv2.SIFT.create(nfeatures=pool)
    keypoints, raw = detector.detectAndCompute(work, None)
    if raw is None or len(keypoints) == 0:
        return LocalFeatures.empty(SIFT_DIM)
    response = np.array([kp.response for kp in keypoints], dtype=np.float32)
    # stable sort so equal responses keep OpenCV's order (deterministic output)
    strongest = np.argsort(-response, kind="stable")[:pool]
    pts = np.array([keypoints[i].pt for i in strongest], dtype=np.float32)
    chosen = select_keypoints(pts, response[strongest], max_features, work.shape[:2], select)
    keep = strongest[chosen]
    xy = pts[chosen]
    if scale != 1.0:
        # cv2.resize aligns pixel centres: x_work + 0.5 = (x_orig + 0.5) * scale
        xy = (xy + 0.5) / np.float32(scale) - 0.5
    return LocalFeatures(
        keypoints=xy.astype(np.float32),
        descriptors=root_descriptors(raw[keep]),
        scores=response[keep],
    )


class RootSift(LocalExtractor):
    """Registry face of `rootsift`: settings max_features, max_side, min_side, select, pool."""

    dim = SIFT_DIM
    default_conf: ClassVar[dict[str, Any]] = {
        "max_features": 800,
        "max_side": 1024,
        "min_side": None,
        "select": "response",
        "pool": None,
    }

    @property
    def max_side(self) -> int | None:
        return None if self.conf["max_side"] is None else int(self.conf["max_side"])

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        """RootSIFT features of one RGB uint8 image, keypoints in its pixels."""
        return rootsift(image, **self.conf)
