"""What a person method learns from training identities before XQDA, part by part.

A method (or a fusion "a+b") describes an image by its parts concatenated. Before the metric, each
part goes through the stage its authors use, fitted on the training images only:

- `gog`: the authors' per-colour-space mean removal and L2 normalisation (`GOGNormalizer`);
- `cdpcf` / `cdpcf-mbv2`: the camera-specific discriminative pooling (`CDPCF`);
- `abn` in a fusion: the training mean removed (then the fusion's L2), as GOG's authors centre
  each block they fuse; alone it learns nothing (a shift changes no euclidean or XQDA distance);
- the others (LOMO, PCB, the pooled CNN features) are normalised at extraction (LOMO: log and L2,
  as its authors' code; CNN features: each layer block L2) and learn nothing here.

In a fusion every part is then L2-normalised, so each weighs alike (the GOG code fuses its colour
spaces the same way). `PersonStages` is fitted with the projection, in `eval reid` per trial and in
`train-projection`, and stored with the gallery next to the projection.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from indexer.projections.cdpcf import CDPCF
from indexer.projections.xqda import load_npz, save_npz_atomic

LEARNED_PARTS = ("gog", "cdpcf", "cdpcf-mbv2")


def needs_stages(method: str) -> bool:
    """Whether `method` learns anything before the metric (a learned part, or a fusion)."""
    from indexer.extractors.person import parse_method

    parts = parse_method(method)
    return len(parts) > 1 or any(p.name in LEARNED_PARTS for p in parts)


@functools.lru_cache(maxsize=32)
def part_dims(method: str) -> tuple[int, ...]:
    """Dimensions of each part of `method`'s descriptor (from one blank crop; cached)."""
    from indexer.extractors.person import describe_persons, parse_method

    blank = np.full((128, 48, 3), 128, np.uint8)
    return tuple(int(describe_persons(str(p), [blank]).shape[1]) for p in parse_method(method))


class MeanRemoval:
    """Subtracts the training rows' mean (a fused network block, before the fusion's L2)."""

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> MeanRemoval:
        self.mean_ = np.asarray(X, np.float64).mean(axis=0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.mean_ is None:
            raise RuntimeError("MeanRemoval is not fitted")
        return np.asarray(X, np.float64) - self.mean_


def _make(part: str, fused: bool) -> Any:
    if part == "abn" and fused:
        return MeanRemoval()
    if part == "gog":
        from indexer.extractors.gog import GOGNormalizer

        return GOGNormalizer()
    if part in ("cdpcf", "cdpcf-mbv2"):
        from indexer.extractors.transfer import cdpcf_map_shapes

        return CDPCF(cdpcf_map_shapes("mbv2" if part == "cdpcf-mbv2" else "eff"))
    return None


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class PersonStages:
    """The learned per-part stages of a person method, then (`part_l2`) a fusion's per-part L2."""

    kind = "person-stages"

    def __init__(
        self, method: str, dims: tuple[int, ...] | None = None, part_l2: bool = True
    ) -> None:
        from indexer.extractors.person import parse_method

        self.method, self.part_l2 = method, part_l2
        self.parts = [p.name for p in parse_method(method)]
        self.dims = tuple(dims) if dims is not None else part_dims(method)
        if len(self.dims) != len(self.parts):
            raise ValueError(f"{len(self.dims)} part sizes for the {len(self.parts)} parts of {method!r}")
        self.stages: list[Any] = [_make(p, len(self.parts) > 1) for p in self.parts]

    def _split(self, X: np.ndarray) -> list[np.ndarray]:
        if X.ndim != 2 or X.shape[1] != sum(self.dims):
            raise ValueError(f"{self.method!r} descriptors are (N, {sum(self.dims)}), got {X.shape}")
        return np.split(np.asarray(X), np.cumsum(self.dims)[:-1], axis=1)

    def fit(self, X: np.ndarray, pids: np.ndarray, camids: np.ndarray) -> PersonStages:
        """Fit each part's stage on the training rows."""
        for stage, block in zip(self.stages, self._split(X), strict=True):
            if isinstance(stage, CDPCF):
                stage.fit(block, pids, camids)
            elif stage is not None:
                stage.fit(block)
        return self

    def transform(self, X: np.ndarray, camids: np.ndarray | None = None) -> np.ndarray:
        """Every part through its stage; a fusion's parts L2-normalised and concatenated."""
        out = []
        for stage, block in zip(self.stages, self._split(X), strict=True):
            if isinstance(stage, CDPCF):
                block = stage.transform(block, camids)
            elif stage is not None:
                block = stage.transform(block)
            out.append(np.asarray(block, np.float64))
        if len(out) == 1 or not self.part_l2:
            return np.concatenate(out, axis=1)
        return np.concatenate([_l2(b) for b in out], axis=1)

    def save(self, path: str | Path) -> None:
        """Write the fitted stages into one .npz, atomically."""
        arrays: dict[str, Any] = {"kind": np.array(self.kind), "method": np.array(self.method),
                                  "dims": np.array(self.dims), "part_l2": np.array(self.part_l2)}
        for i, stage in enumerate(self.stages):
            if isinstance(stage, CDPCF):
                assert stage.cams_ is not None
                arrays[f"{i}_cams"] = stage.cams_
                arrays[f"{i}_maps"] = np.array(stage.maps)
                for j, w in enumerate(stage.weights_):
                    arrays[f"{i}_w{j}"] = w
            elif stage is not None:
                if stage.mean_ is None:
                    raise RuntimeError(f"stage of part {self.parts[i]!r} is not fitted")
                arrays[f"{i}_mean"] = stage.mean_
        save_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> PersonStages:
        """Read stages written by save()."""
        a = load_npz(path, cls.kind)
        model = cls(str(a["method"]), tuple(int(d) for d in a["dims"]), bool(a["part_l2"]))
        for i, stage in enumerate(model.stages):
            if isinstance(stage, CDPCF):
                stage.cams_ = a[f"{i}_cams"]
                stage.maps = int(a[f"{i}_maps"])
                stage.weights_ = [a[f"{i}_w{j}"] for j in range(len(stage.shapes))]
            elif isinstance(stage, MeanRemoval) and f"{i}_mean" not in a:
                model.stages[i] = None  # stored before fused ABN blocks were centred
            elif stage is not None:
                stage.mean_ = a[f"{i}_mean"]
        return model
