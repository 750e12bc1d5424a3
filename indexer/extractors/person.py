"""Registry of person descriptors: one name per method, fusions written "a+b".

Each method lives in its own module, imported only when asked for, with a batch function
`f(images: list of RGB uint8 arrays) -> (N, D)`. A fusion computes every part, L2-normalises each
part per image and concatenates them, as the GOG code does for its colour-space variants (it also
removes the training mean of each part first; that needs training data, so it is left to the
stage that has it).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

BatchFn = Callable[[list[np.ndarray]], np.ndarray]

# name -> (module, batch function); modules are imported lazily so a heavy one (PCB, torch)
# costs nothing unless it is used.
PERSON_DESCRIPTORS: dict[str, tuple[str, str]] = {
    "lomo": ("indexer.extractors.lomo", "lomo_batch"),
    "gog": ("indexer.extractors.gog", "gog_batch"),
    "pcb": ("indexer.extractors.pcb", "pcb_batch"),
    # ImageNet CNN transfer (indexer/extractors/transfer.py); cdpcf's pooling is learned with the
    # projection (indexer/projections/cdpcf.py), its raw descriptor is the grid-pooled maps
    "layers": ("indexer.extractors.transfer", "layers_batch"),
    "layers-gem": ("indexer.extractors.transfer", "layers_gem_batch"),
    "layers-mbv2": ("indexer.extractors.transfer", "layers_mbv2_batch"),
    "fc": ("indexer.extractors.transfer", "fc_batch"),
    "svdfc": ("indexer.extractors.transfer", "svdfc_batch"),
    "svdcam": ("indexer.extractors.transfer", "svdcam_batch"),
    "mpncbp": ("indexer.extractors.transfer", "mpncbp_batch"),
    "mpncbp-conv": ("indexer.extractors.transfer", "mpncbp_conv_batch"),
    "cdpcf": ("indexer.extractors.transfer", "cdpcf_maps_batch"),
    "cdpcf-mbv2": ("indexer.extractors.transfer", "cdpcf_maps_mbv2_batch"),
}


def parse_method(method: str) -> list[str]:
    """Split "a+b" into its part names, checking each against the registry."""
    parts = [p.strip().lower() for p in method.split("+")]
    unknown = [p for p in parts if p not in PERSON_DESCRIPTORS]
    if not parts or unknown:
        valid = ", ".join(sorted(PERSON_DESCRIPTORS))
        raise ValueError(f"unknown person descriptor {method!r}; valid names: {valid} "
                         f"(or a fusion such as 'lomo+gog')")
    if len(set(parts)) != len(parts):
        raise ValueError(f"person descriptor {method!r} names a part twice")
    return parts


def _resolve(name: str) -> BatchFn:
    module_name, attr = PERSON_DESCRIPTORS[name]
    fn: BatchFn = getattr(importlib.import_module(module_name), attr)
    return fn


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm (all-zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(images) == 0:
        raise ValueError("no images to describe")
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 \
                or im.shape[2] != 3:
            shape = getattr(im, "shape", None)
            dtype = getattr(im, "dtype", type(im).__name__)
            raise ValueError(f"image {i} must be an (H, W, 3) uint8 RGB array, "
                             f"got shape {shape} dtype {dtype}")
    return list(images)


def _run(name: str, images: list[np.ndarray], batch_size: int) -> np.ndarray:
    fn = _resolve(name)
    blocks = [np.asarray(fn(images[i:i + batch_size]), dtype=np.float32)
              for i in range(0, len(images), batch_size)]
    out = np.concatenate(blocks)
    if out.ndim != 2 or len(out) != len(images):
        raise ValueError(f"descriptor {name!r} returned shape {out.shape} for {len(images)} images")
    return out


def describe_persons(method: str, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """(N, D) float32 descriptors of RGB uint8 person crops by a named method or fusion "a+b"."""
    parts = parse_method(method)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    checked = _check_images(images)
    features = [_run(name, checked, batch_size) for name in parts]
    if len(features) == 1:
        return features[0]
    return np.concatenate([l2_normalize(f) for f in features], axis=1).astype(np.float32)
