"""Holidays mAP of the DELG-style model (indexer/extractors/delg_torch.py), with and without re-ranking.

Stages (each reuses the previous one's files in --work, outside the repository):

  cache   the frozen backbone's pyramid of every image (both stride-16 layers), float16 on disk;
          the heads are cheap, so every heads variant below reuses it.
  fit     untrained heads: PCA-whitening + local PCA fitted on the evaluation images themselves
          (the gallery), feature-norm attention -> --work/heads-gallery-<layer>.pt
  eval    for each heads file: global + local features, a FAISS index and a FeatureStore exactly as
          the indexing pipeline writes them (descriptors float16 by default; --store float32|int8
          to compare), then matcher.search.Searcher ranks every query (query left out of its list)
          and the Holidays protocol scores the ranking.
  engine  the same through the product path: Engine.index_folder with a joint-extractor config,
          then engine.evaluation.retrieval.rank_gallery (a check that both paths agree).

Examples:
  OMP_NUM_THREADS=1 python scripts/eval_delg_holidays.py cache ../shared/data/holidays_even
  OMP_NUM_THREADS=1 python scripts/eval_delg_holidays.py fit ../shared/data/holidays_even
  OMP_NUM_THREADS=1 python scripts/eval_delg_holidays.py eval ../shared/data/holidays_even \\
      --heads /tmp/delg-eval/heads-gallery-expanded-d256-s1.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.evaluation.retrieval_metrics import holidays_ground_truth, mean_average_precision
from indexer.describe import Description, local_from_arrays, to_arrays
from indexer.extractors.delg_torch import (
    LOCAL_LAYERS,
    DelgEfficientNet,
    ScaleMaps,
    fit_pca_heads,
    save_heads,
)
from indexer.features import LocalFeatures
from indexer.images import discover_images, read_image
from matcher.rerank import RERANK_MODES, RerankConf, rerank_mode
from matcher.search import Searcher
from storage.feature_store import FeatureStore
from storage.vector_index import VectorIndex

log = logging.getLogger("eval_delg_holidays")
SCALES = (0.7071, 1.0, 1.4142)


def image_paths(folder: Path) -> list[Path]:
    """The dataset's images sorted by name (the ids are positions in this list)."""
    return sorted(discover_images(folder), key=lambda p: p.name)


def _cache_path(work: Path, path: Path) -> Path:
    return work / "pyramids" / f"{path.stem}.pt"


def cache(folder: Path, work: Path) -> None:
    """Stage 1: backbone pyramids of every image, both local layers, float16."""
    extractor = DelgEfficientNet({"global_scales": SCALES, "local_scales": SCALES})
    paths = image_paths(folder)
    start = time.perf_counter()
    for k, path in enumerate(paths):
        target = _cache_path(work, path)
        if target.exists():
            continue
        pyramid = extractor.pyramid(read_image(path), SCALES, layers=tuple(LOCAL_LAYERS))
        rows = [{"scale": s.scale, "factor_xy": s.factor_xy, "pooled": s.pooled,
                 "local_maps": {n: m.half() for n, m in s.local_maps.items()}} for s in pyramid]
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(rows, target.with_suffix(".tmp"))
        target.with_suffix(".tmp").replace(target)
        if k % 20 == 0:
            print(f"{k + 1}/{len(paths)} cached, {time.perf_counter() - start:.0f}s", flush=True)
    print(f"pyramids of {len(paths)} images: {time.perf_counter() - start:.0f}s")


def load_pyramid(work: Path, path: Path, scales: tuple[float, ...] = SCALES) -> list[ScaleMaps]:
    """A cached pyramid (local maps stay float16; the heads convert), restricted to `scales`."""
    rows = torch.load(_cache_path(work, path), weights_only=True)
    return [ScaleMaps(r["scale"], tuple(r["factor_xy"]), r["local_maps"], r["pooled"])
            for r in rows if r["scale"] in scales]


def fit(folder: Path, work: Path, layer: str, dims: list[int], shrinkages: list[float]) -> None:
    """Stage 2: untrained heads fitted on the gallery itself, one file per (dim, shrinkage)."""
    pyramids = [load_pyramid(work, p) for p in image_paths(folder)]
    for dim in dims:
        for shrinkage in shrinkages:
            heads = fit_pca_heads(pyramids, layer, dim=dim, shrinkage=shrinkage)
            out = work / f"heads-gallery-{layer}-d{dim}-s{shrinkage:g}.pt"
            save_heads(heads, out, {"init": "pca", "fitted_on": str(folder)})
            print(f"wrote {out}")


def quantise(desc: np.ndarray, store: str) -> np.ndarray:
    """Local descriptors as the store would keep them (int8: unit vectors x 127, rounded)."""
    if store == "float32":
        return desc.astype(np.float32)
    if store == "float16":
        return desc.astype(np.float16)
    return np.clip(np.round(desc * 127.0), -127, 127).astype(np.int8)


def describe_all(pyramids: list[list[ScaleMaps]], conf: dict[str, Any]
                 ) -> list[tuple[np.ndarray, LocalFeatures]]:
    """Global and local features of every image from its cached pyramid."""
    extractor = DelgEfficientNet(conf)
    return [extractor.describe_pyramid(p) for p in pyramids]


def build_gallery(feats: list[tuple[np.ndarray, LocalFeatures]], root: Path, store: str
                  ) -> tuple[VectorIndex, FeatureStore]:
    """A FAISS index and a FeatureStore holding `feats` as the indexing pipeline would."""
    index = VectorIndex(len(feats[0][0]), "ip")
    index.add(np.arange(len(feats), dtype=np.int64), np.stack([g for g, _ in feats]))
    features = FeatureStore(root)
    for i, (g, loc) in enumerate(feats):
        arrays = to_arrays(Description(g, loc))
        arrays["descriptors"] = quantise(loc.descriptors, store)
        features.put(i, arrays)
    return index, features


