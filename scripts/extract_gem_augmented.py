"""Raw GeM descriptors of real images and of augmented copies of them, cached for bench_scale.py.

    OMP_NUM_THREADS=1 python scripts/extract_gem_augmented.py ../shared/data/holidays_even \
        ../shared/data/corel1k ... --cache /tmp/gem_aug --seconds 2400

Every image under the folders (`--exclude` substrings left out; at most `--max-per-folder` of each,
evenly spaced in name order; then shuffled, seeded) is described
by the default landmark profile's global extractor exactly as a gallery describes it
(`indexer.profiles.resolve_profile("landmark")` -> `Describer`, `read_image(path, max_side)`): the
raw 1280-d GeM vector, before any gallery whitening. Pass 0 is the images as they are; each further
pass p describes one augmented copy of every image: a random crop (40 to 100% of the area, aspect
3/4 to 4/3), a horizontal flip half the time, and colour jitter (brightness, contrast and
saturation x0.7..1.3, hue +-9 degrees), drawn from a generator seeded by (seed, p, image number).

Results go to `cache/pass{P}_{chunk}.npy` (float32, one row per image of the chunk, NaN where an
image could not be read), with `cache/images.txt` naming the rows; a run skips the chunks already
written, so it resumes after a kill, and stops starting new chunks after `--seconds`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from indexer.images import discover_images

CHUNK = 250
log = logging.getLogger("extract_gem_augmented")


def list_images(folders: list[Path], exclude: list[str], most: int | None = None) -> list[Path]:
    """Image files under `folders` (sorted; without paths containing an `exclude` substring; at
    most `most` of each folder, evenly spaced)."""
    out = []
    for folder in folders:
        files = list(discover_images(folder))  # as `tansaku index` finds them
        files = [p for p in files if not any(e in str(p) for e in exclude)]
        if most and len(files) > most:
            files = [files[i] for i in np.linspace(0, len(files) - 1, most).round().astype(int)]
        out += files
    return out


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop, maybe flipped, colour-jittered copy of an RGB uint8 image."""
    h, w = image.shape[:2]
    area = rng.uniform(0.4, 1.0) * h * w
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, max(8, round(np.sqrt(area / aspect)))))
    cw = int(min(w, max(8, round(np.sqrt(area * aspect)))))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y: y + ch, x: x + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out.astype(np.float32)
    out *= rng.uniform(0.7, 1.3)  # brightness
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.7, 1.3) + mean  # contrast
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= rng.uniform(0.7, 1.3)  # saturation
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-4.5, 4.5)) % 180  # hue (OpenCV: 0..180)
    hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--max-per-folder", type=int, default=None)
    parser.add_argument("--passes", type=int, default=100, help="augmented passes at most")
    parser.add_argument("--seconds", type=float, default=2400.0, help="start no chunk after this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    import torch

    from indexer.describe import Describer
    from indexer.images import ImageReadError, read_image
    from indexer.profiles import resolve_profile

    torch.set_num_threads(1)
    config = resolve_profile("landmark")
    config["local"] = None  # only the global vector is needed
    describer = Describer(config)
    extractor = describer.global_extractor
    assert extractor is not None
    args.cache.mkdir(parents=True, exist_ok=True)
    listing = args.cache / "images.txt"
    paths = list_images(args.folders, args.exclude, args.max_per_folder)
    # a seeded shuffle: the chunks of a pass cut short by --seconds are a random sample of images
    paths = [paths[i] for i in np.random.default_rng(args.seed).permutation(len(paths))]
    names = [str(p) for p in paths]
    if listing.exists() and listing.read_text().split("\n") != names:
        raise SystemExit(f"{listing} lists other images: use another --cache")
    listing.write_text("\n".join(names))
    log.info("%d images", len(paths))
    start = time.perf_counter()
    for p in range(args.passes + 1):
        for c0 in range(0, len(paths), CHUNK):
            out = args.cache / f"pass{p:02d}_{c0 // CHUNK:05d}.npy"
            if out.exists():
                continue
            if time.perf_counter() - start > args.seconds:
                log.info("time is up before pass %d chunk %d", p, c0 // CHUNK)
                return
            rows = np.full((min(CHUNK, len(paths) - c0), extractor.dim), np.nan, np.float32)
            for i, path in enumerate(paths[c0: c0 + CHUNK]):
                try:
                    image = read_image(path, describer.max_side)
                except ImageReadError as exc:
                    log.warning("skipped: %s", exc)
                    continue
                if p:
                    image = augment(image, np.random.default_rng([args.seed, p, c0 + i]))
                rows[i] = extractor(image)
            np.save(out.with_suffix(".tmp.npy"), rows)
            out.with_suffix(".tmp.npy").rename(out)
            log.info("pass %d chunk %d: %d rows, %.0f s", p, c0 // CHUNK, len(rows),
                     time.perf_counter() - start)


if __name__ == "__main__":
    main()
