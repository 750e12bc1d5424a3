"""The server's boundary: upload limits, type by content, paths under the allowed roots, the token."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engine.core import Engine
from engine.jobs import ForbiddenPathError, resolve_under
from engine.server import ServerConfig, create_app
from engine.settings import Settings
from engine.uploads import UploadError, decode_upload
from tests.conftest import sample_image
from tests.engine.server.conftest import jpeg_bytes


@pytest.fixture
def bare(tmp_path: Path) -> tuple[TestClient, Path]:
    """A server with no galleries and one allowed root (nothing indexed: these are fast)."""
    allowed = tmp_path / "allowed"
    (allowed / "photos").mkdir(parents=True)
    engine = Engine(Settings.from_env(home=tmp_path / "home"))
    return TestClient(create_app(engine, ServerConfig(allow_roots=(allowed,), max_bytes=200_000,
                                                      max_pixels=500_000))), tmp_path


def post_query(client: TestClient, data: bytes, name: str = "q.jpg", mime: str = "image/jpeg"):
    return client.post("/api/galleries/g/query", files={"file": (name, data, mime)})


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def assert_refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"]


def test_decompression_bomb_refused_before_decoding(bare, monkeypatch) -> None:
    client, _ = bare
    bomb = png_bytes(10_000, 10_000)  # 100 megapixels in a few hundred kB? no: in ~100 kB
    assert len(bomb) < 200_000
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    assert_refused(post_query(client, bomb, "bomb.png", "image/png"), 413, "10000x10000", "500000")
    assert not decoded


def test_upload_byte_limit(bare) -> None:
    client, _ = bare
    noise = np.random.default_rng(0).integers(0, 255, (500, 500, 3), dtype=np.uint8)
    big = jpeg_bytes(noise)
    assert len(big) > 200_000
    assert_refused(post_query(client, big), 413, "200000 bytes")
    with pytest.raises(UploadError, match="limit"):
        decode_upload(b"x" * 2048, max_bytes=1024)


def test_type_is_judged_by_decoding(bare) -> None:
    client, _ = bare
    assert_refused(post_query(client, b"GIF89a but not really", "photo.jpg"), 415, "not an image")
    assert_refused(post_query(client, b"%PDF-1.4", "photo.png", "image/png"), 415)
    assert_refused(post_query(client, b""), 400, "empty")
    truncated = jpeg_bytes(sample_image("coffee", 128))[:400]
    assert_refused(post_query(client, truncated), 400, "decoded")
    # a real PNG named .txt with a text type is still an image: it passes the boundary and the
    # request fails later only because the gallery does not exist
    png = io.BytesIO()
    Image.fromarray(sample_image("coffee", 64)).save(png, "PNG")
    assert_refused(post_query(client, png.getvalue(), "notes.txt", "text/plain"), 404, "'g'")


def test_missing_file_and_bad_options(bare) -> None:
    client, _ = bare
    assert_refused(client.post("/api/galleries/g/query"), 422, "file")
    image = jpeg_bytes(sample_image("coffee", 64))
    response = client.post("/api/galleries/g/query", files={"file": ("q.jpg", image)},
                           data={"top_k": "0"})
    assert_refused(response, 422, "top_k")


@pytest.mark.parametrize("folder", [
    "../outside", "photos/../../outside", "/etc", "%2e%2e/outside", "..%2Foutside",
    "%252e%252e%252foutside", "link-out", "photos/../link-out",
])
def test_job_folders_outside_the_allowed_root(bare, folder: str) -> None:
    client, tmp = bare
    (tmp / "outside").mkdir(exist_ok=True)
    link = tmp / "allowed" / "link-out"
    if not link.exists():
        link.symlink_to(tmp / "outside", target_is_directory=True)
    response = client.post("/api/jobs", json={"folder": folder, "gallery": "g"})
    assert response.status_code in (403, 404), (folder, response.text)
    assert "Traceback" not in response.text and response.json()["error"]
    assert client.get("/api/jobs").json()["jobs"] == []


def test_resolve_under(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve_under("a", [root]) == (root / "a").resolve()
    assert resolve_under(str(root / "a" / ".." / "a"), [root]) == (root / "a").resolve()
    with pytest.raises(ForbiddenPathError, match="outside"):
        resolve_under(str(tmp_path), [root])
    with pytest.raises(ForbiddenPathError, match="--allow-root"):
        resolve_under("a", [])


def test_indexing_is_off_without_allowed_roots(tmp_path: Path) -> None:
    client = TestClient(create_app(Engine(Settings.from_env(home=tmp_path / "home")), ServerConfig()))
    assert_refused(client.post("/api/jobs", json={"folder": str(tmp_path), "gallery": "g"}), 403,
                   "--allow-root")


def test_original_linking_outside_is_not_served(tmp_path: Path) -> None:
    """A gallery file that is a symbolic link pointing out of the gallery's folder is refused."""
    from engine.catalog import OutsideGalleryError, served_file
    from engine.core import OpenGallery

    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"secret")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "inside.jpg").write_bytes(b"fine")
    (folder / "link.jpg").symlink_to(outside)

    class Row:
        def __init__(self, path: str) -> None:
            self.path, self.source_id = path, 7

    opened = OpenGallery.__new__(OpenGallery)  # only what image_file reads
    opened.gallery = type("G", (), {"name": "g"})()  # type: ignore[assignment]
    opened.sources = {7: str(folder)}
    opened.crops = {}  # no person found in a photo here
    opened.rows = {1: Row("inside.jpg"), 2: Row("link.jpg"), 3: Row("../secret.jpg")}  # type: ignore[dict-item]
    assert served_file(opened, 1) == (folder / "inside.jpg").resolve()
    for image_id in (2, 3):
        with pytest.raises(OutsideGalleryError, match="outside"):
            served_file(opened, image_id)


def test_static_files_do_not_escape(bare) -> None:
    client, _ = bare
    for url in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2Fapp.py",
                "/static/%2e%2e%2f%2e%2e%2fcore.py"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "create_app" not in response.text


def test_token_checked_on_every_api_call(tmp_path: Path) -> None:
    engine = Engine(Settings.from_env(home=tmp_path / "home"))
    client = TestClient(create_app(engine, ServerConfig(token="s3cret")))
    for url in ("/api/galleries", "/api/jobs", "/", "/docs", "/openapi.json"):
        assert_refused(client.get(url), 401, "token")
    assert_refused(client.get("/api/galleries", headers={"Authorization": "Bearer wrong"}), 401)
    assert client.get("/api/galleries", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/galleries", headers={"X-Tansaku-Token": "s3cret"}).status_code == 200
    assert_refused(post_query(client, b"x"), 401)
    page = client.get("/?token=s3cret")  # a browser opens the page once with the token...
    assert page.status_code == 200
    assert client.get("/api/galleries").status_code == 200  # ...and its cookie carries it after
    assert client.get("/static/style.css").status_code == 200


def test_serve_refuses_a_public_bind_without_token(tmp_path: Path) -> None:
    env = {**os.environ, "TANSAKU_HOME": str(tmp_path / "home")}
    env.pop("TANSAKU_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "engine", "serve", "--host", "0.0.0.0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")
    assert "--token" in proc.stderr and "Traceback" not in proc.stderr
