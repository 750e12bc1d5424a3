"""The served match view of a person gallery described by an ABN network: its heat maps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.core import Engine, profile_config
from engine.server import ServerConfig, create_app
from engine.settings import Settings
from tests.engine.server.conftest import jpeg_bytes
from tests.engine.test_abn_cli import _people


@pytest.mark.slow
def test_person_match_view_shows_the_networks_heat_maps(tmp_path: Path) -> None:
    from indexer.models.reid_abn.train import train_reid

    ckpt = train_reid(_people(tmp_path / "train", persons=4, seed=1), tmp_path / "abn.pt",
                      recipe="short", seed=0)
    engine = Engine(Settings.from_env(home=tmp_path / "home", db=f"sqlite:///{tmp_path}/t.db"))
    gallery = _people(tmp_path / "gallery", persons=3, cams=(2,), frames=1, seed=2)
    engine.index_folder(gallery, "abn", profile="person",
                        config=profile_config("person", f"abn:{ckpt}"))
    engine.index_folder(gallery, "lomo", profile="person", config=profile_config("person", "lomo"))
    client = TestClient(create_app(engine, ServerConfig()))
    query = cv2.cvtColor(cv2.imread(str(next(iter(sorted(gallery.iterdir()))))), cv2.COLOR_BGR2RGB)

    response = client.post("/api/galleries/abn/query", files={"file": ("q.jpg", jpeg_bytes(query))},
                           data={"top_k": "2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["match_view"] == "heat-maps"
    view = client.get(body["results"][0]["match_url"])
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    assert view.headers["x-explanation"] == "attention"
    panel = cv2.imdecode(np.frombuffer(view.content, np.uint8), cv2.IMREAD_COLOR)
    assert panel.shape[0] == 256  # query, its map, the result's map, the result: 256 px tall
    # the two middle tiles are coloured by the maps: they differ from the plain images beside them
    tile = (panel.shape[1] - 18) // 4
    plain, mapped = panel[:, :tile].astype(int), panel[:, tile + 6: 2 * tile + 6].astype(int)
    assert np.abs(plain - mapped).mean() > 5

    other = client.post("/api/galleries/lomo/query", files={"file": ("q.jpg", jpeg_bytes(query))})
    assert other.json()["match_view"] == "inliers"
    plain_view = client.get(other.json()["results"][0]["match_url"])
    assert plain_view.status_code == 200 and "x-explanation" not in plain_view.headers
