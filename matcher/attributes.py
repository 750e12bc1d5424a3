"""Search by attributes: rank a gallery by the stored attribute probabilities of its images, or
re-score an image query's shortlist by them.

Each attribute of a query is a term log p (or log(1 - p) for a complement such as
`personalFemale` = not `personalMale`); an image's attribute score is the mean of its terms,
the log-likelihood per attribute that it has them all (attributes taken as independent).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-4


def parse_attributes(spec: str, names: Sequence[str], complements: dict[str, str]) -> list[tuple[int, bool]]:
    """`"a,b,c"` -> [(column, positive)]; an unknown name raises with the valid ones."""
    terms = []
    for raw in (t.strip() for t in spec.split(",")):
        if not raw:
            continue
        if raw in names:
            terms.append((list(names).index(raw), True))
        elif raw in complements and complements[raw] in names:
            terms.append((list(names).index(complements[raw]), False))
        else:
            valid = ", ".join(sorted([*names, *complements]))
            raise ValueError(f"unknown attribute {raw!r}; valid: {valid}")
    if not terms:
        raise ValueError("no attribute given (e.g. --attr personalFemale,carryingBackpack)")
    return terms


def attribute_scores(probabilities: np.ndarray, terms: list[tuple[int, bool]]) -> np.ndarray:
    """(N,) mean log-likelihood of the query's attributes for each row of (N, A) probabilities."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1 - EPS)
    cols = np.array([c for c, _ in terms])
    positive = np.array([pos for _, pos in terms])
    chosen = p[:, cols]
    return np.where(positive, np.log(chosen), np.log1p(-chosen)).mean(axis=1)


def rank_by_attributes(ids: np.ndarray, probabilities: np.ndarray, terms: list[tuple[int, bool]],
                       top_k: int) -> list[tuple[int, float]]:
    """(image id, score) best first."""
    scores = attribute_scores(probabilities, terms)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(int(ids[i]), float(scores[i])) for i in order]


def rescore(image_scores: np.ndarray, probabilities: np.ndarray, terms: list[tuple[int, bool]],
            weight: float = 1.0) -> np.ndarray:
    """Image similarity and attribute score, each standardised over the shortlist, summed."""
    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() + 1e-9)

    return z(np.asarray(image_scores, float)) + weight * z(attribute_scores(probabilities, terms))


def predicted_names(probabilities: np.ndarray, names: Sequence[str], threshold: float = 0.5) -> list[str]:
    """Names of the attributes predicted true, most probable first."""
    order = np.argsort(-probabilities)
    return [names[i] for i in order if probabilities[i] > threshold]
