"""Detection time per scene photo, by stage: `OMP_NUM_THREADS=1 python scripts/bench_detect.py
../shared/data/scenes_dev [--classifier clf.npz] [--images 20]` (medians, seconds, JSON)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from indexer.images import discover_images, read_image
from indexer.models.person_detector.classifier import load_person_classifier
from indexer.models.person_detector.detect import DetectConf, PersonDetector, crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenes", type=Path)
    parser.add_argument("--classifier", type=Path, default=None)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = list(discover_images(args.scenes / "images"))[: args.images]
    images = [read_image(p) for p in paths]
    out: dict[str, float | int] = {"images": len(images)}
    for name in ("hog", "haar"):
        detector = PersonDetector(DetectConf(detector=name))
        times, boxes = [], []
        for im in images:
            start = time.perf_counter()
            found, _ = detector(im)
            times.append(time.perf_counter() - start)
            boxes.append(found)
        out[f"{name}_s_per_image"] = round(float(np.median(times)), 3)
        if args.classifier and name == "hog":
            clf = load_person_classifier(args.classifier)
            clf([crop(images[0], boxes[0][0])] if len(boxes[0]) else [images[0][:64, :32]])  # warm-up
            ctimes = []
            for im, b in zip(images, boxes, strict=True):
                start = time.perf_counter()
                if len(b):
                    clf([crop(im, x) for x in b])
                ctimes.append(time.perf_counter() - start)
            out["classifier_s_per_image"] = round(float(np.median(ctimes)), 3)
            out["hog_candidates_per_image"] = round(float(np.mean([len(b) for b in boxes])), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
