"""Named presets for each profile (which extractors describe its images and how they are compared),
and the `--model` specs that choose a landmark gallery's extractors.

A landmark model spec is `NAME` or `NAME:ARG`:

- `gem-rootsift`: EfficientNet-Lite0 GeM global vectors, PCA-whitened once the gallery holds 300
  images (learned from its own vectors, the untrained DELG whitening), and RootSIFT local features
  for re-ranking (the default: the best configuration measured on Holidays);
- `delg-efficientnet-lite0[:HEADS]`: the DELG-style torch model; without HEADS (a file written by
  `tansaku train-delg`) its untrained heads are fitted on the gallery's own images when it is
  first indexed (PCA-whitening, local PCA, feature-norm attention);
- `delg-savedmodel:PATH`: Google's exported DELG SavedModel folder.

A configuration may name the re-ranking that suits its local features (`"rerank"`: a mode of
`matcher.rerank.RERANK_MODES` and overrides); queries use it unless told otherwise.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

DEFAULT_PERSON_METHOD = "gog+cdpcf+cdpcf-mbv2"

PROFILES: dict[str, dict[str, Any]] = {
    "landmark": {
        "model": "gem-rootsift",
        "global": {"name": "gem-efficientnet-lite0", "conf": {}},
        "local": {"name": "rootsift", "conf": {"max_features": 1000}},
        "metric": "ip",
        # PCA-whitening learned from the gallery's own vectors once it has 300 images (pipeline.py)
        "whitening": {"min_images": 300},
    },
    "person": {
        # the best VIPeR fusion (README, "Transfer features for people"): GOG with C-DPCF of both
        # ImageNet CNNs, each part through its own learned stage, then XQDA (train-projection)
        "global": {"name": "person", "conf": {"method": DEFAULT_PERSON_METHOD}},
        "local": None,
        "metric": "l2",
    },
}

# `heads` of a delg-efficientnet-lite0 configuration whose heads are still to be fitted on the gallery
GALLERY_HEADS = "fit-on-gallery"
LANDMARK_MODELS = ("gem-rootsift", "delg-efficientnet-lite0", "delg-savedmodel")


def resolve_profile(name: str) -> dict[str, Any]:
    """A copy of the preset `name`; unknown names raise with the valid ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(sorted(PROFILES))}")
    return copy.deepcopy(PROFILES[name])


def model_config(spec: str) -> dict[str, Any]:
    """A landmark gallery's configuration from a `--model` spec (see the module docstring).

    Paths in the spec are made absolute, so the configuration means the same from any folder.
    """
    name, sep, arg = spec.partition(":")
    if name not in LANDMARK_MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(LANDMARK_MODELS)}")
    if name == "gem-rootsift":
        if sep:
            raise ValueError("gem-rootsift takes no argument")
        return resolve_profile("landmark")
    if name == "delg-savedmodel":
        if not arg:
            raise ValueError("delg-savedmodel needs the SavedModel folder: delg-savedmodel:PATH")
        path = Path(arg).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"DELG SavedModel folder not found: {path}")
        conf: dict[str, Any] = {"path": str(path)}
    else:
        heads = GALLERY_HEADS
        if arg:
            heads_path = Path(arg).expanduser().resolve()
            if not heads_path.is_file():
                raise ValueError(f"DELG heads file not found: {heads_path}")
            heads = str(heads_path)
        conf = {"heads": heads}
    canonical = f"{name}:{conf.get('path') or conf['heads']}"
    # DELG's local descriptors are unit vectors: int8 keeps them in a quarter of float32's bytes
    return {"model": canonical, "joint": {"name": name, "conf": conf}, "metric": "ip",
            "store": {"local": "int8"}}
