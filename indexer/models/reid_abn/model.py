"""The ABN re-ID network on EfficientNet-Lite0, temporal attention pooling, and their loader.

Layout (input 256 x 128, H x W), sized so that training fits a shared CPU:

- stem: the ImageNet EfficientNet-Lite0 up to the end of stage 5 (stride 16, 112 channels, a
  16 x 8 map m4) and stage 6 (stride 32, 192 channels, an 8 x 4 map m5). Stages 1-4 stay frozen
  (training caches their map m3, 80 channels, 16 x 8, once per crop: see `train.py`); stages 5
  and 6 are trained by the default recipe and in fine-tuning (`unfreeze_stem`), frozen by the
  `full` recipe (which caches m4 and m5 instead). Their BN statistics stay ImageNet's.
- attention branch (ABN, Fukui et al. CVPR 2019) on the mid-level map m4: 3x3 conv + BN + ReLU,
  a 1x1 conv to K identity maps + BN + ReLU; their global average gives the branch's own identity
  logits (its loss), and a 1x1 conv + BN + sigmoid of them the attention map a (B, 1, 16, 8).
- perception branch: m5 * (1 + a'), with a' the attention averaged to m5's 8 x 4 grid, then the
  last stage and the head (trained), global average pooling, a 512-d embedding (the triplet
  feature), a BN neck (Luo et al. 2019) and an identity classifier. Retrieval uses the BN-neck
  output, L2-normalised.

Without the attention branch (`attention=False`) the same network is the baseline.

`TemporalAttention` gives each frame of a tracklet a weight (softmax over the frames) from how
sharp the frame is (its crop's height in pixels); a tracklet is the weighted mean of its frames.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from indexer.backbones.efficientnet_lite import INPUT_MEAN, INPUT_STD, efficientnet_lite0
from indexer.backbones.inputs import crops_to_tensor
from indexer.errors import ModelLoadError
from indexer.models.reid_abn.functional import attention_weighting, masked_softmax, weighted_pool

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FORMAT", "INPUT_SIZE", "AbnReid", "TemporalAttention", "load_abn",
           "preprocess"]

CHECKPOINT_FORMAT = "tansaku-reid-abn/2"  # /2: temporal attention from crop heights
INPUT_SIZE = (256, 128)  # (height, width)
LOW_STAGE, MID_STAGE, STEM_STAGE = 3, 4, 5  # (0-based) stages ending m3, m4 (the attention's
# map) and m5 (the frozen stem)
MID_CHANNELS = 112
EMBED_DIM = 512


class AttentionBranch(nn.Module):
    """ABN's attention branch: identity maps from the mid-level map, their pooled logits, and a
    sigmoid attention map computed from them."""

    def __init__(self, c_in: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True))
        self.class_conv = nn.Conv2d(hidden, num_classes, 1, bias=False)
        self.class_bn = nn.BatchNorm2d(num_classes)
        self.att_conv = nn.Conv2d(num_classes, 1, 1, bias=False)
        self.att_bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention map (B, 1, H, W) in (0, 1), identity logits (B, K))."""
        k = torch.relu(self.class_bn(self.class_conv(self.conv(x))))
        return torch.sigmoid(self.att_bn(self.att_conv(k))), k.mean(dim=(2, 3))


