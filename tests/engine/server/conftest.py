"""A small real gallery (scikit-image samples, the default landmark model) and servers over it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import BOTTOMS, TOPS, pedestrian, sample_image, warp, write_attribute_model, write_rgb

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from engine.core import Engine, profile_config  # noqa: E402
from engine.server import ServerConfig, create_app  # noqa: E402
from engine.settings import Settings  # noqa: E402

GALLERY_SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")
QUERY_SOURCE = "rocket"  # the query is a new view of it; it sits in sub/ (odd position)


def jpeg_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def write_gallery(folder: Path, names: tuple[str, ...] = GALLERY_SAMPLES) -> Path:
    for k, name in enumerate(names):
        write_rgb(folder / ("sub" if k % 2 else "") / f"{name}.jpg", sample_image(name, 256))
    return folder


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An allowed root holding the gallery folder, a data folder, and a query image."""
    root = tmp_path_factory.mktemp("serve")
    allowed = root / "allowed"
    write_gallery(allowed / "photos")
    query = write_rgb(root / "query.jpg", warp(sample_image(QUERY_SOURCE, 256), seed=3))
    return {"root": root, "allowed": allowed, "photos": allowed / "photos", "home": root / "home",
            "query": query}


@pytest.fixture(scope="package")
def engine(world: dict[str, Path]) -> Engine:
    """An engine with the gallery `photos` indexed (once for all server tests)."""
    engine = Engine(Settings.from_env(home=world["home"], db=f"sqlite:///{world['home']}/t.db"))
    engine.index_folder(world["photos"], "photos")
    return engine


PEOPLE = [(t, b) for t in TOPS for b in BOTTOMS] * 2  # person k+1 wears PEOPLE[k]


class FakeCropper:
    """The two people of a scene photo, where `scene_photo` put them."""

    def __init__(self, conf: dict) -> None:
        self.conf = conf

    def boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.array([[10, 20, 48, 128], [90, 20, 48, 128]]), np.array([0.9, 0.8])


def scene_photo(left: tuple[str, str], right: tuple[str, str], seed: int) -> np.ndarray:
    """A 170x150 'street' with two pedestrians standing in it."""
    photo = np.full((170, 150, 3), 90, np.uint8)
    photo[20:148, 10:58] = pedestrian(*left, seed)
    photo[20:148, 90:138] = pedestrian(*right, seed + 1)
    return photo


@pytest.fixture(scope="package")
def people(engine: Engine, world: dict[str, Path]) -> dict[str, object]:
    """Person galleries on the same engine: `pedestrians` (crops, attribute probabilities kept),
    `pedestrians-plain` (no attribute model) and `streets` (photos of two people each, found by a
    stand-in detector, attribute probabilities kept)."""
    from indexer import pipeline

    model = write_attribute_model(world["root"] / "attributes.pt")
    crops = world["allowed"] / "pedestrians"
    for k, (top, bottom) in enumerate(PEOPLE):
        write_rgb(crops / f"{k + 1:04d}_c1s1_{k:06d}_00.jpg", pedestrian(top, bottom, seed=k))
    config = profile_config("person", "lomo", attributes=model)
    engine.index_folder(crops, "pedestrians", profile="person", config=config)
    plain = world["allowed"] / "pedestrians-plain"
    for k in range(2):
        write_rgb(plain / f"{k + 1:04d}_c1s1_{k:06d}_00.jpg", pedestrian("red", "grey", seed=50 + k))
    engine.index_folder(plain, "pedestrians-plain", profile="person", config=profile_config("person", "lomo"))
    scenes = world["allowed"] / "streets"
    pairs = [(("red", "black"), ("blue", "grey")), (("blue", "black"), ("red", "grey"))]
    for k, (left, right) in enumerate(pairs):
        write_rgb(scenes / f"street{k}.png", scene_photo(left, right, seed=70 + 2 * k))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "SceneCropper", FakeCropper)
        engine.index_folder(scenes, "streets", profile="person",
                            config=profile_config("person", "lomo", detect="hog", attributes=model))
    return {"model": model, "crops": crops, "scenes": scenes, "pairs": pairs}


@pytest.fixture(scope="package")
def client(engine: Engine, world: dict[str, Path]) -> TestClient:
    return TestClient(create_app(engine, ServerConfig(allow_roots=(world["allowed"],))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="package")
def live_server(engine: Engine, world: dict[str, Path]) -> Iterator[str]:
    """uvicorn serving the app on a free localhost port, in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    app = create_app(engine, ServerConfig(allow_roots=(world["allowed"],)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
