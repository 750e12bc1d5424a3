"""Image and vector helpers shared by the extractors (numpy; `indexer.functional` holds the torch
ones): the RGB input check, resizing, and L2 normalisation of rows.

Resizing keeps the behaviours that differ on purpose, as named choices:

- `resize_to(..., shrink_if="any", enlarge="cubic")`: GOG's MATLAB-like resize (area filter when
  either side shrinks, bicubic otherwise);
- `resize_to(..., shrink_if="both")`: LOMO's (area filter only when both sides shrink);
- `resize_by(scale)`: scale-driven resizes (GeM, DELG, SIFT). OpenCV maps pixel centres,
  `x_new + 0.5 = (x + 0.5) * scale`, which SIFT relies on to map keypoints back;
- `resize_pil_bilinear`: PIL's antialiased bilinear filter, as torchreid (PCB) and TensorFlow's
  DELG export resize.

Exception, documented: `indexer.extractors.delg_savedmodel.l2_normalize` keeps TensorFlow's
semantics (epsilon on the squared norm, float32), since its numbers are compared with the
SavedModel's own.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from PIL import Image

_ENLARGE = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def check_rgb(image: object, where: str = "image") -> np.ndarray:
    """`image` itself when it is an (H, W, 3) uint8 RGB array with pixels; else a ValueError
    naming `where` and what it got."""
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", type(image).__name__)
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        raise ValueError(f"{where}: expected an (H, W, 3) uint8 RGB array, got shape {shape} "
                         f"dtype {dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"{where}: empty image of shape {image.shape}")
    return image


def resize_to(
    image: np.ndarray, size: tuple[int, int], *, shrink_if: Literal["any", "both"] = "any",
    enlarge: Literal["linear", "cubic"] = "linear",
) -> np.ndarray:
    """`image` resized to `size` = (width, height) by OpenCV: the area filter when shrinking
    (`shrink_if` either side or both sides get smaller), `enlarge` otherwise."""
    h, w = image.shape[:2]
    smaller = (size[1] < h, size[0] < w)
    shrinking = any(smaller) if shrink_if == "any" else all(smaller)
    interpolation = cv2.INTER_AREA if shrinking else _ENLARGE[enlarge]
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=interpolation)


def resize_by(image: np.ndarray, scale: float, *, min_side: int = 1) -> np.ndarray:
    """`image` scaled by `scale` (each side rounded, at least `min_side`) by OpenCV: the area
    filter when scale < 1, bilinear otherwise."""
    h, w = image.shape[:2]
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=interpolation)


def resize_pil_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` resized to `size` = (width, height) by PIL's bilinear filter (antialiased when
    shrinking), as torchreid and TensorFlow's DELG export do."""
    resized = Image.fromarray(image).resize(size, resample=Image.Resampling.BILINEAR)
    return np.asarray(resized)


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """`x` divided by its L2 norm along `axis` (norms below `eps` count as `eps`: zero vectors
    stay zero); the dtype is kept."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)
