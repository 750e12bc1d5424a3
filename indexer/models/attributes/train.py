"""Training an attribute head on cached trunk maps, seeded and resumable epoch by epoch.

Adam, batch 64, learning rate 1e-3 for the new layers and 1e-4 for the backbone's head
convolution (ImageNet-initialised), cosine decay; the epoch with the best validation mA is kept.
With `augment`, each image is seen each epoch through its plain or its augmented view (cached
too, see `cache.augment`), and the map is mirrored half the time. One checkpoint beside the
output (`OUT.ckpt`: model, optimiser, epoch, RNG states, best state, history) is replaced
atomically after every epoch; re-running resumes it. The GPU is used when present.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from indexer.models.attributes.heads import CnnRnnHead, weighted_bce
from indexer.models.attributes.model import AttributeModel, build_head
from storage.atomic import atomic_write

log = logging.getLogger(__name__)


@dataclass
class TrainConf:
    """Training settings. `tansaku train-attributes` uses these defaults (the head convolution
    fine-tuned: on PETA's protocols it kept the frozen head's mA and raised F1 by about 1, README);
    scripts/eval_attributes.py trains the frozen head unless given --finetune."""

    head: str = "plain"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = False
    finetune: bool = True  # train the backbone's head convolution (False: frozen, features cached)


def label_order(labels: np.ndarray) -> torch.Tensor:
    """Labels by decreasing frequency in the training data (CNN-RNN's prediction order)."""
    return torch.as_tensor(np.argsort(-labels.sum(0), kind="stable"))


def _mean_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    t, p = truth.astype(bool), pred.astype(bool)
    tpr = (t & p).sum(0) / np.maximum(t.sum(0), 1)
    tnr = (~t & ~p).sum(0) / np.maximum((~t).sum(0), 1)
    return float(np.mean((tpr + tnr) / 2))


def _batch(maps: list[np.ndarray], rows: np.ndarray, augment: bool, gen: torch.Generator) -> torch.Tensor:
    if augment and len(maps) > 1:
        views = torch.randint(len(maps), (len(rows),), generator=gen).numpy()
        x = torch.from_numpy(np.stack([maps[v][r] for v, r in zip(views, rows, strict=True)]))
    else:
        x = torch.from_numpy(maps[0][rows])
    x = x.float()
    if augment:
        flip = torch.rand(len(rows), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
    return x


@torch.no_grad()
def _frozen(conv: torch.nn.Module, maps: np.ndarray, batch: int = 256) -> np.ndarray:
    conv.eval()
    device = next(conv.parameters()).device
    return np.concatenate([
        conv(torch.as_tensor(maps[s : s + batch], dtype=torch.float32, device=device)).half().cpu().numpy()
        for s in range(0, len(maps), batch)])


def _loss(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    if isinstance(head, CnnRnnHead):
        return head.loss(x, y, ratio)
    return weighted_bce(head(x), y, ratio)


def train_attribute_head(
    train_maps: list[np.ndarray], train_labels: np.ndarray, val_maps: np.ndarray,
    val_labels: np.ndarray, names: tuple[str, ...], conf: TrainConf, checkpoint: Path | None = None,
    eval_columns: np.ndarray | None = None,
) -> AttributeModel:
    """Train `conf.head` on trunk maps (`train_maps`: the plain view, then augmented views)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(conf.seed)
    ratio = torch.as_tensor(train_labels.mean(0), dtype=torch.float32, device=device)
    head = build_head(conf.head, len(names), label_order(train_labels)).to(device)
    conv_params = list(cast(torch.nn.Module, head.head_conv).parameters())
    conv_ids = {id(p) for p in conv_params}
    new_params = [p for p in head.parameters() if id(p) not in conv_ids]
    opt = torch.optim.Adam([{"params": new_params, "lr": conf.lr},
                            {"params": conv_params, "lr": conf.backbone_lr}],
                           weight_decay=conf.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, conf.epochs)
    gen = torch.Generator().manual_seed(conf.seed)
    head_conv = cast(torch.nn.Module, head.head_conv)
    if not conf.finetune:  # frozen: run the head convolution once, train the rest on its output
        train_maps = [_frozen(head_conv, m) for m in train_maps]
        val_maps = _frozen(head_conv, val_maps)
        head.head_conv = torch.nn.Identity()
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "best_state": None, "history": []}
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        gen.set_state(saved["gen"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        log.info("resuming %s from epoch %d", checkpoint, state["epoch"])
    columns = eval_columns if eval_columns is not None else np.arange(len(names))
    targets = torch.as_tensor(train_labels, dtype=torch.float32)
    for epoch in range(state["epoch"], conf.epochs):
        start = time.monotonic()
        head.train()
        order = torch.randperm(len(train_labels), generator=gen).numpy()
        total = 0.0
        for b in tqdm(range(0, len(order), conf.batch_size), desc=f"epoch {epoch + 1}/{conf.epochs}",
                      unit="batch", leave=False):
            rows = order[b : b + conf.batch_size]
            if len(rows) < 2:
                continue  # batch norm needs two
            x = _batch(train_maps, rows, conf.augment, gen).to(device)
            y = targets[rows].to(device)
            loss = _loss(head, x, y, ratio)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        sched.step()
        model = AttributeModel(conf.head, names, head)
        _, pred = model.from_maps(val_maps)
        val_ma = _mean_accuracy(val_labels[:, columns], pred[:, columns])
        record = {"epoch": epoch + 1, "loss": total / len(order), "val_mA": round(100 * val_ma, 2),
                  "seconds": round(time.monotonic() - start, 1)}
        state["history"].append(record)
        log.info("epoch %d: loss %.4f, validation mA %.2f (%.0f s)", epoch + 1, record["loss"],
                 record["val_mA"], record["seconds"])
        if val_ma > state["best"]:
            state["best"], state["best_state"] = val_ma, copy.deepcopy(head.state_dict())
        state["epoch"] = epoch + 1
        if checkpoint is not None:
            with atomic_write(checkpoint) as handle:
                torch.save({"head": head.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "gen": gen.get_state(),
                            "torch_rng": torch.get_rng_state(), "state": state}, handle)
    head.load_state_dict(state["best_state"])
    head.head_conv = head_conv
    head.to("cpu").eval()
    meta = {"conf": conf.__dict__, "history": state["history"], "best_val_mA": round(100 * state["best"], 2),
            "train_images": int(len(train_labels)), "positive_ratio": train_labels.mean(0).tolist()}
    return AttributeModel(conf.head, names, head, meta)
