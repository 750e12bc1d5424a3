"""Instance-retrieval metrics: INRIA Holidays and revisited Oxford / Paris.

Pure functions on arrays. The ground-truth readers (Holidays names, revisited pickles) live in
`indexer.datasets.retrieval` and are re-exported here. Two APs are given:

- ``average_precision_trapezoid``: the area under the precision-recall curve accumulated in
  trapezoids between recall steps. This is the AP of both published evaluation scripts: INRIA's
  ``holidays_map.py`` (``score_ap_from_ranks_1``, Jegou et al. 2008) and revisitop / cirtorch
  ``compute_ap`` (Radenovic et al., CVPR 2018). It is the default everywhere here.
- ``average_precision``: the non-interpolated AP (mean over positives of the precision at each
  positive's rank), as in TREC / torchreid. It is slightly higher than the trapezoidal one.

Rankings are sequences of database ids, best first. Junk ids are removed from a ranking before
scoring; positives missing from a (possibly truncated) ranking contribute zero. All values are
fractions in [0, 1]; callers that report percentages multiply by 100.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np

from indexer.datasets.retrieval import (  # noqa: F401  # re-exported: the ground truth readers
    Query,
    RevisitedGT,
    RevisitedQuery,
    holidays_ground_truth,
    index_array,
    load_revisited_ground_truth,
    parse_revisited_ground_truth,
)
from indexer.registry import Registry

logger = logging.getLogger(__name__)

ApMethod = Literal["trapezoid", "non_interpolated"]
RevisitedSetting = Literal["easy", "medium", "hard"]


# --------------------------------------------------------------------------- average precision


def _as_ids(ids: Any, what: str) -> np.ndarray:
    """Any id collection (set, list, array) as a 1-D array; sets have no order to keep."""
    if isinstance(ids, set | frozenset):
        ids = sorted(ids)
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


def positive_ranks(ranked_ids: Any, positives: Any, junk: Any = ()) -> tuple[np.ndarray, int]:
    """0-based ranks of the retrieved positives once junk is removed, and how many positives."""
    ranked = _as_ids(ranked_ids, "ranked_ids")
    pos = np.unique(_as_ids(positives, "positives"))
    junk_ids = np.unique(_as_ids(junk, "junk"))
    both = np.intersect1d(pos, junk_ids)
    if both.size:
        raise ValueError(f"ids {both[:5].tolist()} are both positive and junk")
    kept = ranked[~np.isin(ranked, junk_ids)] if junk_ids.size else ranked
    if np.unique(kept).size != kept.size:
        raise ValueError("ranked_ids lists an id more than once")
    return np.flatnonzero(np.isin(kept, pos)), int(pos.size)


def _check_positives(n_pos: int) -> None:
    if n_pos == 0:
        raise ValueError("AP is undefined for a query with no positives")


def average_precision(ranked_ids: Any, positives: Any, junk: Any = ()) -> float:
    """Non-interpolated AP: mean over positives of precision at their rank (0 if not retrieved)."""
    ranks, n_pos = positive_ranks(ranked_ids, positives, junk)
    _check_positives(n_pos)
    hits = np.arange(1, ranks.size + 1)
    return float(np.sum(hits / (ranks + 1)) / n_pos)


def average_precision_trapezoid(ranked_ids: Any, positives: Any, junk: Any = ()) -> float:
    """AP as the published Holidays / revisitop scripts compute it: trapezoids between recall steps.

    The j-th retrieved positive (0-based) at rank r adds a trapezoid of width 1/n_pos between
    precision j/r just before it (1 at rank 0) and (j+1)/(r+1) at it.
    """
    ranks, n_pos = positive_ranks(ranked_ids, positives, junk)
    _check_positives(n_pos)
    j = np.arange(ranks.size)
    before = np.where(ranks == 0, 1.0, j / np.maximum(ranks, 1))
    at = (j + 1) / (ranks + 1)
    return float(np.sum(before + at) / (2.0 * n_pos))


AP_METHODS: dict[str, Callable[..., float]] = {
    "trapezoid": average_precision_trapezoid,
    "non_interpolated": average_precision,
}


def _ap_function(method: str) -> Callable[..., float]:
    return Registry("AP method", AP_METHODS).get(method)


def _check_rows(ranks: Sequence[Any] | np.ndarray, n_queries: int) -> None:
    if len(ranks) != n_queries:
        hint = ""
        if isinstance(ranks, np.ndarray) and ranks.ndim == 2 and ranks.shape[1] == n_queries:
            hint = " (cirtorch's compute_map takes the transpose: pass ranks.T)"
        raise ValueError(
            f"ranks has {len(ranks)} rows but there are {n_queries} queries; "
            f"ranks must be one row per query{hint}"
        )


def average_precisions(
    ranks: Sequence[Any] | np.ndarray, queries: Sequence[Query], method: ApMethod = "trapezoid"
) -> np.ndarray:
    """AP of each query (row ``i`` of ``ranks`` ranks the database for ``queries[i]``).

    Queries without positives get NaN: as in cirtorch's ``compute_map``, the mean leaves them out.
    """
    ap_fn = _ap_function(method)
    _check_rows(ranks, len(queries))
    aps = np.full(len(queries), np.nan)
    for i, (row, query) in enumerate(zip(ranks, queries, strict=True)):
        if len(query.positives):
            aps[i] = ap_fn(row, query.positives, query.junk)
    return aps


def mean_average_precision(
    ranks: Sequence[Any] | np.ndarray, queries: Sequence[Query], method: ApMethod = "trapezoid"
) -> float:
    """Mean AP over the queries that have at least one positive."""
    aps = average_precisions(ranks, queries, method)
    scored = np.isfinite(aps)
    if not scored.any():
        raise ValueError("no query has a positive: mAP is undefined")
    if not scored.all():
        logger.info("%d of %d queries have no positives and are skipped", (~scored).sum(), len(aps))
    return float(aps[scored].mean())


def _concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def revisited_queries(gnd: RevisitedGT, setting: RevisitedSetting) -> list[Query]:
    """Queries of one setting (Radenovic et al. 2018): which lists are positive and which junk.

    easy: positives easy, junk junk + hard; medium: positives easy + hard, junk junk;
    hard: positives hard, junk junk + easy.
    """
    layouts = {
        "easy": (("easy",), ("junk", "hard")),
        "medium": (("easy", "hard"), ("junk",)),
        "hard": (("hard",), ("junk", "easy")),
    }
    if setting not in layouts:
        raise ValueError(f"unknown revisited setting {setting!r}; valid: {sorted(layouts)}")
    ok_keys, junk_keys = layouts[setting]
    return [
        Query(
            q.name,
            i,
            _concat(getattr(q, k) for k in ok_keys),
            _concat(getattr(q, k) for k in junk_keys),
        )
        for i, q in enumerate(gnd.queries)
    ]


def revisited_map(ranks: Sequence[Any] | np.ndarray, gnd: RevisitedGT) -> dict[str, float]:
    """Revisited Oxford / Paris mAP (trapezoidal AP) for the easy, medium and hard settings.

    ``ranks[i]`` ranks the database (indices into ``gnd.imlist``) for query ``i``, best first: one
    row per query (the transpose of cirtorch's layout). Values are fractions in [0, 1].
    """
    _check_rows(ranks, len(gnd.queries))
    n_db = len(gnd.imlist)
    for i, row in enumerate(ranks):
        index_array(row, f"ranks[{i}]", n_db)
    return {
        f"mAP_{s}": mean_average_precision(ranks, revisited_queries(gnd, s), "trapezoid")
        for s in ("easy", "medium", "hard")
    }


def crop_query(image: np.ndarray, bbx: Sequence[float] | np.ndarray) -> np.ndarray:
    """Crop a query image to its box (x1, y1, x2, y2 in pixels, end exclusive).

    Coordinates are rounded to the nearest integer as PIL's ``Image.crop`` (used by revisitop and
    DELF) does, then clipped to the image.
    """
    box = np.asarray(bbx, dtype=np.float64).reshape(-1)
    if box.size != 4 or not np.isfinite(box).all():
        raise ValueError(f"bbx must be four finite numbers x1, y1, x2, y2, got {box.tolist()}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be HxW or HxWxC, got shape {image.shape}")
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(x1, 0), min(x2, w)
    y1, y2 = max(y1, 0), min(y2, h)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"bbx {box.tolist()} leaves nothing of a {w}x{h} image")
    return image[y1:y2, x1:x2]
