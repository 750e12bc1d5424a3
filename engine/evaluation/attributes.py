"""Pedestrian attribute evaluation on PETA-layout folders: splits, protocols, `tansaku eval attributes`.

Splits (`--split`):
- `all`: every image (evaluation), or all for training with a seeded 10% held out for choosing
  the epoch;
- `pool:K` (K = 0..4): partition K of the pool, made as PETA's standard split is: a random
  permutation of the images (seed K), 50% train, 10% validation, 40% test. PETA's split is by
  image, so one person's images can fall on both sides (as in the published protocol);
- `leave-out:SUBSET`: train on the other subsets (10% of them held out for validation), test
  on SUBSET: a camera the model has never seen.

The scores are those of `attribute_metrics` on PETA's 35 evaluation attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import TansakuError
from engine.evaluation.attribute_metrics import attribute_scores
from indexer.errors import ModelLoadError
from indexer.models.attributes.peta import PETA35, PetaSet, load_peta

POOL_FRACTIONS = (0.5, 0.1, 0.4)


def pool_partition(n: int, partition: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices of partition `partition` of n images: 50/10/40 at random."""
    perm = np.random.default_rng(partition).permutation(n)
    a, b = int(round(POOL_FRACTIONS[0] * n)), int(round(sum(POOL_FRACTIONS[:2]) * n))
    return np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])


def split_indices(data: PetaSet, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices of `data` for a `--split` spec (see the module docstring)."""
    n = len(data)
    kind, _, arg = split.partition(":")
    if kind == "all":
        perm = np.random.default_rng(seed).permutation(n)
        cut = int(round(0.9 * n))
        return np.sort(perm[:cut]), np.sort(perm[cut:]), np.arange(n)
    if kind == "pool" and arg.isdigit():
        return pool_partition(n, int(arg))
    if kind == "leave-out" and arg:
        held = data.subsets == arg
        if not held.any():
            known = ", ".join(sorted(set(data.subsets.tolist())))
            raise TansakuError(f"no subset {arg!r} in the dataset (subsets: {known})")
        others = np.flatnonzero(~held)
        perm = np.random.default_rng(seed).permutation(others)
        cut = int(round(0.9 * len(others)))
        return np.sort(perm[:cut]), np.sort(perm[cut:]), np.flatnonzero(held)
    raise TansakuError(f"unknown --split {split!r}; valid: all, pool:K (K = 0..4), leave-out:SUBSET")


def read_dataset(dataset: Path, fmt: str, per_person: int | None) -> PetaSet:
    """The PETA-layout folder, as a user error when it is not one."""
    if fmt != "peta":
        raise TansakuError(f"unknown --format {fmt!r}; valid: peta")
    try:
        return load_peta(Path(dataset).expanduser(), per_person=per_person)
    except (FileNotFoundError, ValueError, NotADirectoryError) as exc:
        raise TansakuError(str(exc)) from exc


def scores_json(truth: np.ndarray, pred: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """The five scores (percent) over PETA's 35 evaluation attributes."""
    cols = [names.index(n) for n in PETA35]
    scores = attribute_scores(truth[:, cols], pred[:, cols])
    return {**scores.percent(), "attributes": len(cols), "images": int(len(truth))}


def evaluate_attributes(
    dataset: Path, model_path: Path, fmt: str = "peta", split: str = "all",
    per_person: int | None = None, cache: Path | None = None,
) -> dict[str, Any]:
    """`tansaku eval attributes`: the model's scores on the test images of `split`."""
    from indexer.models.attributes.cache import trunk_maps
    from indexer.models.attributes.model import load_attribute_model

    data = read_dataset(dataset, fmt, per_person)
    try:
        model = load_attribute_model(model_path)
    except ModelLoadError as exc:
        raise TansakuError(str(exc)) from exc
    if model.names != data.names:
        raise TansakuError(f"{model_path}: predicts other attributes than the PETA reader's")
    _, _, test = split_indices(data, split)
    test_set = data.take(test)
    _, pred = model.from_maps(trunk_maps(test_set.paths, cache))
    return {"dataset": str(dataset), "model": str(model_path), "split": split,
            **scores_json(test_set.labels, pred, data.names)}
