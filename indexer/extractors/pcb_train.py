"""Fine-tuning PCB on a Market-1501-layout training folder, resumable epoch by epoch.

The recipe is the paper's (Sun et al., ECCV 2018) and its authors' code: SGD with momentum 0.9
(Nesterov) and weight decay 5e-4, batch 64, 60 epochs, learning rate 0.1 for the new layers
(reductions, classifiers) and 0.1x that for the ImageNet backbone, both x0.1 after epoch 40;
random horizontal flips; loss = sum over the 6 stripes of each classifier's cross-entropy.

At the end of every epoch one checkpoint (`pcb_checkpoint.pth` in `out_dir`) is replaced
atomically; it holds the model, optimiser, scheduler, epoch, RNG states, identity map and loss
history, so a stopped run resumes to the same weights as an unbroken one (on the same device and
thread count). `load_pcb(path)` in `pcb.py` reads the model back for `pcb_batch`; the person
method `pcb:CHECKPOINT` (`tansaku index --profile person --method pcb:CKPT`) uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from indexer.extractors.base import default_device
from indexer.extractors.pcb import (
    CHECKPOINT_FORMAT,
    PCB,
    PCB_INPUT_SIZE,
    _safe_load,
    part_loss,
    resize_crop,
)
from indexer.images import ImageReadError, read_image
from indexer.naming import parse_market_name
from storage.atomic import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_NAME", "market_training_set", "train_pcb", "train_step"]

CHECKPOINT_NAME = "pcb_checkpoint.pth"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
def market_training_set(train_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Training images and person ids of a Market-1501 folder, junk (-1) and distractors (0) out.

    `train_dir` is the data set root (holding `bounding_box_train/`) or that folder itself.
    """
    folder = train_dir / "bounding_box_train"
    folder = folder if folder.is_dir() else train_dir
    if not folder.is_dir():
        raise FileNotFoundError(f"training folder not found: {train_dir}")
    paths, pids = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        pid, _ = parse_market_name(path.name, strict=False)  # DukeMTMC-reID names too
        if pid > 0:
            paths.append(path)
            pids.append(pid)
    if len(set(pids)) < 2:
        raise ValueError(f"{folder}: need images of at least 2 identities, found {len(set(pids))}")
    return paths, np.asarray(pids, np.int64)


