"""Training DELG's heads (Cao et al., ECCV 2020) on a labelled folder, with DELG's three losses.

- global: ArcFace (additive angular margin 0.1, learnable scale initialised at sqrt(dim) as DELG)
  on the whitened global descriptor;
- local: cross-entropy of a linear classifier on the attention-pooled local features (DELF: the
  mean over positions of attention x L2-normalised autoencoder reconstruction);
- autoencoder reconstruction: mean squared error to the backbone map, weighted 10 as DELG.

DELG stops the local losses' gradient at the backbone. Here the backbone is frozen altogether (on a
CPU, fine-tuning it is out of reach), so its maps are computed once and cached beside the output,
and training touches only the heads, which makes an epoch take seconds. The whitening FC and the
autoencoder start from PCA fitted on the training images (the untrained model), the attention
from DELF's random initialisation.

Labels (`labelled_images`): if the folder has sub-folders holding images, each sub-folder is a
class (landmark / object); otherwise image names must be integers N and the class is N // 100
(the Corel-1k and Holidays naming).

Training is seeded (each epoch's order comes from (seed, epoch)) and resumable: a checkpoint is
written atomically after every epoch, and a resumed run gives the same weights as an uninterrupted
one.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from indexer.datasets.retrieval import holidays_number
from indexer.extractors.base import default_device
from indexer.extractors.delg_torch import (
    LOCAL_LAYERS,
    DelgEfficientNet,
    DelgHeads,
    ScaleMaps,
    fit_pca_heads,
    save_heads,
)
from indexer.functional import l2_normalize
from indexer.images import ImageReadError, discover_images, read_image
from storage.atomic import atomic_write

log = logging.getLogger(__name__)

RECONSTRUCTION_WEIGHT = 10.0  # DELG's reconstruction_loss_weight
ATTENTION_WEIGHT = 1.0  # DELG's attention_loss_weight
ARCFACE_MARGIN = 0.1


# --------------------------------------------------------------------------- data


def labelled_images(train_dir: str | Path) -> tuple[list[Path], np.ndarray]:
    """Image paths and integer class labels (sub-folder = class, else N.jpg -> N // 100)."""
    root = Path(train_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"training folder not found: {root}")
    paths = sorted(discover_images(root))
    if not paths:
        raise ValueError(f"no images found in {root}")
    if any(p.parent != root for p in paths):
        paths = [p for p in paths if p.parent != root]  # loose top-level files have no class
        names = sorted({p.relative_to(root).parts[0] for p in paths})
        index = {n: k for k, n in enumerate(names)}
        return paths, np.array([index[p.relative_to(root).parts[0]] for p in paths])
    try:
        raw = np.array([holidays_number(p.name) // 100 for p in paths])  # Holidays groups
    except ValueError as exc:
        raise ValueError(f"{root}: no class sub-folders and names not N.jpg ({exc})") from exc
    return paths, np.unique(raw, return_inverse=True)[1]


@dataclass
class BackboneCache:
    """Frozen backbone outputs of the training images, one row per image."""

    pooled: torch.Tensor  # (N, 1280), L2-normalised GeM
    maps: list[torch.Tensor]  # N x (C, h, w) float16
    labels: torch.Tensor  # (N,)


def _fingerprint(paths: list[Path], conf: dict[str, Any]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(repr(sorted(conf.items())).encode())
    return h.hexdigest()


def build_cache(paths: list[Path], labels: np.ndarray, extractor: DelgEfficientNet,
                layer: str) -> BackboneCache:
    """Backbone maps at scale 1 of every readable image (unreadable ones are reported, skipped)."""
    pooled, maps, kept = [], [], []
    for k, path in enumerate(paths):
        try:
            image = read_image(path)
        except ImageReadError as exc:
            log.warning("skipped %s: %s", exc.path, exc.reason)
            continue
        (level,) = extractor.pyramid(image, (1.0,), layers=(layer,))
        pooled.append(level.pooled.cpu())
        maps.append(level.local_maps[layer].half().cpu())
        kept.append(labels[k])
    return BackboneCache(torch.stack(pooled), maps, torch.as_tensor(np.array(kept)))


def load_or_build_cache(paths: list[Path], labels: np.ndarray, conf: dict[str, Any],
                        cache_path: Path) -> BackboneCache:
    """The cache file if it matches these images and settings, else a fresh one (saved)."""
    key = _fingerprint(paths, conf)
    if cache_path.is_file():
        saved = torch.load(cache_path, weights_only=True)
        if saved.get("key") == key:
            return BackboneCache(saved["pooled"], saved["maps"], saved["labels"])
    extractor = DelgEfficientNet({"max_side": conf["max_side"], "local_layer": conf["local_layer"]})
    cache = build_cache(paths, labels, extractor, conf["local_layer"])
    with atomic_write(cache_path) as fh:
        torch.save({"key": key, "pooled": cache.pooled, "maps": cache.maps,
                    "labels": cache.labels}, fh)
    return cache


def epoch_batches(shapes: Sequence[tuple[int, ...]], batch_size: int, seed: int, epoch: int
                  ) -> list[list[int]]:
    """Shuffled batches of same-shaped maps (so they stack), order fixed by (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in torch.randperm(len(shapes), generator=gen).tolist():
        groups.setdefault(shapes[i], []).append(i)
    batches = [idx[s:s + batch_size] for _, idx in sorted(groups.items())
               for s in range(0, len(idx), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[k] for k in order]


# --------------------------------------------------------------------------- losses


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, margin: float,
                   scale: torch.Tensor | float) -> torch.Tensor:
    """ArcFace (Deng et al., CVPR 2019): s * cos(theta + m) for the true class, s * cos(theta) else."""
    theta = torch.acos(cosine.clamp(-1 + 1e-6, 1 - 1e-6))
    target = F.one_hot(labels, cosine.shape[1]).bool()
    return scale * torch.where(target, torch.cos(theta + margin), cosine)


class DelgTrainer(nn.Module):
    """The heads plus what only training needs: ArcFace weights and scale, attention classifier."""

    def __init__(self, heads: DelgHeads, num_classes: int) -> None:
        super().__init__()
        self.heads = heads
        self.arc_weight = nn.Parameter(torch.randn(num_classes, heads.dim) / math.sqrt(heads.dim))
        self.arc_scale = nn.Parameter(torch.tensor(math.sqrt(heads.dim)))  # DELG: learnable
        self.attn_classifier = nn.Linear(LOCAL_LAYERS[heads.local_layer], num_classes)

    def losses(self, pooled: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """DELG's three losses on a batch of cached backbone outputs."""
        g = self.heads.global_descriptor(pooled)
        cosine = g @ l2_normalize(self.arc_weight).T
        global_loss = F.cross_entropy(arcface_logits(cosine, labels, ARCFACE_MARGIN,
                                                     self.arc_scale), labels)
        recon = self.heads.reconstruct(self.heads.reduce(maps))
        recon_loss = F.mse_loss(recon, maps)
        att = self.heads.attention(recon)[:, None]  # DELG: attention on the reconstructed map
        attended = (att * l2_normalize(recon, dim=1)).mean(dim=(2, 3))
        attn_loss = F.cross_entropy(self.attn_classifier(attended), labels)
        return {"global": global_loss, "attention": attn_loss, "reconstruction": recon_loss}


def total_loss(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """DELG's weighted sum."""
    return (parts["global"] + ATTENTION_WEIGHT * parts["attention"]
            + RECONSTRUCTION_WEIGHT * parts["reconstruction"])


# --------------------------------------------------------------------------- training


def initial_heads(cache: BackboneCache, layer: str, dim: int, seed: int) -> DelgHeads:
    """PCA-initialised FC and autoencoder (the untrained model), learned attention."""
    pyramids = ([ScaleMaps(1.0, (1.0, 1.0), {layer: m.float()}, p)]
                for m, p in zip(cache.maps, cache.pooled, strict=True))
    pca = fit_pca_heads(pyramids, layer, dim=dim, seed=seed)
    torch.manual_seed(seed)
    heads = DelgHeads(layer, pca.dim, pca.local_dim, "learned")
    state = {k: v for k, v in pca.state_dict().items() if not k.startswith("attention_net")}
    heads.load_state_dict(state, strict=False)
    return heads


def _run_epoch(trainer: DelgTrainer, opt: torch.optim.Optimizer, cache: BackboneCache,
               batch_size: int, seed: int, epoch: int, device: torch.device) -> dict[str, float]:
    trainer.train()
    sums: dict[str, float] = {}
    batches = epoch_batches([tuple(m.shape) for m in cache.maps], batch_size, seed, epoch)
    for idx in batches:
        maps = torch.stack([cache.maps[i] for i in idx]).to(device).float()
        parts = trainer.losses(cache.pooled[idx].to(device), maps, cache.labels[idx].to(device))
        opt.zero_grad()
        total_loss(parts).backward()
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
    return {k: v / len(cache.maps) for k, v in sums.items()}


def _save_checkpoint(path: Path, epoch: int, trainer: DelgTrainer, opt: torch.optim.Optimizer,
                     key: str) -> None:
    with atomic_write(path) as fh:
        torch.save({"epoch": epoch, "trainer": trainer.state_dict(),
                    "optimizer": opt.state_dict(), "key": key}, fh)


def train_delg(
    train_dir: str | Path,
    out_path: str | Path,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    resume: bool = True,
    dim: int = 512,
    local_layer: str = "expanded",
    max_side: int = 512,
) -> Path:
    """Train DELG heads on a labelled folder; writes the heads file `out_path` and returns it.

    Beside it: `<out>.cache.pt` (frozen backbone maps) and `<out>.ckpt` (last finished epoch).
    Adam is used rather than DELG's SGD: only small heads train here, from a PCA start.
    """
    out_path, dev = Path(out_path), default_device(device)
    paths, labels = labelled_images(train_dir)
    conf = {"max_side": max_side, "local_layer": local_layer}
    cache = load_or_build_cache(paths, labels, conf, out_path.with_suffix(".cache.pt"))
    n_classes = int(cache.labels.max()) + 1
    trainer = DelgTrainer(initial_heads(cache, local_layer, dim, seed), n_classes).to(dev)
    opt = torch.optim.Adam(trainer.parameters(), lr=lr)
    ckpt, key = out_path.with_suffix(".ckpt"), _fingerprint(paths, {**conf, "seed": seed,
                                                                     "dim": dim, "lr": lr,
                                                                     "batch": batch_size})
    start = 0
    if resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location=dev, weights_only=True)
        if saved["key"] == key:
            trainer.load_state_dict(saved["trainer"])
            opt.load_state_dict(saved["optimizer"])
            start = saved["epoch"]
            log.info("resuming %s from epoch %d", ckpt, start)
    for epoch in range(start, epochs):
        means = _run_epoch(trainer, opt, cache, batch_size, seed, epoch, dev)
        log.info("epoch %d/%d %s", epoch + 1, epochs,
                 " ".join(f"{k} {v:.4f}" for k, v in means.items()))
        _save_checkpoint(ckpt, epoch + 1, trainer, opt, key)
    extra = {"trained_on": str(train_dir), "images": len(cache.maps), "classes": n_classes,
             "epochs": epochs, "seed": seed}
    return save_heads(trainer.heads.eval(), out_path, extra)
