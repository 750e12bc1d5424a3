"""Geometric verification of putative matches: robust homography, fundamental-matrix or affine fitting.

Three estimators: DEGENSAC (Chum, Werner & Matas, CVPR 2005; `pydegensac`), RANSAC that detects a
dominant plane while fitting F; OpenCV's USAC with MAGSAC++ scoring (Barath et al., CVPR 2020),
which marginalises over the noise scale up to the threshold; and plain RANSAC from scikit-image,
which DELF's reference re-ranking uses to fit an affine map (`ransac` + `affine`). The number of
inliers is the re-ranking score. All are seeded, so one input gives one answer.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import pydegensac
from skimage.measure import ransac as skimage_ransac
from skimage.transform import AffineTransform, ProjectiveTransform

logger = logging.getLogger(__name__)

Verifier = Literal["degensac", "magsac", "ransac"]
Model = Literal["homography", "fundamental", "affine"]
VERIFIERS: tuple[str, ...] = ("degensac", "magsac", "ransac")
MODELS: tuple[str, ...] = ("homography", "fundamental", "affine")
# the models each estimator fits
SUPPORTED: dict[str, tuple[str, ...]] = {
    "degensac": ("homography", "fundamental"),
    "magsac": ("homography", "fundamental", "affine"),
    "ransac": ("homography", "affine"),
}
# fewest matches each model is fitted to: 4-point H; F is 7-point, but pydegensac refuses fewer
# than 8 and the same floor keeps the verifiers comparable; an affine map needs 3 points, and
# DELF's reference asks for more than 3 matches before it runs RANSAC
MIN_SAMPLE: dict[str, int] = {"homography": 4, "fundamental": 8, "affine": 4}


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one image pair: inlier count, fitted model and which matches agree."""

    inliers: int
    model: np.ndarray | None  # 3x3 H (query -> candidate) or F (x_c^T F x_q = 0); None if no fit
    inlier_mask: np.ndarray  # (M,) bool over the matches given

    @classmethod
    def failed(cls, n_matches: int) -> Verification:
        """No model: too few matches, or the estimator gave up."""
        return cls(0, None, np.zeros(n_matches, dtype=bool))


