"""PETA attribute labels (Deng et al., ACM MM 2014): the one reader training and evaluation share.

Layout: `ROOT/<subset>/` holds the images and `Label.txt`, one line per person: the id then the
names of the attributes true for it. The id is the prefix of the subset's file names before the
first `_` (`0001_002.jpg` -> `0001`), except CUHK, whose lines name the image itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.images import IMAGE_SUFFIXES

# The 35 attributes of the standard PETA evaluation, in the order of PETA.mat's first 35 columns
# (as in the public DeepMAR / "rethinking PAR" evaluation code). PETA.mat calls the sneaker
# attribute `footwearSneaker`; the per-subset Label.txt files say `footwearSneakers`.
PETA35: tuple[str, ...] = (
    "accessoryHat", "accessoryMuffler", "accessoryNothing", "accessorySunglasses", "hairLong",
    "upperBodyCasual", "upperBodyFormal", "upperBodyJacket", "upperBodyLogo", "upperBodyPlaid",
    "upperBodyShortSleeve", "upperBodyThinStripes", "upperBodyTshirt", "upperBodyOther",
    "upperBodyVNeck", "lowerBodyCasual", "lowerBodyFormal", "lowerBodyJeans", "lowerBodyShorts",
    "lowerBodyShortSkirt", "lowerBodyTrousers", "footwearLeatherShoes", "footwearSandals",
    "footwearShoes", "footwearSneaker", "carryingBackpack", "carryingOther",
    "carryingMessengerBag", "carryingNothing", "carryingPlasticBags", "personalLess30",
    "personalLess45", "personalLess60", "personalLarger60", "personalMale",
)
COLOURS = ("Black", "Blue", "Brown", "Green", "Grey", "Orange", "Pink", "Purple", "Red", "White",
           "Yellow")
# What the heads predict: the 35, then upper- and lower-body colours (for search by attribute).
ATTRIBUTES: tuple[str, ...] = PETA35 + tuple(
    f"{part}{colour}" for part in ("upperBody", "lowerBody") for colour in COLOURS
)
ALIASES = {"footwearSneakers": "footwearSneaker"}
# Attributes a query may name that are the complement of a predicted one.
COMPLEMENTS = {"personalFemale": "personalMale"}
# Plain words a query may use for an attribute (or a complement); PETA's ages are 16-30, 31-45,
# 46-60 and over 60 (personalLess15 is not predicted).
WORDS: dict[str, str] = {
    "female": "personalFemale", "woman": "personalFemale", "male": "personalMale", "man": "personalMale",
    "age 16-30": "personalLess30", "age 31-45": "personalLess45", "age 46-60": "personalLess60",
    "age over 60": "personalLarger60",
    "hat": "accessoryHat", "muffler": "accessoryMuffler", "scarf": "accessoryMuffler",
    "no accessory": "accessoryNothing", "sunglasses": "accessorySunglasses", "long hair": "hairLong",
    "casual top": "upperBodyCasual", "formal top": "upperBodyFormal", "jacket": "upperBodyJacket",
    "logo": "upperBodyLogo", "plaid": "upperBodyPlaid", "short sleeves": "upperBodyShortSleeve",
    "stripes": "upperBodyThinStripes", "t-shirt": "upperBodyTshirt", "v-neck": "upperBodyVNeck",
    "casual bottoms": "lowerBodyCasual", "formal bottoms": "lowerBodyFormal", "jeans": "lowerBodyJeans",
    "shorts": "lowerBodyShorts", "skirt": "lowerBodyShortSkirt", "trousers": "lowerBodyTrousers",
    "leather shoes": "footwearLeatherShoes", "sandals": "footwearSandals", "shoes": "footwearShoes",
    "sneakers": "footwearSneaker",
    "backpack": "carryingBackpack", "messenger bag": "carryingMessengerBag",
    "plastic bag": "carryingPlasticBags", "other bag": "carryingOther", "no bag": "carryingNothing",
    **{f"{c.lower()} top": f"upperBody{c}" for c in COLOURS},
    **{f"{c.lower()} bottoms": f"lowerBody{c}" for c in COLOURS},
}


@dataclass
class PetaSet:
    """Images, their 0/1 labels over `names`, and the subset each came from."""

    paths: list[Path]
    labels: np.ndarray  # (N, len(names)) uint8
    subsets: np.ndarray  # (N,) str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, index: np.ndarray) -> PetaSet:
        """The images at `index`."""
        return PetaSet([self.paths[i] for i in index], self.labels[index], self.subsets[index],
                       self.names)


def read_label_file(path: Path) -> dict[str, set[str]]:
    """`Label.txt` as {id: attribute names}, aliases mapped to the evaluation's names."""
    out: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            out.setdefault(parts[0], set()).update(ALIASES.get(p, p) for p in parts[1:])
    return out


def _image_key(path: Path, by_name: bool) -> str:
    return path.name if by_name else path.name.split("_")[0]


def thin_per_person(data: PetaSet, most: int) -> np.ndarray:
    """Indices keeping at most `most` images per id (CUHK's per-image ids keep every image)."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(data.paths):
        groups.setdefault(path.name.split("_")[0] if "_" in path.name else path.name, []).append(i)
    keep: list[int] = []
    for members in groups.values():
        picks = np.linspace(0, len(members) - 1, min(most, len(members))).round().astype(int)
        keep.extend(members[i] for i in sorted(set(picks.tolist())))
    return np.array(sorted(keep), dtype=np.int64)


def load_subset(folder: Path, names: tuple[str, ...] = ATTRIBUTES) -> PetaSet:
    """One subset folder: every image whose id has a line in its `Label.txt`."""
    label_file = folder / "Label.txt"
    if not label_file.is_file():
        raise FileNotFoundError(f"no Label.txt in {folder}")
    labels = read_label_file(label_file)
    by_name = any(Path(k).suffix.lower() in IMAGE_SUFFIXES for k in labels)
    column = {n: i for i, n in enumerate(names)}
    paths, rows = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        true = labels.get(_image_key(path, by_name))
        if true is None:
            continue
        row = np.zeros(len(names), np.uint8)
        row[[column[n] for n in true if n in column]] = 1
        paths.append(path)
        rows.append(row)
    if not paths:
        raise ValueError(f"{folder}: no image matches a line of Label.txt")
    return PetaSet(paths, np.stack(rows), np.full(len(paths), folder.name), names)


def load_peta(root: Path, names: tuple[str, ...] = ATTRIBUTES, per_person: int | None = None) -> PetaSet:
    """Every subset folder under `root` (or `root` itself if it holds a `Label.txt`).

    `per_person` keeps at most that many images of each labelled id (evenly spaced in name
    order): video subsets (TownCentre, CAVIAR4REID) hold dozens of near-identical frames per person.
    """
    root = Path(root)
    folders = [root] if (root / "Label.txt").is_file() else sorted(
        p for p in root.iterdir() if (p / "Label.txt").is_file())
    if not folders:
        raise FileNotFoundError(f"no PETA subset (a folder with Label.txt) under {root}")
    parts = [load_subset(f, names) for f in folders]
    if per_person is not None:
        parts = [s.take(thin_per_person(s, per_person)) for s in parts]
    return PetaSet([p for s in parts for p in s.paths], np.concatenate([s.labels for s in parts]),
                   np.concatenate([s.subsets for s in parts]), names)
