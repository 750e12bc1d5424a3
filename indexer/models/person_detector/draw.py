"""The one drawing helper of person search: a photo with person boxes, written as JPEG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def draw_boxes(image: np.ndarray, boxes: Sequence[Sequence[int]], path: Path | None = None,
               colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """A copy of RGB `image` with each (x, y, w, h) box outlined; written to `path` if given."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(2, round(max(image.shape[:2]) / 300))
    for x, y, w, h in boxes:
        cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), colour, thickness)
    if path is not None:
        cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    return out