def _check_args(method: str, model: str, threshold_px: float, confidence: float) -> None:
    if method not in VERIFIERS:
        raise ValueError(f"unknown verifier {method!r}; valid: {', '.join(VERIFIERS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if model not in SUPPORTED[method]:
        raise ValueError(f"{method} does not fit {model}; it fits {', '.join(SUPPORTED[method])}")
    if threshold_px <= 0:
        raise ValueError(f"threshold_px must be > 0, got {threshold_px}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def matched_points(
    kp_q: np.ndarray, kp_c: np.ndarray, matches: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gather the (M, 2) float64 point pairs named by (M, 2) index matches."""
    matches = np.asarray(matches)
    if matches.ndim != 2 or matches.shape[1] != 2:
        raise ValueError(f"matches must be (M, 2), got {matches.shape}")
    if len(matches) and (matches.min() < 0 or matches[:, 0].max() >= len(kp_q)
                         or matches[:, 1].max() >= len(kp_c)):
        raise ValueError(
            f"match indices out of range for {len(kp_q)} query, {len(kp_c)} candidate keypoints"
        )
    pq = np.asarray(kp_q, dtype=np.float64)[matches[:, 0]]
    pc = np.asarray(kp_c, dtype=np.float64)[matches[:, 1]]
    return np.ascontiguousarray(pq), np.ascontiguousarray(pc)


def _degensac(
    pq: np.ndarray, pc: np.ndarray, model: str, threshold_px: float, confidence: float,
    max_iters: int, seed: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if model == "homography":
        return pydegensac.findHomography(pq, pc, threshold_px, confidence, max_iters, seed=seed)
    return pydegensac.findFundamentalMatrix(
        pq, pc, threshold_px, confidence, max_iters, enable_degeneracy_check=True, seed=seed
    )


def _magsac(
    pq: np.ndarray, pc: np.ndarray, model: str, threshold_px: float, confidence: float,
    max_iters: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    # The USAC_MAGSAC flag sets the MAGSAC++ score, sigma-consensus local optimisation and a fixed
    # random state (0), so OpenCV's answer is reproducible without passing a seed.
    if model == "homography":
        return cv2.findHomography(pq, pc, cv2.USAC_MAGSAC, threshold_px, None, max_iters, confidence)
    if model == "affine":
        fitted, mask = cv2.estimateAffine2D(pq, pc, method=cv2.USAC_MAGSAC,
                                            ransacReprojThreshold=threshold_px,
                                            maxIters=max_iters, confidence=confidence)
        return (None if fitted is None else np.vstack([fitted, [0.0, 0.0, 1.0]])), mask
    return cv2.findFundamentalMat(pq, pc, cv2.USAC_MAGSAC, threshold_px, confidence, max_iters)


def _skimage_ransac(
    pq: np.ndarray, pc: np.ndarray, model: str, threshold_px: float, max_iters: int, seed: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    # DELF's reference: scikit-image RANSAC, minimal samples, a fixed number of trials (no early
    # stop on confidence), residual = distance between the mapped query point and its match
    model_class = AffineTransform if model == "affine" else ProjectiveTransform
    with warnings.catch_warnings():  # "No inliers found" is an answer (zero), not a problem
        warnings.simplefilter("ignore", UserWarning)
        fitted, mask = skimage_ransac((pq, pc), model_class, min_samples=3 if model == "affine" else 4,
                                      residual_threshold=threshold_px, max_trials=max_iters,
                                      rng=seed)
    # scikit-image reports a failed fit as None or (since 0.26) a falsy FailedEstimation
    return (fitted.params if fitted else None), mask


def verify(
    kp_q: np.ndarray,
    kp_c: np.ndarray,
    matches: np.ndarray,
    method: Verifier = "degensac",
    model: Model = "homography",
    threshold_px: float = 8.0,
    confidence: float = 0.999,
    max_iters: int = 2000,
    seed: int = 0,
    min_matches: int = 0,
) -> Verification:
    """Fit a homography or fundamental matrix to matched keypoints; count the inliers.

    kp_q, kp_c: (N, 2) keypoints (x, y) in pixels; matches: (M, 2) indices (query, candidate).
    Fewer matches than the model's minimal sample or than `min_matches`, or an estimator that
    finds no model, give zero inliers without an error. A re-ranker that ignores candidates below
    k inliers can pass min_matches=k to skip fitting those it would ignore anyway. `seed` drives
    DEGENSAC and scikit-image's RANSAC; OpenCV's MAGSAC is deterministic by construction. The
    affine model is mapped to a 3x3 matrix with last row (0, 0, 1).

    The threshold is in pixels of the keypoints, so scale it with the image size. This function's
    defaults are for direct callers; query-time re-ranking passes its own settings
    (`matcher.rerank.RerankConf`: DEGENSAC homography at 4 px), which gave the README's mAP figures.
    """
    _check_args(method, model, threshold_px, confidence)
    pq, pc = matched_points(kp_q, kp_c, matches)
    n = len(pq)
    if n < max(MIN_SAMPLE[model], min_matches):
        return Verification.failed(n)
    try:
        if method == "degensac":
            fitted, mask = _degensac(pq, pc, model, threshold_px, confidence, max_iters, seed)
        elif method == "magsac":
            fitted, mask = _magsac(pq, pc, model, threshold_px, confidence, max_iters)
        else:
            fitted, mask = _skimage_ransac(pq, pc, model, threshold_px, max_iters, seed)
    except cv2.error as err:
        # OpenCV raises on degenerate samples (all points collinear or coincident)
        logger.debug("%s %s failed on %d matches: %s", method, model, n, err)
        return Verification.failed(n)
    # pydegensac reports failure as an all-zero matrix, OpenCV as None or an empty array
    if fitted is None or mask is None or np.size(fitted) != 9 or not np.any(fitted):
        return Verification.failed(n)
    inlier_mask = np.asarray(mask).reshape(-1).astype(bool)
    return Verification(int(inlier_mask.sum()), _normalise(fitted, model), inlier_mask)


def _normalise(fitted: np.ndarray, model: str) -> np.ndarray:
    """Fix the free scale: h33 = 1 for a homography (as OpenCV does), unit Frobenius norm for F."""
    fitted = np.asarray(fitted, dtype=np.float64).reshape(3, 3)
    if model in ("homography", "affine") and abs(fitted[2, 2]) > 1e-12:
        return fitted / fitted[2, 2]
    return fitted / np.linalg.norm(fitted)
