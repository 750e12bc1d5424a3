"""Compact local features on Holidays: keypoint count, keypoint selection and descriptor codes, by
re-ranked mAP, bytes per image and re-ranking time, without extracting anything again.

    OMP_NUM_THREADS=1 python scripts/eval_compact_local.py ../shared/data/holidays_even \
        --variants float16:1000:response uint8:1000:response uint8:450:response uint8:450:grid

The folder is indexed into the `tansaku eval retrieval` gallery of `--model` (reused when it
exists, stored with 1000 float16 RootSIFT per image). Each variant `CODE:K:SELECT` keeps K of each
image's stored keypoints (`response`: the strongest; `grid`: the strongest of each cell of a 4x4
grid in turn, `indexer.extractors.sift.select_keypoints`), encodes their descriptors as `CODE` the
way the store does (`indexer.describe.to_arrays`), decodes them, and ranks every Holidays query
against the gallery as `tansaku eval retrieval` does (query left out). Selecting K of the stored
1000 equals extracting K with the same selection from OpenCV's 1000 strongest. Prints one JSON
object: per variant the mAP, the mean packed record size (`storage.feature_store.encode_arrays`:
what the packed store writes, global vector included and local part alone) and the median
re-ranking seconds (loading, matching, verification).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from engine.core import Engine, profile_config
from engine.evaluation.retrieval import eval_gallery_name
from engine.evaluation.retrieval_metrics import holidays_ground_truth, mean_average_precision
from engine.settings import Settings
from indexer.describe import Description, local_from_arrays, to_arrays
from indexer.extractors.sift import select_keypoints
from indexer.features import LocalFeatures
from storage.feature_store import encode_arrays


class MemoryStore:
    """Encoded arrays kept in memory, decoded from their packed bytes on every read."""

    def __init__(self, records: dict[int, bytes]) -> None:
        self.records = records

    def get(self, image_id: int) -> dict[str, np.ndarray]:
        from storage.feature_store import decode_arrays

        return decode_arrays(self.records[int(image_id)])

    def get_many(self, image_ids: list[int]) -> list[dict[str, np.ndarray]]:
        return [self.get(i) for i in image_ids]


def variant_records(
    stored: dict[int, dict[str, np.ndarray]], code: str, k: int, select: str,
    sizes: dict[int, tuple[int, int]],
) -> dict[int, bytes]:
    out = {}
    for image_id, arrays in stored.items():
        local = local_from_arrays(arrays)
        w, h = sizes[image_id]
        keep = select_keypoints(local.keypoints, local.scores, k, (h, w), select)
        cut = LocalFeatures(local.keypoints[keep], local.descriptors[keep],
                            None if local.scores is None else local.scores[keep])
        out[image_id] = encode_arrays(to_arrays(Description(arrays["global"], cut), code))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--variants", nargs="+", default=["float16:1000:response"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--queries", type=int, default=None, help="first N queries only")
    args = parser.parse_args()

    engine = Engine(Settings.from_env())
    config = profile_config("landmark", model=args.model)
    name = eval_gallery_name("holidays", args.dataset, config)
    engine.index_folder(args.dataset, name, config=config)
    opened = engine.open_gallery(name)
    ids = sorted(opened.paths, key=lambda i: opened.paths[i])
    stored = dict(zip(ids, opened.store.get_many(ids), strict=True))
    sizes = {i: (opened.rows[i].width or 0, opened.rows[i].height or 0) for i in ids}
    queries = holidays_ground_truth([Path(opened.paths[i]).name for i in ids])[: args.queries]
    position = {image_id: k for k, image_id in enumerate(ids)}
    report: dict[str, object] = {"dataset": str(args.dataset), "queries": len(queries),
                                 "gallery": len(ids), "variants": {}}
    for variant in args.variants:
        code, k, select = variant.split(":")
        records = variant_records(stored, code, int(k), select, sizes)
        opened.store = MemoryStore(records)  # type: ignore[assignment]
        searcher = opened.searcher()
        rankings, rerank_s = [], []
        for query in queries:
            qid = ids[query.index]
            arrays = opened.store.get(qid)
            description = Description(arrays["global"], local_from_arrays(arrays))
            result = searcher.search(description, top_k=len(ids), shortlist=100,
                                     vector=opened.projected(description), exclude=frozenset({qid}))
            rankings.append(np.array([position[h.image_id] for h in result.hits]))
            rerank_s.append(sum(result.times.get(s, 0.0) for s in ("loading", "matching",
                                                                      "verification")))
        local_bytes = [len(r) - len(encode_arrays({"global": stored[i]["global"]}))
                       for i, r in records.items()]
        report["variants"][variant] = {  # type: ignore[index]
            "mAP": round(100 * mean_average_precision(rankings, queries), 2),
            "record_bytes_mean": round(float(np.mean([len(r) for r in records.values()]))),
            "local_bytes_mean": round(float(np.mean(local_bytes))),
            "local_bytes_max": int(np.max(local_bytes)),
            "rerank_median_s": round(statistics.median(rerank_s), 4),
        }
        print(variant, report["variants"][variant], file=sys.stderr)  # type: ignore[index]
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
