"""Benchmark local matching + geometric verification on INRIA Holidays: speed and pair quality.

Speed: seconds to match and verify one query against a shortlist of `--candidates` images (its group
mates plus random others), features already in memory; the median over `--speed-queries` queries,
split into matching and verification, for every matcher x verifier x model.

Quality: each query (name ending in 00) against every other image of the folder, scored by inlier
count; mean over queries of the average precision (ties broken pessimistically: among equal scores the
irrelevant images come first), and the AP of all query-candidate pairs pooled as one classifier. The
verifier "none" scores by the number of putative matches, to show what verification adds.

    python scripts/bench_matching.py ../shared/data/holidays_even --max-features 1000

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from indexer.extractors.sift import rootsift
from indexer.features import LocalFeatures
from indexer.images import read_image
from matcher.matching import Neighbours, brute_neighbours, match_pairs
from matcher.verification import verify

logger = logging.getLogger("bench_matching")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; lists are comma-separated."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="folder of NNNNNN.jpg images (Holidays naming)")
    p.add_argument("--max-features", type=int, default=800)
    p.add_argument("--min-side", type=int, default=None, help="upscale until the long side is this")
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--cache", type=Path, default=None, help="pickle of features (outside the repo)")
    p.add_argument("--keep", type=int, default=0,
                   help="use only the N strongest of the extracted features (= max_features N)")
    p.add_argument("--ratios", default="0.8")
    p.add_argument("--mutual", default="1", help="0, 1 or 0,1")
    p.add_argument("--verifiers", default="none,degensac,magsac")
    p.add_argument("--models", default="homography,fundamental")
    p.add_argument("--thresholds", default="8")
    p.add_argument("--max-iters", type=int, default=2000)
    p.add_argument("--min-matches", type=int, default=0, help="skip fitting below this many")
    p.add_argument("--queries", type=int, default=0, help="quality on the first N queries (0: all)")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--speed-queries", type=int, default=20)
    p.add_argument("--kdtree-queries", type=int, default=3, help="KD-tree is slow: fewer queries")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    return p.parse_args(argv)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def words(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def group_of(name: str) -> int:
    """Holidays scene group of an image name such as '100201'."""
    return int(name) // 100


# ---------------------------------------------------------------------------------------------
# Features


def feature_key(args: argparse.Namespace) -> tuple:
    """What the cached features depend on."""
    return (str(args.data.resolve()), args.max_features, args.min_side, args.max_side)


def strongest(feats: dict[str, LocalFeatures], keep: int) -> dict[str, LocalFeatures]:
    """The first `keep` features of each image: rootsift sorts by response, so this equals
    extracting with max_features=keep (up to ties) without extracting again."""
    return {n: LocalFeatures(f.keypoints[:keep], f.descriptors[:keep],
                             None if f.scores is None else f.scores[:keep])
            for n, f in feats.items()}


def load_features(args: argparse.Namespace) -> dict[str, LocalFeatures]:
    """RootSIFT of every image in the folder, by name stem; cached in --cache when given."""
    key = feature_key(args)
    if args.cache and args.cache.exists():
        with args.cache.open("rb") as f:
            cached_key, feats = pickle.load(f)
        if cached_key == key:
            return feats
    paths = sorted(args.data.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no .jpg images in {args.data}")
    start = time.perf_counter()
    feats = {
        p.stem: rootsift(read_image(p), args.max_features, args.max_side, args.min_side)
        for p in paths
    }
    logger.info("extracted %d images in %.1f s", len(feats), time.perf_counter() - start)
    if args.cache:
        with args.cache.open("wb") as f:
            pickle.dump((key, feats), f)
    return feats


def feature_summary(feats: dict[str, LocalFeatures]) -> dict[str, float]:
    counts = np.array([len(f) for f in feats.values()])
    return {"images": len(counts), "mean": float(counts.mean()), "min": int(counts.min()),
            "max": int(counts.max())}


# ---------------------------------------------------------------------------------------------
# Quality


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of a ranking by descending score; ties put irrelevant items first (a lower bound)."""
    order = np.lexsort((relevant, -scores))
    rel = relevant[order]
    if not rel.any():
        return float("nan")
    hits = np.cumsum(rel)
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(hits[rel] / ranks))


@dataclass
class PairTable:
    """One query-candidate pair, compacted: nearest neighbour, squared ratio, mutual flag."""

    candidate: str
    nn1: np.ndarray  # int32
    ratio_sq: np.ndarray  # float32, d1^2 / d2^2
    mutual_ok: np.ndarray  # bool

    def matches(self, ratio: float, mutual: bool) -> np.ndarray:
        keep = self.ratio_sq < ratio * ratio
        if mutual:
            keep &= self.mutual_ok
        rows = np.flatnonzero(keep)
        return np.stack([rows, self.nn1[rows]], axis=1)


