"""Re-identification protocols: VIPeR (10 random 316/316 trials) and Market-1501.

The data set loaders live in `indexer.datasets.reid` (training reads them too) and are re-exported
here. They return plain arrays (paths, person ids, camera ids); the evaluators take features that
are row-aligned with them, learn the projection on the training part, and return the JSON fields
of `tansaku eval reid` with percentages 0-100.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from engine.evaluation.reid_metrics import ReidScores, evaluate_rank
from indexer.datasets.reid import MarketSplit, PersonSet, load_market, load_viper
from indexer.naming import parse_market_name
from indexer.projections.gallery import PROJECTIONS
from indexer.projections.gallery import make_projection as make_gallery_projection
from indexer.projections.kxqda import KXQDA, sq_distances
from indexer.projections.xqda import XQDA, quadratic_distance
from indexer.registry import Registry

logger = logging.getLogger(__name__)

Metric = Literal["euclidean", "xqda", "kxqda"]
# "euclidean" compares raw descriptors; the others name a projection learned on the training part
METRICS: Registry[type[XQDA] | type[KXQDA] | None] = Registry(
    "metric", {"euclidean": None, **PROJECTIONS.entries}, sort=False)
RANKS = (1, 5, 10, 20)
MAX_RANK = 50
_PROJECT_CHUNK = 2048  # rows per projection call: bounds KXQDA's (rows, N_train) kernel block



class Normalizer(Protocol):
    """Feature preprocessing learned on the training images (e.g. GOG's mean removal + L2)."""

    def fit(self, X: np.ndarray) -> Normalizer: ...

    def transform(self, X: np.ndarray) -> np.ndarray: ...


class LearnedStage(Protocol):
    """A stage learned from training identities before the metric (`PersonStages`: GOG's normaliser,
    C-DPCF's camera-specific pooling, a fusion's per-part normalisation)."""

    def fit(self, X: np.ndarray, pids: np.ndarray, camids: np.ndarray) -> LearnedStage: ...

    def transform(self, X: np.ndarray, camids: np.ndarray | None = None) -> np.ndarray: ...


RERANKS = ("none", "kreciprocal")


@dataclass(frozen=True)
class ReidTrial:
    """One trial's queries, gallery and distances (what `--report` draws its ranked lists from)."""

    query: PersonSet
    gallery: PersonSet
    distances: np.ndarray  # (num_query, num_gallery), smaller is closer
    cmc: np.ndarray  # (MAX_RANK,) fractions


def _subset(persons: PersonSet, mask: np.ndarray) -> PersonSet:
    paths = tuple(p for p, keep in zip(persons.paths, mask, strict=True) if keep)
    return PersonSet(paths, persons.pids[mask], persons.camids[mask])


# ----------------------------------------------------------------------------- VIPeR


def viper_splits(
    pids: np.ndarray, trials: int = 10, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`trials` random (train, test) halves of the person ids (316/316 on VIPeR), seeded."""
    ids = np.unique(np.asarray(pids))
    if len(ids) < 4:
        raise ValueError(f"need at least 4 persons to split, got {len(ids)}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    rng = np.random.default_rng(seed)
    half = len(ids) // 2
    splits = []
    for _ in range(trials):
        perm = rng.permutation(ids)
        splits.append((np.sort(perm[:half]), np.sort(perm[half:])))
    return splits


def evaluate_viper(
    features: np.ndarray,
    person_set: PersonSet,
    metric: Metric = "xqda",
    trials: int = 10,
    seed: int = 0,
    *,
    method: str = "",
    normalizer: Callable[[], Normalizer] | None = None,
    stages: Callable[[], LearnedStage] | None = None,
    rerank: str = "none",
    details: list[ReidTrial] | None = None,
) -> dict[str, Any]:
    """VIPeR protocol: per trial learn on the train half, cam_a probes cam_b on the test half.

    `normalizer`, when given, makes a preprocessing step that is fitted on each trial's training
    images and applied to all images before the projection; `stages` the same for a stage that
    learns from identities and cameras. `rerank="kreciprocal"` re-ranks each trial's distances.
    Each trial is appended to `details` when given.
    """
    _check_rerank(rerank)
    features = _check_features(features, len(person_set), "features")
    pids, camids = person_set.pids, person_set.camids
    splits = viper_splits(pids, trials, seed)
    results = []
    for t, (train_ids, test_ids) in enumerate(splits):
        train = np.isin(pids, train_ids)
        test = np.isin(pids, test_ids)
        q, g = test & (camids == 0), test & (camids == 1)
        feats = _normalized(normalizer, features, train)
        feats = _staged(stages, feats, train, pids, camids)
        dist = _distances(metric, feats[train], pids[train], camids[train], feats[q], feats[g],
                          rerank)
        scores = evaluate_rank(dist, pids[q], pids[g], camids[q], camids[g], MAX_RANK)
        logger.info("VIPeR trial %d/%d: rank-1 %.1f", t + 1, trials, 100 * scores.cmc[0])
        if details is not None:
            details.append(ReidTrial(_subset(person_set, q), _subset(person_set, g), dist,
                                     scores.cmc))
        results.append(scores)
    protocol = (f"{len(splits[0][0])}/{len(splits[0][1])} persons x {trials} random trials "
                f"(seed {seed}), cam_a probes cam_b")
    return _report("viper", protocol, method, results)


# ----------------------------------------------------------------------------- Market-1501


def evaluate_market(
    train_feats: np.ndarray,
    query_feats: np.ndarray,
    gallery_feats: np.ndarray,
    split: MarketSplit,
    metric: Metric = "xqda",
    *,
    method: str = "",
    normalizer: Callable[[], Normalizer] | None = None,
    stages: Callable[[], LearnedStage] | None = None,
    rerank: str = "none",
    details: list[ReidTrial] | None = None,
) -> dict[str, Any]:
    """Market-1501 single-query protocol; the projection learns on bounding_box_train.

    `normalizer`, when given, is fitted on the training images and applied to all three sets.

    XQDA / KXQDA then work in the span of the 12,936 training images: several N x N float64
    matrices (1.3 GB each) and an N x N eigenproblem, i.e. GBs of memory and minutes of CPU.
    """
    train_feats = _check_features(train_feats, len(split.train), "train_feats")
    query_feats = _check_features(query_feats, len(split.query), "query_feats")
    gallery_feats = _check_features(gallery_feats, len(split.gallery), "gallery_feats")
    _check_rerank(rerank)
    labelled = split.train.pids > 0  # junk and distractors carry no identity to learn from
    if stages is not None:
        fitted_stages = stages().fit(train_feats[labelled], split.train.pids[labelled],
                                     split.train.camids[labelled])
        train_feats, query_feats, gallery_feats = (
            np.asarray(fitted_stages.transform(x, c.camids), np.float64)
            for x, c in ((train_feats, split.train), (query_feats, split.query),
                         (gallery_feats, split.gallery)))
    if normalizer is not None:
        fitted = normalizer().fit(train_feats[labelled])
        train_feats, query_feats, gallery_feats = (
            np.asarray(fitted.transform(x), np.float64)
            for x in (train_feats, query_feats, gallery_feats))
    dist = _distances(metric, train_feats[labelled], split.train.pids[labelled],
                      split.train.camids[labelled], query_feats, gallery_feats, rerank)
    scores = evaluate_rank(dist, split.query.pids, split.gallery.pids, split.query.camids,
                           split.gallery.camids, MAX_RANK)
    protocol = ("single query; same-id same-camera gallery images and junk (-1) left out, "
                "distractors (0) kept")
    logger.info("Market-1501: %d of %d queries have a true match", scores.num_valid_queries,
                len(split.query))
    if details is not None:
        details.append(ReidTrial(split.query, split.gallery, dist, scores.cmc))
    return _report("market1501", protocol, method, [scores])


# ----------------------------------------------------------------------------- shared


def make_projection(metric: str) -> XQDA | KXQDA | None:
    """The projection a metric name stands for (None: plain Euclidean distance)."""
    return None if METRICS.check(metric) == "euclidean" else make_gallery_projection(metric)


def _normalized(
    normalizer: Callable[[], Normalizer] | None, features: np.ndarray, train: np.ndarray
) -> np.ndarray:
    """All rows through a normalizer fitted on the training rows (features as they are if None)."""
    if normalizer is None:
        return features
    return np.asarray(normalizer().fit(features[train]).transform(features), np.float64)


def _check_rerank(rerank: str) -> None:
    if rerank not in RERANKS:
        raise ValueError(f"unknown re-ranking {rerank!r}; valid: {', '.join(RERANKS)}")


def _staged(
    stages: Callable[[], LearnedStage] | None, features: np.ndarray, train: np.ndarray,
    pids: np.ndarray, camids: np.ndarray,
) -> np.ndarray:
    """All rows through learned stages fitted on the training rows (as they are if None)."""
    if stages is None:
        return features
    fitted = stages().fit(features[train], pids[train], camids[train])
    return np.asarray(fitted.transform(features, camids), np.float64)


def _project(model: XQDA | KXQDA, X: np.ndarray, name: str) -> np.ndarray:
    return np.concatenate([model.project(X[i:i + _PROJECT_CHUNK], name)
                           for i in range(0, len(X), _PROJECT_CHUNK)])


def _distances(
    metric: str,
    X_train: np.ndarray,
    train_pids: np.ndarray,
    train_cams: np.ndarray,
    Xq: np.ndarray,
    Xg: np.ndarray,
    rerank: str = "none",
) -> np.ndarray:
    """Query x gallery distances under `metric`, learning the projection on the training rows.

    With `rerank="kreciprocal"`, the query-query and gallery-gallery distances under the same
    metric feed k-reciprocal re-ranking (Zhong et al., CVPR 2017).
    """
    model = make_projection(metric)
    if model is None:
        pair = lambda A, B: sq_distances(A, B)  # noqa: E731
    else:
        model.fit(X_train, train_pids, train_cams)
        assert model.M_ is not None
        M = model.M_
        Pq, Pg = _project(model, Xq, "query"), _project(model, Xg, "gallery")
        Xq, Xg = Pq, Pg
        pair = lambda A, B: quadratic_distance(A, B, M)  # noqa: E731
    q_g = pair(Xq, Xg)
    if rerank == "none":
        return q_g
    from matcher.kreciprocal import k_reciprocal_rerank

    return k_reciprocal_rerank(q_g, pair(Xq, Xq), pair(Xg, Xg))


def _check_features(features: np.ndarray, n: int, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) != n:
        raise ValueError(f"{name} must be ({n}, D) to match the images, got {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return features


def _report(dataset: str, protocol: str, method: str, results: list[ReidScores]) -> dict[str, Any]:
    """Mean of per-trial scores as the JSON fields of `tansaku eval reid` (percentages 0-100)."""
    cmc = np.mean([r.cmc for r in results], axis=0)
    out: dict[str, Any] = {"dataset": dataset, "protocol": protocol, "method": method}
    out.update({f"rank{k}": round(100 * float(cmc[k - 1]), 2) for k in RANKS})
    out["mAP"] = round(100 * float(np.mean([r.mAP for r in results])), 2)
    out["mINP"] = round(100 * float(np.mean([r.mINP for r in results])), 2)
    out["trials"] = len(results)
    return out


__all__ = ["METRICS", "MarketSplit", "PersonSet", "evaluate_market", "evaluate_viper", "load_market",
           "load_viper", "make_projection", "parse_market_name", "viper_splits"]
