"""The extractor contract: named presets in, arrays out (hloc's BaseModel, reduced to what we need)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from indexer.features import LocalFeatures


def default_device(requested: str | torch.device | None = None) -> torch.device:
    """The device asked for, else CUDA when present, else CPU: the one device rule for every
    extractor, training loop and loader."""
    if requested is not None:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Extractor:
    """Holds a configuration merged over `default_conf`; unknown keys are an error."""

    default_conf: ClassVar[dict[str, Any]] = {}

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        conf = dict(conf or {})
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown settings {sorted(unknown)}; "
                f"valid: {sorted(self.default_conf)}"
            )
        self.conf: dict[str, Any] = {**self.default_conf, **conf}

    @property
    def max_side(self) -> int | None:
        """The longest image side this extractor uses: it shrinks a larger image to it before
        anything else, so decoding one larger gains nothing (`indexer.images.read_image`).
        None: it uses an image at any size."""
        return None


class GlobalExtractor(Extractor, ABC):
    """Image -> one L2-normalised float32 vector of length `dim`."""

    dim: int

    @abstractmethod
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Describe one RGB uint8 image (H, W, 3)."""

    def describe_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Describe several images, (N, dim); extractors that can batch override this."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self(image) for image in images]).astype(np.float32)


class LocalExtractor(Extractor, ABC):
    """Image -> keypoints with descriptors."""

    dim: int

    @abstractmethod
    def __call__(self, image: np.ndarray) -> LocalFeatures:
        """Local features of one RGB uint8 image (H, W, 3), keypoints in its pixels."""


class JointExtractor(Extractor, ABC):
    """One network pass -> a global vector and local features (DELG and its kin)."""

    dim: int  # global vector length
    local_dim: int  # local descriptor length
    # whether `extract` takes `resize_factor` (DELF's: the size bounds scaled for a cropped query)
    supports_resize_factor: ClassVar[bool] = False

    @abstractmethod
    def extract(self, image: np.ndarray) -> tuple[np.ndarray, LocalFeatures]:
        """(L2-normalised global vector (dim,), local features) of one RGB uint8 image."""


def split_options(argument: str) -> tuple[str, dict[str, str]]:
    """`PATH?key=value&key=value` -> (PATH, {key: value}); the options of a `NAME:ARG` spec.

    Keys are lower-cased; a key given twice, or an option without `=`, is an error.
    """
    head, sep, tail = argument.partition("?")
    options: dict[str, str] = {}
    for item in tail.split("&") if sep else []:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key or key in options:
            raise ValueError(f"bad option {item!r} in {argument!r}: write ?key=value&key=value")
        options[key] = value.strip()
    return head, options


def join_options(head: str, options: dict[str, str]) -> str:
    """The inverse of `split_options`, options in sorted order."""
    tail = "&".join(f"{k}={options[k]}" for k in sorted(options))
    return f"{head}?{tail}" if tail else head
