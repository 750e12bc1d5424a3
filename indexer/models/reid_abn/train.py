"""Training the ABN re-ID network (`tansaku train-reid`): seeded, resumable, CPU-sized.

The budget on a shared 2-core CPU (about 2 hours for the whole recipe) decides the design:

- The ImageNet layers of EfficientNet-Lite0 up to stage 4 are frozen, and their map (stride 16,
  80 channels, 16 x 8) of every training crop and of its mirror image is computed once and cached
  (float16, about 120 MB for the 2,860 PETA crops). Flips therefore are exact (both orientations
  are cached), and random erasing is applied to the cached map (a rectangle of it set to zero,
  each cell covering a 16 x 16 pixel block, before the stages that spread it), since erasing
  pixels would need the frozen layers again each step.
- Stages 5 to 7, the head, the attention branch and the new layers are trained (the default
  recipe, `deep`), on P x K batches (P identities, K crops each) with label-smoothed
  cross-entropy on the classifier, ABN's attention-branch cross-entropy, and batch-hard triplet
  loss on the embedding. `full` (the first recipe, faster and less accurate) also freezes stages
  5 and 6 and caches their maps instead (the stride-16 map the attention branch reads and the
  stride-32 map the perception branch reads); `background-swap` is `full` with backgrounds
  swapped between persons.
- Fine-tuning on a benchmark's few hundred training images (`finetune`) starts from either cache:
  from the stage-4 map stages 5 and 6 train too.
- A second, cheap phase trains the temporal attention pooling on frozen frame embeddings of
  tracklets sampled from the training identities, each frame drawn as it is or from a copy
  shrunk to 32-72 pixels high (its maps cached once), with the re-ID classifier as its loss: the
  pooling learns how much a frame's resolution should count.

The checkpoint (`--out`) is replaced atomically every `save_every` iterations and holds the model,
optimiser, RNG states, iteration and loss history, so a stopped run resumes where it was; the loss
log (`<out>.log.tsv`) is rewritten with it. When training ends the optimiser is dropped.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from indexer.models.reid_abn.data import TrainingSet, peta_training_set
from indexer.models.reid_abn.functional import (
    batch_hard_triplet,
    random_erase_,
    swap_background_,
)
from indexer.models.reid_abn.model import (
    CHECKPOINT_FORMAT,
    INPUT_SIZE,
    AbnReid,
    TemporalAttention,
    preprocess,
    safe_load,
)
from storage.atomic import atomic_write, atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = ["RECIPES", "cache_low_maps", "cache_low_res", "cache_mid_maps", "embed_maps", "finetune",
           "forward_maps", "train_reid"]

Maps = tuple[np.ndarray, ...]  # cached maps of the same crops: (m4, m5), or (m3,)

RECIPES: dict[str, dict[str, Any]] = {
    "full": {"iterations": 500, "p": 16, "k": 4, "lr": 3.5e-4, "pretrained_lr_mult": 0.5,
             "weight_decay": 5e-4, "warmup": 20, "label_smoothing": 0.1, "margin": 0.3,
             "erase_p": 0.5, "background_swap": 0.0, "cross_track": False, "max_per_track": 8,
             "input_size": list(INPUT_SIZE),
             "temporal_iterations": 600, "temporal_batch": 32, "temporal_frames": 8,
             "save_every": 25, "pretrained": True},
    "short": {"iterations": 3, "p": 2, "k": 2, "lr": 3.5e-4, "pretrained_lr_mult": 0.5,
              "weight_decay": 5e-4, "warmup": 1, "label_smoothing": 0.1, "margin": 0.3,
              "erase_p": 0.5, "background_swap": 0.5, "cross_track": True, "max_per_track": 8,
              "input_size": [64, 32],
              "temporal_iterations": 3, "temporal_batch": 4, "temporal_frames": 3,
              "save_every": 2, "pretrained": True},
}
# The full recipe with each crop's sides (mostly background) swapped with another person's half
# the time, a person's crops spread over cameras, and gentler fine-tuning of the ImageNet layers:
# the attention moves onto the person (README), at a lower rank-1 before any fine-tuning.
RECIPES["background-swap"] = {**RECIPES["full"], "background_swap": 0.5, "cross_track": True,
                              "pretrained_lr_mult": 0.1}
# The default: the full recipe training ImageNet stages 5 and 6 too, from cached stage-4 maps
# (several times the time per step). More of the network learns re-ID from PETA's 465
# identities: VIPeR rank-1 18.5 against 11.0 for `full` as trained (README).
RECIPES["deep"] = {**RECIPES["full"], "train_stem": True}


# ----------------------------------------------------------------------------- cached stem maps


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


@torch.no_grad()
def _stem_maps(stem: Callable[[torch.Tensor], torch.Tensor], data: TrainingSet, size: tuple[int, int],
               cache: Path, device: torch.device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, C, h, w) float16 maps `stem` gives of each crop and its mirror, and the kept rows."""
    if cache.is_file():
        with np.load(cache) as z:
            return z["maps"], z["kept"]
    maps: list[np.ndarray] = []
    kept: list[int] = []
    for start in tqdm(range(0, len(data), batch_size), desc="caching stem maps", unit="batch"):
        images, rows = [], []
        for i in range(start, min(start + batch_size, len(data))):
            rgb = _read_rgb(data.paths[i])
            if rgb is None:
                logger.warning("skipping unreadable image %s", data.paths[i])
                continue
            images.append(rgb)
            rows.append(i)
        if not images:
            continue
        x = preprocess(images, size).to(device)
        both = torch.stack([stem(x), stem(x.flip(3))], dim=1)
        maps.append(both.half().cpu().numpy())
        kept.extend(rows)
    out = np.concatenate(maps), np.asarray(kept, np.int64)
    _save_npz(cache, maps=out[0], kept=out[1])
    return out


