"""`tansaku eval scenes`: finding people in scene photos and searching them by a person crop.

Layout: `images/` scene photos, `queries/` person crops with Market-style names (`PPPP_c...`),
`boxes.json` mapping a scene to `[{"person_id", "box": [x, y, w, h]}]`.

- detection: a detected box matches a true box at IoU >= 0.5 (greedy, best score first, each true
  box matched once); recall over true boxes, precision over detected boxes (people in the
  background photos that were not pasted in count as false alarms: the set is synthetic);
- search: each query ranks the gallery's persons; a scene's rank is that of its best-ranked person;
  mAP and rank-1 over the scenes that contain the query's person.
Without detection (`detect=None`) whole photos are indexed and ranked (the baseline); detection
scores are then null.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from engine.errors import TansakuError
from engine.evaluation.retrieval_metrics import average_precision
from indexer.images import ImageReadError, discover_images, read_image
from indexer.naming import parse_person_name
from storage.models import Crop, Image

if TYPE_CHECKING:
    from engine.core import Engine


def match_boxes(detected: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> int:
    """How many detected boxes (best first) match a distinct true box at IoU >= threshold."""
    from indexer.models.person_detector.detect import iou

    used: set[int] = set()
    for box in np.asarray(detected, float).reshape(-1, 4):
        if len(truth) == 0:
            break
        overlaps = iou(box, np.asarray(truth, float))
        overlaps[list(used)] = -1
        best = int(np.argmax(overlaps))
        if overlaps[best] >= threshold:
            used.add(best)
    return len(used)


def _read_layout(dataset: Path) -> tuple[dict[str, list[dict[str, Any]]], list[Path]]:
    boxes_file = dataset / "boxes.json"
    if not boxes_file.is_file() or not (dataset / "images").is_dir() or not (dataset / "queries").is_dir():
        raise TansakuError(f"{dataset}: expected images/, queries/ and boxes.json")
    truth = json.loads(boxes_file.read_text())
    queries = list(discover_images(dataset / "queries"))
    if not queries:
        raise TansakuError(f"no query images in {dataset / 'queries'}")
    return truth, queries


def evaluate_scenes(
    engine: Engine, dataset: Path, detect: str | None = "hog", classifier: Path | None = None,
    method: str = "lomo",
) -> dict[str, Any]:
    """Index the scenes into a gallery of their own (kept between runs), then score it."""
    from engine.core import profile_config

    dataset = Path(dataset).expanduser().resolve()
    truth, queries = _read_layout(dataset)
    config = profile_config("person", method, detect=detect, classifier=classifier)
    if config is None:
        config = profile_config("person", method) or {}
    key = hashlib.blake2b(json.dumps([str(dataset), config], sort_keys=True).encode(), digest_size=5)
    gallery = f"eval-scenes-{key.hexdigest()}"
    start = time.monotonic()
    engine.index_folder(dataset / "images", gallery, profile="person", config=config)
    index_s = time.monotonic() - start
    opened = engine.open_gallery(gallery)
    photo_of = {i: p for i, (p, _) in opened.crops.items()} if detect else dict(opened.paths)
    scores: dict[str, Any] = {"dataset": str(dataset), "method": method,
                              "detector": (detect + (" + classifier" if classifier else "")) if detect
                              else "none (whole photos)"}
    scores.update(_detection_scores(engine, opened.gallery.id, truth) if detect else
                  {"detection_recall": None, "detection_precision": None})
    aps, firsts = [], []
    searcher = opened.searcher()
    depth = len(photo_of)
    for query in queries:
        pid, _ = parse_person_name(query.name)
        relevant = {name for name, people in truth.items() if any(p["person_id"] == pid for p in people)}
        if not relevant:
            continue
        try:
            description = opened.describer.describe(read_image(query))
        except ImageReadError as exc:
            raise TansakuError(f"cannot read query {exc.path}: {exc.reason}") from exc
        hits = searcher.search(description, top_k=depth, rerank=False,
                               vector=opened.projected(description)).hits
        scenes: list[str] = []
        for h in hits:
            scene = Path(photo_of.get(h.image_id, "")).name
            if scene and scene not in scenes:
                scenes.append(scene)
        aps.append(average_precision(scenes, sorted(relevant)))
        firsts.append(bool(scenes[:1] and scenes[0] in relevant))
    scores.update({"mAP": round(100 * float(np.mean(aps)), 2),
                   "rank1": round(100 * float(np.mean(firsts)), 2), "queries": len(aps),
                   "scenes": len(truth), "gallery_items": depth,
                   "index_seconds": round(index_s, 1)})
    return scores


def _detection_scores(
    engine: Engine, gallery_id: int, truth: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    with engine.sessions() as session:
        rows = session.execute(select(Image.path, Crop.box, Crop.score).join(
            Crop, Crop.parent_id == Image.id).where(Image.gallery_id == gallery_id)).all()
    found: dict[str, list[tuple[float, list[int]]]] = {}
    for path, box, score in rows:
        found.setdefault(Path(path).name, []).append((score, box))
    matched = detected = 0
    total = sum(len(v) for v in truth.values())
    for scene, people in truth.items():
        boxes = [b for _, b in sorted(found.get(scene, []), key=lambda t: -t[0])]
        detected += len(boxes)
        matched += match_boxes(np.array(boxes, float).reshape(-1, 4), np.array([p["box"] for p in people]))
    return {"detection_recall": round(100 * matched / max(total, 1), 2),
            "detection_precision": round(100 * matched / max(detected, 1), 2), "detections": detected}