def _read_crops(paths: list[Path], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize every crop once: (N, H, W, 3) RGB uint8 and the indices kept.

    An unreadable file is logged with its path and left out; it does not end the run.
    """
    crops = np.empty((len(paths), size[0], size[1], 3), np.uint8)
    kept: list[int] = []
    for i, path in enumerate(tqdm(paths, desc="reading crops", unit="img", leave=False)):
        try:
            rgb = read_image(path, max(size))  # decoded as indexing decodes it
        except ImageReadError as exc:
            logger.warning("skipping unreadable image %s: %s", path, exc.reason)
            continue
        crops[len(kept)] = resize_crop(rgb, size)  # as extraction
        kept.append(i)
    return crops[: len(kept)], np.asarray(kept, np.int64)


def _to_input(
    crops: np.ndarray, flips: torch.Tensor, model: PCB, device: torch.device
) -> torch.Tensor:
    """uint8 crops (B, H, W, 3) -> normalised (B, 3, H, W), rows with `flips` mirrored."""
    x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    x = torch.where(flips.to(device).view(-1, 1, 1, 1), x.flip(3), x)
    mean = x.new_tensor(model.input_mean).view(1, 3, 1, 1)
    std = x.new_tensor(model.input_std).view(1, 3, 1, 1)
    return (x - mean) / std


def build_optimizer(
    model: PCB, lr: float, backbone_mult: float = 0.1, momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> torch.optim.SGD:
    """SGD with the paper's split: new layers at `lr`, the pretrained backbone at 0.1 * lr."""
    groups = [
        {"params": list(model.backbone.parameters()), "lr": lr * backbone_mult},
        {"params": model.new_parameters(), "lr": lr},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=True)


def train_step(
    model: PCB, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor
) -> float:
    """One SGD step on a batch; returns the summed part loss before the step."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = part_loss(model.stripe_logits(x), labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _train_epoch(
    model: PCB, optimizer: torch.optim.Optimizer, crops: np.ndarray, labels: torch.Tensor,
    batch_size: int, generator: torch.Generator, device: torch.device, desc: str,
) -> float:
    """One pass in a shuffled order (last partial batch dropped, as the authors'); mean loss."""
    order = torch.randperm(len(crops), generator=generator)
    flips = torch.rand(len(crops), generator=generator) < 0.5
    losses = []
    for start in tqdm(range(0, len(crops) - batch_size + 1, batch_size), desc=desc, leave=False):
        idx = order[start : start + batch_size]
        x = _to_input(crops[idx.numpy()], flips[idx], model, device)
        losses.append(train_step(model, optimizer, x, labels[idx].to(device)))
    return float(np.mean(losses))


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save through `storage.atomic` (a temporary file, fsynced, renamed over `path`)."""
    with atomic_write(path) as handle:
        torch.save(payload, handle)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(
    state: Mapping[str, Any], generator: torch.Generator, device: torch.device
) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_resumable(ckpt: Mapping[str, Any], identities: dict[int, int],
                     recipe: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint trained on other identities or with another recipe."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a tansaku PCB checkpoint; remove it or pass resume=False")
    if dict(ckpt["identities"]) != identities:
        raise ValueError(f"{path}: trained on other identities than the training folder holds")
    for key, value in recipe.items():
        if ckpt["recipe"].get(key) != value:
            raise ValueError(f"{path}: recipe differs in {key!r} "
                             f"({ckpt['recipe'].get(key)!r} there, {value!r} now)")


def train_pcb(
    train_dir: Path,
    out_dir: Path,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    resume: bool = True,
    *,
    step_size: int = 40,
    input_size: tuple[int, int] = PCB_INPUT_SIZE,
    pretrained: bool = True,
) -> Path:
    """Fine-tune an ImageNet PCB on a Market-1501 training folder; returns the checkpoint path.

    With `resume` and a checkpoint in `out_dir`, training continues after its last epoch (the
    recipe and identities must match); `epochs` is the total, not the number still to run.
    """
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 2, lr > 0; got {epochs}, "
                         f"{batch_size}, {lr}")
    train_dir, out_dir = Path(train_dir), Path(out_dir)
    dev = default_device(device)
    paths, pids = market_training_set(train_dir)
    crops, kept = _read_crops(paths, tuple(input_size))  # type: ignore[arg-type]
    identities = {int(p): i for i, p in enumerate(np.unique(pids[kept]))}
    labels = torch.as_tensor([identities[int(p)] for p in pids[kept]], dtype=torch.int64)
    if len(crops) < 2:
        raise ValueError(f"{train_dir}: fewer than 2 readable training images")
    batch_size = min(batch_size, len(crops))  # BatchNorm needs 2+; a tiny set is one batch
    recipe = {"lr": lr, "batch_size": batch_size, "seed": seed, "step_size": step_size,
              "input_size": list(input_size), "pretrained": pretrained}
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    forked = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), logging_redirect_tqdm():
        torch.manual_seed(seed)
        model = PCB(num_classes=len(identities), input_size=input_size, pretrained=pretrained)
        model.to(dev)
        optimizer = build_optimizer(model, lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma=0.1)
        generator = torch.Generator().manual_seed(seed)
        start, history = 0, []
        if resume and ckpt_path.is_file():
            ckpt = _safe_load(ckpt_path)
            _check_resumable(ckpt, identities, recipe, ckpt_path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"], generator, dev)
            start, history = int(ckpt["epoch"]), list(ckpt["history"])
            logger.info("resuming PCB training from %s after epoch %d", ckpt_path, start)
        logger.info("PCB training: %d images of %d identities, epochs %d..%d on %s",
                    len(crops), len(identities), start + 1, epochs, dev)
        for epoch in range(start, epochs):
            desc = f"PCB epoch {epoch + 1}/{epochs}"
            history.append(_train_epoch(model, optimizer, crops, labels, batch_size, generator,
                                        dev, desc))
            scheduler.step()
            logger.info("%s: mean loss %.4f", desc, history[-1])
            _save_atomic({
                "format": CHECKPOINT_FORMAT, "config": model.config(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1, "rng": _rng_state(generator, dev), "identities": identities,
                "recipe": recipe, "history": history,
            }, ckpt_path)
    return ckpt_path

