"""PCB: Part-based Convolutional Baseline (Sun et al., "Beyond Part Models: Person Retrieval with
Refined Part Pooling (and A Strong Convolutional Baseline)", ECCV 2018).

The person crop is resized to the model's input size (384 x 128, H x W, in the paper; 256 x 128 is
torchreid's default); the backbone runs with its last down-sampling removed, so its final map is
1/16 of the input (24 x 8 at 384 x 128); the map is cut into 6 horizontal stripes, each
average-pooled to a column vector g_i. For training, each g_i goes (after dropout 0.5, as in the
authors' code) through a 1x1 conv reduction to 256-d with BN and ReLU, h_i, and its own
identity classifier; the loss is the sum of the 6 cross-entropies (see `pcb_train.py`).

Two models share that design:

- `PCB`: our offline backbone, EfficientNet-Lite0 (ImageNet) with last stride 1, so g_i is
  1280-d. Each stripe has its own reduction by default; the paper's text ("a 1x1 convolutional
  layer"), the authors' code and torchreid share one reduction over the stripes
  (`shared_reduction=True`). `tansaku train-pcb` trains it; its checkpoint records the input size.
- `ResNetPCB`: ResNet-50 laid out key for key as torchreid's `pcb_p6`/`pcb_p4`, so that a user's
  torchreid checkpoint loads strictly (`load_torchreid_pcb`). A torchreid checkpoint does not
  record its input size: torchreid's default, 256 x 128, unless told otherwise.

Retrieval feature, as torchreid's eval-mode `forward` returns it: the pooled g (B, C, 6), each
stripe L2-normalised over its channels, then flattened as the tensor lies, channel-major (element
c * 6 + i is channel c of stripe i), so each row has norm sqrt(6). torchreid does not concatenate
stripe after stripe; `pcb_batch` gives exactly its layout and scale, so features are
interchangeable with torchreid's. That g is what the authors' evaluation uses too (the paper
reports g slightly better than the reduced h), and the only choice that means anything off the
shelf, where the reductions are untrained.

Images are resized as torchreid's test transform does (torchvision `Resize` on a PIL image: PIL
bilinear, which antialiases when shrinking), scaled to [0, 1] and normalised by the model's mean
and std.
"""

from __future__ import annotations

import functools
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from indexer.backbones.efficientnet_lite import (
    HEAD_CHANNELS,
    INPUT_MEAN,
    INPUT_STD,
    efficientnet_lite0,
)
from indexer.errors import ModelLoadError
from indexer.extractors.base import default_device, split_options
from indexer.imageops import check_rgb, resize_pil_bilinear

logger = logging.getLogger(__name__)

__all__ = [
    "PCB",
    "PCB_INPUT_SIZE",
    "PCB_PARTS",
    "ResNetPCB",
    "TORCHREID_INPUT_SIZE",
    "default_pcb",
    "load_any_pcb",
    "load_pcb",
    "load_torchreid_pcb",
    "part_loss",
    "pcb_batch",
    "pcb_method",
    "preprocess",
    "resize_crop",
    "stripe_descriptor",
    "stripe_pool",
]

PCB_INPUT_SIZE = (384, 128)  # (height, width), the paper's
TORCHREID_INPUT_SIZE = (256, 128)  # torchreid's default (data manager height, width)
PCB_PARTS = 6
REDUCED_DIM = 256
# torchreid (and the authors' code) feed ImageNet-normalised RGB to ResNet-50.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "tansaku-pcb/1"


# ----------------------------------------------------------------------------- pure maths


def stripe_pool(fmap: torch.Tensor, parts: int = PCB_PARTS) -> torch.Tensor:
    """(B, C, H, W) map -> (B, C, parts): the mean of each of `parts` horizontal stripes.

    Adaptive pooling, as torchreid's `parts_avgpool`: with H divisible by `parts` (24 / 6) the
    stripes are equal and disjoint.
    """
    if fmap.ndim != 4:
        raise ValueError(f"stripe_pool needs a (B, C, H, W) map, got shape {tuple(fmap.shape)}")
    if fmap.shape[2] < parts:
        raise ValueError(f"feature map height {fmap.shape[2]} is less than {parts} stripes")
    return F.adaptive_avg_pool2d(fmap, (parts, 1)).squeeze(-1)


def torchreid_layout(pooled: torch.Tensor) -> torch.Tensor:
    """(B, C, P) stripe vectors -> (B, C * P): each stripe L2-normalised over its channels, then
    flattened channel-major, as torchreid's eval `forward` (`v_g.view(B, -1)` of (B, C, P, 1))."""
    return F.normalize(pooled, p=2.0, dim=1).flatten(1)


