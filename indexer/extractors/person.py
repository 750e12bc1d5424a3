"""Registry of person descriptors: one name per method, fusions written "a+b".

Each method lives in its own module, imported only when asked for, with a batch function
`f(images: list of RGB uint8 arrays) -> (N, D)`. A method that takes an argument (a learned
model's checkpoint: `pcb:CKPT`) is written `NAME:ARG` and its function is called
`f(images, arg)`, with `arg` None when an optional argument is left out. A file argument may
carry options, `NAME:PATH?key=value&key=value` (`pcb:run/ckpt.pth?size=256x128`); its path is
made absolute by `canonical_method`, so that a gallery's stored method means the same from any
folder.

A fusion computes every part, L2-normalises each part per image and concatenates them, as the
GOG code does for its colour-space variants (it also removes the training mean of each part
first; that needs training data, so it is left to the stage that has it).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from indexer.extractors.base import join_options, split_options
from indexer.imageops import check_rgb, l2_normalize  # noqa: F401  # l2_normalize: public here
from indexer.registry import Registry

logger = logging.getLogger(__name__)

BatchFn = Callable[..., np.ndarray]

# What a method's argument is: none, a file that may be left out, or a file that must be given.
NO_ARGUMENT, OPTIONAL_FILE, FILE = "none", "optional file", "file"

# name -> (module, batch function[, argument kind]); modules are imported lazily so a heavy one
# (PCB, torch) costs nothing unless it is used. A plain method is one line: ("module", "function").
PERSON_DESCRIPTORS: dict[str, tuple[str, ...]] = {
    "lomo": ("indexer.extractors.lomo", "lomo_batch"),
    "gog": ("indexer.extractors.gog", "gog_batch"),
    "pcb": ("indexer.extractors.pcb", "pcb_method", OPTIONAL_FILE),  # pcb:CKPT[?size=HxW]
    "abn": ("indexer.extractors.abn", "abn_method", FILE),  # abn:CKPT[?flip=0] (train-reid)
    # ImageNet CNN transfer (indexer/extractors/transfer.py); cdpcf's pooling is learned with the
    # projection (indexer/projections/cdpcf.py), its raw descriptor is the grid-pooled maps
    "layers": ("indexer.extractors.transfer", "layers_batch"),
    "layers-gem": ("indexer.extractors.transfer", "layers_gem_batch"),
    "layers-mbv2": ("indexer.extractors.transfer", "layers_mbv2_batch"),
    "fc": ("indexer.extractors.transfer", "fc_batch"),
    "svdfc": ("indexer.extractors.transfer", "svdfc_batch"),
    "svdcam": ("indexer.extractors.transfer", "svdcam_batch"),
    "mpncbp": ("indexer.extractors.transfer", "mpncbp_batch"),
    "mpncbp-conv": ("indexer.extractors.transfer", "mpncbp_conv_batch"),
    "cdpcf": ("indexer.extractors.transfer", "cdpcf_maps_batch"),
    "cdpcf-mbv2": ("indexer.extractors.transfer", "cdpcf_maps_mbv2_batch"),
}


class MethodPart(NamedTuple):
    """One part of a (fused) method: a registry name and its argument (None when absent)."""

    name: str
    argument: str | None = None

    def __str__(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument}"


def _argument_kind(name: str) -> str:
    entry = PERSON_DESCRIPTORS[name]
    return entry[2] if len(entry) > 2 else NO_ARGUMENT


def _usage() -> str:
    names = []
    for name in sorted(PERSON_DESCRIPTORS):
        kind = _argument_kind(name)
        names.append({NO_ARGUMENT: name, OPTIONAL_FILE: f"{name}[:FILE]", FILE: f"{name}:FILE"}
                     .get(kind, name))
    return ", ".join(names)


def _tokens(method: str) -> list[tuple[str, str | None]]:
    """Split "a+b:PATH" into (name, argument) pairs; a '+' inside a path stays in the path."""
    parts: list[tuple[str, str | None]] = []
    for token in method.split("+"):
        name, sep, arg = token.partition(":")
        name = name.strip().lower()
        if parts and parts[-1][1] is not None and name not in PERSON_DESCRIPTORS:
            parts[-1] = (parts[-1][0], f"{parts[-1][1]}+{token}")
            continue
        parts.append((name, arg.strip() if sep else None))
    return parts


def parse_method(method: str) -> list[MethodPart]:
    """Split "a+b:ARG" into its parts, checking each name and argument against the registry.

    Unknown names raise a ValueError that lists the valid ones.
    """
    parts = _tokens(method) if method.strip() else []
    unknown = [name for name, _ in parts if name not in PERSON_DESCRIPTORS]
    if not parts or unknown:
        raise ValueError(f"unknown person descriptor {method!r}; valid names: {_usage()} "
                         f"(or a fusion such as 'lomo+gog')")
    names = [name for name, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"person descriptor {method!r} names a part twice")
    out = []
    for name, arg in parts:
        kind = _argument_kind(name)
        if arg is not None and kind == NO_ARGUMENT:
            raise ValueError(f"person descriptor {name!r} takes no argument (got {name}:{arg})")
        if not arg and kind == FILE:
            raise ValueError(f"person descriptor {name!r} needs a file: {name}:FILE")
        out.append(MethodPart(name, arg or None))
    return out


def _absolute(argument: str) -> str:
    path, options = split_options(argument)
    return join_options(str(Path(path).expanduser().resolve()), options)


def canonical_method(method: str) -> str:
    """The method as a gallery stores it: names lower-cased, file arguments made absolute,
    options sorted ("gog+pcb:/abs/ckpt.pth?size=256x128"). Raises ValueError as `parse_method`."""
    parts = parse_method(method)
    return "+".join(str(MethodPart(p.name, None if p.argument is None else _absolute(p.argument)))
                    for p in parts)


def _batch_function(entry: tuple[str, ...]) -> BatchFn:
    module_name, attr = entry[:2]
    fn: BatchFn = getattr(importlib.import_module(module_name), attr)
    return fn


# The registry over PERSON_DESCRIPTORS (entries added to that dict are seen here too).
PERSON_METHODS: Registry[BatchFn] = Registry("person descriptor", PERSON_DESCRIPTORS, _batch_function)


def _resolve(name: str) -> BatchFn:
    return PERSON_METHODS.get(name)


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(images) == 0:
        raise ValueError("no images to describe")
    for i, im in enumerate(images):
        check_rgb(im, f"image {i}")
    return list(images)


def _run(part: MethodPart, images: list[np.ndarray], batch_size: int) -> np.ndarray:
    fn = _resolve(part.name)
    extra = () if _argument_kind(part.name) == NO_ARGUMENT else (part.argument,)
    blocks = [np.asarray(fn(images[i:i + batch_size], *extra), dtype=np.float32)
              for i in range(0, len(images), batch_size)]
    out = np.concatenate(blocks)
    if out.ndim != 2 or len(out) != len(images):
        raise ValueError(f"descriptor {part} returned shape {out.shape} for {len(images)} images")
    return out


def describe_persons(method: str, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """(N, D) float32 descriptors of RGB uint8 person crops by a named method or fusion "a+b"."""
    parts = parse_method(method)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    checked = _check_images(images)
    features = [_run(part, checked, batch_size) for part in parts]
    if len(features) == 1:
        return features[0]
    return np.concatenate([l2_normalize(f) for f in features], axis=1).astype(np.float32)
