"""Extraction on Ray Data workers gives the single-process pipeline's descriptors (slow: starts Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core import Engine
from engine.settings import Settings
from storage.gallery_files import GalleryFiles
from tests.conftest import SAMPLES, database_url, sample_image, write_rgb


@pytest.mark.slow
def test_ray_workers_give_the_plain_runs_descriptors(tmp_path, monkeypatch) -> None:
    ray = pytest.importorskip("ray")
    folder = tmp_path / "images"
    for name in SAMPLES[:4]:
        write_rgb(folder / f"{name}.jpg", sample_image(name, 160))
    (folder / "broken.jpg").write_bytes(b"not an image")
    engine = Engine(Settings(home=tmp_path / "home", db_url=database_url(tmp_path)))
    plain = engine.index_folder(folder, "plain")
    monkeypatch.setenv("TANSAKU_RAY_WORKERS", "2")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the local instance
    try:
        on_ray = engine.index_folder(folder, "ray", ray="local")
    finally:
        ray.shutdown()
    assert (on_ray.indexed, on_ray.failed) == (plain.indexed, plain.failed) == (4, 1)
    assert [rel for rel, _ in on_ray.failures] == ["broken.jpg"]  # reported, not lost
    a, b = engine.open_gallery("plain"), engine.open_gallery("ray")
    assert sorted(a.paths.values()) == sorted(b.paths.values())
    by_path = {p: i for i, p in b.paths.items()}
    for image_id, path in a.paths.items():
        x, y = a.store.get(image_id), b.store.get(by_path[path])
        assert x.keys() == y.keys()
        for key in x:  # a Ray worker runs torch on its own thread count: float sums may differ
            # in the last bits (6e-8 seen); a wrong image or setting differs by orders more
            if np.issubdtype(x[key].dtype, np.floating):
                np.testing.assert_allclose(x[key], y[key], rtol=1e-4, atol=1e-6,
                                           err_msg=f"{path}: {key}")
            else:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{path}: {key}")
    files = GalleryFiles(tmp_path / "home", engine.get_gallery("ray").id)
    assert files.features().ids() == set(b.paths)
