"""Time a full VIPeR evaluation: load, describe (feature extraction), learn + rank over the trials.

    python scripts/bench_viper.py [--method lomo] [--metric xqda] [--trials 10] [--root PATH]

Prints one JSON object: the `tansaku eval reid` fields plus per-stage seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from engine.evaluation.reid_protocols import METRICS, evaluate_viper, load_viper  # noqa: E402
from indexer.extractors.person import describe_persons  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "viper"


def read_rgb(paths: tuple[Path, ...]) -> list[np.ndarray]:
    """RGB uint8 images; an unreadable file is an error here (a benchmark needs every image)."""
    images = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read image {path}")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


def main() -> None:
    """Parse arguments, run the stages, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lomo", help="person descriptor, e.g. lomo, gog+lomo")
    parser.add_argument("--metric", default="xqda", choices=METRICS)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gog-normalize", action="store_true",
                        help="GOG's per-colour-space mean removal + L2, fitted per trial "
                             "(method gog only)")
    args = parser.parse_args()
    normalizer = None
    if args.gog_normalize:
        if args.method != "gog":
            parser.error("--gog-normalize needs --method gog")
        from indexer.extractors.gog import GOGNormalizer

        normalizer = GOGNormalizer

    seconds = {}
    t = time.perf_counter()
    person_set = load_viper(args.root)
    images = read_rgb(person_set.paths)
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    features = describe_persons(args.method, images, batch_size=args.batch_size)
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    result = evaluate_viper(features, person_set, args.metric, args.trials, args.seed,
                            method=f"{args.method}+{args.metric}", normalizer=normalizer)
    seconds["evaluate"] = time.perf_counter() - t
    seconds["evaluate_per_trial"] = seconds["evaluate"] / args.trials

    result["dim"] = int(features.shape[1])
    result["images"] = len(images)
    result["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
