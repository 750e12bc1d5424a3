"""Multi-shot re-identification: tracklets probe tracklets (`--format multishot`).

Layout: `DATASET/images/PPPP_cCs1_NNNNNN_00.jpg`; all images of one person from one camera form a
tracklet. In each trial the identities seen by both cameras are split at random, half for
training (the projection learns on their frames) and half for testing; camera-1 tracklets of the
test half probe camera-2 tracklets, and the tracklets of identities seen by one camera only join
the gallery as distractors. With `shots=K`, every probe and gallery tracklet is cut to K frames
drawn at random (seeded) from it, so K=1 is single-shot; `shots=None` keeps all frames.

A tracklet is one vector: its frames' rows (after the per-trial normaliser) pooled by their mean,
their element-wise max, or a weighted mean with weights softmax(frame score) over the frames kept
(temporal attention scores each frame independently, so its weights over any subset of a
tracklet are that softmax).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.evaluation.reid_metrics import evaluate_rank
from engine.evaluation.reid_protocols import (
    MAX_RANK,
    LearnedStage,
    Metric,
    Normalizer,
    PersonSet,
    _check_features,
    _distances,
    _normalized,
    _report,
    _staged,
    viper_splits,
)
from indexer.datasets.reid import layout_images as _layout_images
from indexer.naming import parse_market_name

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "max", "attention"]
POOLINGS = ("mean", "max", "attention")


def load_multishot(root: str | Path) -> PersonSet:
    """Frames of `root/images/PPPP_cCs1_NNNNNN_00.jpg` with person ids and cameras (from 1, as named)."""
    files = _layout_images(Path(root) / "images", ".jpg", "multishot",
                           "images/ holding PPPP_cCs1_NNNNNN_00.jpg")
    parsed = [parse_market_name(f.name) for f in files]
    return PersonSet(tuple(files), np.array([p for p, _ in parsed], np.int64),
                     np.array([c for _, c in parsed], np.int64))


def tracklets(pids: np.ndarray, camids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracklet index of each frame, and each tracklet's person id and camera (sorted by both)."""
    keys = np.stack([pids, camids], axis=1)
    uniq, track = np.unique(keys, axis=0, return_inverse=True)
    return track.reshape(-1), uniq[:, 0], uniq[:, 1]


