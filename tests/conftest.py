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


# ---- people with attributes: synthetic pedestrians and a small attribute model fitted on them
TOPS = {"red": (200, 30, 30), "blue": (40, 60, 190)}
BOTTOMS = {"black": (20, 20, 20), "grey": (150, 150, 150)}


def pedestrian(top: str, bottom: str, seed: int) -> np.ndarray:
    """A 128x48 'person': skin-coloured head, a `top` shirt over `bottom` trousers, noise."""
    rng = np.random.default_rng(seed)
    image = np.empty((128, 48, 3), np.float32)
    image[:20], image[20:70], image[70:] = (220, 180, 150), TOPS[top], BOTTOMS[bottom]
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_attribute_model(path: Path, seed: int = 0) -> Path:
    """A plain attribute head over PETA's attribute list (EfficientNet-Lite0 trunk and head
    convolution from ImageNet) whose `upperBodyRed` and `lowerBodyBlack` outputs are logistic
    regressions fitted on synthetic pedestrians; every other output is 0.5."""
    torch = pytest.importorskip("torch")
    from sklearn.linear_model import LogisticRegression

    from indexer.models.attributes.backbone import crop_tensor, pretrained_parts
    from indexer.models.attributes.model import AttributeModel, build_head
    from indexer.models.attributes.peta import ATTRIBUTES

    combos = [(t, b) for t in TOPS for b in BOTTOMS] * 4
    crops = [pedestrian(t, b, seed + 100 + k) for k, (t, b) in enumerate(combos)]
    head = build_head("plain", len(ATTRIBUTES)).eval()
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.zero_()
        pooled = torch.nn.functional.adaptive_avg_pool2d(
            head.head_conv(pretrained_parts()[0](crop_tensor(crops))), (head.stripes, 1)).flatten(1)
        x = head.norm(pooled).numpy()  # eval mode, fresh statistics: the identity
        for name, truth in (("upperBodyRed", [t == "red" for t, _ in combos]),
                            ("lowerBodyBlack", [b == "black" for _, b in combos])):
            fit = LogisticRegression(C=0.1, max_iter=2000).fit(x, truth)
            col = ATTRIBUTES.index(name)
            head.fc.weight[col] = torch.from_numpy(fit.coef_[0]).float()
            head.fc.bias[col] = float(fit.intercept_[0])
    AttributeModel("plain", ATTRIBUTES, head).save(path)
    return path
