"""Indexing rate with Ray Data workers against the plain single-process run, on the same images.

    OMP_NUM_THREADS=1 python scripts/bench_ray.py ../shared/data/holidays_even --images 32 --workers 1 2

The first `--images` images of the folder (symlinked into a temporary folder) are indexed into a
fresh gallery of a temporary data folder: once in this process, then with `--ray local` and each
worker count (a local Ray instance started for each, `TANSAKU_RAY_WORKERS`). Prints one JSON object:
images per second per run (Ray start-up included in the wall time, and reported apart), and
whether every run stored the same descriptors as the plain one (bit for bit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.core import Engine
from engine.settings import Settings
from indexer.images import discover_images


def _same(a, b) -> bool:
    by_path = {p: i for i, p in b.paths.items()}
    for image_id, path in a.paths.items():
        x, y = a.store.get(image_id), b.store.get(by_path[path])
        if x.keys() != y.keys() or any(not np.array_equal(x[k], y[k]) for k in x):
            return False
    return sorted(a.paths.values()) == sorted(b.paths.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import ray

    paths = sorted(discover_images(args.dataset))[: args.images]
    report: dict[str, object] = {"dataset": str(args.dataset), "images": len(paths), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for p in paths:
            (folder / p.name).symlink_to(p.resolve())
        engine = Engine(Settings(home=Path(tmp) / "home", db_url=f"sqlite:///{tmp}/db.sqlite"))
        start = time.perf_counter()
        engine.index_folder(folder, "plain")
        plain_s = time.perf_counter() - start
        report["runs"]["plain"] = {"seconds": round(plain_s, 1),  # type: ignore[index]
                                   "images_per_s": round(len(paths) / plain_s, 3)}
        plain = engine.open_gallery("plain")
        for workers in args.workers:
            os.environ["TANSAKU_RAY_WORKERS"] = str(workers)
            t0 = time.perf_counter()
            ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False)
            startup = time.perf_counter() - t0
            try:
                engine.index_folder(folder, f"ray{workers}", ray="local")
            finally:
                ray.shutdown()
            seconds = time.perf_counter() - t0
            report["runs"][f"ray-{workers}"] = {  # type: ignore[index]
                "seconds": round(seconds, 1), "ray_start_s": round(startup, 1),
                "images_per_s": round(len(paths) / seconds, 3),
                "same_descriptors": _same(plain, engine.open_gallery(f"ray{workers}"))}
            print(workers, report["runs"][f"ray-{workers}"], file=sys.stderr)  # type: ignore[index]
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