def stripe_descriptor(pooled: torch.Tensor) -> torch.Tensor:
    """(B, C, P) stripe vectors -> (B, P, C), each stripe L2-normalised over its channels."""
    return F.normalize(pooled, p=2.0, dim=1).transpose(1, 2)


def part_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The paper's loss: the sum over stripes of each stripe classifier's cross-entropy."""
    if not logits:
        raise ValueError("part_loss needs at least one stripe's logits")
    return torch.stack([F.cross_entropy(z, labels) for z in logits]).sum()


# ----------------------------------------------------------------------------- PCB on EfficientNet


def _reduction(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 conv (no bias) + BN + ReLU, the paper's dimension reduction."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _classifier(c_in: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(c_in, num_classes)
    nn.init.normal_(fc.weight, std=0.001)  # the authors' initialisation
    nn.init.zeros_(fc.bias)
    return fc


class PCB(nn.Module):
    """EfficientNet-Lite0 PCB: 6 stripes, per-stripe 256-d reductions and classifiers.

    `forward` follows torchreid: in training mode the list of per-stripe logits, in eval mode
    the retrieval feature (B, 1280 * parts), each stripe L2-normalised, channel-major.
    `num_classes=0` builds no classifier (off-the-shelf feature extraction).
    """

    input_mean = INPUT_MEAN
    input_std = INPUT_STD

    def __init__(
        self,
        num_classes: int = 0,
        parts: int = PCB_PARTS,
        reduced_dim: int = REDUCED_DIM,
        dropout: float = 0.5,
        shared_reduction: bool = False,
        input_size: tuple[int, int] = PCB_INPUT_SIZE,
        pretrained: bool = True,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.backbone = efficientnet_lite0(pretrained=pretrained, weights=weights, last_stride=1)
        self.parts, self.num_classes, self.reduced_dim = parts, num_classes, reduced_dim
        self.dropout_p, self.shared_reduction = dropout, shared_reduction
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.feature_dim = HEAD_CHANNELS
        self.dropout = nn.Dropout(dropout)
        n_reductions = 1 if shared_reduction else parts
        self.reductions = nn.ModuleList(
            [_reduction(HEAD_CHANNELS, reduced_dim) for _ in range(n_reductions)]
        )
        self.classifiers = nn.ModuleList(
            [_classifier(reduced_dim, num_classes) for _ in range(parts if num_classes else 0)]
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (stored in checkpoints)."""
        return {
            "num_classes": self.num_classes,
            "parts": self.parts,
            "reduced_dim": self.reduced_dim,
            "dropout": self.dropout_p,
            "shared_reduction": self.shared_reduction,
            "input_size": list(self.input_size),
        }

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers PCB adds (trained at 10x the backbone's learning rate)."""
        return [*self.reductions.parameters(), *self.classifiers.parameters()]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> stripe vectors g, (B, 1280, parts)."""
        return stripe_pool(self.backbone.features(x)["head"], self.parts)

    def reduce(self, pooled: torch.Tensor) -> torch.Tensor:
        """g (B, C, parts) -> h (B, reduced_dim, parts)."""
        g = self.dropout(pooled).unsqueeze(-1)  # (B, C, P, 1): each stripe a 1x1 "image"
        if self.shared_reduction:
            return self.reductions[0](g).squeeze(-1)
        stripes = [red(g[:, :, i : i + 1]) for i, red in enumerate(self.reductions)]
        return torch.cat(stripes, dim=2).squeeze(-1)

    def stripe_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stripe identity logits, a list of `parts` (B, num_classes) tensors."""
        if not self.classifiers:
            raise RuntimeError("this PCB has no classifiers (built with num_classes=0)")
        h = self.reduce(self.pooled(x))
        return [fc(h[:, :, i]) for i, fc in enumerate(self.classifiers)]

    def stripe_features(self, x: torch.Tensor, reduced: bool = False) -> torch.Tensor:
        """(B, parts, D) retrieval features, each stripe L2-normalised; D = 1280 (g) or 256 (h)."""
        pooled = self.pooled(x)
        return stripe_descriptor(self.reduce(pooled) if reduced else pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Training: per-stripe logits. Eval: (B, 1280 * parts), torchreid's layout."""
        if self.training:
            return self.stripe_logits(x)
        return torchreid_layout(self.pooled(x))


# ----------------------------------------------------------------------------- ResNet-50 PCB


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), named as torchvision / torchreid."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


class _DimReduce(nn.Module):
    """torchreid's `DimReduceLayer` (its parameters live under `.layers`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.layers = _reduction(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ResNetPCB(nn.Module):
    """ResNet PCB with torchreid `pcb_p6`'s parameter names; eval `forward` equals torchreid's.

    torchreid's eval output is the pooled g (B, 2048, 6), each stripe L2-normalised, flattened
    channel-major to (B, 2048 * 6); the 1x1 reduction (`conv5`) and the classifiers are used in
    training only. `width` and `layers` shrink the network (tests); the defaults are ResNet-50.
    """

    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(
        self,
        num_classes: int = 0,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        parts: int = PCB_PARTS,
        reduced_dim: int = REDUCED_DIM,
        last_stride: int = 1,
        input_size: tuple[int, int] = TORCHREID_INPUT_SIZE,
    ) -> None:
        super().__init__()
        self.parts, self.input_size = parts, (int(input_size[0]), int(input_size[1]))
        self.num_classes, self.reduced_dim = num_classes, reduced_dim
        self.conv1 = nn.Conv2d(3, width, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        c_in = width
        for i, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, last_stride), strict=True)):
            planes = width * 2**i
            stage = [Bottleneck(c_in if b == 0 else planes * 4, planes, stride if b == 0 else 1)
                     for b in range(blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c_in = planes * Bottleneck.expansion
        self.feature_dim = c_in
        self.dropout = nn.Dropout(0.5)
        self.conv5 = _DimReduce(c_in, reduced_dim)
        self.classifier = nn.ModuleList(
            [_classifier(reduced_dim, num_classes) for _ in range(parts if num_classes else 0)]
        )

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> the last ResNet map (stride 16 with last_stride=1)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Stripe vectors g, (B, 2048, parts)."""
        return stripe_pool(self.featuremaps(x), self.parts)

    def stripe_features(self, x: torch.Tensor, reduced: bool = False) -> torch.Tensor:
        """(B, parts, D) features, each stripe L2-normalised; D = 2048 (g) or 256 (h)."""
        pooled = self.pooled(x)
        if reduced:
            pooled = self.conv5(pooled.unsqueeze(-1)).squeeze(-1)
        return stripe_descriptor(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Eval: torchreid's feature layout. Training: per-stripe logits."""
        pooled = self.pooled(x)
        if not self.training:
            return torchreid_layout(pooled)
        if not self.classifier:
            raise RuntimeError("this ResNetPCB has no classifiers (loaded without them)")
        h = self.conv5(self.dropout(pooled).unsqueeze(-1)).squeeze(-1)
        return [fc(h[:, :, i]) for i, fc in enumerate(self.classifier)]


# ----------------------------------------------------------------------------- checkpoints


def _safe_load(path: Path) -> Any:
    """torch.load without arbitrary code: tensors and containers, plus numpy scalars (torchreid
    stores rank-1 as one); old Python 2 pickles are retried as latin-1.

    Anything that is not such a file (missing, a folder, text, another pickle) raises
    `ModelLoadError` naming the file.
    """
    if not path.exists():
        raise ModelLoadError(path, "PCB checkpoint not found")
    if not path.is_file():
        raise ModelLoadError(path, "is a folder, not a PCB checkpoint file")
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    safe: list[Any] = [core.multiarray.scalar, np.dtype]
    safe += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64)]
    with torch.serialization.safe_globals(safe):
        try:
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except UnicodeDecodeError:
                return torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")
        except Exception as exc:  # the unpickler fails in many ways on a file of another kind
            # torch's own message suggests weights_only=False (arbitrary code): keep only its gist
            first = str(exc).split(".")[0] if isinstance(exc, pickle.UnpicklingError) else str(exc)
            detail = " ".join(f"{type(exc).__name__}: {first}".split())[:160]
            raise ModelLoadError(path, f"not a PCB checkpoint (a torch weights file): {detail}") \
                from exc


