"""Feature extractors (global, local, joint) and their registries by name.

Entry points: `build_global`, `build_local`, `build_joint` (an extractor from a name and its
settings) and the registries `GLOBAL`, `LOCAL`, `JOINT` (`indexer.registry.Registry`). Modules load
on first use, so `import indexer` stays light.
"""

from __future__ import annotations

from typing import Any

from indexer.extractors.base import GlobalExtractor, JointExtractor, LocalExtractor
from indexer.registry import Registry, import_target

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

GLOBAL: Registry[type] = Registry("global extractor", GLOBAL_EXTRACTORS, import_target)
LOCAL: Registry[type] = Registry("local extractor", LOCAL_EXTRACTORS, import_target)
JOINT: Registry[type] = Registry("joint extractor", JOINT_EXTRACTORS, import_target)


def build_global(name: str, conf: dict[str, Any] | None = None) -> GlobalExtractor:
    """A global extractor by registry name."""
    return GLOBAL.get(name)(conf)


def build_local(name: str, conf: dict[str, Any] | None = None) -> LocalExtractor:
    """A local extractor by registry name."""
    return LOCAL.get(name)(conf)


def build_joint(name: str, conf: dict[str, Any] | None = None) -> JointExtractor:
    """A joint (global + local) extractor by registry name."""
    return JOINT.get(name)(conf)
