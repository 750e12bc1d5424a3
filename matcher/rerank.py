"""Geometric re-ranking of a global shortlist by verified local matches (inlier counts).

Two modes share the matcher and the verifiers (`RERANK_MODES`):

- `ours` (the default): brute-force nearest neighbours with Lowe's ratio test, DEGENSAC
  homography, candidates with at least `min_inliers` first, then verified query expansion; the
  shortlist is screened first (the query's 96 strongest features against each candidate's 192
  strongest), so that only 16 of 100 candidates are decoded and matched in full and verified
  (`count_inliers`; re-ranking in 0.37x the time of matching them all, the same Holidays mAP);
- `delf`: DELF's reference re-ranking (tensorflow/models, `delf/python/detect_to_retrieve/
  image_reranking.py`): a cKDTree with a descriptor-distance bound of 0.9 and no ratio test,
  scikit-image RANSAC fitting an affine map (residual 10 px, 1000 trials, 3-point samples), and
  the top 100 sorted by (inliers, global score), with no expansion.

`ours` is the default because it was both faster and more accurate on Holidays, with RootSIFT and
with DELG-style features alike (`scripts/bench_query.py --rerank-mode ours delf`, README).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from indexer.describe import StoredLocal
from indexer.features import LocalFeatures, strongest_rows
from indexer.registry import Registry
from matcher.matching import blas_threads, match_pairs
from matcher.verification import Verification, matched_points, verify

# A shortlist entry: decoded features, or a stored record decoded in the matching threads as needed.
Candidate = LocalFeatures | StoredLocal


@dataclass(frozen=True)
class RerankConf:
    """How candidates are matched and verified; defaults chosen by scripts/bench_matching.py."""

    matcher: Literal["brute", "kdtree"] = "brute"
    ratio: float | None = 0.8
    mutual: bool = False
    distance_bound: float | None = None  # drop matches at this descriptor distance or farther
    verifier: Literal["degensac", "magsac", "ransac"] = "degensac"
    model: Literal["homography", "fundamental", "affine"] = "homography"
    threshold_px: float = 4.0
    max_iters: int = 2000  # RANSAC iterations (scikit-image's RANSAC always runs them all)
    min_inliers: int = 12  # below this a candidate is not considered verified
    expansion: int = 2  # verified images added to the query to re-order the unverified rest (0: off)
    workers: int = 2  # threads matching disjoint parts of the shortlist (BLAS single-threaded in each)
    # Screening (None: off): the query's `screen_features` strongest features are matched against
    # the whole shortlist; only the `screen_global` first candidates and the `screen_keep` with
    # the most screening matches are matched with the rest and verified (see `count_inliers`).
    screen_features: int | None = 96
    screen_keep: int = 8
    screen_global: int = 8
    # The candidates' own strongest features screened against (None: all of them). With a limit,
    # the chosen candidates are matched in full afresh (the screening matches are not theirs).
    screen_candidate_features: int | None = 192

    def __post_init__(self) -> None:
        for field_name in ("screen_features", "screen_candidate_features"):
            value = getattr(self, field_name)
            if value is not None and value < 1:
                raise ValueError(f"{field_name} must be >= 1 or None (off), got {value}")
        if self.screen_keep < 0 or self.screen_global < 0:
            raise ValueError(f"screen_keep and screen_global must be >= 0, got "
                             f"{self.screen_keep}, {self.screen_global}")

    @property
    def name(self) -> str:
        """A short description for reports, e.g. `brute+degensac-homography+verified-qe2`."""
        text = f"{self.matcher}+{self.verifier}-{self.model}"
        if self.screens:
            text += f"+screen{self.screen_features}-{self.screen_global}+{self.screen_keep}"
            if self.screen_candidate_features is not None:
                text += f"x{self.screen_candidate_features}"
        return text + (f"+verified-qe{self.expansion}" if self.expansion else "")

    @property
    def screens(self) -> bool:
        """Whether screening applies (the mutual check needs every query feature, so it turns it off)."""
        return self.screen_features is not None and not self.mutual


RERANK_MODES: dict[str, RerankConf] = {
    "ours": RerankConf(),
    "delf": RerankConf(matcher="kdtree", ratio=None, distance_bound=0.9, verifier="ransac",
                       model="affine", threshold_px=10.0, max_iters=1000, min_inliers=1,
                       expansion=0, screen_features=None),
}

MODES: Registry[RerankConf] = Registry("re-ranking mode", RERANK_MODES, sort=False)


def rerank_mode(mode: str = "ours", **overrides: Any) -> RerankConf:
    """The settings of a named mode, with fields overridden (None values are ignored)."""
    return replace(MODES.get(mode), **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class StageTimes:
    """Seconds spent per query stage (summed over calls)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, start: float) -> float:
        """Charge the time since `start` to `stage`; returns now, to chain stages."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - start
        return now


def count_inliers(
    query: LocalFeatures, candidates: Sequence[Candidate], conf: RerankConf,
    times: StageTimes | None = None,
) -> np.ndarray:
    """Verified inlier count of each candidate against the query, (N,) int; -1 for a candidate
    that screening left out (not verified).

    With screening (`conf.screens`) only part of the shortlist is matched in full and verified:
    the query's strongest `screen_features` features are matched against every candidate first,
    and candidates outside the `screen_global` first and the `screen_keep` with the most of those
    matches are not verified. The others get exactly the matches (and inliers) of full matching:
    without the mutual check a query feature's match depends on no other query feature, so the
    strong features' matches are reused and only the rest of the query is matched again. With
    `screen_candidate_features` the screening looks at each candidate's strongest features only
    (stored records decode just those), and the chosen candidates are matched in full afresh.
    """
    times = times or StageTimes()
    start = time.perf_counter()
    inliers = np.full(len(candidates), -1, dtype=np.int64)
    strong, rest = _screening_split(query, len(candidates), conf)
    if rest is None:
        chosen = list(range(len(candidates)))
        matches = _match_in_parallel(query, candidates, conf)
    elif conf.screen_candidate_features is not None:
        screened = _match_in_parallel(query.subset(strong), candidates, conf,
                                      conf.screen_candidate_features)
        chosen = _screened_candidates([len(m) for m in screened], conf).tolist()
        matches = _match_in_parallel(query, [candidates[k] for k in chosen], conf)
    else:
        screened = _match_in_parallel(query.subset(strong), candidates, conf)
        chosen = _screened_candidates([len(m) for m in screened], conf).tolist()
        more = _match_in_parallel(query.subset(rest), [candidates[k] for k in chosen], conf)
        matches = [_merge(screened[k], strong, extra, rest) for k, extra in zip(chosen, more, strict=True)]
    start = times.add("matching", start)
    for k, pairs in zip(chosen, matches, strict=True):
        inliers[k] = _verify(query, _full(candidates[k]), pairs, conf).inliers
    times.add("verification", start)
    return inliers


def _screening_split(
    query: LocalFeatures, n_candidates: int, conf: RerankConf
) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions of the query's screening features and of the rest (None: no screening here)."""
    everything = np.arange(len(query))
    n = conf.screen_features
    if not conf.screens or n is None or len(query) <= n or \
            n_candidates <= conf.screen_keep + conf.screen_global:
        return everything, None
    if query.scores is None:  # no detector scores to rank by: the first ones
        return everything[:n], everything[n:]
    order = np.argsort(-np.asarray(query.scores, np.float32), kind="stable")
    return np.sort(order[:n]), np.sort(order[n:])


