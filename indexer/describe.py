"""One image -> everything a gallery stores about it (global vector, local features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.extractors import build_global, build_joint, build_local
from indexer.extractors.base import GlobalExtractor, JointExtractor, LocalExtractor
from indexer.features import LocalFeatures


@dataclass(frozen=True)
class Description:
    """What a gallery keeps of one image."""

    global_vector: np.ndarray  # (D,) float32
    local: LocalFeatures | None


class Describer:
    """The extractors of one profile configuration, used alike at index and query time."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        joint = config.get("joint")
        self.joint_extractor: JointExtractor | None = (
            build_joint(joint["name"], joint.get("conf")) if joint else None
        )
        g = config.get("global")
        self.global_extractor: GlobalExtractor | None = (
            build_global(g["name"], g.get("conf")) if g and not joint else None
        )
        local = config.get("local")
        self.local_extractor: LocalExtractor | None = (
            build_local(local["name"], local.get("conf")) if local and not joint else None
        )

    @property
    def dim(self) -> int:
        """Length of the global vector."""
        extractor = self.joint_extractor or self.global_extractor
        assert extractor is not None
        return extractor.dim

    def describe_batch(self, images: list[np.ndarray]) -> list[Description]:
        """Describe images (RGB uint8), global vectors computed as one batch."""
        if self.joint_extractor is not None:
            return [Description(*self.joint_extractor.extract(im)) for im in images]
        assert self.global_extractor is not None
        vectors = self.global_extractor.describe_batch(images)
        locals_ = [self.local_extractor(im) if self.local_extractor else None for im in images]
        return [Description(v, loc) for v, loc in zip(vectors, locals_, strict=True)]

    def describe(self, image: np.ndarray) -> Description:
        """Describe one image."""
        return self.describe_batch([image])[0]


def to_arrays(desc: Description) -> dict[str, np.ndarray]:
    """Arrays for the feature store; local descriptors as float16 (half the bytes, same ranking)."""
    arrays = {"global": desc.global_vector.astype(np.float32)}
    if desc.local is not None:
        arrays["keypoints"] = desc.local.keypoints.astype(np.float32)
        arrays["descriptors"] = desc.local.descriptors.astype(np.float16)
        if desc.local.scores is not None:
            arrays["scores"] = desc.local.scores.astype(np.float32)
    return arrays


def local_from_arrays(arrays: dict[str, np.ndarray]) -> LocalFeatures:
    """Local features back from the feature store (descriptors as float32)."""
    return LocalFeatures(
        arrays["keypoints"],
        arrays["descriptors"].astype(np.float32),
        arrays.get("scores"),
    )
