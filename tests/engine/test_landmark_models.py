"""Landmark galleries built with `--model`: DELG-style torch heads fitted on the gallery, Google's
SavedModel format (a tiny exported model), and the re-ranking modes, through the Engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.core import Engine, profile_config, rerank_conf
from engine.errors import TansakuError
from engine.settings import Settings
from indexer.profiles import GALLERY_HEADS
from matcher.rerank import RerankConf, rerank_mode
from tests.conftest import database_url, sample_image, warp, write_rgb


def _engine(home: Path) -> Engine:
    return Engine(Settings(home=home, db_url=database_url(home)))


@pytest.fixture(scope="module")
def delg_engine(sample_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = _engine(tmp_path_factory.mktemp("delg-home"))
    engine.index_folder(sample_folder, "delg",
                        config=profile_config("landmark", model="delg-efficientnet-lite0"))
    return engine


@pytest.mark.slow
def test_untrained_delg_heads_are_fitted_on_the_gallery_once(delg_engine: Engine,
                                                             sample_folder: Path) -> None:
    gallery = delg_engine.get_gallery("delg")
    heads = Path(gallery.config["joint"]["conf"]["heads"])
    assert heads.is_file() and heads.parent.name == str(gallery.id)
    assert gallery.config["model"] == f"delg-efficientnet-lite0:{GALLERY_HEADS}"
    stamp = heads.stat().st_mtime_ns
    # the same --model again: accepted, nothing re-described, heads kept
    summary = delg_engine.index_folder(
        sample_folder, "delg", config=profile_config("landmark", model="delg-efficientnet-lite0"))
    assert summary.indexed == 0 and summary.unchanged == 8
    assert heads.stat().st_mtime_ns == stamp
    with pytest.raises(TansakuError, match="other extractors"):
        delg_engine.index_folder(sample_folder, "delg",
                                 config=profile_config("landmark", model="gem-rootsift"))


@pytest.mark.slow
def test_delg_gallery_stores_attention_selected_local_features(delg_engine: Engine) -> None:
    opened = delg_engine.open_gallery("delg")
    arrays = opened.store.get(next(iter(opened.paths)))
    assert arrays["descriptors"].shape[1] == 128
    assert arrays["descriptors"].dtype == np.int8  # the compact store
    assert np.all(np.diff(arrays["scores"]) <= 0)  # best attention first
    assert opened.index.dim == 1280  # 8 images are too few to learn a whitening from: identity FC


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ours", "delf"])
def test_a_warped_crop_finds_its_source_in_a_delg_gallery(delg_engine: Engine, tmp_path: Path,
                                                          mode: str) -> None:
    query = write_rgb(tmp_path / "q.jpg", warp(sample_image("rocket"), seed=3))
    result = delg_engine.query(query, "delg", top_k=8, shortlist=8, conf=rerank_conf(mode))
    assert Path(result.results[0].path).stem == "rocket"
    assert result.results[0].inliers is not None


def test_rerank_options_from_the_command_line() -> None:
    assert rerank_conf() is None  # the gallery's own
    assert rerank_conf("delf") == rerank_mode("delf")
    assert rerank_conf(verifier="magsac") == RerankConf(verifier="magsac")
    delf = rerank_mode("delf")
    assert (delf.matcher, delf.ratio, delf.distance_bound, delf.verifier, delf.model) == (
        "kdtree", None, 0.9, "ransac", "affine")
    with pytest.raises(TansakuError, match="degensac does not fit the affine model"):
        rerank_conf("delf", "degensac")
    with pytest.raises(TansakuError, match="valid: ours, delf"):
        rerank_conf("dolf")
    with pytest.raises(TansakuError, match="--model applies to landmark"):
        profile_config("person", model="delg-efficientnet-lite0")


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is needed to export a tiny DELG model")
    from tests.indexer.test_delg_savedmodel import _export_tf2

    path = tmp_path_factory.mktemp("saved") / "tiny"
    _export_tf2(tf, path)
    return path


@pytest.mark.slow
def test_a_savedmodel_gallery_indexes_and_answers(savedmodel: Path, sample_folder: Path,
                                                  tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    config: dict[str, Any] | None = profile_config("landmark", model=f"delg-savedmodel:{savedmodel}")
    summary = engine.index_folder(sample_folder, "google", config=config)
    assert summary.indexed == 8 and summary.failed == 0
    gallery = engine.get_gallery("google")
    assert gallery.config["joint"] == {"name": "delg-savedmodel",
                                       "conf": {"path": str(savedmodel), "preset": "r50-gldv2-clean"}}
    result = engine.query(sample_folder / "sub" / "rocket.jpg", "google", top_k=3)
    assert result.results[0].relative_path == "sub/rocket.jpg"  # an image finds itself
    assert result.results[0].path == str(sample_folder.resolve() / "sub" / "rocket.jpg")
