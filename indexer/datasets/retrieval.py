"""Instance-retrieval ground truth on disk: INRIA Holidays names and the revisited Oxford / Paris
pickles (Radenovic et al., CVPR 2018), read by evaluation (`engine.evaluation.retrieval`) and by
training (`indexer.extractors.delg_train`, which takes Holidays groups as classes).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_HOLIDAYS_NAME = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


@dataclass(frozen=True)
class Query:
    """One query: its name and position in its source list, and the database ids that count."""

    name: str
    index: int  # position in the list the query came from (Holidays names, revisited qimlist)
    positives: np.ndarray  # database ids that are relevant
    junk: np.ndarray  # database ids that are neither relevant nor irrelevant (removed from ranking)


@dataclass(frozen=True)
class RevisitedQuery:
    """Ground truth of one revisited Oxford / Paris query (ids are indices into ``imlist``)."""

    name: str
    easy: np.ndarray
    hard: np.ndarray
    junk: np.ndarray
    bbx: np.ndarray | None  # x1, y1, x2, y2 in pixels of the full query image


@dataclass(frozen=True)
class RevisitedGT:
    """A revisited dataset: database image names and its queries."""

    imlist: list[str]
    queries: list[RevisitedQuery]

    @property
    def qimlist(self) -> list[str]:
        """Query image names, in query order."""
        return [q.name for q in self.queries]


# --------------------------------------------------------------------------- INRIA Holidays


def holidays_number(name: str) -> int:
    """The image number of a Holidays name `NNNNNN.jpg` (its group is number // 100)."""
    match = _HOLIDAYS_NAME.match(Path(name).name)
    if match is None:
        raise ValueError(f"not a Holidays image name (NNNNNN.jpg): {name!r}")
    return int(match.group(1))


def holidays_ground_truth(names: Sequence[str]) -> list[Query]:
    """Holidays queries over ``names`` (ids are positions in ``names``).

    Group = number // 100; the query is the group's image whose number ends in 00; its positives are
    the other images of the group, and the query itself is junk (left out of its own ranking, as
    ``holidays_map.py`` does). Groups without a query image, or whose query has no other image, have
    nothing to score and are skipped with a warning.
    """
    numbers = np.array([holidays_number(n) for n in names], dtype=np.int64)
    uniq, counts = np.unique(numbers, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"Holidays image number repeated: {uniq[counts > 1][:5].tolist()}")
    groups = numbers // 100
    queries = []
    for q in np.flatnonzero(numbers % 100 == 0):
        positives = np.flatnonzero((groups == groups[q]) & (numbers != numbers[q]))
        if positives.size == 0:
            logger.warning("Holidays query %s has no other image in its group; skipped", names[q])
            continue
        queries.append(Query(names[q], int(q), positives, np.array([q])))
    orphans = np.setdiff1d(groups, groups[numbers % 100 == 0])
    if orphans.size:
        logger.warning("%d Holidays groups have no query image (e.g. %d)", orphans.size, orphans[0])
    return queries


# --------------------------------------------------------------------------- revisited Oxford/Paris


def index_array(value: Any, what: str, n_db: int) -> np.ndarray:
    """`value` as int64 database ids, each checked to lie in [0, n_db)."""
    arr = np.asarray(value, dtype=np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr >= n_db)]
    if bad.size:
        raise ValueError(f"{what} holds ids outside the {n_db} database images: {bad[:5].tolist()}")
    return arr


def _revisited_query(name: str, entry: Any, n_db: int, where: str) -> RevisitedQuery:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
    missing = {"easy", "hard", "junk"} - entry.keys()
    if missing:
        raise ValueError(f"{where}: missing keys {sorted(missing)}")
    bbx = entry.get("bbx")
    if bbx is not None:
        bbx = np.asarray(bbx, dtype=np.float64).reshape(-1)
        if bbx.size != 4:
            raise ValueError(f"{where}: bbx must be x1, y1, x2, y2, got {bbx.tolist()}")
    return RevisitedQuery(
        name=name,
        easy=index_array(entry["easy"], f"{where}['easy']", n_db),
        hard=index_array(entry["hard"], f"{where}['hard']", n_db),
        junk=index_array(entry["junk"], f"{where}['junk']", n_db),
        bbx=bbx,
    )


def parse_revisited_ground_truth(cfg: Any, source: str = "ground truth") -> RevisitedGT:
    """Check a revisitop ``gnd_*.pkl`` dict (imlist, qimlist, gnd) and make a ``RevisitedGT``."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{source}: expected a dict, got {type(cfg).__name__}")
    missing = {"imlist", "qimlist", "gnd"} - cfg.keys()
    if missing:
        raise ValueError(f"{source}: missing keys {sorted(missing)}")
    imlist, qimlist, gnd = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
    if len(gnd) != len(qimlist):
        raise ValueError(f"{source}: {len(qimlist)} query names but {len(gnd)} gnd entries")
    queries = [
        _revisited_query(str(name), entry, len(imlist), f"{source}: gnd[{i}]")
        for i, (name, entry) in enumerate(zip(qimlist, gnd, strict=True))
    ]
    return RevisitedGT([str(n) for n in imlist], queries)


def load_revisited_ground_truth(path: str | Path) -> RevisitedGT:
    """Read ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl`` (a pickle: only open files you trust)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"revisited ground truth not found: {path}")
    with path.open("rb") as f:
        cfg = pickle.load(f)
    return parse_revisited_ground_truth(cfg, str(path))
