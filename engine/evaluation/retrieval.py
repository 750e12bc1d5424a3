"""Instance-retrieval evaluation: index the dataset into its own gallery, query it, score mAP."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from engine.errors import TansakuError
from engine.evaluation.retrieval_metrics import Query, holidays_ground_truth, mean_average_precision
from matcher.rerank import RerankConf

if TYPE_CHECKING:
    from engine.core import Engine, OpenGallery

log = logging.getLogger(__name__)
FORMATS = ("holidays", "roxford", "rparis")


def eval_gallery_name(fmt: str, folder: Path) -> str:
    """A gallery of the evaluation's own, one per dataset folder (reused while files are unchanged)."""
    digest = hashlib.blake2b(str(folder.resolve()).encode(), digest_size=4).hexdigest()
    return f"eval-{fmt}-{folder.resolve().name}-{digest}"


def rank_gallery(
    opened: OpenGallery, query_ids: list[int], conf: RerankConf, rerank: bool, shortlist: int
) -> list[list[int]]:
    """Full rankings (image ids) of the gallery for queries that are gallery images themselves.

    Each query is described from the stored features and left out of its own ranking.
    """
    searcher = opened.searcher(conf)
    everything = len(opened.index)
    rankings = []
    for qid in tqdm(query_ids, desc="querying", unit="query"):
        result = searcher.search(opened.stored_description(qid), top_k=everything,
                                 shortlist=shortlist, rerank=rerank, exclude=frozenset({qid}))
        rankings.append([h.image_id for h in result.hits])
    return rankings


def evaluate_holidays(
    engine: Engine, folder: Path, rerank: bool = True, shortlist: int = 100,
    conf: RerankConf | None = None,
) -> dict[str, Any]:
    """INRIA Holidays mAP (DESIGN.md protocol), percentages 0-100."""
    name = eval_gallery_name("holidays", folder)
    engine.index_folder(folder, name, profile="landmark")
    opened = engine.open_gallery(name)
    ids = sorted(opened.paths, key=lambda i: opened.paths[i])
    names = [Path(opened.paths[i]).name for i in ids]
    try:
        queries: list[Query] = holidays_ground_truth(names)
    except ValueError as exc:
        raise TansakuError(f"{folder} is not a Holidays folder: {exc}") from exc
    if not queries:
        raise TansakuError(f"{folder}: no Holidays queries (images named NNNN00.jpg) found")
    position = {image_id: k for k, image_id in enumerate(ids)}
    rankings = rank_gallery(opened, [ids[q.index] for q in queries], conf or RerankConf(),
                            rerank, shortlist)
    ranks = [np.array([position[i] for i in r]) for r in rankings]
    return {
        "dataset": str(folder),
        "protocol": "holidays",
        "method": _method_name(opened, rerank, conf),
        "mAP": round(100.0 * mean_average_precision(ranks, queries), 2),
        "queries": len(queries),
    }


def _method_name(opened: OpenGallery, rerank: bool, conf: RerankConf | None) -> str:
    cfg = opened.gallery.config
    parts = [(cfg.get("joint") or cfg["global"])["name"]]
    if rerank and (cfg.get("local") or cfg.get("joint")):
        conf = conf or RerankConf()
        local = (cfg.get("local") or cfg["joint"])["name"]
        parts.append(f"{local}+{conf.matcher}+{conf.verifier}-{conf.model}")
        if conf.expansion:
            parts.append(f"+verified-qe{conf.expansion}")
    return " ".join(parts)


def evaluate_retrieval(
    engine: Engine, dataset: Path, fmt: str, rerank: bool = True, shortlist: int = 100,
    conf: RerankConf | None = None,
) -> dict[str, Any]:
    """Dispatch on `fmt`; the result is the `tansaku eval retrieval --json` object."""
    dataset = Path(dataset).expanduser()
    if not dataset.is_dir():
        raise TansakuError(f"dataset folder not found: {dataset}")
    if fmt == "holidays":
        return evaluate_holidays(engine, dataset, rerank, shortlist, conf)
    if fmt in FORMATS:
        raise TansakuError(f"--format {fmt} is not implemented yet")
    raise TansakuError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