def _full(candidate: Candidate) -> LocalFeatures:
    return candidate.full() if isinstance(candidate, StoredLocal) else candidate


def _strongest(candidate: Candidate, n: int | None) -> LocalFeatures:
    """All of a candidate's features (n None), or its n strongest (by detector score; the first n
    without scores), in stored order; a stored record decodes only those."""
    if n is None:
        return _full(candidate)
    if isinstance(candidate, StoredLocal):
        return candidate.strongest(n)
    if len(candidate) <= n:
        return candidate
    return candidate.subset(strongest_rows(candidate.scores, len(candidate), n))


def _screened_candidates(counts: Sequence[int], conf: RerankConf) -> np.ndarray:
    """Shortlist positions matched in full: the first `screen_global`, then the `screen_keep` with
    the most screening matches (ties: global order), in shortlist order."""
    counts_ = np.asarray(counts)
    by_count = np.lexsort((np.arange(len(counts_)), -counts_))
    head = np.arange(min(conf.screen_global, len(counts_)))
    rest = by_count[~np.isin(by_count, head)][: conf.screen_keep]
    return np.sort(np.concatenate([head, rest]))


def _merge(first: np.ndarray, first_rows: np.ndarray, second: np.ndarray,
           second_rows: np.ndarray) -> np.ndarray:
    """Matches of two query subsets as matches of the whole query, in query order (as full
    matching lists them, so that the seeded verifiers see the same input)."""
    pairs = np.concatenate([
        np.stack([first_rows[first[:, 0]], first[:, 1]], axis=1) if len(first) else first,
        np.stack([second_rows[second[:, 0]], second[:, 1]], axis=1) if len(second) else second,
    ]).astype(np.int64)
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def _verify(
    query: LocalFeatures, candidate: LocalFeatures, pairs: np.ndarray, conf: RerankConf
) -> Verification:
    return verify(query.keypoints, candidate.keypoints, pairs, method=conf.verifier,
                  model=conf.model, threshold_px=conf.threshold_px, max_iters=conf.max_iters)


