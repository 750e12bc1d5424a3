"""Training the person / not-person classifier: PETA crops against patches of people-free photos.

Negatives: random patches (person-shaped, 1:2, 25-90% of the photo's height) and the HOG
detector's own candidate boxes (hard negatives) from photos that hold no people. For Corel-1k we
use the classes dinosaurs (400-499), flowers (600-699), mountains (800-899) and food (900-999);
its other classes (African people, beach, buildings, buses, elephants, horses) often show people.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from indexer.images import ImageReadError, read_image
from indexer.models.attributes.cache import trunk_maps
from indexer.models.attributes.peta import load_peta
from indexer.models.person_detector.classifier import PersonClassifier, PooledFeatures, fit_person_classifier
from indexer.models.person_detector.detect import DetectConf, PersonDetector, crop

log = logging.getLogger(__name__)
COREL_WITHOUT_PEOPLE = tuple(range(400, 500)) + tuple(range(600, 700)) + tuple(range(800, 1000))


def negative_patches(photos: list[Path], per_photo: int, seed: int = 0) -> list[np.ndarray]:
    """Random person-shaped patches and HOG candidates from photos without people."""
    rng = np.random.default_rng(seed)
    detector = PersonDetector(DetectConf(detector="hog"))
    out: list[np.ndarray] = []
    for path in tqdm(photos, desc="negative patches", unit="photo"):
        try:
            image = read_image(path)
        except ImageReadError as exc:
            log.warning("skipped %s: %s", exc.path, exc.reason)
            continue
        h, w = image.shape[:2]
        for _ in range(per_photo):
            ph = int(h * rng.uniform(0.25, 0.9))
            pw = min(w, max(8, ph // 2))
            x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
            out.append(crop(image, [x, y, pw, ph]))
        boxes, _ = detector(image)
        out.extend(crop(image, b) for b in boxes[:per_photo] if b[2] >= 8 and b[3] >= 8)
    return out


def train_person_classifier(
    peta: Path, negative_photos: list[Path], out: Path, positives: int = 2000, per_photo: int = 4,
    cache: Path | None = None, seed: int = 0,
) -> dict[str, Any]:
    """Fit and save the classifier; returns counts and training accuracy."""
    data = load_peta(peta, per_person=2)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data), min(positives, len(data)), replace=False))
    features = PooledFeatures()
    pos = features.from_maps(trunk_maps([data.paths[i] for i in pick], cache, trunk=features.trunk))
    neg = features(negative_patches(negative_photos, per_photo, seed))
    model: PersonClassifier = fit_person_classifier(pos, neg)
    model.save(out)
    acc_pos = float((model.probability(pos) > 0.5).mean())
    acc_neg = float((model.probability(neg) <= 0.5).mean())
    return {"classifier": str(out), "positives": len(pos), "negatives": len(neg),
            "train_true_positive_rate": round(100 * acc_pos, 2),
            "train_true_negative_rate": round(100 * acc_neg, 2)}
