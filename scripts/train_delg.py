"""Train the DELG-style heads on a labelled folder (see indexer/extractors/delg_train.py).

  OMP_NUM_THREADS=1 python scripts/train_delg.py ../shared/data/corel1k /tmp/delg-train/heads-corel.pt
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from indexer.extractors.delg_train import train_delg


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layer", default="expanded")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = train_delg(args.train_dir, args.out, args.epochs, args.batch_size, args.lr, args.seed,
                     resume=not args.no_resume, dim=args.dim, local_layer=args.layer)
    print(f"wrote {out} in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
