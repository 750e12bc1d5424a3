"""Train the person / not-person classifier of `--detect`:

    OMP_NUM_THREADS=1 python scripts/train_person_classifier.py ../shared/data/peta \
        ../shared/data/corel1k runs/person-classifier.npz [--cache DIR]

Negatives come from Corel-1k's classes without people (see indexer/models/person_detector/train.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from indexer.models.person_detector.train import COREL_WITHOUT_PEOPLE, train_person_classifier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peta", type=Path)
    parser.add_argument("corel", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    photos = [args.corel / f"{n}.jpg" for n in COREL_WITHOUT_PEOPLE]
    start = time.monotonic()
    result = train_person_classifier(args.peta, photos, args.out, cache=args.cache)
    result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
