"""Two index runs on different galleries at once, and queries of a gallery while it is indexed
(run against PostgreSQL too: TANSAKU_TEST_DB, see tests/conftest.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from sqlalchemy import select

from indexer.pipeline import index_folder
from indexer.profiles import resolve_profile
from matcher.search import Searcher
from storage.db import open_database
from storage.gallery_files import GalleryFiles
from storage.models import Gallery, Image, ImageStatus
from storage.vector_index import VectorIndex
from tests.conftest import SAMPLES, database_url, sample_image, write_rgb
from tests.indexer.test_pipeline import FakeDescriber


def _folder(root: Path, names: tuple[str, ...], size: int = 96) -> Path:
    for k, name in enumerate(names):
        write_rgb(root / f"{k:02d}_{name}.jpg", sample_image(name, size))
    return root


def _gallery(sessions, name: str) -> Gallery:
    with sessions() as s:
        gallery = Gallery(name=name, profile="landmark", config=resolve_profile("landmark"))
        s.add(gallery)
        s.commit()
        return gallery


def _indexed(sessions, gallery: Gallery) -> set[int]:
    with sessions() as s:
        return set(s.scalars(select(Image.id).where(Image.gallery_id == gallery.id,
                                                    Image.status == ImageStatus.INDEXED)))


def test_two_galleries_are_indexed_at_once(tmp_path) -> None:
    sessions = open_database(database_url(tmp_path))
    home = tmp_path / "home"
    galleries = [_gallery(sessions, "a"), _gallery(sessions, "b")]
    folders = [_folder(tmp_path / "fa", SAMPLES[:5]), _folder(tmp_path / "fb", SAMPLES[3:])]
    errors: list[BaseException] = []

    def run(gallery: Gallery, folder: Path) -> None:
        try:
            index_folder(folder, gallery, sessions, home, describer_factory=FakeDescriber,
                         batch_size=1, checkpoint_seconds=0.0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(galleries, folders, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for gallery, count in zip(galleries, (5, len(SAMPLES) - 3), strict=True):
        ids = _indexed(sessions, gallery)
        files = GalleryFiles(home, gallery.id)
        assert len(ids) == count
        assert set(VectorIndex.load(files.index_path).ids().tolist()) == ids
        assert files.features().ids() == ids


def test_a_gallery_answers_queries_while_it_is_indexed(tmp_path) -> None:
    sessions = open_database(database_url(tmp_path))
    home = tmp_path / "home"
    gallery = _gallery(sessions, "g")
    folder = _folder(tmp_path / "f", SAMPLES[:3])
    index_folder(folder, gallery, sessions, home, describer_factory=FakeDescriber)
    _folder(tmp_path / "f" / "more", SAMPLES[3:])
    files = GalleryFiles(home, gallery.id)
    done = threading.Event()
    answers: list[int] = []
    errors: list[BaseException] = []

    def query() -> None:
        try:
            while not done.is_set() or not answers:
                ids = _indexed(sessions, gallery)  # what a query opens: rows, index, store
                index = VectorIndex.load(files.index_path)
                store = files.features()
                first = sorted(ids)[0]
                vector = store.get(first)["global"]
                hits = Searcher(index, store).search(
                    FakeDescription(vector), top_k=3, rerank=False).hits
                assert hits and hits[0].image_id == first
                answers.append(len(hits))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=query)
    thread.start()
    try:
        index_folder(folder, gallery, sessions, home, describer_factory=FakeDescriber,
                     batch_size=1, checkpoint_seconds=0.0)
    finally:
        done.set()
        thread.join()
    assert not errors and answers
    assert len(_indexed(sessions, gallery)) == len(SAMPLES)


class FakeDescription:
    """A query with a global vector only."""

    def __init__(self, vector: np.ndarray) -> None:
        self.global_vector = vector
        self.local = None
