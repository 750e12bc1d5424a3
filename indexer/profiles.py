"""Named presets for each profile (which extractors describe its images and how they are compared),
and the `--model` specs that choose a landmark gallery's extractors.

A landmark model spec is `NAME` or `NAME:ARG`:

- `gem-rootsift`: EfficientNet-Lite0 GeM global vectors, PCA-whitened once the gallery holds 300
  images (learned from its own vectors, the untrained DELG whitening), and RootSIFT local features
  for re-ranking (the default: the best configuration measured on Holidays);
- `delg-efficientnet-lite0[:HEADS]`: the DELG-style torch model; without HEADS (a file written by
  `tansaku train-delg`) its untrained heads are fitted on the gallery's own images when it is
  first indexed (PCA-whitening, local PCA, feature-norm attention);
- `delg-savedmodel:PATH[?preset=NAME]`: Google's exported DELG SavedModel folder, run with the
  published extraction config of that model (`r50-gldv2-clean`, the default, `r101-gldv2-clean`,
  `r50-gld` or `r101-gld`: they differ in the attention threshold of local features). The
  configuration records the preset in use.

The configuration's schema and defaults are in `indexer.config`. A configuration may name the
re-ranking that suits its local features (`"rerank"`: a mode of `matcher.rerank.RERANK_MODES` and
overrides); queries use it unless told otherwise.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from indexer.config import WHITENING_DEFAULTS
from indexer.extractors.base import join_options, split_options

DEFAULT_PERSON_METHOD = "gog+lomo+cdpcf+cdpcf-mbv2"

PROFILES: dict[str, dict[str, Any]] = {
    "landmark": {
        "model": "gem-rootsift",
        "global": {"name": "gem-efficientnet-lite0", "conf": {}},
        # the 860 strongest as 4-bit codes: at most 64 KB an image, 94.33 re-ranked Holidays mAP
        # against 94.19 for 1000 float16 (README, Scale; spreading them over a grid gave 93.67)
        "local": {"name": "rootsift", "conf": {"max_features": 860}},
        "store": {"local": "uint4"},
        "metric": "ip",
        # PCA-whitening learned from the gallery's own vectors once it has enough images
        # (indexer.config.WhiteningConfig holds the floor, 300, and the other defaults)
        "whitening": {"min_images": WHITENING_DEFAULTS["min_images"]},
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
        conf, canonical = _savedmodel_conf(arg)
    else:
        heads = GALLERY_HEADS
        if arg:
            heads_path = Path(arg).expanduser().resolve()
            if not heads_path.is_file():
                raise ValueError(f"DELG heads file not found: {heads_path}")
            heads = str(heads_path)
        conf, canonical = {"heads": heads}, f"{name}:{heads}"
    # DELG's local descriptors are unit vectors: int8 keeps them in a quarter of float32's bytes
    return {"model": canonical, "joint": {"name": name, "conf": conf}, "metric": "ip",
            "store": {"local": "int8"}}


def _savedmodel_conf(arg: str) -> tuple[dict[str, Any], str]:
    """The joint settings and the canonical spec of `delg-savedmodel:PATH[?preset=NAME]`.

    The spec names the preset only when it is not the default, so galleries made before presets
    existed keep their spec; the settings always record it.
    """
    from indexer.extractors.delg_savedmodel import DEFAULT_PRESET, PRESETS

    path_text, options = split_options(arg)
    if not path_text:
        raise ValueError("delg-savedmodel needs the SavedModel folder: "
                         "delg-savedmodel:PATH[?preset=NAME]")
    unknown = set(options) - {"preset"}
    if unknown:
        raise ValueError(f"delg-savedmodel: unknown option {sorted(unknown)}; valid: preset")
    preset = options.get("preset", DEFAULT_PRESET).lower()
    if preset not in PRESETS:
        raise ValueError(f"unknown DELG preset {preset!r}; valid: {', '.join(PRESETS)}")
    path = Path(path_text).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"DELG SavedModel folder not found: {path}")
    extra = {} if preset == DEFAULT_PRESET else {"preset": preset}
    return {"path": str(path), "preset": preset}, f"delg-savedmodel:{join_options(str(path), extra)}"
