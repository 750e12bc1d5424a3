"""The REST API over a real gallery: query, thumbnails, originals, match views, jobs, delete."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engine.core import Engine
from tests.conftest import sample_image, warp, write_rgb
from tests.engine.server.conftest import GALLERY_SAMPLES, QUERY_SOURCE, jpeg_bytes, write_gallery

pytestmark = pytest.mark.slow  # the package's gallery is indexed with the real model once


def query(client: TestClient, image: bytes, gallery: str = "photos", **form: str):
    return client.post(f"/api/galleries/{gallery}/query", files={"file": ("q.jpg", image, "image/jpeg")},
                       data=form)


def test_gallery_list_has_counts(client: TestClient) -> None:
    galleries = {g["name"]: g for g in client.get("/api/galleries").json()["galleries"]}
    photos = galleries["photos"]
    assert photos["profile"] == "landmark"
    assert photos["model"] == "gem-rootsift"
    assert photos["images"] == {"pending": 0, "indexed": len(GALLERY_SAMPLES), "failed": 0}
    assert photos["last_run"]["status"] == "completed"


def test_query_returns_the_cli_object_with_urls(client: TestClient, world: dict[str, Path],
                                                engine: Engine) -> None:
    response = query(client, world["query"].read_bytes(), top_k="3")
    assert response.status_code == 200, response.text
    body = response.json()
    cli = engine.query(world["query"], "photos", top_k=3).to_json()
    assert body["gallery"] == "photos"
    assert [r["path"] for r in body["results"]] == [r["path"] for r in cli["results"]]
    assert body["results"][0]["path"] == str(world["photos"] / "sub" / f"{QUERY_SOURCE}.jpg")
    assert [r["inliers"] for r in body["results"]] == [r["inliers"] for r in cli["results"]]
    np.testing.assert_allclose([r["score"] for r in body["results"]],
                               [r["score"] for r in cli["results"]], atol=1e-4)
    first = body["results"][0]
    assert first["relative_path"] == f"sub/{QUERY_SOURCE}.jpg"
    assert first["inliers"] >= 12
    assert set(body["timings"]) >= {"extraction", "search"}
    for key in ("thumbnail_url", "image_url", "match_url"):
        assert first[key].startswith("/api/")


def test_query_options(client: TestClient, world: dict[str, Path]) -> None:
    data = world["query"].read_bytes()
    plain = query(client, data, top_k="2", rerank="false").json()
    assert len(plain["results"]) == 2
    assert all(r["inliers"] is None for r in plain["results"])
    delf = query(client, data, top_k="2", mode="delf").json()
    assert delf["results"][0]["relative_path"] == f"sub/{QUERY_SOURCE}.jpg"
    assert query(client, data, mode="fancy").status_code == 400
    assert "fancy" in query(client, data, mode="fancy").json()["error"]


def test_thumbnail_and_original(client: TestClient, world: dict[str, Path]) -> None:
    first = query(client, world["query"].read_bytes(), top_k="1").json()["results"][0]
    thumb = client.get(first["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    original = client.get(first["image_url"])
    assert original.status_code == 200
    assert original.content == Path(first["path"]).read_bytes()


def test_match_view_draws_the_inliers(client: TestClient, world: dict[str, Path]) -> None:
    first = query(client, world["query"].read_bytes(), top_k="1").json()["results"][0]
    view = client.get(first["match_url"])
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    assert int(view.headers["x-inliers"]) == first["inliers"]  # the pair re-matched as ranked
    picture = np.asarray(Image.open(io.BytesIO(view.content)).convert("RGB"))
    assert picture.shape[1] > picture.shape[0]  # two images side by side


def test_unknown_things_are_404_json(client: TestClient) -> None:
    for url in ("/api/galleries/nope", "/api/galleries/photos/images/999999/thumbnail",
                "/api/queries/0123/matches/1.png", "/api/jobs/999"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]
    assert "nope" in client.get("/api/galleries/nope").json()["error"]
    response = client.get("/api/galleries/photos/images/abc/thumbnail")
    assert response.status_code == 422 and "image_id" in response.json()["error"]


def test_pages_render(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and "photos" in index.text
    page = client.get("/galleries/photos")
    assert page.status_code == 200 and 'id="drop"' in page.text
    assert client.get("/galleries/nope").status_code == 404
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/galleries/{name}/query"]["post"]


def wait_for(client: TestClient, job_id: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_indexing_job_progress_failures_and_delete(client: TestClient, world: dict[str, Path]) -> None:
    folder = world["allowed"] / "second"
    write_gallery(folder, ("coins", "camera", "clock"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    started = client.post("/api/jobs", json={"folder": str(folder), "gallery": "second"})
    assert started.status_code == 202, started.text
    job = wait_for(client, started.json()["id"])
    assert job["status"] == "completed", job
    assert job["done"] == job["total"] == 4 and job["progress"] == 100.0
    assert [f["path"] for f in job["failures"]] == ["broken.jpg"]
    assert job["summary"]["indexed"] == 3
    listed = client.get("/api/galleries/second").json()
    assert listed["images"]["failed"] == 1 and listed["failures"][0]["path"] == "broken.jpg"
    assert client.get("/api/jobs").json()["jobs"][0]["id"] == job["id"]
    # relative to the allowed root, and incremental: nothing new the second time
    again = wait_for(client, client.post("/api/jobs", json={"folder": "second",
                                                            "gallery": "second"}).json()["id"])
    assert again["status"] == "completed" and again["summary"]["unchanged"] == 3

    deleted = client.delete("/api/galleries/second")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "second"}
    assert client.get("/api/galleries/second").status_code == 404
    assert query(client, jpeg_bytes(sample_image("coins", 128)), gallery="second").status_code == 404
    assert (folder / "coins.jpg").exists()  # the image files stay
    assert client.delete("/api/galleries/second").status_code == 404


def test_cancelled_job(client: TestClient, world: dict[str, Path], monkeypatch) -> None:
    from engine.server.app import ServerState
    from indexer.pipeline import IndexCancelled

    state: ServerState = client.app.state.tansaku  # type: ignore[attr-defined]
    gate = []

    def index_folder(folder, gallery, profile, progress, cancel, contained):
        progress(0, 10, type("S", (), {"failures": []})())
        gate.append(1)
        assert cancel.wait(30), "cancel never came"
        raise IndexCancelled("cancelled")

    monkeypatch.setattr(state.jobs.engine, "index_folder", index_folder)
    job = client.post("/api/jobs", json={"folder": "photos", "gallery": "other"}).json()
    deadline = time.monotonic() + 10
    while not gate and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "running"
    assert client.post("/api/jobs", json={"folder": "photos", "gallery": "other"}).status_code == 409
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    assert wait_for(client, job["id"], 30)["status"] == "cancelled"


def test_query_sees_a_gallery_reindexed_by_another_process(client: TestClient, engine: Engine,
                                                           world: dict[str, Path]) -> None:
    """The warm copy refreshes when the gallery's files change on disk."""
    folder = world["allowed"] / "growing"
    write_gallery(folder, ("astronaut", "coffee"))
    engine.index_folder(folder, "growing")
    probe = jpeg_bytes(warp(sample_image("chelsea", 256), seed=5))
    before = query(client, probe, gallery="growing").json()["results"]
    assert {r["relative_path"] for r in before} == {"astronaut.jpg", "sub/coffee.jpg"}
    write_rgb(folder / "chelsea.jpg", sample_image("chelsea", 256))
    other = Engine(engine.settings)  # another process's engine: no shared state
    other.index_folder(folder, "growing")
    after = query(client, probe, gallery="growing").json()["results"]
    assert after[0]["relative_path"] == "chelsea.jpg"