@dataclass(frozen=True)
class PairMatch:
    """Why one candidate matched a query: its verified correspondences, in pixels of each image."""

    query_points: np.ndarray  # (K, 2) x, y of the inliers in the query image
    candidate_points: np.ndarray  # (K, 2) the same inliers in the candidate image
    putative: int  # matches before verification

    @property
    def inliers(self) -> int:
        """The verified inlier count (what re-ranking counted for this pair)."""
        return len(self.query_points)


def match_pair(query: LocalFeatures, candidate: LocalFeatures, conf: RerankConf) -> PairMatch:
    """Match and verify one query-candidate pair as re-ranking does; returns the inlier pairs."""
    pairs = _match_in_parallel(query, [candidate], conf)[0]
    result = _verify(query, candidate, pairs, conf)
    kept = pairs[result.inlier_mask] if len(pairs) else pairs
    qp, cp = matched_points(query.keypoints, candidate.keypoints, kept)
    return PairMatch(qp.astype(np.float32), cp.astype(np.float32), len(pairs))


def _match_in_parallel(
    query: LocalFeatures, candidates: Sequence[Candidate], conf: RerankConf,
    strongest: int | None = None,
) -> list[np.ndarray]:
    """`match_pairs` over `conf.workers` interleaved slices of the shortlist (numpy frees the GIL),
    BLAS held to one thread in each (capped once around them: the cap is process-wide); each
    candidate's features (its `strongest` only, when given) are decoded in the worker."""
    workers = max(1, min(conf.workers, len(candidates)))

    def match(part: Sequence[Candidate]) -> list[np.ndarray]:
        features = [_strongest(c, strongest) for c in part]
        return match_pairs(query, features, conf.matcher, conf.ratio, conf.mutual,
                           workers=-1 if conf.matcher == "brute" else 1,
                           distance_bound=conf.distance_bound)

    with blas_threads(1):
        if workers == 1:
            return match(candidates)
        slices = [list(candidates[k::workers]) for k in range(workers)]
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(match, slices))
    out: list[np.ndarray] = [np.zeros((0, 2), np.int64)] * len(candidates)
    for k, part in enumerate(parts):
        out[k::workers] = part
    return out


def order_by_inliers(inliers: np.ndarray, min_inliers: int) -> np.ndarray:
    """Positions of the shortlist in re-ranked order.

    Candidates with at least `min_inliers` come first, by inlier count (ties keep the global order);
    the rest keep their global order after them.
    """
    inliers = np.asarray(inliers)
    verified = np.flatnonzero(inliers >= min_inliers)
    rest = np.flatnonzero(inliers < min_inliers)
    verified = verified[np.argsort(-inliers[verified], kind="stable")]
    return np.concatenate([verified, rest])


def expanded_query(query: np.ndarray, verified: np.ndarray) -> np.ndarray:
    """Spatially verified query expansion (Chum et al., ICCV 2007): the query plus the global
    vectors of its best verified matches, renormalised; (D,) and (K, D) -> (D,)."""
    total = query.astype(np.float32) + verified.astype(np.float32).sum(axis=0)
    norm = float(np.linalg.norm(total))
    return total / norm if norm > 0 else total
