import faiss
import numpy as np
import pytest

from storage.vector_index import IndexSpec, VectorIndex, choose_spec, fast_scan_m


def _unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_returns_our_ids_best_first() -> None:
    index = VectorIndex(8)
    vectors = _unit(5, 8)
    index.add(np.array([10, 20, 30, 40, 50]), vectors)
    scores, ids = index.search(vectors[2], k=3)
    assert ids[0, 0] == 30
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(scores[0]) <= 0)


def test_add_replaces_an_existing_id_and_remove_forgets_it() -> None:
    index = VectorIndex(8)
    vectors = _unit(3, 8)
    index.add(np.array([1, 2, 3]), vectors)
    index.add(np.array([2]), vectors[:1])
    assert len(index) == 3
    np.testing.assert_allclose(index.reconstruct([2])[0], vectors[0])
    assert index.remove([2, 99]) == 1
    assert sorted(index.ids().tolist()) == [1, 3]


def test_save_and_load_round_trip(tmp_path) -> None:
    index = VectorIndex(4, metric="l2")
    index.add(np.array([7, 8]), np.eye(4, dtype=np.float32)[:2])
    index.save(tmp_path / "g.faiss")
    loaded = VectorIndex.load(tmp_path / "g.faiss")
    assert loaded.metric == "l2" and loaded.dim == 4
    assert loaded.ids().tolist() == [7, 8]
    _, ids = loaded.search(np.eye(4, dtype=np.float32)[1], k=1)
    assert ids[0, 0] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["g.faiss"]  # no temporary left behind


