"""PETA training identities for the re-ID network, read from the subsets' file names.

Only subsets with person ids in their names and no overlap with our evaluation sets are read:
TownCentre (`ID_FRAME.jpg`, one camera), 3DPeS (`ID_CAM_FRAME_..._RGB.png`) and SARC3D
(`NNN_view.png`, the 4 views taken as one tracklet). CAVIAR4REID (an evaluation set here) and
VIPeR are refused.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TRAIN_SUBSETS = ("TownCentre", "3DPeS", "SARC3D")
EVALUATION_SUBSETS = frozenset({"caviar4reid", "viper"})
_NAMES = {
    "TownCentre": re.compile(r"^(\d+)_(\d+)\.(?:jpg|png)$", re.IGNORECASE),
    "3DPeS": re.compile(r"^(\d+)_(\d+)_FRAME_(\d+)_.*\.(?:jpg|png)$", re.IGNORECASE),
    "SARC3D": re.compile(r"^(\d+)_([A-Za-z]+)\.(?:jpg|png)$", re.IGNORECASE),
}


@dataclass(frozen=True)
class TrainingSet:
    """Training crops: paths, 0-based identity labels, and tracklet ids (one person, one camera)."""

    paths: tuple[Path, ...]
    labels: np.ndarray  # (N,) int64, 0..K-1
    tracks: np.ndarray  # (N,) int64
    identities: tuple[str, ...]  # "subset/pid" of each label

    def __len__(self) -> int:
        return len(self.paths)


def _parse(subset: str, name: str) -> tuple[int, int, int] | None:
    """(person id, camera, frame order key) of a subset's file name; None when it is not one."""
    m = _NAMES[subset].match(name)
    if m is None:
        return None
    if subset == "TownCentre":
        return int(m.group(1)), 0, int(m.group(2))
    if subset == "3DPeS":
        return int(m.group(1)), int(m.group(2)), int(m.group(3))
    return int(m.group(1)), 0, 0


def _even_subsample(items: list[tuple[int, Path]], k: int) -> list[tuple[int, Path]]:
    """At most k items of a frame-ordered list, evenly spaced (consecutive video frames repeat)."""
    items = sorted(items)
    if k <= 0 or len(items) <= k:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, k).round().astype(int))
    return [items[i] for i in idx]


def peta_training_set(
    root: str | Path, subsets: tuple[str, ...] = TRAIN_SUBSETS, max_per_track: int = 8,
) -> TrainingSet:
    """The training crops of `root/<subset>/` for each subset, at most `max_per_track` per tracklet.

    `root` may also be a folder of Market-style names (`PPPP_cCs1_...`), as the synthetic test
    sets are; then person and camera come from the names.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"training folder not found: {root}")
    groups: dict[tuple[str, int, int], list[tuple[int, Path]]] = {}
    present = [s for s in subsets if (root / s).is_dir()]
    for bad in EVALUATION_SUBSETS:
        if bad in {s.lower() for s in subsets}:
            raise ValueError(f"{bad} is an evaluation set and must not be trained on")
    if present:
        for subset in present:
            for path in sorted((root / subset).iterdir()):
                parsed = _parse(subset, path.name)
                if parsed is not None:
                    pid, cam, frame = parsed
                    groups.setdefault((subset, pid, cam), []).append((frame, path))
    else:
        from indexer.naming import parse_person_name

        for path in sorted(root.iterdir()):
            mpid, mcam = parse_person_name(path.name)
            if mpid is not None and mcam is not None and mpid > 0:
                groups.setdefault(("market", mpid, mcam), []).append((len(groups), path))
    if not groups:
        raise ValueError(f"{root}: no training image found (subsets {', '.join(subsets)} or "
                         "Market-style names)")
    persons = sorted({(s, p) for s, p, _ in groups})
    label_of = {sp: i for i, sp in enumerate(persons)}
    paths: list[Path] = []
    labels: list[int] = []
    tracks: list[int] = []
    for t, key in enumerate(sorted(groups)):
        for _, path in _even_subsample(groups[key], max_per_track):
            paths.append(path)
            labels.append(label_of[key[:2]])
            tracks.append(t)
    logger.info("training set from %s: %d crops, %d identities, %d tracklets", root, len(paths),
                len(persons), len(groups))
    return TrainingSet(tuple(paths), np.asarray(labels, np.int64), np.asarray(tracks, np.int64),
                       tuple(f"{s}/{p}" for s, p in persons))
