"""Incremental, failure-tolerant, interruption-safe indexing (with a light fake describer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from indexer import gallery_index, pipeline
from indexer.describe import Description
from indexer.features import LocalFeatures
from indexer.pipeline import EmptyFolderError, index_folder
from indexer.profiles import resolve_profile
from indexer.projections import pca_whitening
from storage.db import open_database
from storage.gallery_files import GalleryFiles
from storage.models import Gallery, Image, ImageStatus, IndexRun, RunStatus, Source
from storage.vector_index import VectorIndex
from tests.conftest import SAMPLES, database_url, sample_image, write_rgb


class FakeDescriber:
    """Colour statistics as the global vector; counts calls so tests can see what was re-done."""

    dim = 6
    max_side: int | None = None  # decode at full size
    calls: list[int] = []
    fail_after: int | None = None

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

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
    sessions = open_database(database_url(tmp_path))
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


def _with_whitening(env, min_images: int) -> None:
    sessions, gallery, _, _ = env
    with sessions() as s:
        row = s.get(Gallery, gallery.id)
        row.config = {**row.config, "whitening": {"min_images": min_images, "refit_growth": 1.5}}
        s.commit()
        gallery.config = row.config


def _projection(env) -> dict[str, Any] | None:
    sessions, gallery, _, _ = env
    with sessions() as s:
        return s.get(Gallery, gallery.id).config.get("projection")


def test_whitening_is_learned_from_the_gallery_and_relearned_as_it_grows(env) -> None:
    _with_whitening(env, min_images=5)
    sessions, gallery, folder, home = env
    files = GalleryFiles(home, gallery.id)
    moved = folder.parent / "later"
    moved.mkdir()
    for path in sorted(folder.iterdir())[:4]:  # index 4 images first: too few to learn from
        path.rename(moved / path.name)
    run(env)
    assert _projection(env) is None
    assert VectorIndex.load(files.index_path).dim == 6  # raw vectors
    (moved / sorted(p.name for p in moved.iterdir())[0]).rename(folder / "extra.jpg")
    run(env)  # 5 images: learned, index rebuilt in the whitened space (N - 1 = 4 components)
    first = _projection(env)
    assert first is not None and first["kind"] == "pca-whitening" and first["images"] == 5
    index = VectorIndex.load(files.index_path)
    assert index.dim == 4 and len(index) == 5
    store = files.features()
    model = pca_whitening.PCAWhitening.load(files.path(first["file"]))
    ids = index.ids()
    raw = np.stack([store.get(int(i))["global"] for i in ids])
    np.testing.assert_allclose(index.reconstruct(ids.tolist()), model.embed(raw), atol=1e-5)
    # whitened: the stored vectors' components are decorrelated (before the L2 normalisation)
    cov = np.cov(model.apply(raw).T)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-6
    run(env)  # nothing new: nothing learned
    assert _projection(env) == first
    for path in list(moved.iterdir()):
        path.rename(folder / path.name)
    run(env)  # 8 >= 1.5 x 5: learned again, the old file removed
    second = _projection(env)
    assert second["images"] == 8 and second["file"] != first["file"]
    assert not files.path(first["file"]).exists()
    assert VectorIndex.load(files.index_path).dim == 6  # min(8 - 1, 6) components
    assert_consistent(env)


def test_a_kill_inside_the_projection_switch_is_rolled_forward(env, monkeypatch) -> None:
    _with_whitening(env, min_images=5)
    sessions, gallery, _, home = env
    files = GalleryFiles(home, gallery.id)

    def killed(src, dst):  # the configuration is committed; the index is not moved yet
        raise KeyboardInterrupt

    monkeypatch.setattr(gallery_index, "_move_into_place", killed)
    with pytest.raises(KeyboardInterrupt):
        run(env)
    monkeypatch.undo()
    spec = _projection(env)
    assert spec is not None
    pending = gallery_index.pending_index_path(files, {"projection": spec})
    assert pending is not None and pending.exists()
    assert VectorIndex.load(files.index_path).dim == 6  # still the raw index
    orphan = files.path("whitening-1.npz")  # learned by a run killed before it committed
    orphan.write_bytes(b"")
    summary = run(env)  # the next run finishes the switch before anything else
    assert summary.unchanged == len(SAMPLES)
    assert not pending.exists() and not orphan.exists() and files.path(spec["file"]).exists()
    assert VectorIndex.load(files.index_path).dim == 6  # min(8 - 1, 6) components
    assert_consistent(env)


def _with_index_policy(env, **policy) -> None:
    sessions, gallery, _, _ = env
    with sessions() as s:
        row = s.get(Gallery, gallery.id)
        row.config = {**row.config, "index_policy": policy}
        s.commit()


def _index_info(env) -> dict[str, Any] | None:
    sessions, gallery, _, _ = env
    with sessions() as s:
        return s.get(Gallery, gallery.id).config.get("index")


def test_a_gallery_past_the_size_threshold_gets_an_approximate_index_with_our_ids(env) -> None:
    _with_index_policy(env, flat_max=5)
    sessions, gallery, folder, home = env
    run(env)
    files = GalleryFiles(home, gallery.id)
    index = VectorIndex.load(files.index_path)
    info = _index_info(env)
    assert index.spec.kind == "ivf" and info is not None and info["kind"] == "ivf"
    assert info["images"] == len(SAMPLES) and "nprobe" in index.tuning.params
    assert_consistent(env)
    (folder / "00_astronaut.jpg").unlink()
    index_folder(folder, gallery, sessions, home, describer_factory=FakeDescriber, prune=True)
    assert_consistent(env)  # removal works on the approximate index too
    _with_index_policy(env, flat_max=50)
    run(env)  # below the threshold again: back to exact search
    assert VectorIndex.load(files.index_path).spec.kind == "flat"
    assert_consistent(env)


def test_a_kill_inside_the_index_type_switch_is_rolled_forward(env, monkeypatch) -> None:
    _with_index_policy(env, flat_max=5)
    sessions, gallery, _, home = env
    files = GalleryFiles(home, gallery.id)

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(gallery_index, "_move_into_place", killed)
    with pytest.raises(KeyboardInterrupt):
        run(env)
    monkeypatch.undo()
    info = _index_info(env)
    assert info is not None
    pending = gallery_index.pending_index_path(files, {"index": info})
    assert pending is not None and pending.exists()
    assert VectorIndex.load(files.index_path).spec.kind == "flat"  # not moved yet
    summary = run(env)
    assert summary.unchanged == len(SAMPLES) and not pending.exists()
    assert VectorIndex.load(files.index_path).spec.kind == "ivf"
    assert_consistent(env)


def test_a_kill_mid_append_to_the_feature_store_is_reconciled(env) -> None:
    sessions, gallery, _, home = env
    FakeDescriber.fail_after = 2  # killed during the third batch, after two were stored
    with pytest.raises(KeyboardInterrupt):
        run(env, checkpoint_seconds=0.0)
    files = GalleryFiles(home, gallery.id)
    segment = files.root / "features" / "seg-00000.dat"
    with open(segment, "ab") as handle:  # and an append was torn: half a record at the end
        handle.write(b"TSKF" + bytes(11))
    FakeDescriber.fail_after = None
    summary = run(env)
    assert summary.indexed + summary.unchanged == len(SAMPLES)
    rows = assert_consistent(env)
    assert all(r.status == ImageStatus.INDEXED for r in rows.values())
    store = files.features()
    assert all(len(store.get(i)["keypoints"]) == 1 for i in store.ids())


def _second_folder(env, name: str = "more") -> Path:
    """Another folder holding files of the same names as the first, other pictures in them."""
    folder = env[2].parent / name
    for k, sample in enumerate(reversed(SAMPLES)):
        write_rgb(folder / f"{k:02d}_{SAMPLES[k]}.jpg", sample_image(sample, 80))
    return folder


def _rows_by_source(env) -> dict[str, set[str]]:
    sessions, gallery, _, _ = env
    with sessions() as s:
        roots = {src.id: src.root for src in s.scalars(select(Source))}
        rows = s.scalars(select(Image).where(Image.gallery_id == gallery.id)).all()
    by_source: dict[str, set[str]] = {}
    for row in rows:
        by_source.setdefault(roots[row.source_id], set()).add(row.path)
    return by_source


def test_two_folders_with_the_same_names_keep_their_own_rows(env) -> None:
    sessions, gallery, folder, home = env
    other = _second_folder(env)
    run(env)
    summary = index_folder(other, gallery, sessions, home, describer_factory=FakeDescriber)
    assert summary.indexed == len(SAMPLES)  # same names, new images: nothing taken as unchanged
    by_source = _rows_by_source(env)
    assert by_source == {str(folder.resolve()): by_source[str(folder.resolve())],
                         str(other.resolve()): by_source[str(folder.resolve())]}
    assert len(by_source[str(folder.resolve())]) == len(SAMPLES)
    files = GalleryFiles(home, gallery.id)
    assert len(VectorIndex.load(files.index_path)) == 2 * len(SAMPLES)
    again = run(env)  # the first folder again: still unchanged, not moved
    assert (again.indexed, again.unchanged) == (0, len(SAMPLES))
    (other / "00_astronaut.jpg").unlink()
    pruned = index_folder(other, gallery, sessions, home, describer_factory=FakeDescriber,
                          prune=True)
    assert pruned.pruned == 1  # only the file gone from this folder
    by_source = _rows_by_source(env)
    assert len(by_source[str(folder.resolve())]) == len(SAMPLES)
    assert "00_astronaut.jpg" not in by_source[str(other.resolve())]
    summary = run(env, prune=True)  # and pruning the first folder drops nothing of the second
    assert summary.pruned == 0
    assert len(VectorIndex.load(files.index_path)) == 2 * len(SAMPLES) - 1


def test_a_folder_inside_or_around_a_source_is_refused(env) -> None:
    sessions, gallery, folder, home = env
    run(env)
    inside = folder / "sub"
    write_rgb(inside / "x.jpg", sample_image("coffee", 64))
    for overlapping in (inside, folder.parent):
        with pytest.raises(pipeline.OverlappingSourceError, match=str(folder.resolve())):
            index_folder(overlapping, gallery, sessions, home, describer_factory=FakeDescriber)
