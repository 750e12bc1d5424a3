"""Re-identification metrics: CMC, mAP and mINP from a query x gallery distance matrix.

Market-1501 protocol (also fine for VIPeR, where probes and gallery never share a camera): for each
query, gallery images of the same person seen by the same camera are left out, junk images
(person id -1) are left out, and distractors (person id 0) stay in as negatives. Queries left with
no true match are skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JUNK_PID = -1
_CHUNK = 256  # queries per block: bounds the (chunk, Ng) argsort buffers on Market-sized galleries


@dataclass(frozen=True)
class ReidScores:
    """Scores as fractions in 0..1; cmc[k] is the rank-(k+1) identification rate."""

    cmc: np.ndarray  # (max_rank,)
    mAP: float  # noqa: N815 (the name every re-ID paper uses)
    mINP: float  # noqa: N815
    num_valid_queries: int


@dataclass
class _Totals:
    cmc: np.ndarray
    ap: float = 0.0
    inp: float = 0.0
    valid: int = 0


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> ReidScores:
    """CMC, mAP and mINP (Ye et al., TPAMI 2021) of a distance matrix under the Market-1501 rules."""
    distmat, q_pids, g_pids, q_camids, g_camids = _validate(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank
    )
    totals = _Totals(cmc=np.zeros(max_rank))
    for start in range(0, len(distmat), _CHUNK):
        rows = slice(start, start + _CHUNK)
        _accumulate(
            totals, distmat[rows], q_pids[rows], q_camids[rows], g_pids, g_camids, max_rank
        )
    if totals.valid == 0:
        raise ValueError("no query has a true match in the gallery: nothing to evaluate")
    return ReidScores(
        cmc=totals.cmc / totals.valid,
        mAP=totals.ap / totals.valid,
        mINP=totals.inp / totals.valid,
        num_valid_queries=totals.valid,
    )


def _accumulate(
    totals: _Totals,
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> None:
    """Add the per-query scores of one block of queries to the running totals."""
    order = np.argsort(dist, axis=1, kind="stable")  # stable: ties keep gallery order
    pids, cams = g_pids[order], g_camids[order]
    same_pid = pids == q_pids[:, None]
    keep = ~(same_pid & (cams == q_camids[:, None])) & (pids != JUNK_PID)
    hit = same_pid & keep
    num_rel = hit.sum(axis=1)
    valid = num_rel > 0
    if not valid.any():
        return
    hit, keep, num_rel = hit[valid], keep[valid], num_rel[valid]
    rank = np.cumsum(keep, axis=1)  # 1-based rank among kept gallery images
    first = np.where(hit, rank, np.iinfo(rank.dtype).max).min(axis=1)
    last = np.where(hit, rank, 0).max(axis=1)
    precision_at_hit = np.where(hit, np.cumsum(hit, axis=1) / np.maximum(rank, 1), 0.0)
    totals.cmc += (first[:, None] <= np.arange(1, max_rank + 1)[None, :]).sum(axis=0)
    totals.ap += float((precision_at_hit.sum(axis=1) / num_rel).sum())
    totals.inp += float((num_rel / last).sum())
    totals.valid += int(valid.sum())


def _validate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes and turn the inputs into arrays; name the argument that is wrong."""
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be (num_query, num_gallery), got shape {distmat.shape}")
    nq, ng = distmat.shape
    arrays = {"q_pids": q_pids, "g_pids": g_pids, "q_camids": q_camids, "g_camids": g_camids}
    expected = {"q_pids": nq, "g_pids": ng, "q_camids": nq, "g_camids": ng}
    out = {}
    for name, value in arrays.items():
        arr = np.asarray(value).reshape(-1)
        if len(arr) != expected[name]:
            raise ValueError(f"{name} has {len(arr)} entries, distmat needs {expected[name]}")
        out[name] = arr
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if np.isnan(distmat).any():
        raise ValueError("distmat contains NaN")
    return distmat, out["q_pids"], out["g_pids"], out["q_camids"], out["g_camids"]
