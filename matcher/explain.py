"""Drawing heat maps over person crops: the pictures `tansaku query --explain DIR` writes and the
served match view of an ABN gallery shows."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from indexer.extractors.abn import abn_checkpoint
from storage.atomic import atomic_write_bytes

__all__ = ["abn_checkpoint", "explain_panel", "match_panel", "overlay", "write_panel"]


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 image with a (h, w) map in [0, 1] drawn over it as a JET colour map."""
    h, w = image.shape[:2]
    up = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    colour = cv2.applyColorMap(np.clip(up * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1 - alpha, colour, alpha, 0)


def match_panel(query: np.ndarray, result: np.ndarray, maps: np.ndarray, height: int = 256
                ) -> np.ndarray:
    """One RGB picture: query, query + its map, result + its map, result; all `height` tall."""
    def fit(im: np.ndarray) -> np.ndarray:
        return cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height))

    tiles = [fit(query), fit(overlay(query, maps[0])), fit(overlay(result, maps[1])), fit(result)]
    gap = np.full((height, 6, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for t in tiles:
        row += [t, gap]
    return np.concatenate(row[:-1], axis=1)


def write_panel(path: str | Path, panel: np.ndarray) -> Path:
    """Write an RGB panel as PNG, atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes())
    return Path(path)


@functools.lru_cache(maxsize=4)
def _abn_model(checkpoint: str, mtime_ns: int) -> Any:
    """The network of a checkpoint, loaded once per file version (a server explains many pairs)."""
    from indexer.models.reid_abn.model import load_abn

    return load_abn(checkpoint)[0]


def explain_panel(checkpoint: str | Path, query: np.ndarray, result: np.ndarray
                  ) -> tuple[np.ndarray, str]:
    """The panel of one query and one result (see `match_panel`) and the kind of map drawn:
    `attention` (the network's own map) or `gradcam` (of the similarity, without an attention
    branch)."""
    from indexer.models.reid_abn.explain import explain_pair

    path = Path(checkpoint)
    maps, kind = explain_pair(_abn_model(str(path), path.stat().st_mtime_ns), query, result)
    return match_panel(query, result, maps), kind
