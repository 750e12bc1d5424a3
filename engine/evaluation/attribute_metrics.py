"""Pedestrian attribute metrics (Li et al., "A richly annotated dataset for pedestrian attribute
recognition", 2016; the evaluation of the DeepMAR and PETA/RAP papers).

- label-based mA: mean over attributes of (TP / P + TN / N) / 2;
- instance-based accuracy |Y & Y'| / |Y | Y'|, precision |Y & Y'| / |Y'|, recall |Y & Y'| / |Y|,
  each averaged over images; F1 = 2 P R / (P + R) of those averages. As in the reference code,
  images with no true attribute are left out of the instance measures, and an image with no
  predicted attribute counts precision 0.

Pure functions on (N, A) 0/1 arrays; fractions in 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttributeScores:
    """Label-based and instance-based scores, fractions in 0..1."""

    mA: float  # noqa: N815 (the name the papers use)
    accuracy: float
    precision: float
    recall: float
    F1: float  # noqa: N815
    per_attribute: np.ndarray  # (A,) (TPR + TNR) / 2

    def percent(self) -> dict[str, float]:
        """The five headline scores as percentages, rounded to 2 decimals."""
        return {k: round(100.0 * float(getattr(self, k)), 2)
                for k in ("mA", "accuracy", "precision", "recall", "F1")}


def label_accuracy(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(TPR + TNR) / 2 per attribute; an attribute with no positive (or no negative) example
    uses the one rate it has."""
    t, p = truth.astype(bool), pred.astype(bool)
    pos, neg = t.sum(0), (~t).sum(0)
    tpr = np.divide((t & p).sum(0), pos, out=np.full(t.shape[1], np.nan), where=pos > 0)
    tnr = np.divide((~t & ~p).sum(0), neg, out=np.full(t.shape[1], np.nan), where=neg > 0)
    return np.nanmean(np.stack([tpr, tnr]), axis=0)


def attribute_scores(truth: np.ndarray, pred: np.ndarray) -> AttributeScores:
    """mA and the instance-based measures of 0/1 predictions `pred` against `truth` (both (N, A))."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and predictions {pred.shape} must be the same (N, A)")
    per_attribute = label_accuracy(truth, pred)
    t, p = truth.astype(bool), pred.astype(bool)
    keep = t.any(axis=1)
    if not keep.any():
        raise ValueError("no image has a true attribute: instance measures are undefined")
    t, p = t[keep], p[keep]
    inter = (t & p).sum(1).astype(float)
    union = (t | p).sum(1).astype(float)
    n_pred = np.maximum(p.sum(1), 1).astype(float)
    accuracy = float(np.mean(inter / union))
    precision = float(np.mean(inter / n_pred))
    recall = float(np.mean(inter / t.sum(1)))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return AttributeScores(float(np.mean(per_attribute)), accuracy, precision, recall, f1,
                           per_attribute)
