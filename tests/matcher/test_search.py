from pathlib import Path

import numpy as np
import pytest

from engine.core import Engine
from engine.settings import Settings
from matcher.rerank import order_by_inliers
from tests.conftest import database_url, sample_image, warp, write_rgb


def test_order_by_inliers_puts_verified_first_and_keeps_the_rest_in_global_order() -> None:
    inliers = np.array([3, 40, 0, 15, 40, 11])
    # 40, 40 (ties keep global order), 15; then the unverified (< 12) in their global order
    assert order_by_inliers(inliers, min_inliers=12).tolist() == [1, 4, 3, 0, 2, 5]
    assert order_by_inliers(np.zeros(3, int), min_inliers=12).tolist() == [0, 1, 2]


@pytest.fixture(scope="module")
def engine(sample_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    home = tmp_path_factory.mktemp("home")
    eng = Engine(Settings(home=home, db_url=database_url(home)))
    eng.index_folder(sample_folder, "samples")
    return eng


@pytest.mark.slow
def test_a_warped_crop_finds_its_source_first_after_reranking(engine: Engine, tmp_path: Path) -> None:
    for k, name in enumerate(("rocket", "astronaut", "stereo_motorcycle")):
        query = write_rgb(tmp_path / f"q{k}.jpg", warp(sample_image(name), seed=k))
        result = engine.query(query, "samples", top_k=8, shortlist=8)
        best = result.results[0]
        assert Path(best.path).stem == name
        assert best.inliers is not None and best.inliers >= 15
        others = [r.inliers or 0 for r in result.results[1:]]
        assert max(others) < best.inliers / 2


@pytest.mark.slow
def test_no_rerank_reports_no_inliers(engine: Engine, sample_folder: Path) -> None:
    result = engine.query(sample_folder / "sub" / "coffee.jpg", "samples", rerank=False)
    assert all(r.inliers is None for r in result.results)
    assert result.results[0].score == pytest.approx(1.0, abs=1e-4)
    assert "matching" not in result.times


def test_verified_query_expansion_reorders_the_unverified_rest(tmp_path: Path, monkeypatch) -> None:
    from indexer.describe import Description
    from indexer.features import LocalFeatures
    from matcher import search as search_module
    from matcher.rerank import RerankConf, expanded_query
    from matcher.search import Searcher
    from storage.feature_store import FeatureStore
    from storage.vector_index import VectorIndex

    e = np.eye(4, dtype=np.float32)
    # id 1: close to the query and verified; id 2: like id 1 but far from the query; id 3: in between
    vectors = {1: e[0] * 0.6 + e[1] * 0.8, 2: e[1], 3: e[0] * 0.45 + e[2] * 0.893}
    index = VectorIndex(4)
    index.add(np.array(list(vectors)), np.stack(list(vectors.values())))
    store = FeatureStore(tmp_path)
    local = LocalFeatures(np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32))
    for i in vectors:
        store.put(i, {"keypoints": local.keypoints, "descriptors": local.descriptors})
    monkeypatch.setattr(search_module, "count_inliers",
                        lambda q, cands, conf, times: np.array([50, 0, 0][: len(cands)]))
    query = Description(e[0], local)

    def ranking(expansion: int) -> list[int]:
        searcher = Searcher(index, store, RerankConf(expansion=expansion))
        return [h.image_id for h in searcher.search(query, top_k=3, shortlist=1).hits]

    assert ranking(0) == [1, 3, 2]  # global order after the verified image
    assert ranking(1) == [1, 2, 3]  # q + v1 = 1.6 e0 + 0.8 e1: 0.8 for id 2, 0.72 for id 3
    np.testing.assert_allclose(np.linalg.norm(expanded_query(e[0], e[1:2])), 1.0)


def test_parallel_matching_equals_serial() -> None:
    from dataclasses import replace

    from indexer.extractors.sift import rootsift
    from matcher.rerank import RerankConf, count_inliers

    names = ("coffee", "rocket", "astronaut", "chelsea", "colorwheel")
    query = rootsift(warp(sample_image("coffee"), seed=3), max_features=300)
    candidates = [rootsift(sample_image(n), max_features=300) for n in names]
    serial = count_inliers(query, candidates, replace(RerankConf(), workers=1))
    parallel = count_inliers(query, candidates, replace(RerankConf(), workers=2))
    assert serial.tolist() == parallel.tolist()
    assert serial[0] == serial.max() and serial[0] >= 15  # the warped source wins
