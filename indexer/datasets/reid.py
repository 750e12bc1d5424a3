"""Person re-identification data sets on disk: VIPeR and Market-1501 layouts.

Read by evaluation (`engine.evaluation.reid_protocols`) and by training (`tansaku
train-projection`) alike. Loaders return row-aligned paths, person ids and camera ids; file names
are parsed by `indexer.naming` (Market-1501 cameras from 1, as the names write them; VIPeR's
cam_a is 0 and cam_b 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.naming import parse_market_name

_VIPER_NAME = re.compile(r"^(\d+)_[^/]*\.bmp$", re.IGNORECASE)


@dataclass(frozen=True)
class PersonSet:
    """Images of persons: paths with their person ids and camera ids, row-aligned (equal camera
    ids: the same camera)."""

    paths: tuple[Path, ...]
    pids: np.ndarray  # (N,) int64
    camids: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        if not len(self.paths) == len(self.pids) == len(self.camids):
            raise ValueError(f"{len(self.paths)} paths, {len(self.pids)} pids and "
                             f"{len(self.camids)} camids: they must be row-aligned")

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class MarketSplit:
    """The three Market-1501 folders: training identities, queries and the test gallery."""

    train: PersonSet
    query: PersonSet
    gallery: PersonSet



def layout_images(folder: Path, suffix: str, dataset: str, layout: str) -> list[Path]:
    """The `suffix` images of one folder of a dataset layout, sorted; a missing or empty folder is named."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{dataset} layout expects the folder {folder} ({layout})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == suffix)
    if not files:
        raise FileNotFoundError(f"no {suffix} image in {folder}")
    return files


def load_viper(root: str | Path) -> PersonSet:
    """VIPeR from `root/cam_a/NNN_*.bmp` (camid 0) and `root/cam_b/NNN_*.bmp` (camid 1)."""
    root = Path(root)
    paths: list[Path] = []
    pids: list[int] = []
    camids: list[int] = []
    for camid, cam in enumerate(("cam_a", "cam_b")):
        files = layout_images(root / cam, ".bmp", "VIPeR", "cam_a/ and cam_b/ holding NNN_*.bmp")
        for f in files:
            m = _VIPER_NAME.match(f.name)
            if m is None:
                raise ValueError(f"VIPeR image name {f} is not NNN_*.bmp")
            paths.append(f)
            pids.append(int(m.group(1)))
            camids.append(camid)
    return PersonSet(tuple(paths), np.array(pids, np.int64), np.array(camids, np.int64))



def _load_market_folder(folder: Path) -> PersonSet:
    files = layout_images(folder, ".jpg", "Market-1501",
                           "bounding_box_train/, query/, bounding_box_test/")
    parsed = [parse_market_name(f.name) for f in files]
    pids = np.array([p for p, _ in parsed], np.int64)
    camids = np.array([c for _, c in parsed], np.int64)
    return PersonSet(tuple(files), pids, camids)


def load_market(root: str | Path) -> MarketSplit:
    """Market-1501 from `bounding_box_train/`, `query/` and `bounding_box_test/` under root."""
    root = Path(root)
    return MarketSplit(
        train=_load_market_folder(root / "bounding_box_train"),
        query=_load_market_folder(root / "query"),
        gallery=_load_market_folder(root / "bounding_box_test"),
    )
