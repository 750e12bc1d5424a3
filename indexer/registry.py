"""One registry style for named things (extractors, person methods, projections, metrics, modes,
evaluation formats): a name -> target table whose `get(name)` raises a ValueError listing the
valid names.

A registry wraps a plain dict and keeps a reference to it, so entries added to that dict later
(by another module, or by a test) are seen. Targets may be loaded lazily: with `load=import_target`
an entry "package.module:attribute" is imported on first use, so heavy modules (torch,
TensorFlow) cost nothing until they are asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def import_target(ref: str) -> Any:
    """The object a "package.module:attribute" reference names, imported now."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Named targets of one kind (`kind` names it in errors: "global extractor", "metric")."""

    def __init__(self, kind: str, entries: Mapping[str, Any],
                 load: Callable[[Any], T] | None = None, sort: bool = True):
        self.kind = kind
        self.entries = entries
        self._load = load
        self._sort = sort

    def names(self) -> list[str]:
        """The valid names (sorted, unless the registry keeps its own order)."""
        return sorted(self.entries) if self._sort else list(self.entries)

    def check(self, name: str) -> str:
        """`name` itself; an unknown one raises a ValueError that lists the valid names."""
        if name not in self.entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return name

    def get(self, name: str) -> T:
        """The target registered as `name` (loaded now when the registry loads lazily)."""
        entry = self.entries[self.check(name)]
        return self._load(entry) if self._load is not None else entry

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
