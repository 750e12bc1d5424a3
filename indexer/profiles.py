"""Named presets for each profile: which extractors describe its images and how they are compared."""

from __future__ import annotations

import copy
from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "landmark": {
        "global": {"name": "gem-efficientnet-lite0", "conf": {}},
        "local": {"name": "rootsift", "conf": {"max_features": 1000}},
        "metric": "ip",
    },
    "person": {
        "global": {"name": "person", "conf": {"method": "lomo"}},
        "local": None,
        "metric": "l2",
    },
}


def resolve_profile(name: str) -> dict[str, Any]:
    """A copy of the preset `name`; unknown names raise with the valid ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(sorted(PROFILES))}")
    return copy.deepcopy(PROFILES[name])
