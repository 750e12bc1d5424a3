"""People in scene photos (`index --detect`): each photo's detected persons become crop rows.

A photo's row is the unit of incremental work (its file is hashed and planned as any image's);
processing it replaces its crops: old crop rows, vectors and features are dropped, the detector
(and the person classifier, when the configuration names one) finds boxes, and each box becomes an
image row with a `Crop` record (photo, box, score), described and stored like any image. The
photo's row becomes INDEXED without a vector of its own, in the same commit as its crops, so the
storage rule holds: a crop is INDEXED only with its vector and features saved, and `reconcile`
sends a photo back to PENDING when one of its crops lost them.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.feature_store import Store
from storage.models import Crop, Image, ImageStatus
from storage.vector_index import VectorIndex


class SceneCropper:
    """Detector (+ classifier) of a gallery's `"detect"` configuration."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    @cached_property
    def detector(self) -> Any:
        from indexer.models.person_detector.detect import DetectConf, PersonDetector

        return PersonDetector(DetectConf(detector=self.conf.get("detector", "hog")))

    @cached_property
    def classifier(self) -> Any:
        from indexer.models.person_detector.classifier import load_person_classifier

        path = self.conf.get("classifier")
        return load_person_classifier(path) if path else None

    def boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (N, 4), scores (N,)) of the people in `image`."""
        from indexer.models.person_detector.detect import crop

        boxes, scores = self.detector(image)
        keep = (boxes[:, 2] >= 8) & (boxes[:, 3] >= 16)
        boxes, scores = boxes[keep], scores[keep]
        if self.classifier is not None and len(boxes):
            p = self.classifier([crop(image, b) for b in boxes])
            keep = p > self.classifier.threshold
            boxes, scores = boxes[keep], p[keep]
        return boxes, scores


def crop_parents(session: Session, gallery_id: int) -> dict[int, int]:
    """{crop image id: photo image id} of a gallery."""
    rows = session.execute(select(Crop.image_id, Crop.parent_id).join(Image, Image.id == Crop.image_id)
                           .where(Image.gallery_id == gallery_id))
    return {int(a): int(b) for a, b in rows}


def drop_crops(session: Session, parent_id: int, index: VectorIndex, store: Store) -> None:
    """Remove a photo's crops: rows, vectors and features."""
    ids = list(session.scalars(select(Crop.image_id).where(Crop.parent_id == parent_id)))
    if not ids:
        return
    index.remove(np.array(ids, dtype=np.int64))
    for image_id in ids:
        store.delete(image_id)
        row = session.get(Image, image_id)
        if row is not None:
            session.delete(row)
    session.flush()


def add_crops(
    session: Session, photo: Image, boxes: np.ndarray, scores: np.ndarray,
) -> list[Image]:
    """New PENDING crop rows (and Crop records) for a photo's boxes, in the boxes' order."""
    rows = []
    for k, box in enumerate(boxes):
        row = Image(gallery_id=photo.gallery_id, source_id=photo.source_id, path=f"{photo.path}#{k}",
                    content_hash=photo.content_hash, size_bytes=0, status=ImageStatus.PENDING,
                    width=int(box[2]), height=int(box[3]))
        session.add(row)
        rows.append(row)
    session.flush()
    for row, box, score in zip(rows, boxes, scores, strict=True):
        session.add(Crop(image_id=row.id, parent_id=photo.id, box=[int(v) for v in box], score=float(score)))
    return rows
