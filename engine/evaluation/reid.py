"""Re-identification evaluation: describe a benchmark's crops, then run its protocol."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.errors import TansakuError
from engine.evaluation.multishot import POOLINGS, evaluate_multishot, load_multishot
from engine.evaluation.reid_protocols import (
    METRICS,
    RERANKS,
    ReidTrial,
    evaluate_market,
    evaluate_viper,
)
from indexer.datasets.reid import PersonSet, load_market, load_viper
from indexer.errors import ModelLoadError
from indexer.extractors.person import describe_persons, parse_method
from indexer.images import ImageReadError, read_image
from indexer.profiles import DEFAULT_PERSON_METHOD
from indexer.projections.person_stages import PersonStages, needs_stages
from indexer.registry import Registry

log = logging.getLogger(__name__)
FORMATS: Registry[str] = Registry(
    "--format", {"viper": "viper", "market": "market", "multishot": "multishot"}, sort=False)


def describe_set(method: str, persons: PersonSet, what: str, batch_size: int = 64) -> np.ndarray:
    """Descriptors of every crop of `persons`, (N, D), with a progress bar."""
    chunks = []
    paths = list(persons.paths)
    with tqdm(total=len(paths), desc=f"describing {what}", unit="img") as bar:
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            try:
                images = [read_image(p) for p in batch]
            except ImageReadError as exc:
                raise TansakuError(f"cannot read {exc.path}: {exc.reason}") from exc
            chunks.append(describe_persons(method, images))
            bar.update(len(batch))
    return np.concatenate(chunks).astype(np.float32)


def frame_scores(method: str, persons: PersonSet, batch_size: int = 64) -> np.ndarray:
    """Temporal-attention scores of every frame by the method's `abn:CKPT` part."""
    from indexer.extractors.abn import abn_checkpoint, abn_frame_scores

    ckpt = abn_checkpoint(method)
    if ckpt is None:
        raise TansakuError(f"--pooling attention needs a method with an abn:CKPT part, not {method!r}")
    out = []
    paths = list(persons.paths)
    for start in tqdm(range(0, len(paths), batch_size), desc="frame weights", unit="batch"):
        try:
            images = [read_image(p) for p in paths[start:start + batch_size]]
            out.append(abn_frame_scores(images, ckpt))
        except ImageReadError as exc:
            raise TansakuError(f"cannot read {exc.path}: {exc.reason}") from exc
        except ModelLoadError as exc:
            raise TansakuError(str(exc)) from exc
    return np.concatenate(out)


def evaluate_reid(
    dataset: Path, fmt: str, method: str | None = None, metric: str = "xqda", trials: int = 10,
    seed: int = 0, shots: int | None = None, pooling: str = "mean", rerank: str = "none",
    details: list[ReidTrial] | None = None,
) -> dict[str, Any]:
    """The `tansaku eval reid --json` object for `dataset` in layout `fmt` (`method` None: the
    person profile's default; each trial's distances appended to `details` when given).

    Stages learned from identities (GOG's normaliser, C-DPCF, a fusion's per-part normalisation)
    are fitted with the projection on the training identities only; `rerank="kreciprocal"`
    re-ranks the metric's distances by k-reciprocal encoding.
    """
    method = method or DEFAULT_PERSON_METHOD
    dataset = Path(dataset).expanduser()
    if not dataset.is_dir():
        raise TansakuError(f"dataset folder not found: {dataset}")
    if rerank not in RERANKS:
        raise TansakuError(f"unknown --rerank {rerank!r}; valid: {', '.join(RERANKS)}")
    try:
        FORMATS.check(fmt)
        METRICS.check(metric)
        parse_method(method)
    except ValueError as exc:
        raise TansakuError(str(exc)) from exc
    label = f"{method}+{metric}" + ("+kreciprocal" if rerank == "kreciprocal" else "")
    stages = (lambda: PersonStages(method)) if needs_stages(method) else None
    try:
        if fmt == "viper":
            persons = load_viper(dataset)
            features = describe_set(method, persons, "VIPeR")
            return evaluate_viper(features, persons, metric, trials, seed,  # type: ignore[arg-type]
                                  method=label, stages=stages, rerank=rerank,
                                  details=details)
        if fmt == "multishot":
            if pooling not in POOLINGS:
                raise TansakuError(f"unknown --pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
            persons = load_multishot(dataset)
            scores = frame_scores(method, persons) if pooling == "attention" else None
            features = describe_set(method, persons, "tracklet frames")
            return evaluate_multishot(features, persons, metric, trials, seed,  # type: ignore[arg-type]
                                      shots, pooling, frame_scores=scores,  # type: ignore[arg-type]
                                      method=label, stages=stages)
        split = load_market(dataset)
        train = describe_set(method, split.train, "bounding_box_train")
        query = describe_set(method, split.query, "query")
        gallery = describe_set(method, split.gallery, "bounding_box_test")
        return evaluate_market(train, query, gallery, split, metric,  # type: ignore[arg-type]
                               method=label, stages=stages, rerank=rerank, details=details)
    except (FileNotFoundError, NotADirectoryError, ValueError, ModelLoadError) as exc:
        raise TansakuError(str(exc)) from exc  # layout, name and model file errors
