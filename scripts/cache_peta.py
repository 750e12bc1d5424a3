"""Compute (or finish) the cached trunk maps of a PETA-layout folder:
`python scripts/cache_peta.py PETA_DIR CACHE_DIR [--view plain|aug-SEED] [--per-person N]`.
Run with OMP_NUM_THREADS=1 on a shared machine; a killed run resumes where it stopped."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from indexer.models.attributes.cache import trunk_maps
from indexer.models.attributes.peta import load_peta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peta", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--view", default="plain")
    parser.add_argument("--per-person", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    data = load_peta(args.peta, per_person=args.per_person)
    start = time.monotonic()
    maps = trunk_maps(data.paths, args.cache, args.view)
    print(f"{len(data)} images, maps {maps.shape}, {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
