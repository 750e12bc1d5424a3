import numpy as np
import pytest

from storage.vector_index import VectorIndex


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
