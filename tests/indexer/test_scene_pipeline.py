"""`index --detect`: photos -> person crops, kept consistent across re-runs, damage and pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from indexer import pipeline
from indexer.pipeline import index_folder
from indexer.profiles import resolve_profile
from storage.db import open_database
from storage.gallery_files import GalleryFiles
from storage.models import Crop, Gallery, Image, ImageStatus
from storage.vector_index import VectorIndex
from tests.conftest import sample_image, write_rgb
from tests.indexer.test_pipeline import FakeDescriber


class FakeCropper:
    """Two fixed boxes per photo."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    def boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.array([[0, 0, 20, 40], [30, 10, 20, 40]]), np.array([0.9, 0.6])


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pipeline, "SceneCropper", FakeCropper)
    sessions = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    config = {**resolve_profile("person"), "detect": {"detector": "hog", "classifier": None}}
    with sessions() as s:
        gallery = Gallery(name="scenes", profile="person", config=config)
        s.add(gallery)
        s.commit()
    folder = tmp_path / "photos"
    for k, name in enumerate(("astronaut", "coffee", "chelsea")):
        write_rgb(folder / f"{k}_{name}.jpg", sample_image(name, 96))
    return sessions, gallery, folder, tmp_path / "home"


def run(env, **kw):
    sessions, gallery, folder, home = env
    return index_folder(folder, gallery, sessions, home, describer_factory=FakeDescriber, batch_size=2, **kw)


def state(env) -> tuple[dict[str, Image], dict[int, Crop]]:
    sessions, gallery, _, home = env
    files = GalleryFiles(home, gallery.id)
    with sessions() as s:
        rows = {r.path: r for r in s.scalars(select(Image).where(Image.gallery_id == gallery.id))}
        crops = {c.image_id: c for c in s.scalars(select(Crop))}
    crop_ids = {i for i in crops if rows_by_id(rows)[i].status == ImageStatus.INDEXED}
    assert set(VectorIndex.load(files.index_path).ids().tolist()) == crop_ids
    assert files.features().ids() == crop_ids
    return rows, crops


def rows_by_id(rows: dict[str, Image]) -> dict[int, Image]:
    return {r.id: r for r in rows.values()}


def test_photos_become_crops_and_stay_consistent(env) -> None:
    run(env)
    rows, crops = state(env)
    photos = [r for r in rows.values() if r.id not in crops]
    assert len(photos) == 3 and all(r.status == ImageStatus.INDEXED for r in photos)
    assert len(crops) == 6
    assert sorted(c.box for c in crops.values())[0] == [0, 0, 20, 40]
    assert rows["0_astronaut.jpg#1"].id in crops
    FakeDescriber.calls = []
    again = run(env)
    assert (again.indexed, again.unchanged) == (0, 3) and FakeDescriber.calls == []

    # a crop that lost its features: its photo is redone, its crops replaced, nothing duplicated
    sessions, gallery, folder, home = env
    victim = rows["1_coffee.jpg#0"].id
    store = GalleryFiles(home, gallery.id).features(writable=True)
    store.delete(victim)
    store.flush()
    run(env)
    rows, crops = state(env)
    assert len(crops) == 6 and victim not in crops or rows_by_id(rows)[victim].path == "1_coffee.jpg#0"
    assert sum(1 for p in rows if p.startswith("1_coffee.jpg#")) == 2

    # pruning a photo removes its crops, their vectors and features
    (folder / "2_chelsea.jpg").unlink()
    run(env, prune=True)
    rows, crops = state(env)
    assert not any(p.startswith("2_chelsea") for p in rows) and len(crops) == 4