def holidays_map(feats: list[tuple[np.ndarray, LocalFeatures]], names: list[str], store: str,
                 rerank: bool, conf: RerankConf, shortlist: int = 100) -> dict[str, Any]:
    """mAP (0-100) over Holidays queries; query features come back from the store, as the product."""
    queries = holidays_ground_truth(names)
    with tempfile.TemporaryDirectory() as tmp:
        index, features = build_gallery(feats, Path(tmp), store)
        searcher = Searcher(index, features, conf)
        bytes_per_image = features.nbytes() / len(feats)
        start = time.perf_counter()
        ranks = []
        for q in queries:
            arrays = features.get(q.index)
            # int8 rows come back x127 for query and candidates alike: the ratio test is scale-free
            local = local_from_arrays(arrays)
            result = searcher.search(Description(arrays["global"], local), top_k=len(feats),
                                     shortlist=shortlist, rerank=rerank,
                                     exclude=frozenset({q.index}))
            ranks.append(np.array([h.image_id for h in result.hits]))
        seconds = time.perf_counter() - start
    return {"mAP": round(100 * mean_average_precision(ranks, queries), 2), "queries": len(queries),
            "rerank": rerank, "store": store, "store_bytes_per_image": round(bytes_per_image),
            "query_seconds": round(seconds / len(queries), 3)}


def evaluate(folder: Path, pyramids: list[list[ScaleMaps]], conf: dict[str, Any],
             stores: list[str], reranks: list[bool], rerank_conf: RerankConf
             ) -> list[dict[str, Any]]:
    """Stage 3: every (store, rerank) combination for one extractor configuration."""
    start = time.perf_counter()
    feats = describe_all(pyramids, conf)
    heads_seconds = time.perf_counter() - start
    names = [p.name for p in image_paths(folder)]
    n_local = float(np.mean([len(loc) for _, loc in feats]))
    results = []
    for store in stores:
        for rerank in reranks:
            row = holidays_map(feats, names, store, rerank, rerank_conf)
            row.update({"rerank_conf": rerank_conf.name, "threshold_px": rerank_conf.threshold_px,
                        "heads": str(conf["heads"]), "local_scales": conf["local_scales"],
                        "global_scales": conf["global_scales"], "local_per_image": n_local,
                        "heads_seconds_per_image": round(heads_seconds / len(feats), 3)})
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def engine_check(folder: Path, work: Path, conf: dict[str, Any], rerank_conf: RerankConf) -> None:
    """Stage 4: the product path (full extraction through Engine.index_folder)."""
    from engine.core import Engine
    from engine.evaluation.retrieval import rank_gallery
    from engine.settings import Settings

    home = work / "engine-home"
    engine = Engine(Settings(home=home, db_url=f"sqlite:///{home / 'tansaku.db'}"))
    config = {"joint": {"name": "delg-efficientnet-lite0", "conf": conf}, "metric": "ip"}
    name = f"holidays-delg-{Path(str(conf['heads'])).stem}"
    engine.index_folder(folder, name, profile="landmark", config=config)
    opened = engine.open_gallery(name)
    ids = sorted(opened.paths, key=lambda i: opened.paths[i])
    names = [Path(opened.paths[i]).name for i in ids]
    queries = holidays_ground_truth(names)
    position = {image_id: k for k, image_id in enumerate(ids)}
    for rerank in (False, True):
        rankings = rank_gallery(opened, [ids[q.index] for q in queries], rerank_conf, rerank, 100)
        ranks = [np.array([position[i] for i in r]) for r in rankings]
        m = round(100 * mean_average_precision(ranks, queries), 2)
        print(json.dumps({"path": "engine", "rerank": rerank, "mAP": m,
                          "store_bytes_per_image": opened.store.nbytes() / len(ids)}))


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("cache", "fit", "eval", "engine"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "delg-eval")
    parser.add_argument("--heads", type=Path, action="append", default=[])
    parser.add_argument("--layer", default="expanded", choices=tuple(LOCAL_LAYERS))
    parser.add_argument("--dim", type=int, nargs="+", default=[256])
    parser.add_argument("--shrinkage", type=float, nargs="+", default=[1.0])
    parser.add_argument("--local-scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--global-scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--store", nargs="+", default=["float16"],
                        choices=("float32", "float16", "int8"))
    parser.add_argument("--no-rerank-only", action="store_true")
    parser.add_argument("--rerank-only", action="store_true")
    parser.add_argument("--rerank-mode", default="ours", choices=tuple(RERANK_MODES))
    parser.add_argument("--threshold", type=float, default=None, help="verifier threshold (px)")
    parser.add_argument("--min-inliers", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    if args.stage == "cache":
        cache(args.folder, args.work)
    elif args.stage == "fit":
        fit(args.folder, args.work, args.layer, args.dim, args.shrinkage)
    pyramids = [load_pyramid(args.work, p) for p in image_paths(args.folder)] if (
        args.stage == "eval") else []
    rerank_conf = rerank_mode(args.rerank_mode, threshold_px=args.threshold,
                              min_inliers=args.min_inliers)
    for heads in args.heads:
        conf = {"heads": str(heads), "local_scales": tuple(args.local_scales),
                "global_scales": tuple(args.global_scales)}
        if args.stage == "eval":
            reranks = [False] if args.no_rerank_only else [True] if args.rerank_only else [False, True]
            evaluate(args.folder, pyramids, conf, args.store, reranks, rerank_conf)
        elif args.stage == "engine":
            engine_check(args.folder, args.work, conf, rerank_conf)


if __name__ == "__main__":
    main()
