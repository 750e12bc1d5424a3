"""Global descriptor: GeM pooling of EfficientNet-Lite0's last map over a 3-scale image pyramid."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from indexer.backbones.efficientnet_lite import (
    HEAD_CHANNELS,
    efficientnet_lite0,
    for_inference,
    normalize_input,
)
from indexer.extractors.base import GlobalExtractor, default_device
from indexer.functional import gem, l2_normalize
from indexer.imageops import resize_by


def resize_longer_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longer side is at most `max_side` (never upscale)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    return image if scale >= 1.0 else resize_by(image, scale)


def to_tensor(image: np.ndarray, scale: float, device: torch.device) -> torch.Tensor:
    """RGB uint8 (H, W, 3) resized by `scale` -> normalised (1, 3, h, w) float tensor."""
    if scale != 1.0:
        image = resize_by(image, scale, min_side=32)
    x = torch.from_numpy(np.array(image, copy=True)).to(device).permute(2, 0, 1)[None]
    return normalize_input(x.float() / 255.0)


class GemEfficientNet(GlobalExtractor):
    """EfficientNet-Lite0 (ImageNet) -> GeM per scale -> L2 -> sum over scales -> L2."""

    default_conf: ClassVar[dict[str, Any]] = {
        "max_side": 512,
        "scales": (0.7071, 1.0, 1.4142),
        "p": 3.0,
        "weights": None,  # a state_dict path; None = the packaged ImageNet weights
    }
    dim = HEAD_CHANNELS

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__(conf)
        self.device = default_device()
        self.model = for_inference(efficientnet_lite0(weights=self.conf["weights"])).to(self.device)

    @property
    def max_side(self) -> int | None:
        return int(self.conf["max_side"])

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = resize_longer_side(image, self.conf["max_side"])
        total = torch.zeros(self.dim, device=self.device)
        for scale in self.conf["scales"]:
            head = self.model.features(to_tensor(image, scale, self.device))["head"]
            total += l2_normalize(gem(head, self.conf["p"]))[0]
        return l2_normalize(total).cpu().numpy().astype(np.float32)
