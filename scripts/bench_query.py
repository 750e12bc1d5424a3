"""Per-stage query timings on a dataset folder, as one JSON object.

    python scripts/bench_query.py ../shared/data/holidays_even [--queries 30] [--matcher brute|kdtree]
    python scripts/bench_query.py ../shared/data/holidays_even --rerank-mode ours delf
    python scripts/bench_query.py ../shared/data/holidays_even --queries 149 --exhaustive-too

The folder is indexed into the same gallery `tansaku eval retrieval` uses (reused when unchanged;
`--model` as in `tansaku eval retrieval`). With several `--rerank-mode`s every query is searched
in each mode in turn, so their timings come from the same minutes of a shared machine. Each mode's
Holidays mAP over the same queries is reported too (the full ranking, query left out), so a slow
mode can be compared on a subset of queries. `--exhaustive-too` adds each mode without screening
(`<mode>-exhaustive`: every candidate matched with every query feature and verified), and
`--screen F:G:K[:C] ...` adds each mode with other screening settings (`<mode>@F:G:K`: F query
features screen, against each candidate's C strongest when given, and the first G and the K best
screened are matched in full).
Each query image is read and described afresh (extraction), searched in FAISS, and its top
`--shortlist` re-ranked; medians over queries are reported per stage, with `rerank` = loading +
matching + verification (what the foundation issue's 0.3 s budget covers). CPU seconds of the
whole search are reported too: on a shared machine they say more than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from engine.core import Engine, profile_config
from engine.evaluation.retrieval import eval_gallery_name
from engine.evaluation.retrieval_metrics import holidays_ground_truth, mean_average_precision
from engine.settings import Settings
from indexer.images import read_image
from matcher.rerank import RERANK_MODES, RerankConf, rerank_mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--shortlist", type=int, default=100)
    parser.add_argument("--matcher", choices=["brute", "kdtree"], default=None)
    parser.add_argument("--verifier", choices=["degensac", "magsac"], default=None)
    parser.add_argument("--rerank-mode", nargs="+", default=["ours"], choices=tuple(RERANK_MODES))
    parser.add_argument("--model", default=None, help="as `tansaku eval retrieval --model`")
    parser.add_argument("--db", default=None)
    parser.add_argument("--screen", nargs="*", default=[], metavar="F:G:K[:C]",
                        help="also run each mode with these screening settings")
    parser.add_argument("--exhaustive-too", action="store_true",
                        help="also run each mode with screening off, on the same queries")
    args = parser.parse_args()

    engine = Engine(Settings.from_env(db=args.db))
    config = profile_config("landmark", model=args.model)
    name = eval_gallery_name("holidays", args.dataset, config)
    engine.index_folder(args.dataset, name, config=config)
    opened = engine.open_gallery(name)
    confs: dict[str, RerankConf] = {}
    for mode in args.rerank_mode:
        conf = rerank_mode(mode)
        if args.matcher:
            conf = replace(conf, matcher=args.matcher)
        if args.verifier:
            conf = replace(conf, verifier=args.verifier)
        confs[mode] = conf
        for variant in args.screen:
            features, head, keep, *own = (int(x) for x in variant.split(":"))
            confs[f"{mode}@{variant}"] = replace(conf, screen_features=features, screen_global=head,
                                                 screen_keep=keep,
                                                 screen_candidate_features=own[0] if own else None)
        if args.exhaustive_too and conf.screens:
            confs[f"{mode}-exhaustive"] = replace(conf, screen_features=None)
    searchers = {mode: opened.searcher(conf) for mode, conf in confs.items()}
    ids = sorted(opened.paths, key=lambda i: opened.paths[i])
    position = {image_id: k for k, image_id in enumerate(ids)}
    queries = holidays_ground_truth([Path(opened.paths[i]).name for i in ids])[: args.queries]
    stages: dict[str, dict[str, list[float]]] = {mode: {} for mode in confs}
    rankings: dict[str, list[list[int]]] = {mode: [] for mode in confs}
    for n, query in enumerate(queries):
        qid = ids[query.index]
        start = time.perf_counter()
        description = opened.describer.describe(
            read_image(opened.image_file(qid)))
        extraction = time.perf_counter() - start
        order = list(searchers.items())
        for mode, searcher in order if n % 2 == 0 else order[::-1]:  # neither mode always first
            times = {"extraction": extraction}
            cpu = time.process_time()
            result = searcher.search(description, top_k=len(ids), shortlist=args.shortlist,
                                     vector=opened.projected(description), exclude=frozenset({qid}))
            rankings[mode].append([position[h.image_id] for h in result.hits])
            times["search_and_rerank_cpu"] = time.process_time() - cpu  # robust to other load
            times.update(result.times)
            times["rerank"] = sum(result.times.get(k, 0.0)
                                  for k in ("loading", "matching", "verification"))
            for stage, seconds in times.items():
                stages[mode].setdefault(stage, []).append(seconds)
    report = {
        "dataset": str(args.dataset),
        "model": opened.gallery.config.get("model"),
        "queries": len(queries),
        "shortlist": args.shortlist,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "modes": {
            mode: {
                "conf": confs[mode].__dict__,
                "mAP": round(100 * mean_average_precision(rankings[mode], queries), 2),
                "median_seconds": {k: round(statistics.median(v), 4) for k, v in st.items()},
                "max_seconds": {k: round(max(v), 4) for k, v in st.items()},
            }
            for mode, st in stages.items()
        },
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
