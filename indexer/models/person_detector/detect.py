"""Candidate person boxes: OpenCV 4.x's HOG people detector (Dalal & Triggs) and its full-body Haar
cascade, each over our own image pyramid, merged by non-maximum suppression.

Boxes are (x, y, w, h) in the input photo's pixels. The photo is first scaled so its long side is
`work_size` (people in holiday photos are 10-40% of the height; HOG's window is 64x128), then
each pyramid level is scanned at one scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DETECTORS = ("hog", "haar", "hog+haar")


@dataclass(frozen=True)
class DetectConf:
    """Detector settings (the defaults are what the README's numbers used)."""

    detector: str = "hog"
    work_size: int = 640  # long side the photo is scaled to before the pyramid
    scale: float = 1.2  # pyramid step
    hog_threshold: float = -0.5  # SVM margin a window must pass (low: the classifier cuts false alarms)
    # HOG's 64x128 window holds the person with a margin around it: the box kept is its centre
    # (width x0.7, height x0.8), which matched tight person boxes best on 20 scenes_dev photos
    hog_fit: tuple[float, float] = (0.7, 0.8)
    haar_min_neighbors: int = 2
    nms_iou: float = 0.4
    max_boxes: int = 30


def pyramid(image: np.ndarray, scale: float, min_size: tuple[int, int]) -> Iterator[tuple[float, np.ndarray]]:
    """(factor, level) from the image down by `scale` until a level is smaller than min_size (w, h);
    a box found at a level maps back to the image by dividing by `factor`."""
    factor = 1.0
    level = image
    while level.shape[1] >= min_size[0] and level.shape[0] >= min_size[1]:
        yield factor, level
        factor /= scale
        size = (int(round(image.shape[1] * factor)), int(round(image.shape[0] * factor)))
        if size[0] < 1 or size[1] < 1:
            break
        level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x, y, w, h) box with each of `boxes` (N, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(int(best))
        order = order[iou(boxes[best], boxes[order]) <= threshold]
    return np.array(keep, dtype=np.int64)


class _Hog:
    def __init__(self) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]

    def __call__(self, grey: np.ndarray, conf: DetectConf) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = [], []
        for factor, level in pyramid(grey, conf.scale, (64, 128)):
            found, weights = self.hog.detect(level, hitThreshold=conf.hog_threshold, winStride=(8, 8),
                                             padding=(16, 16))
            for (x, y), w in zip(np.asarray(found).reshape(-1, 2), np.asarray(weights).ravel(), strict=True):
                fw, fh = conf.hog_fit
                boxes.append([(x + 32 * (1 - fw)) / factor, (y + 64 * (1 - fh)) / factor,
                              64 * fw / factor, 128 * fh / factor])
                scores.append(float(w))
        return np.array(boxes, np.float64).reshape(-1, 4), np.array(scores)


class _Haar:
    def __init__(self) -> None:
        path = Path(cv2.data.haarcascades) / "haarcascade_fullbody.xml"  # type: ignore[attr-defined]
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path} (OpenCV 4.x ships it; 5.x does not)")

    def __call__(self, grey: np.ndarray, conf: DetectConf) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = [], []
        win = (14, 28)  # the cascade's own window
        for factor, level in pyramid(grey, conf.scale, (win[0] * 3, win[1] * 3)):
            # one scale per level: the pyramid is ours; objects 3x the window (42x84 px) at each level
            found, _, weights = self.cascade.detectMultiScale3(
                level, scaleFactor=1.01, minNeighbors=conf.haar_min_neighbors,
                minSize=(win[0] * 3, win[1] * 3), maxSize=(win[0] * 3 + 2, win[1] * 3 + 4),
                outputRejectLevels=True)
            for (x, y, w, h), s in zip(np.asarray(found).reshape(-1, 4), np.asarray(weights).ravel(),
                                       strict=True):
                boxes.append([x / factor, y / factor, w / factor, h / factor])
                scores.append(float(s))
        return np.array(boxes, np.float64).reshape(-1, 4), np.array(scores)


class PersonDetector:
    """Candidate person boxes of a photo (see the module docstring)."""

    def __init__(self, conf: DetectConf | None = None) -> None:
        self.conf = conf or DetectConf()
        if self.conf.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.conf.detector!r}; valid: {', '.join(DETECTORS)}")
        self.parts = [cls() for name, cls in (("hog", _Hog), ("haar", _Haar))
                      if name in self.conf.detector.split("+")]

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (N, 4) x, y, w, h in `image` pixels, scores (N,)), best first, after NMS."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        shrink = min(1.0, self.conf.work_size / max(grey.shape[:2]))
        if shrink < 1.0:
            grey = cv2.resize(grey, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        found = [part(grey, self.conf) for part in self.parts]
        boxes = np.concatenate([b for b, _ in found]) / shrink
        # HOG margins and Haar stage weights are on different scales: rank each within its detector
        scores = np.concatenate([_rank_scores(s) for _, s in found])
        keep = nms(boxes, scores, self.conf.nms_iou)[: self.conf.max_boxes]
        return clip_boxes(boxes[keep], image.shape[:2]), scores[keep]


def _rank_scores(scores: np.ndarray) -> np.ndarray:
    if len(scores) == 0:
        return scores
    return (scores - scores.min()) / max(float(np.ptp(scores)), 1e-9)


def clip_boxes(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boxes cut to the image and rounded to whole pixels."""
    h, w = shape[:2]
    x1 = np.clip(boxes[:, 0], 0, w - 1)
    y1 = np.clip(boxes[:, 1], 0, h - 1)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 1, w)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 1, h)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).round().astype(np.int64).reshape(-1, 4)


def crop(image: np.ndarray, box: np.ndarray | list[int]) -> np.ndarray:
    """The pixels of an (x, y, w, h) box."""
    x, y, w, h = (int(v) for v in box)
    return np.ascontiguousarray(image[y : y + h, x : x + w])