def person_gallery(engine: Engine, folder: Path, frames: int, rng: np.random.Generator) -> str:
    """A LOMO person gallery of persons 1-4 seen by cameras 1 and 2, `frames` images each."""
    from engine.core import profile_config
    from tests.engine.test_person_gallery import person_crop

    for pid in range(1, 5):
        for cam in (1, 2):
            for frame in range(frames):
                write_rgb(folder / f"{pid:04d}_c{cam}s1_{cam + frame:06d}_00.jpg",
                          person_crop(pid, cam, rng))
    engine.index_folder(folder, folder.name, profile="person", config=profile_config("person", "lomo"))
    return folder.name


def test_person_gallery_results_carry_person_and_camera(client: TestClient, engine: Engine,
                                                        world: dict[str, Path]) -> None:
    from tests.engine.test_person_gallery import person_crop

    rng = np.random.default_rng(0)
    person_gallery(engine, world["root"] / "people", 1, rng)
    body = query(client, jpeg_bytes(person_crop(3, 1, rng)), gallery="people", top_k="4").json()
    first = body["results"][0]
    assert (first["person_id"], first["camera_id"]) == (3, int(first["relative_path"][6]))
    assert all("person_id" in r and "camera_id" in r for r in body["results"])
    view = client.get(first["match_url"])  # no local features: the pair side by side, no lines
    assert view.status_code == 200 and view.headers["x-inliers"] == "0"


def test_tracklet_query_ranks_tracklets_with_their_frames(client: TestClient, engine: Engine,
                                                         world: dict[str, Path]) -> None:
    from tests.engine.test_person_gallery import person_crop

    rng = np.random.default_rng(1)
    person_gallery(engine, world["root"] / "tracks", 3, rng)  # tracklets of three images
    body = query(client, jpeg_bytes(person_crop(3, 1, rng)), gallery="tracks", top_k="20",
                 tracklets="true").json()
    results = body["results"]
    assert len(results) == 8  # four persons x two cameras, not 24 images
    assert results[0]["person_id"] == 3
    for r in results:
        assert len(r["frames"]) == len(r["frame_ids"]) == len(r["frame_urls"]) == 3
        assert {Path(f).name[:4] for f in r["frames"]} == {f"{r['person_id']:04d}"}
        assert r["image_id"] == r["frame_ids"][0]
    thumbnail = client.get(results[0]["frame_urls"][2])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    plain = query(client, jpeg_bytes(person_crop(3, 1, rng)), gallery="tracks", top_k="20").json()
    assert len(plain["results"]) == 20 and "frames" not in plain["results"][0]
    landmark = query(client, jpeg_bytes(sample_image("rocket", 128)), tracklets="true")
    assert landmark.status_code == 400 and "person galleries" in landmark.json()["error"]
