"""Person method `abn:CKPT`: the trained ABN re-ID network's embedding (a thin adapter).

The model, its training and its loader live in `indexer.models.reid_abn`; this maps RGB crops to
L2-normalised 512-d rows, and gives the temporal-attention scores of a tracklet's frames (the
pooling itself is `engine.evaluation.multishot.pool_rows` and the engine's tracklet query).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from indexer.errors import ModelLoadError
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


def abn_method(images: Sequence[np.ndarray], checkpoint: str | Path) -> np.ndarray:
    """The person method `abn:CKPT`: (N, 512) L2-normalised embeddings of RGB uint8 crops."""
    model, _ = load_abn(str(checkpoint).split("?")[0])
    return _normalize(describe_frames(model, list(images)))


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
