"""The attribute models' image side: crops -> EfficientNet-Lite0 maps, split where features are cached.

The trunk (stem and MBConv blocks, ImageNet weights, frozen) maps a 192x96 crop to a 320-channel
6x3 map; the heads start from the backbone's own 1x1 head convolution (320 -> 1280, initialised
from ImageNet and trained with the head). Trunk maps are cached once per image as float16, so the
heads (and that last convolution, the backbone's last stage) train without re-running the trunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from indexer.backbones.efficientnet_lite import EfficientNetLite0, efficientnet_lite0, normalize_input

# (height, width) of a pedestrian crop: near PETA's own sizes (median 64-80 x 128-190 px), a
# 6x3 map; 256x128 costs 1.8x the compute, which this shared 2-core machine cannot spare.
INPUT_SIZE = (192, 96)
TRUNK_CHANNELS = 320


def crop_tensor(images: Sequence[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> torch.Tensor:
    """RGB uint8 crops (any size) -> the network's input batch (B, 3, H, W)."""
    h, w = size
    batch = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    return normalize_input(tensor)


class Trunk(nn.Module):
    """EfficientNet-Lite0 up to its last MBConv block (320 channels, stride 32)."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self._conv_stem, self._bn0, self._blocks, self.act = (
            net._conv_stem, net._bn0, net._blocks, net.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


def head_conv(net: EfficientNetLite0) -> nn.Sequential:
    """The backbone's 1x1 head convolution with its batch norm and ReLU6 (320 -> 1280 channels)."""
    return nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())


def pretrained_parts(pretrained: bool = True) -> tuple[Trunk, nn.Sequential]:
    """A frozen ImageNet trunk (eval mode) and the trainable head convolution."""
    net = efficientnet_lite0(pretrained=pretrained)
    trunk = Trunk(net).eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk, head_conv(net)
