"""The person profile's global extractor: a LOMO / GOG / PCB descriptor (or a fusion) of a crop."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from indexer.extractors.base import GlobalExtractor
from indexer.extractors.person import describe_persons, parse_method

# Every person method resizes the crop to a fixed size first, at most 384 px high (PCB; LOMO and
# GOG use 128 x 48): larger crops are decoded no larger than needed for that.
PERSON_MAX_SIDE = 384


class PersonDescriptor(GlobalExtractor):
    """`describe_persons(method)` behind the extractor contract (raw, unprojected features)."""

    default_conf: ClassVar[dict[str, Any]] = {"method": "lomo"}

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__(conf)
        parse_method(self.conf["method"])  # fails early on an unknown name
        probe = np.zeros((128, 48, 3), np.uint8)
        self.dim = int(describe_persons(self.conf["method"], [probe]).shape[1])

    @property
    def max_side(self) -> int | None:
        return PERSON_MAX_SIDE

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.describe_batch([image])[0]

    def describe_batch(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return describe_persons(self.conf["method"], images).astype(np.float32)
