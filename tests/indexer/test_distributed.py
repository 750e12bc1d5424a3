"""Extraction on Ray Data workers gives the single-process pipeline's descriptors (slow: starts Ray)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from engine.core import Engine, OpenGallery, profile_config
from engine.settings import Settings
from storage.gallery_files import GalleryFiles
from storage.vector_index import VectorIndex
from tests.conftest import SAMPLES, database_url, sample_image, write_rgb


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module (it takes about 20 s to start)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _same_features(a: OpenGallery, b: OpenGallery) -> None:
    """Both galleries store the same features under the same paths."""
    assert sorted(a.paths.values()) == sorted(b.paths.values())
    by_path = {p: i for i, p in b.paths.items()}
    for image_id, path in a.paths.items():
        if image_id not in a.store.ids():  # a scene photo: its people have the features
            assert by_path[path] not in b.store.ids()
            continue
        x, y = a.store.get(image_id), b.store.get(by_path[path])
        assert x.keys() == y.keys()
        for key in x:  # a Ray worker runs torch on its own thread count: float sums may differ
            # in the last bits (6e-8 seen); a wrong image or setting differs by orders more
            if np.issubdtype(x[key].dtype, np.floating):
                np.testing.assert_allclose(x[key], y[key], rtol=1e-4, atol=1e-6,
                                           err_msg=f"{path}: {key}")
            else:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{path}: {key}")


@pytest.mark.slow
def test_ray_workers_give_the_plain_runs_descriptors(tmp_path, monkeypatch, local_ray) -> None:
    folder = tmp_path / "images"
    for name in SAMPLES[:4]:
        write_rgb(folder / f"{name}.jpg", sample_image(name, 160))
    (folder / "broken.jpg").write_bytes(b"not an image")
    engine = Engine(Settings(home=tmp_path / "home", db_url=database_url(tmp_path)))
    plain = engine.index_folder(folder, "plain")
    monkeypatch.setenv("TANSAKU_RAY_WORKERS", "2")
    on_ray = engine.index_folder(folder, "ray", ray="local")
    assert (on_ray.indexed, on_ray.failed) == (plain.indexed, plain.failed) == (4, 1)
    assert [rel for rel, _ in on_ray.failures] == ["broken.jpg"]  # reported, not lost
    a, b = engine.open_gallery("plain"), engine.open_gallery("ray")
    _same_features(a, b)
    files = GalleryFiles(tmp_path / "home", engine.get_gallery("ray").id)
    assert files.features().ids() == set(b.paths)


@pytest.mark.slow
def test_ray_workers_find_and_describe_people_in_photos(tmp_path, monkeypatch, local_ray) -> None:
    """`index --detect --ray`: workers detect and describe, this process makes the crops' rows."""
    folder = tmp_path / "photos"
    for name in ("astronaut", "coins", "camera"):  # photos where OpenCV's HOG finds "people"
        write_rgb(folder / f"{name}.jpg", sample_image(name, 320))
    (folder / "broken.jpg").write_bytes(b"not an image")
    engine = Engine(Settings(home=tmp_path / "home", db_url=database_url(tmp_path)))
    config = profile_config("person", "lomo", detect="hog")
    plain = engine.index_folder(folder, "plain", profile="person", config=config)
    monkeypatch.setenv("TANSAKU_RAY_WORKERS", "1")
    on_ray = engine.index_folder(folder, "ray", profile="person", config=config, ray="local",
                                 batch_size=2)
    assert (on_ray.indexed, on_ray.failed) == (plain.indexed, plain.failed)
    assert on_ray.failed == 1 and on_ray.indexed >= 3  # the people of 3 photos
    a, b = engine.open_gallery("plain"), engine.open_gallery("ray")
    assert sorted(a.crops.values()) == sorted(b.crops.values())  # (photo, box) of each person
    _same_features(a, b)
    files = GalleryFiles(tmp_path / "home", engine.get_gallery("ray").id)
    # one id per person in SQL, FAISS and the feature store; the photos have rows only
    assert files.features().ids() == set(b.crops) == set(VectorIndex.load(files.index_path).ids().tolist())
    again = engine.index_folder(folder, "ray", profile="person", config=config, ray="local")
    assert (again.indexed, again.unchanged) == (0, 3)
