import numpy as np
import pytest

from storage.atomic import atomic_write
from storage.feature_store import FeatureStore, PackedFeatureStore
from storage.gallery_files import GalleryFiles


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


def _arrays(seed: int, n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"global": rng.normal(size=8).astype(np.float32),
            "keypoints": rng.normal(size=(n, 2)).astype(np.float32),
            "descriptors": rng.integers(0, 255, size=(n, 16)).astype(np.uint8)}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key])


def test_packed_store_put_get_replace_delete_and_reopen(tmp_path) -> None:
    store = PackedFeatureStore(tmp_path / "p", writable=True)
    for i in range(10):
        store.put(i, _arrays(i))
    store.put(3, _arrays(33))  # replaced
    store.delete(4)
    store.delete(4)  # twice is fine
    _same(store.get(3), _arrays(33))  # readable before a flush
    store.flush()
    store.put(11, _arrays(11))  # appended after the checkpoint: found by the scan on reopening
    store.flush()
    store.close()
    again = PackedFeatureStore(tmp_path / "p")
    assert again.ids() == {0, 1, 2, 3, 5, 6, 7, 8, 9, 11}
    _same(again.get(3), _arrays(33))
    _same(again.get(11), _arrays(11))
    got = again.get_many([9, 0, 3])
    _same(got[0], _arrays(9))
    _same(got[2], _arrays(33))
    with pytest.raises(KeyError, match="4"):
        again.get(4)
    with pytest.raises(PermissionError):
        again.put(1, _arrays(1))  # readers cannot write


def test_packed_store_survives_a_kill_mid_append(tmp_path) -> None:
    root = tmp_path / "p"
    store = PackedFeatureStore(root, writable=True)
    for i in range(6):
        store.put(i, _arrays(i))
    store.flush()
    store.put(6, _arrays(6))
    store.put(7, _arrays(7))
    store._writer.flush()  # noqa: SLF001  # on disk, but the process dies before flush()
    segment = root / "seg-00000.dat"
    whole = segment.stat().st_size
    with open(segment, "r+b") as handle:  # the kill cut record 7 in half
        handle.truncate(whole - 40)
    reader = PackedFeatureStore(root)  # a reader sees what is whole and cuts nothing
    assert reader.ids() == set(range(7))
    assert segment.stat().st_size == whole - 40
    store = PackedFeatureStore(root, writable=True)  # the next writer cuts the torn tail off
    assert store.ids() == set(range(7))
    _same(store.get(6), _arrays(6))
    store.put(7, _arrays(77))  # appends start clean after the cut
    store.flush()
    _same(PackedFeatureStore(root).get(7), _arrays(77))


def test_packed_store_drops_a_corrupt_record_and_everything_after_it(tmp_path) -> None:
    root = tmp_path / "p"
    store = PackedFeatureStore(root, writable=True)
    for i in range(3):
        store.put(i, _arrays(i))
    store._writer.flush()  # noqa: SLF001  # never checkpointed: all three are scanned on reopening
    data = bytearray((root / "seg-00000.dat").read_bytes())
    data[len(data) // 2] ^= 0xFF  # a bit flipped inside the second record
    (root / "seg-00000.dat").write_bytes(bytes(data))
    assert PackedFeatureStore(root, writable=True).ids() == {0}


def test_packed_store_rolls_segments_and_compacts(tmp_path) -> None:
    store = PackedFeatureStore(tmp_path / "p", writable=True, segment_bytes=2000)
    for i in range(20):
        store.put(i, _arrays(i))
    for i in range(0, 20, 2):
        store.delete(i)
    store.flush()
    assert len(list((tmp_path / "p").glob("seg-*.dat"))) > 2
    before = store.nbytes()
    store.compact()
    assert store.nbytes() < before
    reopened = PackedFeatureStore(tmp_path / "p")
    assert reopened.ids() == set(range(1, 20, 2))
    for i in range(1, 20, 2):
        _same(reopened.get(i), _arrays(i))


def test_per_file_galleries_are_migrated(tmp_path) -> None:
    old = FeatureStore(tmp_path / "g" / "features")
    for i in range(4):
        old.put(i, _arrays(i))
    files = GalleryFiles(tmp_path, 0)
    files.root = tmp_path / "g"
    assert files.unmigrated_features() == 4
    assert isinstance(files.features(), FeatureStore)  # readable as it is until migrated
    assert list(files.migrate_features()) == [0, 1, 2, 3]
    assert files.unmigrated_features() == 0
    store = files.features()
    assert isinstance(store, PackedFeatureStore) and store.ids() == {0, 1, 2, 3}
    _same(store.get(2), _arrays(2))
