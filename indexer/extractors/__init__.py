"""Registry of extractors by name. Modules load on first use, so `import indexer` stays light."""

from __future__ import annotations

import importlib
from typing import Any

from indexer.extractors.base import GlobalExtractor, JointExtractor, LocalExtractor

GLOBAL_EXTRACTORS: dict[str, str] = {
    "gem-efficientnet-lite0": "indexer.extractors.gem:GemEfficientNet",
    "person": "indexer.extractors.person_global:PersonDescriptor",
}
LOCAL_EXTRACTORS: dict[str, str] = {
    "rootsift": "indexer.extractors.sift:RootSift",
}
JOINT_EXTRACTORS: dict[str, str] = {
    "delg-efficientnet-lite0": "indexer.extractors.delg_torch:DelgEfficientNet",
    "delg-savedmodel": "indexer.extractors.delg_savedmodel:DelgSavedModel",
}


def _load(registry: dict[str, str], kind: str, name: str) -> type:
    if name not in registry:
        raise ValueError(f"unknown {kind} extractor {name!r}; valid: {', '.join(sorted(registry))}")
    module, _, attr = registry[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_global(name: str, conf: dict[str, Any] | None = None) -> GlobalExtractor:
    """A global extractor by registry name."""
    return _load(GLOBAL_EXTRACTORS, "global", name)(conf)


def build_local(name: str, conf: dict[str, Any] | None = None) -> LocalExtractor:
    """A local extractor by registry name."""
    return _load(LOCAL_EXTRACTORS, "local", name)(conf)


def build_joint(name: str, conf: dict[str, Any] | None = None) -> JointExtractor:
    """A joint (global + local) extractor by registry name."""
    return _load(JOINT_EXTRACTORS, "joint", name)(conf)
