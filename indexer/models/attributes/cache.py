"""Trunk maps of person crops, computed once and cached by image path (resumable).

A cache folder per view holds `chunk-NNNNN.npz` files (the paths and float16 trunk maps of up to
512 images, each written atomically). `trunk_maps` reads what is there and computes only the
missing images, in new chunks, so a killed run loses at most one chunk and any image subset or
order reuses earlier work. `view` names the input: "plain", or "aug-SEED" (one random augmented
view per image, see `augment`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from indexer.images import ImageReadError, read_image
from indexer.models.attributes.backbone import INPUT_SIZE, Trunk, crop_tensor, pretrained_parts
from storage.atomic import atomic_write

log = logging.getLogger(__name__)
CHUNK = 512


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera other than PETA's: flip, crop jitter, low resolution, blur, contrast, saturation."""
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    dy, dx = int(h * rng.uniform(0, 0.1)), int(w * rng.uniform(0, 0.1))
    y0, x0 = int(rng.integers(0, dy + 1)), int(rng.integers(0, dx + 1))
    image = np.ascontiguousarray(image[y0 : y0 + h - dy, x0 : x0 + w - dx])
    if rng.random() < 0.5:  # low resolution: down to 20-48 px wide and back
        scale = rng.uniform(20, 48) / image.shape[1]
        if scale < 1:
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            image = cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    out = image.astype(np.float32)
    out = out * rng.uniform(0.7, 1.3) + rng.uniform(-20, 20)  # contrast, brightness
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.7, 1.3)  # saturation (no hue shift: colours are labels)
    return np.clip(out, 0, 255).astype(np.uint8)


def _load_chunks(folder: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for chunk in sorted(folder.glob("chunk-*.npz")):
        with np.load(chunk) as data:
            out.update(zip(data["paths"].tolist(), data["maps"], strict=True))
    return out


def trunk_maps(
    paths: Sequence[Path], folder: Path | None, view: str = "plain", batch: int = 32,
    trunk: Trunk | None = None,
) -> np.ndarray:
    """(N, 320, h, w) float16 trunk maps of `paths` (h, w = INPUT_SIZE / 32); cached in `folder`."""
    keys = [str(Path(p).resolve()) for p in paths]
    cached: dict[str, np.ndarray] = {}
    if folder is not None:
        folder = Path(folder) / f"{view}-{INPUT_SIZE[0]}x{INPUT_SIZE[1]}"
        folder.mkdir(parents=True, exist_ok=True)
        cached = _load_chunks(folder)
    missing = list(dict.fromkeys(k for k in keys if k not in cached))
    if missing:
        trunk = trunk or pretrained_parts()[0]
        seed = int(view.split("-")[1]) if view.startswith("aug-") else None
        existing = len(list(folder.glob("chunk-*.npz"))) if folder is not None else 0
        with tqdm(total=len(missing), desc=f"trunk maps ({view})", unit="img") as bar:
            for n, start in enumerate(range(0, len(missing), CHUNK)):
                names = missing[start : start + CHUNK]
                maps = _compute(names, trunk, seed, batch, bar)
                cached.update(zip(names, maps, strict=True))
                if folder is not None:
                    with atomic_write(folder / f"chunk-{existing + n:05d}.npz") as handle:
                        np.savez(handle, paths=np.array(names), maps=maps)
    return np.stack([cached[k] for k in keys])


def _compute(names: list[str], trunk: Trunk, seed: int | None, batch: int, bar: tqdm) -> np.ndarray:
    maps = []
    for b in range(0, len(names), batch):
        images = [_read(Path(p)) for p in names[b : b + batch]]
        if seed is not None:  # the same augmented view of an image whatever the batch it falls in
            images = [augment(im, np.random.default_rng([seed, _stable(p)]))
                      for im, p in zip(images, names[b : b + batch], strict=True)]
        with torch.inference_mode():
            maps.append(trunk(crop_tensor(images)).half().numpy())
        bar.update(len(images))
    return np.concatenate(maps)


def _stable(text: str) -> int:
    return int.from_bytes(text.encode()[-8:].rjust(8, b"\0"), "little") ^ len(text)


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageReadError as exc:  # keeps rows aligned with the labels; logged by path
        log.warning("unreadable %s (%s): a grey image stands in", exc.path, exc.reason)
        return np.full((INPUT_SIZE[0], INPUT_SIZE[1], 3), 128, np.uint8)
