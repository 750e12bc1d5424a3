"""Incremental, failure-tolerant, interruption-safe indexing (with a light fake describer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from indexer.describe import Description
from indexer.features import LocalFeatures
from indexer.pipeline import EmptyFolderError, index_folder
from indexer.profiles import resolve_profile
from storage.db import open_database
from storage.gallery_files import GalleryFiles
from storage.models import Gallery, Image, ImageStatus, IndexRun, RunStatus
from storage.vector_index import VectorIndex
from tests.conftest import SAMPLES, sample_image, write_rgb


class FakeDescriber:
    """Colour statistics as the global vector; counts calls so tests can see what was re-done."""

    dim = 6
    calls: list[int] = []
    fail_after: int | None = None

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def describe_batch(self, images: list[np.ndarray]) -> list[Description]:
        if FakeDescriber.fail_after is not None and len(FakeDescriber.calls) >= FakeDescriber.fail_after:
            raise KeyboardInterrupt
        FakeDescriber.calls.append(len(images))
        out = []
        for im in images:
            v = np.concatenate([im.mean(axis=(0, 1)), im.std(axis=(0, 1))]).astype(np.float32)
            kp = np.zeros((1, 2), np.float32)
            out.append(Description(v / np.linalg.norm(v), LocalFeatures(kp, np.ones((1, 4), np.float32))))
        return out


@pytest.fixture(autouse=True)
def _reset_fake() -> None:
    FakeDescriber.calls = []
    FakeDescriber.fail_after = None


@pytest.fixture
def env(tmp_path: Path):
    sessions = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with sessions() as s:
        gallery = Gallery(name="g", profile="landmark", config=resolve_profile("landmark"))
        s.add(gallery)
        s.commit()
    folder = tmp_path / "images"
    for k, name in enumerate(SAMPLES):
        write_rgb(folder / f"{k:02d}_{name}.jpg", sample_image(name, 96))
    return sessions, gallery, folder, tmp_path / "home"


def run(env, **kw):
    sessions, gallery, folder, home = env
    return index_folder(folder, gallery, sessions, home, describer_factory=FakeDescriber,
                        batch_size=3, **kw)


def assert_consistent(env) -> dict[str, Image]:
    sessions, gallery, _, home = env
    files = GalleryFiles(home, gallery.id)
    with sessions() as s:
        rows = s.scalars(select(Image).where(Image.gallery_id == gallery.id)).all()
    indexed = {r.id for r in rows if r.status == ImageStatus.INDEXED}
    assert len({r.path for r in rows}) == len(rows)  # no duplicate rows
    assert set(VectorIndex.load(files.index_path).ids().tolist()) == indexed
    assert files.features().ids() == indexed
    return {r.path: r for r in rows}


def test_first_run_indexes_everything_then_nothing(env) -> None:
    summary = run(env)
    assert (summary.indexed, summary.unchanged, summary.failed) == (len(SAMPLES), 0, 0)
    rows = assert_consistent(env)
    assert all(r.width == 96 or r.height == 96 for r in rows.values())
    FakeDescriber.calls = []
    again = run(env)
    assert (again.indexed, again.unchanged) == (0, len(SAMPLES))
    assert FakeDescriber.calls == []


def test_changed_files_are_redone_and_deleted_ones_pruned(env) -> None:
    run(env)
    folder = env[2]
    before = assert_consistent(env)
    write_rgb(folder / "00_astronaut.jpg", sample_image("coffee", 80))
    (folder / "01_coffee.jpg").unlink()
    summary = run(env)
    assert (summary.indexed, summary.pruned) == (1, 0)
    after = assert_consistent(env)
    assert after["00_astronaut.jpg"].id == before["00_astronaut.jpg"].id  # same id, new content
    assert after["00_astronaut.jpg"].content_hash != before["00_astronaut.jpg"].content_hash
    assert "01_coffee.jpg" in after  # kept until --prune
    summary = run(env, prune=True)
    assert summary.pruned == 1
    assert "01_coffee.jpg" not in assert_consistent(env)


def test_bad_files_are_reported_recorded_and_skipped(env) -> None:
    folder = env[2]
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_bytes(b"plain text, not pixels")
    good = (folder / "00_astronaut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    summary = run(env)
    assert summary.indexed == len(SAMPLES)
    assert summary.failed == 3
    reasons = dict(summary.failures)
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["text.png"]
    assert "truncated" in reasons["cut.jpg"]
    rows = assert_consistent(env)
    assert rows["empty.jpg"].status == ImageStatus.FAILED and rows["empty.jpg"].error


def test_interrupted_run_leaves_a_usable_gallery_and_is_finished_by_the_next(env) -> None:
    FakeDescriber.fail_after = 1  # the second batch is interrupted (Ctrl-C)
    with pytest.raises(KeyboardInterrupt):
        run(env)
    rows = assert_consistent(env)
    done = [r for r in rows.values() if r.status == ImageStatus.INDEXED]
    assert len(done) == 3  # the first batch survived
    sessions = env[0]
    with sessions() as s:
        assert s.scalars(select(IndexRun.status)).all() == [RunStatus.INTERRUPTED]
    FakeDescriber.fail_after = None
    summary = run(env)
    assert (summary.indexed, summary.unchanged) == (len(SAMPLES) - 3, 3)
    assert len(assert_consistent(env)) == len(SAMPLES)


def test_a_kill_between_faiss_save_and_sql_commit_is_reconciled(env) -> None:
    """Simulate `kill -9` after FAISS was saved but before SQL committed the batch."""
    run(env)
    sessions, gallery, _, home = env
    files = GalleryFiles(home, gallery.id)
    with sessions() as s:  # the commit that never happened: two rows still pending
        for row in s.scalars(select(Image).limit(2)):
            row.status = ImageStatus.PENDING
        s.commit()
    index = VectorIndex.load(files.index_path)
    index.add(np.array([999]), np.ones((1, 6), np.float32))  # and a vector with no row at all
    index.save(files.index_path)
    summary = run(env)
    assert summary.indexed == 2
    assert 999 not in VectorIndex.load(files.index_path).ids()
    assert len(assert_consistent(env)) == len(SAMPLES)


def test_empty_folder_is_an_error(env, tmp_path: Path) -> None:
    sessions, gallery, _, home = env
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("no images here")
    with pytest.raises(EmptyFolderError, match="nothing"):
        index_folder(tmp_path / "nothing", gallery, sessions, home, describer_factory=FakeDescriber)
