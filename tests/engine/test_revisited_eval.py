"""`tansaku eval retrieval --format roxford|rparis` end to end on a hand-built revisited dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from engine.core import Engine
from engine.errors import TansakuError
from engine.evaluation.retrieval import evaluate_retrieval
from engine.settings import Settings
from indexer.describe import Describer, Description
from tests.conftest import SAMPLES, database_url, sample_image, warp, write_rgb


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """revisitop's layout: gnd_roxford5k.pkl beside jpg/ (database and query images)."""
    root = tmp_path_factory.mktemp("roxford5k")
    jpg = root / "jpg"
    names = list(SAMPLES)
    for name in names:
        write_rgb(jpg / f"{name}.jpg", sample_image(name))
    write_rgb(jpg / "rocket_2.jpg", warp(sample_image("rocket"), seed=1))
    write_rgb(jpg / "astronaut_2.jpg", warp(sample_image("astronaut"), seed=2))
    names += ["rocket_2", "astronaut_2"]
    # query 0: a photo holding the rocket on its right and another landmark on its left; the box
    # says the rocket is what is asked for
    left, right = sample_image("coffee", 320), sample_image("rocket", 320)
    h = min(left.shape[0], right.shape[0])
    write_rgb(jpg / "q_rocket.jpg", np.concatenate([left[:h], right[:h]], axis=1))
    box = [float(left.shape[1]), 0.0, float(left.shape[1] + right.shape[1]), float(h)]
    write_rgb(jpg / "q_astronaut.jpg", sample_image("astronaut"))
    ids = {name: k for k, name in enumerate(names)}
    cfg = {
        "imlist": names,
        "qimlist": ["q_rocket", "q_astronaut"],
        "gnd": [
            {"easy": [ids["rocket"], ids["rocket_2"]], "hard": [], "junk": [], "bbx": box},
            # coffee is labelled a hard positive on purpose: it cannot be found, so only the easy
            # setting (where it is junk) scores 100
            {"easy": [ids["astronaut"], ids["astronaut_2"]], "hard": [ids["coffee"]],
             "junk": [ids["chelsea"]], "bbx": None},
        ],
    }
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(cfg))
    return root


@pytest.mark.slow
def test_revisited_settings_with_cropped_queries(dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    factors: list[float] = []
    describe = Describer.describe

    def recording(self: Describer, image: np.ndarray, resize_factor: float = 1.0) -> Description:
        factors.append(resize_factor)
        return describe(self, image, resize_factor)

    monkeypatch.setattr(Describer, "describe", recording)
    engine = Engine(Settings(home=tmp_path, db_url=database_url(tmp_path)))
    out = evaluate_retrieval(engine, dataset, "roxford")
    # DELF's resize factor (delg/extract_features.py): cropped size / original size, larger sides
    left, right = sample_image("coffee", 320), sample_image("rocket", 320)
    h = min(left.shape[0], right.shape[0])
    assert factors[-2:] == [pytest.approx(max(h, right.shape[1]) / max(h, left.shape[1]
                                                                      + right.shape[1])), 1.0]
    assert set(out) == {"dataset", "protocol", "method", "mAP_easy", "mAP_medium", "mAP_hard",
                        "queries"}
    assert out["protocol"] == "roxford" and out["queries"] == 2
    assert out["mAP_easy"] == 100.0
    assert out["mAP_medium"] < 100.0 and out["mAP_hard"] < 100.0


def test_revisited_errors_name_the_missing_piece(dataset: Path, tmp_path: Path) -> None:
    engine = Engine(Settings(home=tmp_path, db_url=database_url(tmp_path)))
    with pytest.raises(TansakuError, match="no gnd_rparis6k.pkl"):
        evaluate_retrieval(engine, dataset, "rparis")
    broken = tmp_path / "broken"
    (broken / "jpg").mkdir(parents=True)
    (broken / "gnd_roxford5k.pkl").write_bytes((dataset / "gnd_roxford5k.pkl").read_bytes())
    with pytest.raises(TansakuError, match=r"10 database images .*e\.g\. astronaut"):
        evaluate_retrieval(engine, broken, "roxford")
