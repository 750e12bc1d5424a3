"""Person method `abn:CKPT[?flip=0]`: the trained ABN re-ID network's embedding (a thin adapter).

The model, its training and its loader live in `indexer.models.reid_abn`; this maps RGB crops to
L2-normalised 512-d rows (by default each crop's and its mirror image's embeddings averaged), and
gives the temporal-attention scores of a tracklet's frames (the pooling itself is
`engine.evaluation.multishot.pool_rows` and the engine's tracklet query).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from indexer.errors import ModelLoadError
from indexer.extractors.base import split_options
from indexer.models.reid_abn.model import describe_frames, load_abn


def abn_checkpoint(method: str) -> str | None:
    """The checkpoint of the `abn:CKPT` part of a person method ("gog+abn:run.pt"), or None."""
    for token in method.split("+"):
        name, sep, arg = token.partition(":")
        if name.strip().lower() == "abn" and sep:
            return arg.strip().split("?")[0]
    return None


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _flip_option(argument: str) -> tuple[str, bool]:
    """`CKPT[?flip=0|1]` -> (CKPT, flip); a bad option raises ModelLoadError naming it."""
    try:
        path, options = split_options(argument)
        unknown = set(options) - {"flip"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)}; valid: flip (0 or 1)")
        flip = options.get("flip", "1")
        if flip not in ("0", "1"):
            raise ValueError(f"flip={flip!r}: give 0 or 1")
    except ValueError as exc:  # a setting of the method, reported as the model's
        raise ModelLoadError(f"abn:{argument}", str(exc)) from exc
    return path, flip == "1"


def abn_method(images: Sequence[np.ndarray], checkpoint: str | Path) -> np.ndarray:
    """The person method `abn:CKPT[?flip=0]`: (N, 512) L2-normalised embeddings of RGB uint8
    crops, each the mean of the crop's and its mirror image's unless `flip=0`."""
    path, flip = _flip_option(str(checkpoint))
    model, _ = load_abn(path)
    return _normalize(describe_frames(model, list(images), flip=flip))


def abn_frame_scores(images: Sequence[np.ndarray], checkpoint: str | Path) -> np.ndarray:
    """(N,) temporal-attention scores of RGB crops: a tracklet's frame weights are the softmax of
    its frames' scores (each frame is scored alone, from its crop's height)."""
    return frame_scores([im.shape[0] for im in images], checkpoint)


def frame_scores(heights: Sequence[int] | np.ndarray, checkpoint: str | Path) -> np.ndarray:
    """(T,) temporal-attention scores of frames whose crops are `heights` pixels high."""
    _, temporal = load_abn(checkpoint)
    if temporal is None:
        raise ModelLoadError(checkpoint, "checkpoint has no temporal attention (unfinished run)")
    with torch.no_grad():
        scores = temporal.scores(torch.as_tensor(np.asarray(heights, np.float32)))
    return scores.numpy().astype(np.float64)