def _cache_key(model: AbnReid, data: TrainingSet) -> str:
    key = hashlib.sha1(repr((model.input_size, [str(p) for p in data.paths])).encode())
    return key.hexdigest()[:16]


def _stages_5_6_digest(model: AbnReid) -> str:
    """A digest of stages 5 and 6's weights: ImageNet's, or trained (`--recipe deep`)."""
    digest = hashlib.sha1()
    for module in (model.stem[model._cut3:], model.stem5):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


@torch.no_grad()
def cache_low_maps(model: AbnReid, data: TrainingSet, cache_dir: Path, device: torch.device,
                   batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet stage-4 map m3 of each crop and its mirror, float16 (N, 2, 80, 16, 8), and the
    kept row indices: what `finetune` starts from when it also trains stages 5 and 6. Cached
    like `cache_mid_maps`."""
    model.eval()
    path = Path(cache_dir) / f"stem3-{_cache_key(model, data)}.npz"
    return _stem_maps(model.low, data, model.input_size, path, device, batch_size)


@torch.no_grad()
def cache_mid_maps(model: AbnReid, data: TrainingSet, cache_dir: Path, device: torch.device,
                   batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frozen maps of each crop and its mirror, float16: m4 (N, 2, 112, 16, 8),
    m5 (N, 2, 192, 8, 4), and the kept row indices.

    Cached in `cache_dir` under a key of the file list, the input size and stages 5 and 6's
    weights; unreadable files are logged by path and left out.
    """
    key = f"{_cache_key(model, data)}-{_stages_5_6_digest(model)}"
    stem4 = Path(cache_dir) / f"stem-{key}.npz"
    stem5 = Path(cache_dir) / f"stem5-{key}.npz"
    m4, kept = _stem_maps(lambda x: model.mid(x)[0], data, model.input_size, stem4, device,
                          batch_size)
    if stem5.is_file():
        with np.load(stem5) as z:
            logger.info("stem maps from cache %s", cache_dir)
            return m4, z["maps"], kept
    model.eval()
    m5 = []
    for start in tqdm(range(0, len(m4), batch_size), desc="caching stage-6 maps", unit="batch"):
        x = torch.from_numpy(m4[start:start + batch_size].astype(np.float32)).to(device)
        x = x.flatten(0, 1)
        for block in model.stem5:
            x = block(x)
        m5.append(x.view(-1, 2, *x.shape[1:]).half().cpu().numpy())
    maps5 = np.concatenate(m5)
    _save_npz(stem5, maps=maps5)
    return m4, maps5, kept


# ----------------------------------------------------------------------------- batches


def pk_batch(labels: np.ndarray, p: int, k: int, generator: torch.Generator,
             tracks: np.ndarray | None = None) -> np.ndarray:
    """Row indices of P identities x K crops each (drawn with replacement when fewer than K).

    With `tracks`, a person's K crops are spread over their tracklets (cameras) first, so the
    triplet loss sees positives from other cameras wherever a person has them.
    """
    ids = np.unique(labels)
    chosen = ids[torch.randperm(len(ids), generator=generator)[:p].numpy()]
    rows = []
    for pid in chosen:
        pool = np.flatnonzero(labels == pid)
        pool = pool[torch.randperm(len(pool), generator=generator).numpy()]
        if tracks is not None:
            seen: dict[int, int] = {}
            turn = np.empty(len(pool), np.int64)
            for j, r in enumerate(pool):  # j-th crop of its tracklet -> drawn in round j
                turn[j] = seen[int(tracks[r])] = seen.get(int(tracks[r]), -1) + 1
            pool = pool[np.argsort(turn, kind="stable")]
        if len(pool) >= k:
            pick = pool[:k]
        else:
            pick = pool[torch.randint(0, len(pool), (k,), generator=generator).numpy()]
        rows.extend(pick.tolist())
    return np.asarray(rows, np.int64)


def _batch_maps(maps: Maps, rows: np.ndarray, erase_p: float, generator: torch.Generator,
                k: int = 1, swap_p: float = 0.0) -> tuple[torch.Tensor, ...]:
    """The cached maps of `rows` (a P x K batch), each mirrored at random, with background swap
    (the sides of a crop's maps from the crop K rows on: another person) and random erasing, the
    same region in each of the crop's maps."""
    flips = (torch.rand(len(rows), generator=generator) < 0.5).long().numpy()
    xs = tuple(torch.from_numpy(m[rows, flips].astype(np.float32)) for m in maps)
    also = xs[1] if len(xs) > 1 else None
    if swap_p > 0 and len(rows) > k:
        swap = torch.rand(len(rows), generator=generator) < swap_p
        donors = (torch.arange(len(rows)) + k) % len(rows)
        swap_background_(xs[0], donors, swap, also=also)
    random_erase_(xs[0], generator, p=erase_p, also=also)
    return xs


def forward_maps(model: AbnReid, xs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The network's outputs from cached maps: (m4, m5), or (m3,) through stages 5 and 6."""
    if len(xs) == 1:
        return model.forward_mid(*model.mid_from_low(xs[0]))
    return model.forward_mid(*xs)


def reid_loss(out: Mapping[str, torch.Tensor], labels: torch.Tensor, recipe: Mapping[str, Any]
              ) -> dict[str, torch.Tensor]:
    """Loss terms: identity CE (label smoothing), batch-hard triplet, attention-branch CE."""
    ls = float(recipe["label_smoothing"])
    terms = {"id": F.cross_entropy(out["logits"], labels, label_smoothing=ls),
             "triplet": batch_hard_triplet(out["feat"], labels, float(recipe["margin"]))}
    if "att_logits" in out:
        terms["att"] = F.cross_entropy(out["att_logits"], labels, label_smoothing=ls)
    terms["total"] = sum(terms.values())  # type: ignore[assignment]
    return terms


def _lr_factor(it: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if it < warmup:
        return (it + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / max(1, total - warmup)))


def _optimizer(model: AbnReid, rec: Mapping[str, Any]) -> torch.optim.Adam:
    """Adam over the trainable ImageNet layers (at `pretrained_lr_mult` of the rate) and the new
    layers."""
    lr = float(rec["lr"])
    return torch.optim.Adam([
        {"params": model.pretrained_parameters(), "lr": lr * float(rec["pretrained_lr_mult"])},
        {"params": model.new_parameters(), "lr": lr}], weight_decay=float(rec["weight_decay"]))


def _step(model: AbnReid, optimizer: torch.optim.Optimizer, base_lrs: list[float], it: int,
          maps: Maps, labels: np.ndarray, tracks: np.ndarray,
          rec: Mapping[str, Any], generator: torch.Generator, dev: torch.device,
          ) -> dict[str, torch.Tensor]:
    """One training step `it` of the recipe on a P x K batch of cached maps; the loss terms."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * _lr_factor(it, int(rec["iterations"]), int(rec["warmup"]))
    rows = pk_batch(labels, int(rec["p"]), int(rec["k"]), generator,
                    tracks if rec.get("cross_track") else None)
    xs = _batch_maps(maps, rows, float(rec["erase_p"]), generator, int(rec["k"]),
                     float(rec.get("background_swap", 0.0)))
    model.train()
    terms = reid_loss(forward_maps(model, tuple(x.to(dev) for x in xs)),
                      torch.as_tensor(labels[rows]).to(dev), rec)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return terms


def finetune(model: AbnReid, maps: Maps, labels: np.ndarray,
             tracks: np.ndarray, recipe: Mapping[str, Any], seed: int = 0,
             device: str | torch.device = "cpu") -> list[dict[str, float]]:
    """Fine-tune a trained network in place on other identities (e.g. a VIPeR trial's training
    half, where the protocol allows it), from their cached maps: fresh identity layers, then the
    training recipe's loss, batches and schedule. `maps` is (m4, m5) from `cache_mid_maps`
    (stage 7 and the head train, as in `train_reid`) or (m3,) from `cache_low_maps` (stages 5
    and 6 train too, at the ImageNet layers' rate). Returns the loss history. Minutes on a CPU,
    so there is no checkpoint."""
    rec = dict(recipe)
    dev = torch.device(device)
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the fresh layers' initial weights
        model.new_identities(int(labels.max()) + 1).to(dev)
    if len(maps) == 1:
        model.unfreeze_stem()
    optimizer = _optimizer(model, rec)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    generator = torch.Generator().manual_seed(seed)
    history = []
    for it in range(int(rec["iterations"])):
        terms = _step(model, optimizer, base_lrs, it, maps, labels, tracks, rec, generator, dev)
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history


# ----------------------------------------------------------------------------- temporal phase


LOW_RES = (32, 72)  # heights in pixels of the low-resolution copies the temporal phase sees


@torch.no_grad()
def cache_low_res(model: AbnReid, data: TrainingSet, kept: np.ndarray, cache_dir: Path,
                  device: torch.device, seed: int = 0, batch_size: int = 32, low: bool = False,
                  ) -> tuple[np.ndarray, Maps, np.ndarray]:
    """Each kept crop's height, the frozen maps (float16) of a low-resolution copy of it (shrunk
    to a height drawn from LOW_RES, as far-away people in surveillance video are, then resized to
    the input like any crop), and that height: (heights, (m4, m5), low heights); with `low`, the
    stage-4 map (m3,) instead, for a network whose stages 5 and 6 were trained."""
    key = hashlib.sha1(repr((model.input_size, LOW_RES, seed,
                             [str(data.paths[i]) for i in kept])).encode()).hexdigest()[:16]
    stem = "lowres3" if low else f"lowres-{_stages_5_6_digest(model)}"
    path = Path(cache_dir) / f"{stem}-{key}.npz"
    names = ("m3",) if low else ("m4", "m5")
    if path.is_file():
        with np.load(path) as z:
            return z["heights"], tuple(z[n] for n in names), z["low"]
    rng = np.random.default_rng(seed)
    heights, low_heights = [], []
    maps: list[list[np.ndarray]] = [[] for _ in names]
    for start in tqdm(range(0, len(kept), batch_size), desc="caching low-resolution maps",
                      unit="batch"):
        images = []
        for i in kept[start:start + batch_size]:
            rgb = _read_rgb(data.paths[int(i)])
            if rgb is None:
                raise OSError(f"cannot read {data.paths[int(i)]} (it was readable before)")
            h, w = rgb.shape[:2]
            target = int(rng.integers(LOW_RES[0], LOW_RES[1] + 1))
            small = cv2.resize(rgb, (max(1, round(w * target / h)), target),
                               interpolation=cv2.INTER_AREA)
            heights.append(h)
            low_heights.append(min(h, target))
            images.append(small if target < h else rgb)
        x = preprocess(images, model.input_size).to(device)
        for store, m in zip(maps, (model.low(x),) if low else model.mid(x), strict=True):
            store.append(m.half().cpu().numpy())
    out = (np.asarray(heights, np.float32), tuple(np.concatenate(m) for m in maps),
           np.asarray(low_heights, np.float32))
    _save_npz(path, heights=out[0], low=out[2], **dict(zip(names, out[1], strict=True)))
    return out


@torch.no_grad()
def embed_maps(model: AbnReid, maps: Maps, device: torch.device,
               generator: torch.Generator | None = None, batch: int = 64) -> np.ndarray:
    """BN-neck embeddings of cached maps, (m4, m5) or (m3,) (one orientation: (N, C, h, w)
    each); with a generator, after heavy erasing (occlusion)."""
    model.eval()
    out = []
    for i in range(0, len(maps[0]), batch):
        xs = tuple(torch.from_numpy(m[i:i + batch].astype(np.float32)) for m in maps)
        if generator is not None:
            random_erase_(xs[0], generator, p=1.0, area=(0.3, 0.6),
                          also=xs[1] if len(xs) > 1 else None)
        out.append(forward_maps(model, tuple(x.to(device) for x in xs))["emb"].cpu())
    return torch.cat(out).numpy()


def train_temporal(frames: np.ndarray, heights: np.ndarray, labels: np.ndarray,
                   tracks: np.ndarray, classifier: torch.nn.Module, recipe: Mapping[str, Any],
                   generator: torch.Generator) -> tuple[TemporalAttention, list[float]]:
    """Frame weights learned on sampled training tracklets through the frozen re-ID classifier.

    `frames` (V, N, D) holds V versions of each of the N crops' embeddings (as they are, and from
    a low-resolution copy) and `heights` (V, N) their crop heights; each sampled frame is one
    version drawn at random, so a tracklet mixes sharp and blurred frames, and the pooling that
    weights the sharp ones classifies the tracklet best.
    """
    temporal = TemporalAttention()
    opt = torch.optim.Adam(temporal.parameters(), lr=1e-2)
    classifier = classifier.cpu().eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    track_ids = np.unique(tracks)
    members = {int(t): np.flatnonzero(tracks == t) for t in track_ids}
    n_frames, batch = int(recipe["temporal_frames"]), int(recipe["temporal_batch"])
    losses = []
    for _ in tqdm(range(int(recipe["temporal_iterations"])), desc="temporal attention",
                  leave=False):
        picks = track_ids[torch.randint(0, len(track_ids), (batch,), generator=generator).numpy()]
        rows = np.stack([members[int(t)][torch.randint(0, len(members[int(t)]), (n_frames,),
                                                       generator=generator).numpy()]
                         for t in picks])
        version = torch.randint(0, len(frames), rows.shape, generator=generator).numpy()
        logits = classifier(temporal(torch.from_numpy(frames[version, rows]),
                                     torch.from_numpy(heights[version, rows])))
        loss = F.cross_entropy(logits, torch.as_tensor(labels[rows[:, 0]]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    for p in classifier.parameters():
        p.requires_grad_(True)
    return temporal.eval(), losses


# ----------------------------------------------------------------------------- checkpoints


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    cols = ["iteration", "total", "id", "triplet", "att", "lr", "seconds"]
    lines = ["\t".join(cols)]
    lines += ["\t".join(f"{h.get(c, float('nan')):.5g}" for c in cols) for h in history]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _check_resumable(ckpt: Mapping[str, Any], identities: tuple[str, ...],
                     recipe: Mapping[str, Any], attention: bool, path: Path) -> None:
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a tansaku ABN re-ID checkpoint; remove it or pass "
                         "resume=False")
    if tuple(ckpt["identities"]) != identities:
        raise ValueError(f"{path}: trained on other identities than {len(identities)} found now")
    if bool(ckpt["config"]["attention"]) != attention:
        raise ValueError(f"{path}: attention branch {ckpt['config']['attention']}, asked {attention}")
    for key, value in recipe.items():
        if key != "save_every" and ckpt["recipe"].get(key) != value:
            raise ValueError(f"{path}: recipe differs in {key!r} "
                             f"({ckpt['recipe'].get(key)!r} there, {value!r} now)")


def train_reid(
    peta_dir: str | Path, out: str | Path, *, attention: bool = True,
    recipe: str | Mapping[str, Any] = "deep", seed: int = 0,
    device: str | torch.device | None = None, resume: bool = True,
    cache_dir: str | Path | None = None,
) -> Path:
    """Train the re-ID network on PETA identities and write the checkpoint `out`; returns it."""
    rec = dict(RECIPES[recipe] if isinstance(recipe, str) else recipe)
    out = Path(out)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = peta_training_set(peta_dir, max_per_track=int(rec["max_per_track"]))
    log_path = out.with_name(out.name + ".log.tsv")
    cache = Path(cache_dir) if cache_dir is not None else out.parent / ".reid-cache"
    forked = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), logging_redirect_tqdm():
        torch.manual_seed(seed)
        model = AbnReid(len(data.identities), attention=attention,
                        pretrained=bool(rec["pretrained"]),
                        input_size=tuple(rec["input_size"])).to(dev)
        ckpt = None
        if resume and out.is_file():
            ckpt = safe_load(out)
            _check_resumable(ckpt, data.identities, rec, attention, out)
            if ckpt.get("complete"):
                logger.info("%s is already trained", out)
                return out
            model.load_state_dict(ckpt["model"])
        deep = bool(rec.get("train_stem", False))
        maps: Maps
        if deep:
            m3, kept = cache_low_maps(model, data, cache, dev)
            maps = (m3,)
            model.unfreeze_stem()
        else:
            m4, m5, kept = cache_mid_maps(model, data, cache, dev)
            maps = (m4, m5)
        labels, tracks = data.labels[kept], data.tracks[kept]
        optimizer = _optimizer(model, rec)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        generator = torch.Generator().manual_seed(seed)
        start, history, elapsed = 0, [], 0.0
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            generator.set_state(ckpt["rng"]["data"])
            start, history = int(ckpt["iteration"]), list(ckpt["history"])
            elapsed = float(ckpt.get("seconds", 0.0))
            logger.info("resuming re-ID training from %s after iteration %d", out, start)
        total = int(rec["iterations"])
        logger.info("re-ID training (%s): %d crops, %d identities, iterations %d..%d on %s",
                    "ABN" if attention else "baseline", len(labels), len(data.identities),
                    start + 1, total, dev)

        def save(it: int, complete: bool, temporal: TemporalAttention | None = None,
                 temporal_losses: list[float] | None = None) -> None:
            payload = {"format": CHECKPOINT_FORMAT, "config": model.config(),
                       "model": {k: v.cpu() for k, v in model.state_dict().items()},
                       "iteration": it, "identities": list(data.identities), "recipe": rec,
                       "history": history, "seconds": elapsed, "complete": complete,
                       "rng": {"torch": torch.get_rng_state(), "data": generator.get_state()}}
            if complete:
                payload["temporal"] = temporal.state_dict() if temporal is not None else None
                payload["temporal_history"] = temporal_losses or []
            else:
                payload["optimizer"] = optimizer.state_dict()
            _save_atomic(payload, out)
            _write_log(log_path, history)

        bar = tqdm(range(start, total), desc="re-ID training", initial=start, total=total)
        for it in bar:
            t0 = time.perf_counter()
            terms = _step(model, optimizer, base_lrs, it, maps, labels, tracks, rec, generator, dev)
            elapsed += time.perf_counter() - t0
            history.append({"iteration": it + 1, "lr": optimizer.param_groups[1]["lr"],
                            "seconds": elapsed, **{k: float(v.detach()) for k, v in terms.items()}})
            bar.set_postfix(loss=f"{history[-1]['total']:.3f}")
            if (it + 1) % int(rec["save_every"]) == 0 and it + 1 < total:
                save(it + 1, complete=False)
        t0 = time.perf_counter()
        heights, low_maps, low_heights = cache_low_res(model, data, kept, cache, dev, seed,
                                                       low=deep)
        versions = np.stack([embed_maps(model, tuple(m[:, 0] for m in maps), dev),
                             embed_maps(model, low_maps, dev)])
        temporal, temporal_losses = train_temporal(
            versions, np.stack([heights, low_heights]), labels, tracks, model.classifier, rec,
            generator)
        model.to(dev)
        elapsed += time.perf_counter() - t0
        save(total, complete=True, temporal=temporal, temporal_losses=temporal_losses)
        logger.info("re-ID training done in %.0f s (training steps, temporal phase); wrote %s",
                    elapsed, out)
    return out
