"""Search by attributes through the API and the page: person galleries that keep attribute
probabilities (a small model fitted on synthetic pedestrians, see tests/conftest.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engine.core import Engine
from matcher.attributes import EPS
from tests.conftest import pedestrian
from tests.engine.server.conftest import PEOPLE, jpeg_bytes

pytestmark = pytest.mark.slow  # the package's galleries are indexed with real models once

BASE = "/api/galleries"


def ask(client: TestClient, gallery: str, q: str, **params: str):
    return client.get(f"{BASE}/{gallery}/attributes/query", params={"q": q, **params})


def pids(body: dict) -> list[int]:
    return [r["person_id"] for r in body["results"]]


def test_attribute_query_returns_the_cli_object_with_urls(client: TestClient, engine: Engine,
                                                          people: dict) -> None:
    response = ask(client, "pedestrians", "red top, black bottoms", top_k="8")
    assert response.status_code == 200, response.text
    body = response.json()
    cli = engine.query_attributes("red top, black bottoms", "pedestrians", top_k=8).to_json()
    urls = ("thumbnail_url", "image_url")
    assert [{k: v for k, v in r.items() if k not in urls} for r in body["results"]] == cli["results"]
    assert body["query"] == "attributes: red top, black bottoms" and "match_url" not in body["results"][0]
    wanted = {k + 1 for k, combo in enumerate(PEOPLE) if combo == ("red", "black")}
    assert set(pids(body)[:2]) == wanted  # the two people in red over black come first
    unwanted = {k + 1 for k, combo in enumerate(PEOPLE) if combo == ("blue", "grey")}
    assert set(pids(body)[-2:]) == unwanted
    for r in body["results"]:  # why it matched: each attribute's probability, whose logs score it
        matched = r["matched_attributes"]
        assert list(matched) == ["upperBodyRed", "lowerBodyBlack"]
        p = np.clip(list(matched.values()), EPS, 1 - EPS)
        assert r["score"] == pytest.approx(np.log(p).mean(), abs=1e-5)
    first = body["results"][0]["matched_attributes"]
    assert min(first.values()) > 0.5 > max(body["results"][-1]["matched_attributes"].values())
    thumb = client.get(body["results"][0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (48, 128)


def test_names_words_and_complements(client: TestClient, people: dict) -> None:
    by_names = ask(client, "pedestrians", "upperBodyRed,lowerBodyBlack").json()
    by_words = ask(client, "pedestrians", " Red  Top ,black bottoms").json()
    assert pids(by_names) == pids(by_words)
    female = ask(client, "pedestrians", "female, red top", top_k="1").json()["results"][0]
    male = female["matched_attributes"]
    assert list(male) == ["personalFemale", "upperBodyRed"]
    assert male["personalFemale"] == pytest.approx(0.5, abs=1e-3)  # the model knows nothing of it
    assert len(ask(client, "pedestrians", "red top", top_k="3").json()["results"]) == 3


def test_vocabulary(client: TestClient, people: dict) -> None:
    response = client.get(f"{BASE}/pedestrians/attributes")
    assert response.status_code == 200
    vocabulary = response.json()
    assert vocabulary["gallery"] == "pedestrians"
    assert len(vocabulary["attributes"]) == 57 and "upperBodyRed" in vocabulary["attributes"]
    assert vocabulary["complements"] == {"personalFemale": "personalMale"}
    assert vocabulary["words"]["red top"] == "upperBodyRed"
    assert vocabulary["words"]["female"] == "personalFemale"
    assert set(vocabulary["words"].values()) <= {*vocabulary["attributes"], "personalFemale"}


@pytest.mark.parametrize(("gallery", "q", "status", "says"), [
    ("pedestrians-plain", "red top", 400, "has no attribute model"),
    ("photos", "red top", 400, "person galleries"),
    ("pedestrians", "red top, purple hat", 400, "unknown attribute 'purple hat'"),
    ("pedestrians", " , ", 400, "no attribute given"),
    ("nowhere", "red top", 404, "unknown gallery 'nowhere'"),
])
def test_attribute_query_refusals(client: TestClient, people: dict, gallery: str, q: str,
                                  status: int, says: str) -> None:
    response = ask(client, gallery, q)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_attribute_requests_the_api_refuses(client: TestClient, people: dict) -> None:
    for url, status, says in (
        (f"{BASE}/pedestrians-plain/attributes", 400, "has no attribute model"),
        (f"{BASE}/photos/attributes", 400, "profile 'landmark'"),
        (f"{BASE}/nowhere/attributes", 404, "unknown gallery"),
        (f"{BASE}/pedestrians/attributes/query", 422, "q"),
        (f"{BASE}/pedestrians/attributes/query?q=red+top&top_k=0", 422, "top_k"),
    ):
        response = client.get(url)
        assert response.status_code == status, url
        assert says in response.json()["error"], url


def test_people_found_in_photos(client: TestClient, people: dict) -> None:
    body = ask(client, "streets", "red top", top_k="4").json()
    top = body["results"][:2]
    # street0 has its person in red on the left, street1 on the right (see the fixture)
    assert sorted((Path(r["path"]).name, r["box"][0]) for r in top) == [("street0.png", 10),
                                                                         ("street1.png", 90)]
    assert all(r["relative_path"].startswith("street") and "#" not in r["relative_path"] for r in top)
    thumb = Image.open(io.BytesIO(client.get(top[0]["thumbnail_url"]).content))
    assert thumb.size == (48, 128)  # the person's box, not the photo
    assert np.asarray(thumb)[40, 24, 0] > 150  # the red top
    original = client.get(top[0]["image_url"])
    assert original.status_code == 200 and original.content == Path(top[0]["path"]).read_bytes()


def test_image_query_rescored_by_attributes(client: TestClient, people: dict) -> None:
    image = jpeg_bytes(pedestrian("blue", "black", seed=99))
    files = {"file": ("q.jpg", image, "image/jpeg")}
    body = client.post(f"{BASE}/pedestrians/query", files=files,
                       data={"top_k": "8", "attributes": "red top"}).json()
    assert all(list(r["matched_attributes"]) == ["upperBodyRed"] for r in body["results"])
    plain = client.post(f"{BASE}/pedestrians/query", files=files, data={"top_k": "8"}).json()
    assert "matched_attributes" not in plain["results"][0]
    red = {k + 1 for k, c in enumerate(PEOPLE) if c[0] == "red"}

    def red_ranks(result: dict) -> int:
        return sum(rank for rank, pid in enumerate(pids(result)) if pid in red)

    assert red_ranks(body) < red_ranks(plain)  # the people in red move up
    refused = client.post(f"{BASE}/pedestrians/query", files=files, data={"attributes": "purple hat"})
    assert refused.status_code == 400 and "purple hat" in refused.json()["error"]


def test_page_offers_attribute_search(client: TestClient, people: dict) -> None:
    page = client.get("/galleries/pedestrians").text
    assert 'id="attr-form"' in page and '<option value="red top">' in page
    assert 'id="attr-form"' not in client.get("/galleries/pedestrians-plain").text
    assert 'id="attr-form"' not in client.get("/galleries/photos").text


def test_image_query_form_takes_attribute_words(client: TestClient, people: dict) -> None:
    """The image query's form has a field for attribute words (sent as `attributes`, offered the
    attribute search's suggestions) on person galleries with attributes, and only there."""
    for gallery in ("pedestrians", "streets"):
        page = client.get(f"/galleries/{gallery}").text
        form = page[page.index('<form id="query-form"'):]
        form = form[:form.index("</form>")]
        assert 'id="query-attr" name="attributes" list="attr-words"' in form
        assert page.count('<datalist id="attr-words">') == 1  # one list of words for both fields
    for gallery in ("pedestrians-plain", "photos"):
        page = client.get(f"/galleries/{gallery}").text
        assert 'id="query-form"' in page
        assert 'name="attributes"' not in page and "attr-words" not in page
