"""Shared fixtures: small image folders made from scikit-image's bundled samples, never benchmark data."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
           "colorwheel", "stereo_motorcycle")


def sample_image(name: str, max_side: int = 320) -> np.ndarray:
    """A bundled scikit-image sample as RGB uint8, longer side at most `max_side`."""
    data = pytest.importorskip("skimage.data")
    image = getattr(data, name)()
    if isinstance(image, tuple):
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3].astype(np.uint8)
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def warp(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A perspective view of `image`: crop, rotate a little, tilt (what a second photo does)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-0.08, 0.08, size=(4, 2)) * [w, h]
    dst = (src + jitter).astype(np.float32)
    H = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(image, H, (w, h), borderMode=cv2.BORDER_REFLECT)
    return out[int(0.05 * h): int(0.95 * h), int(0.05 * w): int(0.95 * w)]


def write_rgb(path: Path, image: np.ndarray) -> Path:
    """Write an RGB array as an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight distinct sample images in nested folders."""
    root = tmp_path_factory.mktemp("samples")
    for k, name in enumerate(SAMPLES):
        write_rgb(root / ("sub" if k % 2 else "") / f"{name}.jpg", sample_image(name))
    return root


def database_url(folder: Path) -> str:
    """The database a test uses: a fresh database on the PostgreSQL server `TANSAKU_TEST_DB` names
    (a URL such as postgresql+psycopg://postgres@127.0.0.1:55432/postgres; `.ci/run` starts one),
    or else an SQLite file in `folder`."""
    server = os.environ.get("TANSAKU_TEST_DB")
    if not server:
        return f"sqlite:///{folder / 'db.sqlite'}"
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)
