"""Person galleries end to end: index crops, learn XQDA from labelled identities, query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.core import Engine, profile_config
from engine.errors import TansakuError
from engine.settings import Settings
from engine.training import train_projection
from indexer.projections.person_stages import PersonStages
from storage.gallery_files import GalleryFiles
from storage.vector_index import VectorIndex
from tests.conftest import database_url, write_rgb

IDENTITIES = 8


def person_crop(pid: int, cam: int, rng: np.random.Generator) -> np.ndarray:
    """A 128x48 'person': shirt and trousers colours fixed by identity, lighting by camera."""
    palette = np.random.default_rng(1000 + pid).integers(30, 225, size=(3, 3))
    image = np.empty((128, 48, 3), np.float32)
    image[:20], image[20:70], image[70:] = palette[0], palette[1], palette[2]
    image *= 0.8 + 0.2 * cam  # cameras differ in brightness
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market")
    rng = np.random.default_rng(0)
    for pid in range(1, IDENTITIES + 1):
        for cam in (1, 2):
            for k in range(2):
                write_rgb(root / "bounding_box_train" / f"{pid + 100:04d}_c{cam}s1_{k:06d}_00.jpg",
                          person_crop(pid + 100, cam, rng))
            write_rgb(root / "bounding_box_test" / f"{pid:04d}_c{cam}s1_{cam:06d}_00.jpg",
                      person_crop(pid, cam, rng))
        write_rgb(root / "query" / f"{pid:04d}_c1s1_{9:06d}_00.jpg", person_crop(pid, 1, rng))
    return root


@pytest.fixture(scope="module")
def engine(market: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    home = tmp_path_factory.mktemp("home")
    eng = Engine(Settings(home=home, db_url=database_url(home)))
    summary = eng.index_folder(market / "bounding_box_test", "people", profile="person",
                               config=profile_config("person", "lomo"))
    assert summary.indexed == 2 * IDENTITIES
    return eng


def _rank1_hits(engine: Engine, market: Path) -> int:
    hits = 0
    for query in sorted((market / "query").iterdir()):
        best = engine.query(query, "people", top_k=1).results[0]
        hits += best.relative_path[:4] == query.name[:4]
    return hits


def test_person_ids_and_cameras_are_parsed_and_stored(engine: Engine) -> None:
    opened = engine.open_gallery("people")
    row = next(r for r in opened.rows.values() if r.path.startswith("0003_c2"))
    assert (row.person_id, row.camera_id) == (3, 2)
    assert opened.gallery.config["global"]["conf"]["method"] == "lomo"


def test_xqda_projection_is_learned_stored_and_used(engine: Engine, market: Path) -> None:
    before = _rank1_hits(engine, market)
    report = train_projection(engine, market, "market", "people", "xqda")
    assert report["identities"] == IDENTITIES and report["reprojected"] == 2 * IDENTITIES
    opened = engine.open_gallery("people")
    files = GalleryFiles(engine.settings.home, opened.gallery.id)
    index = VectorIndex.load(files.index_path)
    assert index.dim < 26960  # the index now holds XQDA embeddings, not raw LOMO
    assert index.dim == opened.projector(np.zeros((1, 26960), np.float32)).shape[1]
    after = _rank1_hits(engine, market)
    assert after >= IDENTITIES - 1 and after >= before


@pytest.mark.slow
def test_projection_needs_a_person_gallery(engine: Engine, market: Path, sample_folder: Path) -> None:
    engine.index_folder(sample_folder, "places")
    with pytest.raises(TansakuError, match="person"):
        train_projection(engine, market, "market", "places", "xqda")


@pytest.mark.slow
def test_gog_gallery_projection_applies_the_gog_normaliser(market: Path, tmp_path: Path) -> None:
    eng = Engine(Settings(home=tmp_path, db_url=database_url(tmp_path)))
    eng.index_folder(market / "bounding_box_test", "gog-people", profile="person",
                     config=profile_config("person", "gog"))
    report = train_projection(eng, market, "market", "gog-people", "xqda")
    assert report["stages"].endswith(".npz")
    opened = eng.open_gallery("gog-people")
    stages = PersonStages.load(opened.files.path(report["stages"]))
    assert stages.stages[0].mean_.shape == (27622,)
    hits = sum(eng.query(q, "gog-people", top_k=1).results[0].relative_path[:4] == q.name[:4]
               for q in sorted((market / "query").iterdir()))
    assert hits >= IDENTITIES - 1


def test_other_extractors_for_an_existing_gallery_are_refused(engine: Engine, market: Path) -> None:
    with pytest.raises(TansakuError, match="lomo"):
        engine.index_folder(market / "bounding_box_test", "people", profile="person",
                            config=profile_config("person", "gog"))


def test_person_query_k_reciprocal_reranks_the_shortlist(engine: Engine, market: Path) -> None:
    query = sorted((market / "query").iterdir())[0]
    plain = engine.query(query, "people", top_k=16)
    reranked = engine.query(query, "people", top_k=16, kreciprocal=True)
    assert sorted(r.image_id for r in reranked.results) == sorted(r.image_id for r in plain.results)
    assert "kreciprocal" in reranked.times
    scores = [r.score for r in reranked.results]
    assert scores == sorted(scores, reverse=True)


def test_k_reciprocal_is_refused_for_landmark_galleries(engine: Engine, sample_folder: Path) -> None:
    engine.index_folder(sample_folder, "places-kr")
    with pytest.raises(TansakuError, match="person galleries"):
        engine.query(next(sample_folder.iterdir()), "places-kr", kreciprocal=True)


@pytest.mark.slow
def test_cdpcf_fusion_gallery_learns_and_stores_its_stages(market: Path, tmp_path: Path) -> None:
    eng = Engine(Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    eng.index_folder(market / "bounding_box_test", "cnn-people", profile="person",
                     config=profile_config("person", "cdpcf+layers"))
    report = train_projection(eng, market, "market", "cnn-people", "xqda")
    assert report["stages"].endswith(".npz") and report["reprojected"] == 2 * IDENTITIES
    opened = eng.open_gallery("cnn-people")
    stages = PersonStages.load(opened.files.path(report["stages"]))
    assert stages.parts == ["cdpcf", "layers"]
    cdpcf = stages.stages[0]
    assert cdpcf.cams_.tolist() == [1, 2] and len(cdpcf.weights_) == 4  # cameras from 1, as named
    hits = sum(eng.query(q, "cnn-people", top_k=1).results[0].relative_path[:4] == q.name[:4]
               for q in sorted((market / "query").iterdir()))
    assert hits >= IDENTITIES // 2
