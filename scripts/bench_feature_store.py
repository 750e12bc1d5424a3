"""Local-feature stores compared: the packed segments (`PackedFeatureStore`), LMDB, and one `.npz`
file per image (`FeatureStore`, before packing): write rate, bytes on disk, and the time to load one
re-ranking shortlist (100 random images) and decode it into `LocalFeatures`, as re-ranking does
(`matcher.search.load_local_features`, two decoding threads). `load_screened_100_*`: what the
default re-ranking decodes of the same shortlist (`matcher.rerank`'s screening): each record read,
its `--strongest` features decoded (`StoredLocal.strongest`), and `--full` of the records decoded
whole, in two threads.

    OMP_NUM_THREADS=1 python scripts/bench_feature_store.py --images 5000 --json

Records are synthetic but shaped as the default gallery stores them: a 1280-d float32 global
vector, K float32 keypoints, K RootSIFT codes (`--codes uint4`, 4-bit, two to a byte: the
default; or `uint8`), K float16 scores; `--keypoints` 860 by default, the default's most. The
page cache is warm for every store alike (what a serving process sees).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from indexer.describe import Description, StoredLocal, to_arrays
from indexer.features import LocalFeatures
from matcher.rerank import RerankConf
from matcher.search import load_local_features
from storage.feature_store import FeatureStore, PackedFeatureStore, decode_arrays, encode_arrays


def load_as_screening(reader: Any, shortlist: list[int], strongest: int, full: int, workers: int) -> None:
    """Read a shortlist and decode what screening decodes: every record's strongest features, and
    `full` records whole (interleaved slices, one per thread, as the matching threads take them)."""
    from concurrent.futures import ThreadPoolExecutor

    records = [StoredLocal(a) for a in reader.get_many(shortlist)]

    def decode(part: list[StoredLocal]) -> None:
        for r in part:
            r.strongest(strongest)
        for r in part[: max(1, full // workers)]:
            r.full()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, [records[k::workers] for k in range(workers)]))


class LmdbStore:
    """The same records in LMDB (one key per image id, one write transaction per batch)."""

    def __init__(self, root: Path) -> None:
        import lmdb

        self.env = lmdb.open(str(root), map_size=1 << 40, subdir=True, max_readers=64)

    def put_many(self, items: list[tuple[int, dict[str, np.ndarray]]]) -> None:
        with self.env.begin(write=True) as txn:
            for image_id, arrays in items:
                txn.put(int(image_id).to_bytes(8, "big"), encode_arrays(arrays))

    def get_many(self, ids: list[int]) -> list[dict[str, np.ndarray]]:
        with self.env.begin(buffers=True) as txn:
            payloads = [txn.get(int(i).to_bytes(8, "big")) for i in ids]
            return [decode_arrays(bytes(p)) for p in payloads if p is not None]

    def nbytes(self) -> int:
        return int(self.env.info()["last_pgno"] * self.env.stat()["psize"])


def record(rng: np.random.Generator, k: int, codes: str) -> dict[str, np.ndarray]:
    descriptors = np.sqrt(rng.dirichlet(np.full(128, 0.3), size=k)).astype(np.float32)  # RootSIFT-like
    scores = np.sort(rng.random(k).astype(np.float32))[::-1]  # strongest first, as rootsift keeps them
    local = LocalFeatures((rng.random((k, 2)) * 1000).astype(np.float32), descriptors, scores.copy())
    return to_arrays(Description(rng.normal(size=1280).astype(np.float32), local), codes)


def real_gallery(args: argparse.Namespace) -> None:
    """Loading times on a real gallery's store: reading 100 random records, decoding them whole,
    and decoding what screening decodes."""
    from engine.core import Engine
    from engine.settings import Settings

    store = Engine(Settings.from_env()).open_gallery(args.gallery).store
    ids = sorted(store.ids())
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"read": [], "full": [], "screened": []}
    for _ in range(args.trials):
        shortlist = [int(i) for i in rng.choice(ids, min(100, len(ids)), replace=False)]
        for name, load in (("read", lambda s: store.get_many(s)),
                           ("full", lambda s: load_local_features(store, s, args.workers)),
                           ("screened", lambda s: load_as_screening(store, s, args.strongest,
                                                                      args.full, args.workers))):
            t0 = time.perf_counter()
            load(shortlist)
            times[name].append(1000 * (time.perf_counter() - t0))
    result = {"gallery": args.gallery, "images": len(ids),
              **{f"{k}_100_median_ms": round(statistics.median(v), 2) for k, v in times.items()}}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--keypoints", type=int, default=860)
    parser.add_argument("--codes", choices=["uint4", "uint8"], default="uint4")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads")
    screening = RerankConf()
    parser.add_argument("--strongest", type=int, default=screening.screen_candidate_features,
                        help="features of each record screening decodes (the default re-ranking's)")
    parser.add_argument("--full", type=int, default=screening.screen_global + screening.screen_keep,
                        help="records decoded whole (those screening keeps)")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--gallery", default=None,
                        help="measure loading on this gallery's own store instead (TANSAKU_HOME)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.gallery:
        real_gallery(args)
        return
    rng = np.random.default_rng(0)
    records = [record(rng, args.keypoints, args.codes) for _ in range(200)]  # reused: content does not matter
    ids = list(range(args.images))
    shortlists = [rng.choice(args.images, 100, replace=False).tolist() for _ in range(args.trials)]
    results = {}
    reader: Any
    nbytes: Callable[[], int]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("packed", "lmdb", "npz"):
            root = Path(tmp) / name
            start = time.perf_counter()
            if name == "packed":
                packed = PackedFeatureStore(root, writable=True)
                for i in ids:
                    packed.put(i, records[i % len(records)])
                    if i % 500 == 499:
                        packed.flush()
                packed.flush()
                store = PackedFeatureStore(root)
                reader, nbytes = store, store.nbytes
            elif name == "lmdb":
                lm = LmdbStore(root)
                for s in range(0, len(ids), 500):
                    lm.put_many([(i, records[i % len(records)]) for i in ids[s: s + 500]])
                reader, nbytes = lm, lm.nbytes
            else:
                npz = FeatureStore(root, cache_size=0)
                for i in ids:
                    npz.put(i, records[i % len(records)])
                reader, nbytes = npz, npz.nbytes
            write_s = time.perf_counter() - start
            load_ms = []
            for shortlist in shortlists:
                t0 = time.perf_counter()
                load_local_features(reader, shortlist, args.workers)
                load_ms.append(1000 * (time.perf_counter() - t0))
            screened_ms = []
            for shortlist in shortlists:
                t0 = time.perf_counter()
                load_as_screening(reader, shortlist, args.strongest, args.full, args.workers)
                screened_ms.append(1000 * (time.perf_counter() - t0))
            results[name] = {"images": args.images, "keypoints": args.keypoints, "codes": args.codes,
                             "write_images_per_s": round(args.images / write_s, 1),
                             "bytes_per_image": round(nbytes() / args.images),
                             "load_100_median_ms": round(statistics.median(load_ms), 2),
                             "load_100_max_ms": round(max(load_ms), 2),
                             "load_screened_100_median_ms": round(statistics.median(screened_ms), 2),
                             "load_screened_100_max_ms": round(max(screened_ms), 2)}
            shutil.rmtree(root, ignore_errors=True)
            print(name, results[name], file=sys.stderr)
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
