"""The typed gallery configuration: stored dicts of earlier versions open, unchanged."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from indexer.config import (
    CONFIG_VERSION,
    WHITENING_DEFAULTS,
    ConfigError,
    GalleryConfig,
    WhiteningConfig,
    migrate,
    parse_config,
    stored_config,
)
from indexer.profiles import PROFILES, resolve_profile

# Configuration dicts exactly as galleries stored them before configurations were versioned
# (the JSON column, read back): taken from galleries made by `tansaku index` / `train-projection`.
STORED_V0: dict[str, dict[str, Any]] = {
    "landmark-preset": {
        "model": "gem-rootsift",
        "global": {"name": "gem-efficientnet-lite0", "conf": {}},
        "local": {"name": "rootsift", "conf": {"max_features": 1000}},
        "metric": "ip", "whitening": {"min_images": 300},
    },
    "gem-rootsift-whitened": {
        "model": "gem-rootsift",
        "global": {"name": "gem-efficientnet-lite0", "conf": {}},
        "local": {"name": "rootsift", "conf": {"max_features": 1000}},
        "metric": "ip", "whitening": {"min_images": 300},
        "projection": {"kind": "pca-whitening", "file": "whitening-1796193717204051627.npz",
                       "images": 421},
    },
    "person-gog-xqda": {
        "global": {"name": "person", "conf": {"method": "gog"}}, "local": None, "metric": "l2",
        "projection": {"kind": "xqda", "file": "projection-1796190000.npz",
                       "dataset": "/work/shared/data/viper", "identities": 632,
                       "normalizer_mean": "normalizer-1796190000.npy"},
    },
    "delg-savedmodel": {
        "model": "delg-savedmodel:/models/delg_r50_gldv2",
        "joint": {"name": "delg-savedmodel",
                  "conf": {"path": "/models/delg_r50_gldv2", "preset": "r50-gldv2-clean"}},
        "metric": "ip", "store": {"local": "int8"},
    },
    "delg-efficientnet-lite0-fitted": {
        "model": "delg-efficientnet-lite0:fit-on-gallery",
        "joint": {"name": "delg-efficientnet-lite0",
                  "conf": {"heads": "/home/u/.tansaku/galleries/3/delg-heads.pt"}},
        "metric": "ip", "store": {"local": "int8"},
    },
    # fields of parts not typed here yet (an approximate index, a person detector) are kept
    "with-index-and-detect": {
        "global": {"name": "person", "conf": {"method": "lomo"}}, "local": None, "metric": "l2",
        "detect": {"detector": "hog", "classifier": None},
        "index": {"kind": "flat", "factory": "Flat", "images": 421, "recall_at_10": 1.0},
    },
}


@pytest.mark.parametrize("name", sorted(STORED_V0))
def test_earlier_configurations_migrate_unchanged(name: str) -> None:
    stored = STORED_V0[name]
    before = copy.deepcopy(stored)
    config = parse_config(stored)
    assert stored == before  # the caller's dict is not touched
    assert config.version == CONFIG_VERSION
    assert config.stored() == {**stored, "version": CONFIG_VERSION}  # nothing lost or moved
    assert parse_config(config.stored()).stored() == config.stored()  # reading it again: the same


def test_typed_fields_of_earlier_configurations() -> None:
    person = parse_config(STORED_V0["person-gog-xqda"])
    assert person.global_ is not None and person.global_.conf == {"method": "gog"}
    assert person.projection is not None and person.projection.kind == "xqda"
    assert person.projection.normalizer_mean == "normalizer-1796190000.npy"
    assert person.projection.model_dump()["identities"] == 632  # kept as written
    assert person.store.local == "float16"  # the default where none was written
    delg = parse_config(STORED_V0["delg-savedmodel"])
    assert delg.joint is not None and delg.joint.conf["preset"] == "r50-gldv2-clean"
    assert delg.store.local == "int8"
    landmark = parse_config(STORED_V0["landmark-preset"])
    assert landmark.whitening == WhiteningConfig()  # every other default filled in


def test_the_whitening_floor_is_written_once() -> None:
    assert WHITENING_DEFAULTS["min_images"] == WhiteningConfig().min_images == 300
    assert PROFILES["landmark"]["whitening"]["min_images"] == WHITENING_DEFAULTS["min_images"]
    from indexer import gallery_index

    assert gallery_index.WHITENING_DEFAULTS is WHITENING_DEFAULTS  # the life-cycle reads the schema's


def test_presets_are_valid_configurations() -> None:
    for name in PROFILES:
        assert stored_config(resolve_profile(name)) == {**resolve_profile(name), "version": 1}


def test_newer_or_invalid_configurations_are_refused_by_field() -> None:
    with pytest.raises(ConfigError, match="newer tansaku"):
        migrate({**STORED_V0["landmark-preset"], "version": CONFIG_VERSION + 1})
    with pytest.raises(ConfigError, match="metric"):
        parse_config({**STORED_V0["landmark-preset"], "metric": "cosine"})
    with pytest.raises(ConfigError, match="whitening.min_images"):
        parse_config({**STORED_V0["landmark-preset"], "whitening": {"min_images": "many"}})
    with pytest.raises(ConfigError, match="store.local"):
        parse_config({**STORED_V0["delg-savedmodel"], "store": {"local": "int4"}})


def test_schema_reads_by_alias_and_name() -> None:
    config = GalleryConfig(global_={"name": "person", "conf": {"method": "lomo"}}, metric="l2")
    assert config.stored()["global"] == {"name": "person", "conf": {"method": "lomo"}}
    assert config.extractors["global"] is config.global_


def test_registry_lists_valid_names_and_sees_later_entries() -> None:
    from indexer.registry import Registry

    table = {"b": "indexer.config:CONFIG_VERSION"}
    from indexer.registry import import_target

    registry: Registry[int] = Registry("thing", table, import_target)
    assert registry.get("b") == CONFIG_VERSION  # imported on first use
    table["a"] = "indexer.config:CONFIG_VERSION"
    assert list(registry) == ["a", "b"] and "a" in registry
    with pytest.raises(ValueError, match="unknown thing 'c'; valid: a, b"):
        registry.get("c")
