"""A gallery's configuration: the typed schema of the JSON dict stored in its SQL row, with every
default in one place, and the migration of the dicts written by earlier versions.

The stored form stays a plain JSON dict (`Gallery.config`); `parse_config` reads one into a
`GalleryConfig` (migrating it first), `GalleryConfig.stored()` writes one back. A dict without a
`"version"` was written before configurations carried one (version 0); it has the same fields as
version 1, which only adds the version. A later version that moves a field adds its step to
`_MIGRATIONS`, so every gallery ever written still opens.

Fields:

- `global` / `local` / `joint`: extractors by registry name (`indexer.extractors`) with their
  settings; a joint extractor gives both the global vector and the local features;
- `model`: the `--model` spec a landmark gallery was made from (`indexer.profiles.model_config`);
- `metric`: how FAISS compares global vectors, `ip` or `l2`;
- `whitening`: PCA-whitening learned from the gallery's own vectors (landmark galleries);
- `projection`: the learned projection the gallery holds (`indexer.projections.gallery`);
- `rerank`: the re-ranking the gallery's local features suit (`matcher.rerank` mode and overrides);
- `store`: how local descriptors are stored (`float16`, `float32` or `int8`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_VERSION = 1


class ExtractorSpec(BaseModel):
    """An extractor by registry name, with its settings."""

    model_config = ConfigDict(extra="forbid")

    name: str
    conf: dict[str, Any] = Field(default_factory=dict)


class WhiteningConfig(BaseModel):
    """When and how a landmark gallery learns PCA-whitening from its own global vectors (settings
    this schema does not know yet are kept as written, like the gallery's own)."""

    model_config = ConfigDict(extra="allow")

    min_images: int = Field(default=300, ge=2)  # no whitening below this: raw vectors (fewer over-fit it)
    refit_growth: float = Field(default=1.5, gt=1.0)  # learn it again once the gallery is this much larger
    dim: int | None = Field(default=None, ge=1)  # components kept (None: all the data supports)
    shrinkage: float = Field(default=1.0, ge=0.0)  # eigenvalue floor, x their mean (pca_whitening.fit)
    max_sample: int = Field(default=20000, ge=2)  # vectors it is learned from, at most


# The whitening settings with every default filled in (the whitening life-cycle reads these).
WHITENING_DEFAULTS: dict[str, Any] = WhiteningConfig().model_dump()


class ProjectionConfig(BaseModel):
    """The learned projection a gallery holds: its kind and file, plus what it was learned from
    (`images`, `dataset`, `identities`, ... are kept as written)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    file: str
    normalizer_mean: str | None = None  # GOG's training mean, removed before the projection
    images: int | None = None  # the gallery's size when a whitening was learned


class StoreConfig(BaseModel):
    """How a gallery's feature store keeps local descriptors (other settings kept as written)."""

    model_config = ConfigDict(extra="allow")

    local: Literal["float32", "float16", "int8", "uint8", "uint4"] = "float16"  # describe.LOCAL_DTYPES


class GalleryConfig(BaseModel):
    """A gallery's configuration (see the module docstring for the fields).

    Fields this schema does not know yet (added by a newer part of the code, e.g. an index kind or
    a person detector) are kept as written.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    version: int = CONFIG_VERSION
    model: str | None = None
    global_: ExtractorSpec | None = Field(default=None, alias="global")
    local: ExtractorSpec | None = None
    joint: ExtractorSpec | None = None
    metric: Literal["ip", "l2"] = "ip"
    whitening: WhiteningConfig | None = None
    projection: ProjectionConfig | None = None
    rerank: dict[str, Any] | None = None
    store: StoreConfig = Field(default_factory=StoreConfig)

    def stored(self) -> dict[str, Any]:
        """The JSON dict a gallery row stores: the fields as written (defaults left out, as
        earlier versions did), with the version."""
        out = self.model_dump(by_alias=True, exclude_unset=True)
        out["version"] = self.version
        return out

    @property
    def extractors(self) -> dict[str, ExtractorSpec | None]:
        """The extractor fields by their stored names."""
        return {"global": self.global_, "local": self.local, "joint": self.joint}


class ConfigError(ValueError):
    """A stored configuration that is not valid, or was written by a newer version."""


def _v0_to_v1(config: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no `version` field) has version 1's fields: only the version is added."""
    return {**config, "version": 1}


# _MIGRATIONS[v] turns a version-v dict into a version-(v + 1) one
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _v0_to_v1}


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration dict of any earlier version, as the current version writes it."""
    out = copy.deepcopy(dict(config))
    version = out.get("version", 0)
    if not isinstance(version, int) or version < 0:
        raise ConfigError(f"configuration version {version!r} is not a version number")
    if version > CONFIG_VERSION:
        raise ConfigError(f"configuration version {version} was written by a newer tansaku "
                          f"(this one reads up to version {CONFIG_VERSION})")
    while version < CONFIG_VERSION:
        out = _MIGRATIONS[version](out)
        version = out["version"]
    return out


def parse_config(config: dict[str, Any]) -> GalleryConfig:
    """The typed configuration of a stored dict (migrated first); invalid ones raise ConfigError
    naming the fields at fault."""
    migrated = migrate(config)
    try:
        return GalleryConfig.model_validate(migrated)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid gallery configuration: {problems}") from exc


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` checked against the schema, as it is to be stored (with the current version)."""
    return parse_config(config).stored()
