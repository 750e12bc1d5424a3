"""`tansaku train-attributes`: a PETA-layout folder -> an attribute model file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.errors import TansakuError
from engine.evaluation.attributes import read_dataset, split_indices
from indexer.models.attributes.peta import PETA35


def train_attributes(
    dataset: Path, out: Path, conf: Any, split: str = "all", per_person: int | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Train a head (conf: `TrainConf`) on the training images of `split`; resumable via OUT.ckpt."""
    from indexer.models.attributes.cache import trunk_maps
    from indexer.models.attributes.train import train_attribute_head

    data = read_dataset(dataset, "peta", per_person)
    train, val, _ = split_indices(data, split, conf.seed)
    if len(train) < 2 or len(val) < 1:
        raise TansakuError(f"{dataset}: too few images to train ({len(data)})")
    out = Path(out).expanduser()
    start = time.monotonic()
    maps = [trunk_maps([data.paths[i] for i in train], cache)]
    if conf.augment:
        maps.append(trunk_maps([data.paths[i] for i in train], cache, view=f"aug-{conf.seed + 1}"))
    val_maps = trunk_maps([data.paths[i] for i in val], cache)
    features_s = time.monotonic() - start
    cols = [data.names.index(n) for n in PETA35]
    import numpy as np

    model = train_attribute_head(maps, data.labels[train], val_maps, data.labels[val], data.names,
                                 conf, out.with_name(out.name + ".ckpt"), np.array(cols))
    model.meta.update({"dataset": str(dataset), "split": split, "per_person": per_person})
    model.save(out)
    return {"model": str(out), "head": conf.head, "split": split, "train_images": int(len(train)),
            "best_val_mA": model.meta["best_val_mA"], "feature_seconds": round(features_s, 1),
            "train_seconds": round(time.monotonic() - start - features_s, 1)}