def test_wrong_shapes_are_refused() -> None:
    index = VectorIndex(4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        index.add(np.array([1]), np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="ids"):
        index.add(np.array([1, 2]), np.zeros((1, 4), np.float32))


def _clustered(rows: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` random centres (what image descriptors look like, roughly)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centres[rng.integers(clusters, size=rows)] + 0.6 * rng.normal(size=(rows, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_gallery_size_chooses_the_index() -> None:
    assert choose_spec(1000, 64).kind == "flat"
    ivf = choose_spec(100_000, 64)
    assert (ivf.kind, ivf.codes, ivf.refine, ivf.hnsw_quantizer) == ("ivf", "PQ16x4fs", "Flat", False)
    assert ivf.nlist in (1024, 2048)  # ~4 sqrt(N)
    big = choose_spec(2_000_000, 1280, memory_budget_mb=4096)
    assert (big.kind, big.codes, big.refine, big.hnsw_quantizer) == ("ivf", "PQ320x4fs", "SQ8", True)
    assert big.factory(1280) == "IVF4096_HNSW32,PQ320x4fs,Refine(SQ8)"
    assert choose_spec(20_000_000, 1280, memory_budget_mb=4096).kind == "ivfpq"
    # too few vectors to train 4-bit codes: plain lists
    small = choose_spec(5000, 64, flat_max=1000)
    assert (small.kind, small.codes, small.refine) == ("ivf", "Flat", "")


def test_fast_scan_sub_quantisers_divide_the_dimension() -> None:
    assert fast_scan_m(1280) == 320 and fast_scan_m(64) == 16
    assert fast_scan_m(96) == 24 and 96 % fast_scan_m(96) == 0
    assert fast_scan_m(127) == 0  # prime: no fast-scan codes


@pytest.mark.parametrize("refine", ["Flat", "SQ8"])
def test_fast_scan_lists_re_scored_reach_the_target_with_our_ids(refine) -> None:
    vectors = _clustered(6000, 32, 50, seed=3)
    ids = np.arange(6000, dtype=np.int64) * 3 + 5
    spec = IndexSpec("ivf", 64, "PQ8x4fs", refine=refine)
    index = VectorIndex.build(ids, vectors, spec=spec, target_recall=0.95, sample=300)
    assert index.tuning.recall_at_10 >= 0.95 and index.tuning.params["k_factor"] == index.k_factor
    assert 1 <= index.tuning.params["nprobe"] < 64
    queries = _clustered(6200, 32, 50, seed=3)[6000:]
    _, truth = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    scores, found = index.search(queries, 10)
    recall = np.mean([len(set(ids[t]) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.9
    # the scores are the stored vectors' inner products (exact for Flat), best first
    stored = index.reconstruct(found[0])
    np.testing.assert_allclose(scores[0], stored @ queries[0], rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    if refine == "Flat":
        np.testing.assert_allclose(stored, vectors[(found[0] - 5) // 3], atol=1e-6)


def test_fast_scan_index_keeps_edits_and_its_store_through_a_file(tmp_path) -> None:
    vectors = _clustered(3000, 16, 20, seed=4)
    ids = np.arange(3000, dtype=np.int64) + 100
    index = VectorIndex.build(ids, vectors, spec=IndexSpec("ivf", 32, "PQ8x4fs", refine="SQ8"),
                              sample=200)
    assert index.remove([100, 101, 99]) == 2
    index.add(np.array([101, 102]), vectors[:2])  # 102 replaced, 101 back
    assert len(index) == 2999
    np.testing.assert_allclose(index.reconstruct([102])[0], vectors[1], atol=0.02)  # 8-bit codes
    index.save(tmp_path / "g.faiss")
    loaded = VectorIndex.load(tmp_path / "g.faiss")
    assert loaded.spec == index.spec and loaded.tuning == index.tuning
    assert loaded.refine is not None and loaded.k_factor == index.k_factor
    assert sorted(loaded.ids().tolist()) == list(range(101, 3100))
    _, found = loaded.search(vectors[[0, 1, 7]], 10)
    assert found[:, 0].tolist() == [101, 102, 107]
    assert 100 not in found and len(set(found[1].tolist())) == 10  # no dead entry, no repeat
    # past COMPACT_AT dead entries the lists are rebuilt from the store: none left
    loaded.remove(np.arange(200, 600))
    assert loaded.index.ntotal == len(loaded) == 2599 and not loaded.removed
    _, found = loaded.search(vectors[[0, 1, 700]], 10)
    assert found[:, 0].tolist() == [101, 102, 800] and not np.isin(found, np.arange(200, 600)).any()


@pytest.mark.parametrize("codes", ["Flat", "SQ8"])
def test_tuning_reaches_the_recall_target_on_clustered_data(codes) -> None:
    vectors = _clustered(6000, 32, 50)
    ids = np.arange(6000, dtype=np.int64) * 3 + 5  # not positions: our ids are kept
    spec = IndexSpec("ivf", 64, codes)
    index = VectorIndex.build(ids, vectors, spec=spec, target_recall=0.95, sample=300)
    assert index.tuning.recall_at_10 >= 0.95
    assert 1 <= index.tuning.params["nprobe"] < 64  # it did not need to scan everything
    # the recall holds on queries it was not tuned on (fresh points of the same clusters)
    queries = _clustered(6200, 32, 50)[6000:]
    _, truth = faiss.knn(queries, vectors, 10)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(ids[t]) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.9


def test_an_approximate_index_keeps_ids_edits_and_parameters_through_a_file(tmp_path) -> None:
    vectors = _clustered(3000, 16, 20, seed=1)
    ids = np.arange(3000, dtype=np.int64) + 100
    index = VectorIndex.build(ids, vectors, spec=IndexSpec("ivf", 32, "Flat", hnsw_quantizer=True),
                              sample=200)
    assert "efSearch" in index.tuning.params
    index.remove([100, 101])
    index.add(np.array([101]), vectors[:1])
    np.testing.assert_allclose(index.reconstruct([101])[0], vectors[0], atol=1e-6)
    index.save(tmp_path / "g.faiss")
    loaded = VectorIndex.load(tmp_path / "g.faiss")
    assert loaded.spec == index.spec and loaded.tuning == index.tuning
    assert faiss.extract_index_ivf(loaded.index).nprobe == index.tuning.params["nprobe"]
    assert sorted(loaded.ids().tolist()) == list(range(101, 3100))
    _, found = loaded.search(vectors[5], 1)
    assert found[0, 0] == 105


@pytest.mark.slow  # OPQ's training takes ~30 s even here
def test_product_codes_are_built_and_tuned() -> None:
    vectors = _clustered(2000, 32, 30, seed=2)
    index = VectorIndex.build(np.arange(2000), vectors, spec=IndexSpec("ivfpq", 32, pq_m=16, pq_bits=4),
                              sample=200, target_recall=0.5)
    assert index.spec.factory(32) == "OPQ16,IVF32,PQ16x4"
    assert index.tuning.recall_at_10 >= 0.5
    assert index.memory_bytes() < 2000 * 32 * 4  # smaller than the float vectors