def multishot_splits(pids: np.ndarray, camids: np.ndarray, trials: int = 10, seed: int = 0
                     ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Per trial (train ids, test ids) of the two-camera identities, and the one-camera ids."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    _, t_pid, t_cam = tracklets(pids, camids)
    ids, counts = np.unique(t_pid, return_counts=True)
    both = ids[counts >= 2]
    both = np.array([p for p in both if {1, 2} <= set(t_cam[t_pid == p].tolist())], np.int64)
    single = np.setdiff1d(ids, both)
    if len(both) < 4:
        raise ValueError(f"need at least 4 persons seen by cameras 1 and 2, got {len(both)}")
    return viper_splits(both, trials, seed), single  # the same seeded halves as VIPeR's


def pool_rows(rows: np.ndarray, pooling: Pooling, scores: np.ndarray | None = None) -> np.ndarray:
    """One vector from (T, D) frame rows: mean, max, or softmax(scores)-weighted mean."""
    if pooling == "mean":
        return rows.mean(axis=0)
    if pooling == "max":
        return rows.max(axis=0)
    if pooling == "attention":
        if scores is None:
            raise ValueError("attention pooling needs frame scores")
        w = np.exp(scores - scores.max())
        return (rows * (w / w.sum())[:, None]).sum(axis=0)
    raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")


def _pick(frames: np.ndarray, shots: int | None, rng: np.random.Generator) -> np.ndarray:
    if shots is None or shots >= len(frames):
        return frames
    return np.sort(rng.choice(frames, shots, replace=False))


def evaluate_multishot(
    features: np.ndarray,
    person_set: PersonSet,
    metric: Metric = "xqda",
    trials: int = 10,
    seed: int = 0,
    shots: int | None = None,
    pooling: Pooling = "mean",
    *,
    frame_scores: np.ndarray | None = None,
    method: str = "",
    normalizer: Callable[[], Normalizer] | None = None,
    stages: Callable[[], LearnedStage] | None = None,
) -> dict[str, Any]:
    """Multi-shot protocol (see the module docstring); the `tansaku eval reid --json` fields.

    `normalizer` and `stages` (GOG's normaliser, C-DPCF, a fusion's per-part normalisation) are
    fitted on each trial's training frames, as in `evaluate_viper`. `features` (trials, N, D) and
    `frame_scores` (trials, N) give each trial its own (a network fine-tuned on each trial's
    training half); the frames drawn for each tracklet are the same either way.
    """
    per_trial = np.ndim(features) == 3
    if per_trial and len(features) != trials:
        raise ValueError(f"per-trial features: {len(features)} trials given, {trials} asked")
    all_features = ([_check_features(f, len(person_set), "features") for f in features]
                    if per_trial else [_check_features(features, len(person_set), "features")])
    all_scores = (list(frame_scores) if per_trial and frame_scores is not None
                  else [frame_scores] * len(all_features))
    if shots is not None and shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if pooling == "attention" and any(s is None or len(s) != len(person_set) for s in all_scores):
        raise ValueError("attention pooling needs one score per frame")
    pids, camids = person_set.pids, person_set.camids
    track, t_pid, t_cam = tracklets(pids, camids)
    splits, single = multishot_splits(pids, camids, trials, seed)
    members = [np.flatnonzero(track == t) for t in range(len(t_pid))]
    rng = np.random.default_rng(seed + 1)
    results = []
    for t, (train_ids, test_ids) in enumerate(splits):
        train = np.isin(pids, train_ids)
        features, frame_scores = all_features[t if per_trial else 0], all_scores[t if per_trial else 0]
        feats = _staged(stages, _normalized(normalizer, features, train), train, pids, camids)
        probe = np.flatnonzero(np.isin(t_pid, test_ids) & (t_cam == 1))
        gallery = np.flatnonzero((np.isin(t_pid, test_ids) & (t_cam == 2))
                                 | np.isin(t_pid, single))

        def pooled(ts: np.ndarray, feats: np.ndarray = feats,
                   frame_scores: np.ndarray | None = frame_scores) -> np.ndarray:
            out = []
            for tr in ts:
                rows = _pick(members[tr], shots, rng)
                sc = None if frame_scores is None else frame_scores[rows]
                out.append(pool_rows(feats[rows], pooling, sc))
            return np.stack(out)

        Xq, Xg = pooled(probe), pooled(gallery)
        dist = _distances(metric, feats[train], pids[train], camids[train], Xq, Xg)
        scores = evaluate_rank(dist, t_pid[probe], t_pid[gallery], t_cam[probe], t_cam[gallery],
                               min(MAX_RANK, len(gallery)))
        if len(scores.cmc) < MAX_RANK:  # a gallery smaller than the ranks reported
            pad = np.full(MAX_RANK - len(scores.cmc), scores.cmc[-1])
            scores = replace(scores, cmc=np.concatenate([scores.cmc, pad]))
        logger.info("multishot trial %d/%d: rank-1 %.1f", t + 1, trials, 100 * scores.cmc[0])
        results.append(scores)
    k = "all" if shots is None else str(shots)
    protocol = (f"{len(splits[0][0])}/{len(splits[0][1])} two-camera persons x {trials} random "
                f"trials (seed {seed}), camera-1 tracklets probe camera-2 tracklets, "
                f"{len(single)} one-camera persons as distractors, {k} frames per tracklet, "
                f"{pooling} pooling")
    out = _report("multishot", protocol, method, results)
    out["shots"], out["pooling"] = k, pooling
    return out