class AbnReid(nn.Module):
    """EfficientNet-Lite0 re-ID network, with (ABN) or without an attention branch."""

    def __init__(self, num_classes: int, attention: bool = True, pretrained: bool = True,
                 embed_dim: int = EMBED_DIM, input_size: tuple[int, int] = INPUT_SIZE) -> None:
        super().__init__()
        net = efficientnet_lite0(pretrained=pretrained)
        cut3 = net.stage_ends[LOW_STAGE] + 1
        cut4, cut5 = net.stage_ends[MID_STAGE] + 1, net.stage_ends[STEM_STAGE] + 1
        self.stem = nn.ModuleList([net._conv_stem, net._bn0, *net._blocks[:cut4]])
        self._cut3 = 2 + cut3  # index in `stem` of stage 5's first block
        self.stem5 = nn.ModuleList(net._blocks[cut4:cut5])
        self.top = nn.ModuleList([*net._blocks[cut5:], net._conv_head, net._bn1])
        for p in [*self.stem.parameters(), *self.stem5.parameters()]:
            p.requires_grad_(False)
        self.attention = AttentionBranch(MID_CHANNELS, num_classes) if attention else None
        self.embed = nn.Linear(net._conv_head.out_channels, embed_dim, bias=False)
        self.bnneck = nn.BatchNorm1d(embed_dim)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(embed_dim, num_classes, bias=False)
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.has_attention = attention

    def config(self) -> dict[str, Any]:
        """Constructor arguments, stored in checkpoints."""
        return {"num_classes": self.num_classes, "attention": self.has_attention,
                "embed_dim": self.embed_dim, "input_size": list(self.input_size)}

    def train(self, mode: bool = True) -> AbnReid:
        """Train mode everywhere except the frozen stem, whose BN statistics stay ImageNet's."""
        super().train(mode)
        self.stem.eval()
        self.stem5.eval()
        return self

    def new_identities(self, num_classes: int) -> AbnReid:
        """Fresh identity layers for `num_classes` other identities (fine-tuning on a new set):
        the classifier, and the attention branch's identity maps and the map computed from them;
        everything else keeps its weights."""
        device = self.classifier.weight.device
        self.classifier = nn.Linear(self.embed_dim, num_classes, bias=False).to(device)
        if self.attention is not None:
            fresh = AttentionBranch(MID_CHANNELS, num_classes).to(device)
            fresh.conv.load_state_dict(self.attention.conv.state_dict())
            self.attention = fresh
        self.num_classes = num_classes
        return self

    def unfreeze_stem(self) -> AbnReid:
        """Make stages 5 and 6 trainable (their BN statistics stay ImageNet's); training then
        starts from the stage-4 map m3 (`mid_from_low`)."""
        for p in [*self.stem[self._cut3:].parameters(), *self.stem5.parameters()]:
            p.requires_grad_(True)
        return self

    def _imagenet_modules(self) -> list[nn.Module]:
        return [self.stem, self.stem5, self.top]

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The trainable ImageNet layers (the last stage and the head; stages 5 and 6 after
        `unfreeze_stem`)."""
        return [p for m in self._imagenet_modules() for p in m.parameters() if p.requires_grad]

    def new_parameters(self) -> list[nn.Parameter]:
        """Layers that start untrained: attention branch, embedding, BN neck, classifier."""
        skip = {id(p) for m in self._imagenet_modules() for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in skip and p.requires_grad]

    def low(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> the stage-4 map m3 (B, 80, H/16, W/16)."""
        x = torch.nn.functional.relu6(self.stem[1](self.stem[0](x)))
        for block in self.stem[2:self._cut3]:
            x = block(x)
        return x

    def mid_from_low(self, m3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m3 -> m4 (B, 112, H/16, W/16) and m5 (B, 192, H/32, W/32), through stages 5 and 6."""
        x = m3
        for block in self.stem[self._cut3:]:
            x = block(x)
        m4 = x
        for block in self.stem5:
            x = block(x)
        return m4, x

    def mid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B, 3, H, W) -> the stem's maps m4 and m5."""
        return self.mid_from_low(self.low(x))

    def forward_mid(self, m4: torch.Tensor, m5: torch.Tensor) -> dict[str, torch.Tensor]:
        """From the frozen maps: `feat` (triplet), `emb` (BN neck), `logits`, and with the
        attention branch `att` (B, 1, h4, w4) and `att_logits`."""
        out: dict[str, torch.Tensor] = {}
        x = m5
        if self.attention is not None:
            out["att"], out["att_logits"] = self.attention(m4)
            x = attention_weighting(m5, F.adaptive_avg_pool2d(out["att"], (m5.shape[2], m5.shape[3])))
        *blocks, head_conv, head_bn = self.top
        for block in blocks:
            x = block(x)
        x = F.relu6(head_bn(head_conv(x)))
        out["feat"] = self.embed(x.mean(dim=(2, 3)))
        out["emb"] = self.bnneck(out["feat"])
        out["logits"] = self.classifier(out["emb"])
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised images -> the outputs of `forward_mid`."""
        return self.forward_mid(*self.mid(x))


class TemporalAttention(nn.Module):
    """Frame weights of a tracklet from how sharp each frame is, not whom it shows: a small MLP
    scores each frame from its crop's height in pixels (people far from the camera are blurred
    when resized to the input), bounded to +-`bound`, softmax over the frames. Its last layer
    starts at zero, so an untrained pooling is the mean; the bound keeps any frame's weight
    within e^(2 bound) of another's, so a tracklet never collapses to one frame.

    The embedding's norm, a natural cue, is left out on purpose: it is inflated on the
    identities the network was trained on (24.3 against 22.1 on unseen ones, CAVIAR4REID), so a
    pooling trained on them learns a cue that misleads on new people.
    """

    def __init__(self, hidden: int = 16, bound: float = 2.0,
                 ref_height: float = float(INPUT_SIZE[0])) -> None:
        super().__init__()
        last = nn.Linear(hidden, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.score = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), last)
        self.bound, self.ref_height = bound, ref_height

    def scores(self, heights: torch.Tensor) -> torch.Tensor:
        """(...) crop heights in pixels -> (...) scores; a tracklet's weights are the softmax of
        its frames' scores."""
        cue = torch.log(heights.float().clamp(min=1.0) / self.ref_height)[..., None]
        return self.bound * torch.tanh(self.score(cue).squeeze(-1) / self.bound)

    def weights(self, heights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) crop heights -> (B, T) frame weights, each row summing to one."""
        if mask is None:
            mask = torch.ones(heights.shape, dtype=torch.bool, device=heights.device)
        return masked_softmax(self.scores(heights), mask)

    def forward(self, frames: torch.Tensor, heights: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) frame embeddings, (B, T) their crop heights -> (B, D), the weighted mean."""
        return weighted_pool(frames, self.weights(heights, mask))


