"""`tansaku demo`: build a small gallery from bundled sample photos and query it with a new view.

Everything comes from installed packages (scikit-image's sample images, the packaged ImageNet
weights), so it runs offline on a fresh machine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.core import Engine, QueryResult
from indexer.pipeline import IndexSummary

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
           "colorwheel", "stereo_motorcycle", "camera", "brick", "clock", "coins")
QUERY_SOURCE = "rocket"


def _sample(name: str, max_side: int = 480) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = np.ascontiguousarray(image[..., :3].astype(np.uint8))
    scale = min(1.0, max_side / max(image.shape[:2]))
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def new_view(image: np.ndarray) -> np.ndarray:
    """Another 'photo' of the same scene: tilted by a homography and cropped."""
    h, w = image.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    dst = np.array([[0.06 * w, 0.04 * h], [0.97 * w, 0], [w, 0.93 * h], [0.02 * w, h]], dtype=np.float32)
    warped = cv2.warpPerspective(image, cv2.getPerspectiveTransform(src, dst), (w, h))
    return warped[int(0.1 * h): int(0.9 * h), int(0.08 * w): int(0.92 * w)]


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def run_demo(engine: Engine, gallery: str = "demo") -> tuple[IndexSummary, QueryResult]:
    """Write the sample folder and the query under the data folder, index, and query."""
    root = engine.settings.home / "demo"
    for name in SAMPLES:
        _write(root / "gallery" / f"{name}.jpg", _sample(name))
    query = root / f"query-{QUERY_SOURCE}-new-view.jpg"
    _write(query, new_view(_sample(QUERY_SOURCE)))
    summary = engine.index_folder(root / "gallery", gallery, profile="landmark")
    return summary, engine.query(query, gallery, top_k=5)
