"""Queries answered over HTTP while an indexing job writes into the same gallery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from engine.core import Engine
from tests.conftest import sample_image, warp
from tests.engine.server.conftest import jpeg_bytes, write_gallery

pytestmark = pytest.mark.slow

FIRST = ("astronaut", "coffee", "chelsea")
ADDED = ("rocket", "camera", "clock", "coins", "brick", "moon")


def test_queries_during_an_indexing_job_of_the_same_gallery(
    live_server: str, engine: Engine, world: dict[str, Path]
) -> None:
    folder = world["allowed"] / "busy"
    write_gallery(folder, FIRST)
    engine.index_folder(folder, "busy")
    http = httpx.Client(base_url=live_server, timeout=120)
    probe = jpeg_bytes(warp(sample_image("rocket", 256), seed=7))

    def ask() -> httpx.Response:
        return http.post("/api/galleries/busy/query", files={"file": ("q.jpg", probe, "image/jpeg")},
                         data={"top_k": "20"})

    assert ask().status_code == 200  # warm before the job starts
    write_gallery(folder / "more", ADDED)
    job = http.post("/api/jobs", json={"folder": str(folder), "gallery": "busy"}).json()
    answers: list[tuple[httpx.Response, bool]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def status() -> str:
        return str(http.get(f"/api/jobs/{job['id']}").json()["status"])

    def client() -> None:
        try:
            while not done.is_set():
                before = status()
                response = ask()
                answers.append((response, before == "running" and status() == "running"))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 600
    while status() in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert status() == "completed"
    assert any(during for _, during in answers), "no query overlapped the job"
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg")}
    for response, _ in answers:
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        paths = [r["relative_path"] for r in results]
        assert set(paths) <= files, paths  # every result is a committed, real image
        assert len(paths) == len(set(paths))
        assert len(paths) in (len(FIRST), len(FIRST) + len(ADDED))  # before or after, nothing between
    first = ask().json()["results"][0]
    assert first["relative_path"] == "more/rocket.jpg"
    assert http.get(first["thumbnail_url"]).status_code == 200