def preprocess(images: Sequence[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> torch.Tensor:
    """RGB uint8 crops of any size -> (B, 3, H, W) in the network's input range."""
    return crops_to_tensor(images, size, INPUT_MEAN, INPUT_STD)


def safe_load(path: Path) -> Any:
    """torch.load of tensors and containers only (no arbitrary code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float) -> tuple[AbnReid, TemporalAttention | None]:
    p = Path(path)
    try:
        ckpt = safe_load(p)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ModelLoadError(p, f"not a readable torch checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(p, f"not a tansaku ABN re-ID checkpoint (format {CHECKPOINT_FORMAT})")
    conf = dict(ckpt["config"])
    conf["input_size"] = tuple(conf["input_size"])
    model = AbnReid(**conf, pretrained=False)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(p, f"weights do not fit the ABN layout: {exc}") from exc
    temporal = None
    if ckpt.get("temporal") is not None:
        temporal = TemporalAttention()
        temporal.load_state_dict(ckpt["temporal"], strict=True)
        temporal.eval()
    logger.info("loaded ABN re-ID model from %s (attention %s, %d identities)", p,
                model.has_attention, model.num_classes)
    return model.eval(), temporal


def load_abn(path: str | Path) -> tuple[AbnReid, TemporalAttention | None]:
    """The network (eval mode) and its temporal pooling (None if not trained) from a checkpoint
    written by `train_reid`; raises ModelLoadError naming the file."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ModelLoadError(p, "ABN re-ID checkpoint not found")
    return _load_cached(str(p), p.stat().st_mtime)


@torch.no_grad()
def describe_frames(model: AbnReid, images: Sequence[np.ndarray], batch_size: int = 32,
                    flip: bool = True) -> np.ndarray:
    """(N, 512) BN-neck embeddings (not normalised) of RGB uint8 crops; with `flip`, the mean of
    each crop's and its mirror image's (test-time flip averaging: +1.6 to +4.8 rank-1 on VIPeR
    trials, see the README)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = preprocess(images[i:i + batch_size], model.input_size).to(device)
        emb = model(x)["emb"]
        if flip:
            emb = (emb + model(x.flip(3))["emb"]) / 2
        out.append(emb.cpu().numpy())
    return np.concatenate(out).astype(np.float32)
