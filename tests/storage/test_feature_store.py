import numpy as np
import pytest

from storage.atomic import atomic_write
from storage.feature_store import FeatureStore


def test_put_get_delete(tmp_path) -> None:
    store = FeatureStore(tmp_path / "f")
    arrays = {"global": np.arange(4, dtype=np.float32), "keypoints": np.ones((3, 2), np.float32)}
    store.put(5, arrays)
    got = FeatureStore(tmp_path / "f").get(5)  # a fresh store reads it from disk
    np.testing.assert_array_equal(got["global"], arrays["global"])
    assert store.ids() == {5}
    store.delete(5)
    with pytest.raises(KeyError, match="5"):
        store.get(5)
    store.delete(5)  # deleting twice is fine


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"new, half written")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
