"""A DELG-style model (Cao et al., ECCV 2020) in torch on EfficientNet-Lite0 (ImageNet).

One backbone pass per pyramid scale gives both descriptors:

- global: GeM (p=3) of the last map, L2-normalised, then DELG's whitening FC layer (with bias);
  each scale's vector is L2-normalised, the scales are summed and the sum normalised again;
- local: on a stride-16 map (DELG's conv4 analogue), an attention score per position (DELF's
  2-layer 1x1-conv head with softplus, or the L2 norm of the feature before any training) and
  DELG's 1x1-conv autoencoder whose bottleneck (128-d) is the descriptor. Keypoints are the
  receptive-field centres; the features of all local scales compete, and the top `max_features`
  by attention are kept (DELG keeps 1000). Descriptors are L2-normalised.

Which stride-16 map: stage 5's output has only 112 channels, fewer than the 128-d descriptor, so the
default is the 672-channel expanded activation inside the last stage-5 block, after its depthwise
conv (`local_layer="expanded"`); `"stride16"` (112 channels) is kept for comparison.

The heads (whitening FC, attention, autoencoder) live in one file (`save_heads` / `load_heads`).
Untrained heads come from `init_heads_from_images`: PCA-whitening of the global vectors, PCA of the
local features in place of the autoencoder, and feature-norm attention. `indexer.extractors.delg_train`
trains them with DELG's losses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from indexer.backbones.efficientnet_lite import (
    HEAD_CHANNELS,
    EfficientNetLite0,
    efficientnet_lite0,
)
from indexer.errors import ModelLoadError
from indexer.extractors.base import JointExtractor, default_device
from indexer.extractors.gem import resize_longer_side, to_tensor
from indexer.features import LocalFeatures
from indexer.functional import gem, l2_normalize
from indexer.imageops import check_rgb
from indexer.projections import pca_whitening
from storage.atomic import atomic_write

log = logging.getLogger(__name__)

LOCAL_LAYERS: dict[str, int] = {"expanded": 672, "stride16": 112}  # name -> channels
LOCAL_STRIDE = 16
ATTENTION_HIDDEN = 512  # DELF's attention conv1 width
HEADS_FORMAT = 1


# --------------------------------------------------------------------------- pure geometry


def receptive_field_centres(height: int, width: int, stride: int = LOCAL_STRIDE) -> np.ndarray:
    """Centres (x, y) of a (height, width) map's receptive fields in network-input pixels.

    Every conv of EfficientNet has an odd kernel k and padding k // 2, so output position j of a
    stride-s conv is centred on input position s * j; composed, map cell (i, j) is centred on
    pixel (stride * j, stride * i). (DELF's boxes give the same for ResNet: 16 j - 145 + 290 / 2.)
    Rows are in row-major order of the map.
    """
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride


def to_image_pixels(points: np.ndarray, factor_xy: tuple[float, float]) -> np.ndarray:
    """Pixel coordinates in a resized image -> in the original (pixel centres at integers)."""
    factor = np.asarray(factor_xy, dtype=np.float32)
    return ((points + 0.5) / factor - 0.5).astype(np.float32)


def interior_cells(height: int, width: int, border: int) -> np.ndarray:
    """Row-major mask of a map's cells at least `border` cells from every edge (all if too small)."""
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    inner = (ys >= border) & (ys < height - border) & (xs >= border) & (xs < width - border)
    return inner.ravel() if inner.any() else np.ones(height * width, dtype=bool)


def top_by_score(scores: np.ndarray, k: int, threshold: float | None) -> np.ndarray:
    """Indices of the k highest scores at or above `threshold`, best first (ties: first wins)."""
    keep = np.arange(len(scores)) if threshold is None else np.flatnonzero(scores >= threshold)
    return keep[np.argsort(-scores[keep], kind="stable")][: max(k, 0)]


# --------------------------------------------------------------------------- backbone


def backbone_maps(model: EfficientNetLite0, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Lite0's maps: `stride16` (112 ch), `expanded` (672 ch, stride 16) and `head` (1280 ch);
    see `EfficientNetLite0.forward_stages`."""
    return model.forward_stages(x)


@dataclass
class ScaleMaps:
    """What the frozen backbone gives at one pyramid scale (the heads do the rest)."""

    scale: float
    factor_xy: tuple[float, float]  # network-input pixels per original pixel, x and y
    local_maps: dict[str, torch.Tensor]  # local layer name -> (C, h, w) map, stride 16
    pooled: torch.Tensor  # (1280,) GeM of the head map, L2-normalised


# --------------------------------------------------------------------------- heads


class DelgHeads(nn.Module):
    """DELG's trainable parts: whitening FC, attention, and the local autoencoder."""

    def __init__(
        self,
        local_layer: str = "expanded",
        dim: int = HEAD_CHANNELS,
        local_dim: int = 128,
        attention: str = "norm",
    ) -> None:
        super().__init__()
        if local_layer not in LOCAL_LAYERS:
            raise ValueError(f"unknown local_layer {local_layer!r}; valid: {sorted(LOCAL_LAYERS)}")
        if attention not in ("norm", "learned"):
            raise ValueError(f"attention must be 'norm' or 'learned', got {attention!r}")
        channels = LOCAL_LAYERS[local_layer]
        self.local_layer, self.dim, self.local_dim = local_layer, dim, local_dim
        self.attention_mode = attention
        self.whiten = nn.Linear(HEAD_CHANNELS, dim)
        self.attention_net = nn.Sequential(  # DELF: conv 512, BN, ReLU, conv 1; softplus after
            nn.Conv2d(channels, ATTENTION_HIDDEN, 1),
            nn.BatchNorm2d(ATTENTION_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Conv2d(ATTENTION_HIDDEN, 1, 1),
        )
        self.encoder = nn.Conv2d(channels, local_dim, 1)
        self.decoder = nn.Conv2d(local_dim, channels, 1)

    def meta(self) -> dict[str, Any]:
        """The settings that rebuild this module's shape."""
        return {"local_layer": self.local_layer, "dim": self.dim, "local_dim": self.local_dim,
                "attention": self.attention_mode}

    def global_descriptor(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, 1280) L2-normalised GeM vectors -> (B, dim) L2-normalised descriptors."""
        return l2_normalize(self.whiten(pooled))

    def attention(self, local_map: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, h, w) non-negative scores."""
        if self.attention_mode == "norm":
            return local_map.norm(dim=1)
        return F.softplus(self.attention_net(local_map))[:, 0]

    def reduce(self, local_map: torch.Tensor) -> torch.Tensor:
        """The autoencoder's bottleneck: (B, C, h, w) -> (B, local_dim, h, w)."""
        return self.encoder(local_map)

    def reconstruct(self, reduced: torch.Tensor) -> torch.Tensor:
        """The autoencoder's output (ReLU, as DELG's expansion conv)."""
        return F.relu(self.decoder(reduced))


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    assert conv.bias is not None  # the heads' convs are built with biases
    return conv.bias


def heads_from_pca(
    global_pca: pca_whitening.PCAWhitening | None,
    local_pca: pca_whitening.PCAWhitening,
    local_layer: str,
) -> DelgHeads:
    """Untrained heads: FC = PCA-whitening (identity if None), autoencoder = PCA, norm attention."""
    dim = HEAD_CHANNELS if global_pca is None else global_pca.projection.shape[0]
    heads = DelgHeads(local_layer, dim, local_pca.projection.shape[0], "norm")
    with torch.no_grad():
        if global_pca is None:
            heads.whiten.weight.copy_(torch.eye(HEAD_CHANNELS))
            heads.whiten.bias.zero_()
        else:
            w, b = global_pca.as_affine()
            heads.whiten.weight.copy_(torch.from_numpy(w))
            heads.whiten.bias.copy_(torch.from_numpy(b))
        w, b = local_pca.as_affine()  # encoder y = V^T (x - m); decoder x = V y + m
        heads.encoder.weight.copy_(torch.from_numpy(w)[:, :, None, None])
        _bias(heads.encoder).copy_(torch.from_numpy(b))
        heads.decoder.weight.copy_(torch.from_numpy(w.T.copy())[:, :, None, None])
        _bias(heads.decoder).copy_(torch.from_numpy(local_pca.mean.astype(np.float32)))
    return heads.eval()


def data_free_heads(local_layer: str = "expanded", local_dim: int = 128, seed: int = 0) -> DelgHeads:
    """Heads with no data at all: identity FC, norm attention, random orthonormal reduction.

    A random orthonormal projection keeps inner products approximately (Johnson-Lindenstrauss);
    it is only a stopgap until `init_heads_from_images` fits PCA on real images.
    """
    channels = LOCAL_LAYERS[local_layer]
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((channels, min(local_dim, channels))))
    local = pca_whitening.PCAWhitening(np.zeros(channels), q.T, np.ones(q.shape[1]))
    return heads_from_pca(None, local, local_layer)


def save_heads(heads: DelgHeads, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the heads (shape settings and weights) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in heads.state_dict().items()}
    payload = {"format": HEADS_FORMAT, "meta": heads.meta(), "state": state, "extra": extra or {}}
    with atomic_write(path) as fh:
        torch.save(payload, fh)
    return path


def load_heads(path: str | Path) -> DelgHeads:
    """Heads saved by `save_heads` (strict: every weight must match the recorded shapes).

    A missing file, a file of another kind or weights that do not fit raise `ModelLoadError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "DELG heads file not found" if not path.exists()
                             else "is a folder, not a DELG heads file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler fails in many ways on a file of another kind
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise ModelLoadError(path, f"not a DELG heads file (written by tansaku train-delg): "
                             f"{detail}") from exc
    if not isinstance(payload, dict) or payload.get("format") != HEADS_FORMAT:
        raise ModelLoadError(path, f"not a DELG heads file (format {HEADS_FORMAT}, written by "
                             "tansaku train-delg)")
    try:
        heads = DelgHeads(**payload["meta"])
        heads.load_state_dict(payload["state"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # bad settings or shapes
        reason = " ".join(str(exc).split())
        raise ModelLoadError(path, f"DELG heads that do not fit the model: {reason}") from exc
    return heads.eval()


# --------------------------------------------------------------------------- extractor


class DelgEfficientNet(JointExtractor):
    """DELG-style global + local features from EfficientNet-Lite0 and a heads file."""

    default_conf: ClassVar[dict[str, Any]] = {
        "heads": None,  # path of a heads file; None = data-free heads (see `data_free_heads`)
        "local_layer": "expanded",  # only used when `heads` is None (a heads file records its own)
        "max_side": 1024,  # DELG's bound on the larger side (never upscales)
        "global_scales": (0.7071, 1.0, 1.4142),
        "local_scales": (0.7071, 1.0, 1.4142),
        "max_features": 1000,
        "score_threshold": None,  # attention floor; None keeps the top `max_features` whatever
        # cells this close to the map's edge are dropped: zero padding makes their features
        # strong (half the top-norm cells of untrained attention) and alike in every image, so
        # they match at the same place across unrelated images and fake homography inliers
        "border_cells": 1,
        "p": 3.0,
        "weights": None,  # backbone state_dict; None = the packaged ImageNet weights
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__(conf)
        if not self.conf["global_scales"] or not self.conf["local_scales"]:
            raise ValueError("global_scales and local_scales must each name at least one scale")
        self.device = default_device()
        self.model = efficientnet_lite0(weights=self.conf["weights"]).to(self.device)
        if self.conf["heads"] is None:
            log.debug("DELG heads not given: using data-free heads; fit them with "
                      "init_heads_from_images or train them with delg_train")
            heads = data_free_heads(self.conf["local_layer"])
        else:
            heads = load_heads(self.conf["heads"])
        self.heads = heads.to(self.device).eval()
        self.dim, self.local_dim = heads.dim, heads.local_dim

    @property
    def max_side(self) -> int | None:
        return int(self.conf["max_side"])

    @torch.inference_mode()
    def pyramid(
        self, image: np.ndarray, scales: Iterable[float] | None = None,
        layers: Iterable[str] | None = None,
    ) -> list[ScaleMaps]:
        """The frozen backbone's maps at each scale (default: all global and local scales).

        `layers` names the local maps to keep (default: the one the heads use).
        """
        check_rgb(image)
        if scales is None:
            scales = sorted({*self.conf["global_scales"], *self.conf["local_scales"]})
        h0, w0 = image.shape[:2]
        resized = resize_longer_side(image, self.conf["max_side"])
        out = []
        for scale in scales:
            x = to_tensor(resized, scale, self.device)
            maps = backbone_maps(self.model, x)
            pooled = l2_normalize(gem(maps["head"], self.conf["p"]))[0]
            factor = (x.shape[3] / w0, x.shape[2] / h0)
            keep = {name: maps[name][0] for name in (layers or (self.heads.local_layer,))}
            out.append(ScaleMaps(scale, factor, keep, pooled))
        return out

    @torch.inference_mode()
    def describe_pyramid(self, pyramid: list[ScaleMaps]) -> tuple[np.ndarray, LocalFeatures]:
        """Global vector and local features from backbone maps (heads only: cheap)."""
        glob = self.global_from_pyramid(pyramid)
        return glob, self.local_from_pyramid(pyramid)

    def global_from_pyramid(self, pyramid: list[ScaleMaps]) -> np.ndarray:
        """DELG's multi-scale global descriptor: per-scale L2, sum, L2."""
        scales = set(self.conf["global_scales"])
        pooled = torch.stack([s.pooled for s in pyramid if s.scale in scales]).to(self.device)
        total = self.heads.global_descriptor(pooled).sum(dim=0)
        return l2_normalize(total).cpu().numpy().astype(np.float32)

    def local_from_pyramid(self, pyramid: list[ScaleMaps]) -> LocalFeatures:
        """Top local features by attention over all local scales, keypoints in original pixels."""
        keypoints, descriptors, scores = [], [], []
        for s in pyramid:
            if s.scale not in set(self.conf["local_scales"]):
                continue
            fmap = s.local_maps[self.heads.local_layer][None].to(self.device).float()
            att = self.heads.attention(fmap)[0].flatten()
            desc = self.heads.reduce(fmap)[0].flatten(1).T
            centres = receptive_field_centres(fmap.shape[2], fmap.shape[3])
            inner = interior_cells(fmap.shape[2], fmap.shape[3], self.conf["border_cells"])
            keypoints.append(to_image_pixels(centres, s.factor_xy)[inner])
            descriptors.append(l2_normalize(desc).cpu().numpy()[inner])
            scores.append(att.cpu().numpy()[inner])
        if not keypoints:
            return LocalFeatures.empty(self.local_dim)
        all_scores = np.concatenate(scores).astype(np.float32)
        keep = top_by_score(all_scores, self.conf["max_features"], self.conf["score_threshold"])
        return LocalFeatures(
            np.concatenate(keypoints)[keep],
            np.concatenate(descriptors)[keep].astype(np.float32),
            all_scores[keep],
        )

    def extract(self, image: np.ndarray) -> tuple[np.ndarray, LocalFeatures]:
        """(L2-normalised global vector (dim,), local features) of one RGB uint8 image."""
        return self.describe_pyramid(self.pyramid(image))


# --------------------------------------------------------------------------- untrained heads


def fit_pca_heads(
    pyramids: Iterable[list[ScaleMaps]],
    local_layer: str = "expanded",
    dim: int | None = 256,
    local_dim: int = 128,
    shrinkage: float = 1.0,
    samples_per_image: int = 300,
    seed: int = 0,
    whiten: bool = True,
    max_local: int = 100_000,
) -> DelgHeads:
    """Untrained heads from backbone pyramids (every scale in them is used).

    FC layer = PCA-whitening of the per-scale global vectors (`dim` components, at most what the
    data supports; eigenvalues shrunk by `shrinkage` x their mean so that the noise directions of
    a small gallery are not blown up), or the identity with `whiten=False` (too few images to learn
    it from); autoencoder = PCA of local features sampled uniformly from every scale (raw
    features, as the autoencoder sees them); attention = feature norm.
    """
    rng = np.random.default_rng(seed)
    pooled, local = [], []
    for pyramid in pyramids:
        for s in pyramid:
            pooled.append(s.pooled.float().cpu().numpy())
            feats = s.local_maps[local_layer].flatten(1).T.float().cpu().numpy()
            take = rng.choice(len(feats), min(samples_per_image, len(feats)), replace=False)
            local.append(feats[np.sort(take)].astype(np.float16))  # half the memory while gathering
    if len(pooled) < 2:
        raise ValueError("fitting DELG heads needs at least 2 pyramid levels")
    g = np.stack(pooled)
    dim = min(dim or g.shape[1], len(g) - 1, g.shape[1])
    global_pca = pca_whitening.fit(g, dim, whiten=True, shrinkage=shrinkage) if whiten else None
    local_dim = min(local_dim, LOCAL_LAYERS[local_layer])  # stage 5's 112 channels < 128
    samples = np.concatenate(local)
    del local
    if len(samples) > max_local:  # PCA of 672-d features needs far fewer; this bounds the memory
        samples = samples[np.sort(rng.choice(len(samples), max_local, replace=False))]
    local_pca = pca_whitening.fit(samples.astype(np.float32), local_dim, whiten=False)
    log.info("fitted DELG heads on %d global and %d local vectors", len(g), len(samples))
    return heads_from_pca(global_pca, local_pca, local_layer)


def init_heads_from_images(
    images: Iterable[np.ndarray],
    out_path: str | Path,
    conf: dict[str, Any] | None = None,
    **fit_kwargs: Any,
) -> Path:
    """Fit untrained heads on images (e.g. the gallery) and save them to `out_path`.

    `conf` is the extractor's (scales, local_layer, ...); `fit_kwargs` go to `fit_pca_heads`.
    """
    extractor = DelgEfficientNet({**(conf or {}), "heads": None})
    layer = extractor.heads.local_layer
    heads = fit_pca_heads((extractor.pyramid(im) for im in images), layer, **fit_kwargs)
    return save_heads(heads, out_path, {"init": "pca"})
