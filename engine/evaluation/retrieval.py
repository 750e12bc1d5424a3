"""Instance-retrieval evaluation: index the dataset into its own gallery, query it, score mAP.

- `holidays`: INRIA Holidays names (`NNNNNN.jpg`, group N // 100, queries end in 00); each query is
  a gallery image, described from its stored features and left out of its own ranking.
- `roxford` / `rparis`: the revisited protocol (Radenovic et al., CVPR 2018). The folder holds
  `gnd_roxford5k.pkl` / `gnd_rparis6k.pkl` and the images (in `jpg/` as the revisitop download
  unpacks, or beside the pickle). Every database image of `imlist` is indexed; each query image is
  read, cropped to its bounding box and described afresh, with DELF's resize factor (the crop's
  larger side over the photo's, which scales the extractor's size bounds, as
  `delf/python/delg/extract_features.py` does); mAP is reported for the easy, medium and hard
  settings with the junk images taken out of each ranking.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from engine.errors import TansakuError
from engine.evaluation.retrieval_metrics import (
    average_precisions,
    crop_query,
    mean_average_precision,
    revisited_map,
    revisited_queries,
)
from indexer.datasets.retrieval import (
    Query,
    RevisitedGT,
    holidays_ground_truth,
    load_revisited_ground_truth,
)
from indexer.describe import Description
from indexer.images import ImageReadError, read_image
from indexer.profiles import resolve_profile
from indexer.registry import Registry
from matcher.rerank import RerankConf

if TYPE_CHECKING:
    from engine.core import Engine, OpenGallery

log = logging.getLogger(__name__)
FORMATS: Registry[str] = Registry(
    "--format", {"holidays": "holidays", "roxford": "roxford", "rparis": "rparis"}, sort=False)
REVISITED_PICKLES = {"roxford": "gnd_roxford5k.pkl", "rparis": "gnd_rparis6k.pkl"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SHOWN = 10  # ranked results kept per query for reports


@dataclass(frozen=True)
class QueryOutcome:
    """One query of an evaluation, for reports: its image, AP and the head of its ranked list."""

    name: str
    image: Path
    ap: float  # 0..1, NaN when the query has no positives
    ranked: list[tuple[Path, bool]]  # (image file, relevant) best first, at most SHOWN


@dataclass(frozen=True)
class RetrievalDetails:
    """Per-query outcomes of one retrieval evaluation (what `--report` draws)."""

    setting: str  # which AP the outcomes carry ("holidays", "medium")
    queries: list[QueryOutcome]


def _outcomes(
    queries: list[Query], ranks: list[np.ndarray], image_of: Any, query_image: Any
) -> list[QueryOutcome]:
    """Per-query AP and ranked heads; `image_of(position)` and `query_image(k)` give files."""
    aps = average_precisions(ranks, queries)
    out = []
    for k, (query, row) in enumerate(zip(queries, ranks, strict=True)):
        positives = set(np.asarray(query.positives).tolist())
        junk = set(np.asarray(query.junk).tolist())
        head = [int(p) for p in row if int(p) not in junk][:SHOWN]
        out.append(QueryOutcome(query.name, query_image(k), float(aps[k]),
                                [(image_of(p), p in positives) for p in head]))
    return out


def eval_gallery_name(fmt: str, folder: Path, config: dict[str, Any] | None = None) -> str:
    """A gallery of the evaluation's own, one per dataset folder and configuration (None: the
    landmark preset), reused while its files are unchanged; a changed preset gets a new gallery."""
    settings = json.dumps(config or resolve_profile("landmark"), sort_keys=True)
    digest = hashlib.blake2b(f"{folder.resolve()}|{settings}".encode(), digest_size=4).hexdigest()
    return f"eval-{fmt}-{folder.resolve().name}-{digest}"


def rank_gallery(
    opened: OpenGallery, query_ids: list[int], conf: RerankConf, rerank: bool, shortlist: int
) -> list[list[int]]:
    """Full rankings (image ids) of the gallery for queries that are gallery images themselves.

    Each query is described from the stored features and left out of its own ranking.
    """
    queries = ((opened.stored_description(qid), frozenset({qid})) for qid in query_ids)
    return _rank(opened, queries, len(query_ids), conf, rerank, shortlist)


def rank_for_images(
    opened: OpenGallery, images: list[np.ndarray], conf: RerankConf | None, rerank: bool,
    shortlist: int, resize_factors: list[float] | None = None,
) -> list[list[int]]:
    """Full rankings (image ids) of the gallery for query images described afresh.

    `resize_factors` (one per image) go to extractors that take DELF's resize factor.
    """
    factors = resize_factors or [1.0] * len(images)
    queries = ((opened.describer.describe(image, factor), frozenset[int]())
               for image, factor in zip(images, factors, strict=True))
    return _rank(opened, queries, len(images), conf, rerank, shortlist)


def _rank(
    opened: OpenGallery, queries: Iterator[tuple[Description, frozenset[int]]], n: int,
    conf: RerankConf | None, rerank: bool, shortlist: int,
) -> list[list[int]]:
    searcher = opened.searcher(conf)
    everything = len(opened.index)
    rankings = []
    for description, exclude in tqdm(queries, total=n, desc="querying", unit="query"):
        result = searcher.search(description, top_k=everything, shortlist=shortlist, rerank=rerank,
                                 exclude=exclude, vector=opened.projected(description))
        rankings.append([h.image_id for h in result.hits])
    return rankings


def evaluate_holidays(
    engine: Engine, folder: Path, rerank: bool = True, shortlist: int = 100,
    conf: RerankConf | None = None, config: dict[str, Any] | None = None,
    details: list[RetrievalDetails] | None = None,
) -> dict[str, Any]:
    """INRIA Holidays mAP (the protocol in this module's docstring), percentages 0-100; per-query
    outcomes are appended to `details` when given."""
    name = eval_gallery_name("holidays", folder, config)
    engine.index_folder(folder, name, profile="landmark", config=config)
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
    conf = conf or opened.default_rerank()
    rankings = rank_gallery(opened, [ids[q.index] for q in queries], conf, rerank, shortlist)
    ranks = [np.array([position[i] for i in r]) for r in rankings]
    if details is not None:
        details.append(RetrievalDetails("holidays", _outcomes(
            queries, ranks, lambda p: opened.image_file(ids[p]),
            lambda k: opened.image_file(ids[queries[k].index]))))
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
    if (cfg.get("projection") or {}).get("kind"):
        parts[0] += "+" + cfg["projection"]["kind"]
    if rerank and (cfg.get("local") or cfg.get("joint")):
        conf = conf or opened.default_rerank()
        local = (cfg.get("local") or cfg["joint"])["name"]
        parts.append(f"{local}+{conf.name}")
    return " ".join(parts)


def revisited_image_folder(dataset: Path) -> Path:
    """Where a revisited dataset's images are: `jpg/` if present (revisitop's layout), else beside."""
    return dataset / "jpg" if (dataset / "jpg").is_dir() else dataset


def _find_image(folder: Path, name: str) -> Path | None:
    for suffix in ("", *IMAGE_SUFFIXES):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def read_revisited_queries(folder: Path, gnd: RevisitedGT) -> tuple[list[np.ndarray], list[float]]:
    """The query images, each cropped to its bounding box (the protocol's query region), and
    their resize factors: the crop's larger side over the photo's (1 for an uncropped query)."""
    images, factors = [], []
    for q in gnd.queries:
        path = _find_image(folder, q.name)
        if path is None:
            raise TansakuError(f"query image {q.name!r} not found in {folder}")
        try:
            image = read_image(path)
        except ImageReadError as exc:
            raise TansakuError(f"cannot read query image {path}: {exc.reason}") from exc
        factor = 1.0
        if q.bbx is not None:
            try:
                cropped = crop_query(image, q.bbx)
            except ValueError as exc:
                raise TansakuError(f"query {q.name}: {exc}") from exc
            factor = max(cropped.shape[:2]) / max(image.shape[:2])
            image = cropped
        images.append(image)
        factors.append(factor)
    return images, factors


def evaluate_revisited(
    engine: Engine, dataset: Path, fmt: str, rerank: bool = True, shortlist: int = 100,
    conf: RerankConf | None = None, config: dict[str, Any] | None = None,
    details: list[RetrievalDetails] | None = None,
) -> dict[str, Any]:
    """Revisited Oxford / Paris mAP (easy, medium, hard), percentages 0-100; per-query outcomes
    (medium setting) are appended to `details` when given."""
    pickle_path = dataset / REVISITED_PICKLES[fmt]
    if not pickle_path.is_file():
        raise TansakuError(f"{dataset} has no {REVISITED_PICKLES[fmt]} (the revisited ground truth)")
    try:
        gnd = load_revisited_ground_truth(pickle_path)
    except (ValueError, KeyError, TypeError) as exc:
        raise TansakuError(f"{pickle_path}: {exc}") from exc
    folder = revisited_image_folder(dataset)
    missing = [n for n in gnd.imlist if _find_image(folder, n) is None]
    if missing:
        raise TansakuError(f"{len(missing)} database images of {pickle_path.name} are not in "
                           f"{folder} (e.g. {missing[0]})")
    name = eval_gallery_name(fmt, folder, config)
    engine.index_folder(folder, name, profile="landmark", config=config)
    opened = engine.open_gallery(name)
    position = {}
    by_stem = {Path(path).stem: image_id for image_id, path in opened.paths.items()}
    for k, db_name in enumerate(gnd.imlist):
        image_id = by_stem.get(Path(db_name).stem)
        if image_id is not None:
            position[image_id] = k
    conf = conf or opened.default_rerank()
    images, factors = read_revisited_queries(folder, gnd)
    rankings = rank_for_images(opened, images, conf, rerank, shortlist, factors)
    ranks = [_complete([position[i] for i in r if i in position], len(gnd.imlist)) for r in rankings]
    scores = revisited_map(ranks, gnd)
    if details is not None:
        files = [_find_image(folder, name) or folder / name for name in gnd.imlist]
        details.append(RetrievalDetails("medium", _outcomes(
            revisited_queries(gnd, "medium"), ranks, lambda p: files[p],
            lambda k: _find_image(folder, gnd.queries[k].name) or folder / gnd.queries[k].name)))
    return {
        "dataset": str(dataset),
        "protocol": fmt,
        "method": _method_name(opened, rerank, conf),
        **{key: round(100.0 * value, 2) for key, value in scores.items()},
        "queries": len(gnd.queries),
    }


def _complete(ranked: list[int], n: int) -> np.ndarray:
    """A ranking of all n database positions: the ranked ones, then any never ranked (failed to index)."""
    seen = set(ranked)
    return np.array(ranked + [k for k in range(n) if k not in seen], dtype=np.int64)


def evaluate_retrieval(
    engine: Engine, dataset: Path, fmt: str, rerank: bool = True, shortlist: int = 100,
    conf: RerankConf | None = None, config: dict[str, Any] | None = None,
    details: list[RetrievalDetails] | None = None,
) -> dict[str, Any]:
    """Dispatch on `fmt`; the result is the `tansaku eval retrieval --json` object.

    `conf` None re-ranks as the gallery's configuration says; `config` None uses the landmark preset.
    """
    dataset = Path(dataset).expanduser()
    if not dataset.is_dir():
        raise TansakuError(f"dataset folder not found: {dataset}")
    try:
        FORMATS.check(fmt)
    except ValueError as exc:
        raise TansakuError(str(exc)) from exc
    if fmt == "holidays":
        return evaluate_holidays(engine, dataset, rerank, shortlist, conf, config, details)
    return evaluate_revisited(engine, dataset, fmt, rerank, shortlist, conf, config, details)