def pair_tables(
    feats: dict[str, LocalFeatures], queries: list[str]
) -> dict[str, list[PairTable]]:
    """Brute-force nearest neighbours of every query against every other image, done once."""
    tables: dict[str, list[PairTable]] = {}
    start = time.perf_counter()
    for q in queries:
        others = [n for n in feats if n != q]
        nbs = brute_neighbours(feats[q], [feats[n] for n in others], mutual=True)
        tables[q] = [compact(n, nb) for n, nb in zip(others, nbs, strict=True)]
    logger.info("nearest neighbours for %d queries in %.1f s", len(queries),
                time.perf_counter() - start)
    return tables


def compact(name: str, nb: Neighbours) -> PairTable:
    """Keep what the ratio and mutual tests need; an empty candidate (nn1 = -1) fails both."""
    with np.errstate(invalid="ignore"):  # inf / inf where the candidate is empty, reset below
        ratio_sq = np.divide(nb.d1_sq, nb.d2_sq, out=np.zeros_like(nb.d1_sq), where=nb.d2_sq > 0)
    ratio_sq[nb.nn1 < 0] = np.inf
    assert nb.mutual is not None
    return PairTable(name, nb.nn1.astype(np.int32), ratio_sq.astype(np.float32), nb.mutual)


def cached_tables(
    feats: dict[str, LocalFeatures], queries: list[str], args: argparse.Namespace
) -> dict[str, list[PairTable]]:
    """pair_tables, kept in --cache + '.tables' so that verification sweeps skip the matching."""
    suffix = f".keep{args.keep}.tables.pkl" if args.keep else ".tables.pkl"
    path = args.cache.with_suffix(suffix) if args.cache else None
    if path and path.exists():
        with path.open("rb") as f:
            key, tables = pickle.load(f)
        if key == feature_key(args) and all(q in tables for q in queries):
            return {q: tables[q] for q in queries}
    tables = pair_tables(feats, queries)
    if path:
        with path.open("wb") as f:
            pickle.dump((feature_key(args), tables), f)
    return tables


def score_pairs(
    feats: dict[str, LocalFeatures], q: str, pairs: list[np.ndarray],
    cands: list[str], verifier: str, model: str, threshold: float, args: argparse.Namespace,
) -> np.ndarray:
    """Inlier count (or match count for verifier 'none') of each candidate of query q."""
    if verifier == "none":
        return np.array([len(m) for m in pairs], dtype=np.float64)
    return np.array([
        verify(feats[q].keypoints, feats[c].keypoints, m, verifier, model,  # type: ignore[arg-type]
               threshold, max_iters=args.max_iters, min_matches=args.min_matches).inliers
        for c, m in zip(cands, pairs, strict=True)
    ], dtype=np.float64)


def quality_row(
    feats: dict[str, LocalFeatures], tables: dict[str, list[PairTable]], conf: dict,
    args: argparse.Namespace,
) -> dict:
    """mAP over queries and pooled pair AP for one (ratio, mutual, verifier, model, threshold)."""
    aps, all_scores, all_rel = [], [], []
    start = time.perf_counter()
    for q, rows in tables.items():
        cands = [r.candidate for r in rows]
        pairs = [r.matches(conf["ratio"], conf["mutual"]) for r in rows]
        scores = score_pairs(feats, q, pairs, cands, conf["verifier"], conf["model"],
                             conf["threshold_px"], args)
        relevant = np.array([group_of(c) == group_of(q) for c in cands])
        aps.append(average_precision(scores, relevant))
        all_scores.append(scores)
        all_rel.append(relevant)
    pooled = average_precision(np.concatenate(all_scores), np.concatenate(all_rel))
    return {**conf, "mAP": 100 * float(np.nanmean(aps)), "pair_AP": 100 * pooled,
            "queries": int(np.sum(~np.isnan(aps))), "seconds": time.perf_counter() - start}


def quality_grid(args: argparse.Namespace) -> list[dict]:
    """Every (ratio, mutual) x verifier x model x threshold asked for; 'none' once per ratio."""
    grid = []
    for ratio, mutual, verifier in itertools.product(
        floats(args.ratios), [bool(int(x)) for x in words(args.mutual)], words(args.verifiers)
    ):
        if verifier == "none":
            grid.append({"ratio": ratio, "mutual": mutual, "verifier": "none", "model": None,
                         "threshold_px": None})
            continue
        for model, threshold in itertools.product(words(args.models), floats(args.thresholds)):
            grid.append({"ratio": ratio, "mutual": mutual, "verifier": verifier, "model": model,
                         "threshold_px": threshold})
    return grid