def _torchreid_state(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict of a torchreid checkpoint, without DataParallel's 'module.' prefixes."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        keys = list(checkpoint)[:10] if isinstance(checkpoint, Mapping) else type(checkpoint)
        raise ModelLoadError(path, f"not a PCB checkpoint: no state_dict found ({keys})")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _infer_resnet_pcb(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Architecture arguments of `ResNetPCB` read off the state_dict's keys and shapes."""
    for key in ("conv1.weight", "layer1.0.conv3.weight", "conv5.layers.0.weight"):
        if key not in state:
            raise ModelLoadError(path, "not a torchreid PCB (bottleneck ResNet) checkpoint: "
                                 f"no key {key!r}")
    layers = []
    for i in range(1, 5):
        pattern = re.compile(rf"layer{i}\.(\d+)\.")
        blocks = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        if not blocks:
            raise ModelLoadError(path, f"not a torchreid PCB checkpoint: no key for 'layer{i}'")
        layers.append(max(blocks) + 1)
    classifiers = sorted({int(k.split(".")[1]) for k in state if k.startswith("classifier.")})
    return {
        "layers": tuple(layers),
        "width": int(state["conv1.weight"].shape[0]),
        "reduced_dim": int(state["conv5.layers.0.weight"].shape[0]),
        "parts": len(classifiers) if classifiers else PCB_PARTS,
        "num_classes": int(state["classifier.0.weight"].shape[0]) if classifiers else 0,
    }


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """load_state_dict(strict) whose error names the file and every offending key or shape."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit
        reason = " ".join(str(exc).split())  # one line: the CLI prints one error line
        raise ModelLoadError(path, f"checkpoint does not match the PCB layout: {reason}") from exc
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {result.missing_keys}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {result.unexpected_keys}")
    if problems:
        raise ModelLoadError(path, f"checkpoint does not match the PCB layout: {'; '.join(problems)}")


def _check_input_size(size: Sequence[int], path: Path, parts: int) -> tuple[int, int]:
    """(height, width) of at least one stride-16 cell per stripe."""
    h, w = (int(v) for v in size)
    if h < 16 * parts or w < 16:
        raise ModelLoadError(path, f"input size {h}x{w} is too small for {parts} stripes "
                             f"(at least {16 * parts}x16)")
    return h, w


def load_torchreid_pcb(
    path: str | Path, parts: int | None = None, last_stride: int = 1,
    input_size: Sequence[int] = TORCHREID_INPUT_SIZE,
) -> ResNetPCB:
    """Build a ResNet PCB from a torchreid checkpoint (`pcb_p6` / `pcb_p4`) and load it strictly.

    The architecture (blocks per stage, width, parts, classes) is read from the state_dict;
    classifiers are optional (identities differ between data sets). `parts` is needed only when
    the checkpoint has no classifier (default 6). `input_size` (height, width) is the size the
    model was trained at, which torchreid does not record (its default: 256 x 128). Returns the
    model in eval mode, on the CPU; `ModelLoadError` for a file it cannot use.
    """
    path = Path(path)
    return _resnet_from_checkpoint(_safe_load(path), path, parts, last_stride, input_size)


def _resnet_from_checkpoint(
    checkpoint: Any, path: Path, parts: int | None, last_stride: int, input_size: Sequence[int]
) -> ResNetPCB:
    state = _torchreid_state(checkpoint, path)
    arch = _infer_resnet_pcb(state, path)
    if parts is not None and arch["num_classes"] and parts != arch["parts"]:
        raise ModelLoadError(path, f"has {arch['parts']} stripe classifiers, not {parts}")
    if parts is not None:
        arch["parts"] = parts
    size = _check_input_size(input_size, path, arch["parts"])
    model = ResNetPCB(**arch, last_stride=last_stride, input_size=size)
    _load_strict(model, state, path)
    logger.info("loaded torchreid PCB from %s: layers %s, width %d, %d parts, %d classes, "
                "input %dx%d", path, arch["layers"], arch["width"], arch["parts"],
                arch["num_classes"], *size)
    return model.eval()


def is_tansaku_checkpoint(checkpoint: Any) -> bool:
    """Whether a loaded checkpoint was written by `train_pcb`."""
    return isinstance(checkpoint, Mapping) and checkpoint.get("format") == CHECKPOINT_FORMAT


def _pcb_from_checkpoint(
    checkpoint: Mapping[str, Any], path: Path, input_size: Sequence[int] | None
) -> PCB:
    config = dict(checkpoint.get("config") or {})
    if input_size is not None:
        config["input_size"] = list(input_size)
    try:
        model = PCB(**config, pretrained=False)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(path, f"PCB checkpoint with a bad config {config}: {exc}") from exc
    _check_input_size(model.input_size, path, model.parts)
    _load_strict(model, checkpoint.get("model") or {}, path)
    return model.eval()


def load_pcb(path: str | Path, input_size: Sequence[int] | None = None) -> PCB:
    """A `PCB` trained by `train_pcb` (its checkpoint file), in eval mode on the CPU.

    `input_size` (height, width) overrides the size the checkpoint was trained at.
    """
    path = Path(path)
    checkpoint = _safe_load(path)
    if not is_tansaku_checkpoint(checkpoint):
        raise ModelLoadError(path, f"not a tansaku PCB checkpoint (format {CHECKPOINT_FORMAT})")
    return _pcb_from_checkpoint(checkpoint, path, input_size)


def load_any_pcb(path: str | Path, input_size: Sequence[int] | None = None) -> PCB | ResNetPCB:
    """A PCB checkpoint of either kind: `tansaku train-pcb`'s (its own input size) or torchreid's
    (`pcb_p6`/`pcb_p4` state_dict, 256 x 128 unless `input_size` says otherwise)."""
    path = Path(path)
    checkpoint = _safe_load(path)
    if is_tansaku_checkpoint(checkpoint):
        model: PCB | ResNetPCB = _pcb_from_checkpoint(checkpoint, path, input_size)
        logger.info("loaded tansaku PCB from %s: input %dx%d", path, *model.input_size)
        return model
    return _resnet_from_checkpoint(checkpoint, path, None, 1, input_size or TORCHREID_INPUT_SIZE)


def parse_input_size(text: str) -> tuple[int, int]:
    """'256x128' (height x width) -> (256, 128)."""
    h, sep, w = text.lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit():
        raise ValueError(f"input size {text!r} must be HEIGHTxWIDTH, e.g. 256x128")
    return int(h), int(w)


@functools.lru_cache(maxsize=4)
def _cached_pcb(path: str, mtime_ns: int, input_size: tuple[int, int] | None) -> PCB | ResNetPCB:
    return load_any_pcb(path, input_size)


def pcb_from_argument(argument: str) -> PCB | ResNetPCB:
    """The model of a `pcb:CHECKPOINT[?size=HxW]` method argument, loaded once and kept.

    A bad option or a checkpoint that cannot be used raises `ModelLoadError`."""
    try:
        path_text, options = split_options(argument)
        unknown = set(options) - {"size"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)}; valid: size (HxW)")
        size = parse_input_size(options["size"]) if "size" in options else None
    except ValueError as exc:  # a setting of the method, reported as the model's
        raise ModelLoadError(f"pcb:{argument}", str(exc)) from exc
    path = Path(path_text).expanduser()
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _cached_pcb(str(path), mtime, size)


# ----------------------------------------------------------------------------- extraction


@functools.lru_cache(maxsize=1)
def default_pcb() -> PCB:
    """The off-the-shelf PCB (ImageNet EfficientNet-Lite0), built on first use and kept."""
    return PCB(num_classes=0).eval()


def resize_crop(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """RGB uint8 -> (height, width) = `size`, as torchvision's `Resize` on a PIL image does
    (PIL bilinear, antialiased when shrinking)."""
    return resize_pil_bilinear(image, (int(size[1]), int(size[0])))


def preprocess(
    images: Sequence[np.ndarray],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    offset: int = 0,
) -> torch.Tensor:
    """RGB uint8 images of any size -> (B, 3, H, W) float: resized (`resize_crop`), scaled to
    [0, 1] and normalised, as torchreid's test transform."""
    batch = np.empty((len(images), size[0], size[1], 3), np.uint8)
    for i, image in enumerate(images):
        check_rgb(image, f"image {offset + i}")
        batch[i] = resize_crop(image, size)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def pcb_batch(
    images: Sequence[np.ndarray],
    model: PCB | ResNetPCB | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    reduced: bool = False,
) -> np.ndarray:
    """PCB features of RGB uint8 crops: (N, D * parts) float32, torchreid's eval features.

    Without `model`, the off-the-shelf ImageNet PCB (cached). The model is moved to `device`
    (default CUDA when present) and put in eval mode. Each stripe is L2-normalised and the
    (D, parts) matrix flattened channel-major, so each row has norm sqrt(parts) (see the module
    docstring). `reduced` gives the 256-d h vectors in the same layout instead of g.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = default_pcb() if model is None else model
    dev = default_device(device)
    model.to(dev).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = preprocess(chunk, model.input_size, model.input_mean, model.input_std, start)
            feats = model.stripe_features(x.to(dev), reduced=reduced)  # (B, P, D), normalised
            out.append(feats.transpose(1, 2).flatten(1).float().cpu().numpy())
    if not out:
        dim = model.parts * (model.reduced_dim if reduced else model.feature_dim)
        return np.zeros((0, dim), np.float32)
    return np.concatenate(out)


def pcb_method(images: Sequence[np.ndarray], argument: str | None = None) -> np.ndarray:
    """The person method `pcb` (off-the-shelf ImageNet PCB) and `pcb:CHECKPOINT[?size=HxW]`."""
    model = None if argument is None else pcb_from_argument(argument)
    return pcb_batch(images, model=model)
