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

from tests.conftest import sample_image, warp, write_rgb

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from engine.core import Engine  # noqa: E402
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