def run_quality(feats: dict[str, LocalFeatures], args: argparse.Namespace) -> list[dict]:
    queries = sorted(n for n in feats if n.endswith("00"))
    queries = queries[: args.queries] if args.queries else queries
    tables = cached_tables(feats, queries, args)
    rows = []
    for conf in quality_grid(args):
        rows.append(quality_row(feats, tables, conf, args))
        logger.info("%s", json.dumps(rows[-1]))
    return rows


# ---------------------------------------------------------------------------------------------
# Speed


def shortlist(names: list[str], q: str, size: int, rng: np.random.Generator) -> list[str]:
    """The query's group mates plus random other images, `size` in all (a stand-in shortlist)."""
    mates = [n for n in names if n != q and group_of(n) == group_of(q)]
    others = [n for n in names if group_of(n) != group_of(q)]
    extra = rng.choice(len(others), size - len(mates), replace=False)
    return mates + [others[i] for i in sorted(extra)]


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Result, wall seconds and process CPU seconds of fn() (CPU is steadier on a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def time_query(
    feats: dict[str, LocalFeatures], q: str, cands: list[str], matchers: list[str],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Seconds per stage for one query: 'match:<method>' and 'verify:<verifier>:<model>' (wall),
    the same keys with a 'cpu:' prefix for CPU seconds."""
    ratio, mutual = floats(args.ratios)[0], bool(int(words(args.mutual)[0]))
    threshold = floats(args.thresholds)[0]
    fq, fcs = feats[q], [feats[c] for c in cands]
    out: dict[str, float] = {}
    matches: list[np.ndarray] = []
    for method in matchers:
        result, out[f"match:{method}"], out[f"cpu:match:{method}"] = timed(
            partial(match_pairs, fq, fcs, method, ratio, mutual))  # type: ignore[arg-type]
        matches = result  # type: ignore[assignment]
    for verifier, model in itertools.product(words(args.verifiers), words(args.models)):
        if verifier == "none":
            continue
        key = f"verify:{verifier}:{model}"
        _, out[key], out["cpu:" + key] = timed(partial(
            verify_all, fq, fcs, matches, verifier, model, threshold, args))
    return out


def verify_all(
    fq: LocalFeatures, fcs: list[LocalFeatures], matches: list[np.ndarray], verifier: str,
    model: str, threshold: float, args: argparse.Namespace,
) -> list[int]:
    """Inlier counts of a shortlist, as the re-ranker would compute them."""
    return [
        verify(fq.keypoints, fc.keypoints, m, verifier, model,  # type: ignore[arg-type]
               threshold, max_iters=args.max_iters, min_matches=args.min_matches).inliers
        for fc, m in zip(fcs, matches, strict=True)
    ]


def run_speed(feats: dict[str, LocalFeatures], args: argparse.Namespace) -> list[dict]:
    names = sorted(feats)
    queries = [n for n in names if n.endswith("00")][: args.speed_queries]
    rng = np.random.default_rng(0)
    per_query = []
    for k, q in enumerate(queries):
        matchers = ["brute", "kdtree"] if k < args.kdtree_queries else ["brute"]
        per_query.append(time_query(feats, q, shortlist(names, q, args.candidates, rng),
                                    matchers, args))
    return speed_rows(per_query)


def speed_rows(per_query: list[dict[str, float]]) -> list[dict]:
    """Median seconds per matcher x verifier x model, over the queries that timed both."""
    keys = set().union(*per_query)
    rows = []
    for mk, vk in itertools.product(sorted(k for k in keys if k.startswith("match:")),
                                    sorted(k for k in keys if k.startswith("verify:"))):
        timed_q = [t for t in per_query if mk in t and vk in t]
        _, verifier, model = vk.split(":")
        row: dict = {"matcher": mk.split(":")[1], "verifier": verifier, "model": model}
        for prefix in ("", "cpu_"):
            m, v = ("cpu:" + mk, "cpu:" + vk) if prefix else (mk, vk)
            row[prefix + "match_s"] = float(np.median([t[m] for t in timed_q]))
            row[prefix + "verify_s"] = float(np.median([t[v] for t in timed_q]))
            row[prefix + "total_s"] = float(np.median([t[m] + t[v] for t in timed_q]))
        rows.append({**row, "queries": len(timed_q)})
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print one JSON object."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = parse_args(argv)
    feats = load_features(args)
    if args.keep:
        feats = strongest(feats, args.keep)
    result: dict = {
        "data": str(args.data),
        "features": {"max_features": args.keep or args.max_features, "min_side": args.min_side,
                     "max_side": args.max_side, **feature_summary(feats)},
        "threads": {"cpu_count": os.cpu_count(),
                    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
        "max_iters": args.max_iters,
        "min_matches": args.min_matches,
        "candidates": args.candidates,
    }
    if not args.skip_speed:
        result["speed"] = run_speed(feats, args)
    if not args.skip_quality:
        result["quality"] = run_quality(feats, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
