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


def parse_attributes(
    spec: str, names: Sequence[str], complements: dict[str, str],
    words: dict[str, str] | None = None,
) -> list[tuple[int, bool]]:
    """`"a,b,c"` -> [(column, positive)]; an unknown name raises naming it, with the valid ones.

    A term is an attribute name, a complement's name, or a plain word of `words` (word -> either),
    in any case and spacing (`"Red  Top"` = `"red top"`).
    """
    lookup = {_key(n): n for n in [*names, *complements]}
    lookup.update({_key(w): n for w, n in (words or {}).items() if n in lookup.values()})
    terms = []
    for raw in (t.strip() for t in spec.split(",")):
        if not raw:
            continue
        name = lookup.get(_key(raw), "")
        if name in names:
            terms.append((list(names).index(name), True))
        elif name in complements and complements[name] in names:
            terms.append((list(names).index(complements[name]), False))
        else:
            known = sorted({*names, *(c for c in complements if complements[c] in names)})
            plain = sorted(w for w, n in (words or {}).items() if n in known)
            raise ValueError(f"unknown attribute {raw!r}; valid: {', '.join(known)}"
                             + (f"; or the words: {', '.join(plain)}" if plain else ""))
    if not terms:
        raise ValueError("no attribute given (e.g. --attr personalFemale,carryingBackpack)")
    return terms


def _key(term: str) -> str:
    return " ".join(term.lower().split())


def term_names(terms: list[tuple[int, bool]], names: Sequence[str], complements: dict[str, str]) -> list[str]:
    """The attribute name each term asks for (`personalFemale` for the complement of `personalMale`)."""
    negated = {v: k for k, v in complements.items()}
    return [names[c] if positive else negated.get(names[c], f"not {names[c]}") for c, positive in terms]


def term_probabilities(probabilities: np.ndarray, terms: list[tuple[int, bool]]) -> np.ndarray:
    """(..., T) probability of each term being true (p, or 1 - p for a complement): why it matched."""
    p = np.asarray(probabilities, dtype=np.float64)[..., [c for c, _ in terms]]
    return np.where([pos for _, pos in terms], p, 1.0 - p)


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
