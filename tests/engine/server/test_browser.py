"""A real browser: headless Chromium (Debian's `chromium`) driven by Playwright against uvicorn.

It uploads a query on the gallery page, sees the ranked grid with the right first result, and
opens the match view. Screenshots go to the test's tmp folder (and a copy of the results page to
/tmp/serve-screenshot.png, for people to look at).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import pedestrian, write_rgb
from tests.engine.server.conftest import QUERY_SOURCE

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed (pip install -e '.[serve]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        browser.close()


def test_query_in_the_browser(page, live_server: str, world: dict[str, Path], tmp_path: Path) -> None:
    page.goto(f"{live_server}/")
    assert page.locator("#galleries").get_by_text("photos", exact=True).count() == 1
    page.click("text=photos")
    page.wait_for_url("**/galleries/photos")
    page.set_input_files("#file", str(world["query"]))
    page.wait_for_selector(".card", timeout=120_000)
    cards = page.locator(".card")
    assert cards.count() >= 3
    assert cards.nth(0).locator(".name").inner_text() == f"sub/{QUERY_SOURCE}.jpg"
    assert "inliers" in cards.nth(0).locator(".facts").inner_text()
    page.wait_for_function(
        "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=60_000)
    results_shot = tmp_path / "results.png"
    page.screenshot(path=str(results_shot), full_page=True)

    cards.nth(0).click()
    page.wait_for_selector("#match[open]")
    page.wait_for_function("document.querySelector('#match-img').naturalWidth > 0", timeout=60_000)
    assert f"{QUERY_SOURCE}.jpg" in page.inner_text("#match-title")
    match_shot = tmp_path / "match.png"
    page.screenshot(path=str(match_shot))
    assert results_shot.stat().st_size > 10_000 and match_shot.stat().st_size > 10_000
    for shot, name in ((results_shot, "serve-screenshot.png"), (match_shot, "serve-screenshot-match.png")):
        with contextlib.suppress(OSError):  # a copy for people; the test does not depend on it
            shutil.copy(shot, Path("/tmp") / name)


def test_attribute_search_in_the_browser(page, live_server: str, people: dict) -> None:
    """Words typed on a person gallery's page give the ranked people, each with its why; a click
    shows the photo with the person's box drawn."""
    page.goto(f"{live_server}/galleries/streets")
    page.fill("#attr-q", "red top")
    page.click("#attr-form button[type=submit]")
    page.wait_for_selector(".card .why", timeout=60_000)
    first = page.locator(".card").nth(0)
    assert "upperBodyRed" in first.locator(".why").inner_text()
    assert first.locator(".name").inner_text().startswith("street")
    first.click()
    page.wait_for_selector("#match[open]")
    page.wait_for_selector("#match-box", state="visible", timeout=60_000)
    assert "Why it matched: upperBodyRed" in page.inner_text("#match-note")


def test_image_query_with_attribute_words_in_the_browser(page, live_server: str, people: dict,
                                                         tmp_path: Path) -> None:
    """Words added to an image query re-score its results, each showing the asked attributes'
    probabilities; an unknown word is named in the page's error area."""
    query = write_rgb(tmp_path / "walker.jpg", pedestrian("blue", "black", seed=99))
    page.goto(f"{live_server}/galleries/pedestrians")
    page.fill("#query-attr", "red top")
    page.set_input_files("#file", str(query))
    page.wait_for_selector(".card .why", timeout=120_000)
    cards = page.locator(".card")
    assert cards.count() >= 3
    for k in range(cards.count()):
        assert cards.nth(k).locator(".why").inner_text().startswith("upperBodyRed ")
    assert "with: red top" in page.inner_text("#query-status")
    cards.nth(0).click()
    page.wait_for_selector("#match[open]")
    assert "Attributes asked for: upperBodyRed" in page.inner_text("#match-note")
    page.click("#match .close")

    page.fill("#query-attr", "red top, purple hat")
    page.locator("#query-attr").press("Tab")  # a changed field runs the query again
    page.wait_for_selector("#query-error:not([hidden])", timeout=120_000)
    assert "unknown attribute 'purple hat'" in page.inner_text("#query-error")
    assert page.locator(".card").count() == 0

    page.goto(f"{live_server}/galleries/pedestrians-plain")  # no attributes: no field
    assert page.locator("#query-form").count() == 1 and page.locator("#query-attr").count() == 0


def test_tracklet_query_in_the_browser(page, live_server: str, engine, world: dict[str, Path],
                                       tmp_path: Path) -> None:
    """'whole tracklets' on a person gallery's page ranks tracklets, each card with its frames."""
    from engine.core import profile_config

    folder = world["allowed"] / "walkers"
    for k, (top, bottom) in enumerate([("red", "black"), ("blue", "grey"), ("red", "grey")]):
        for frame in range(2):
            write_rgb(folder / f"{k + 1:04d}_c2s1_{frame:06d}_00.jpg",
                      pedestrian(top, bottom, seed=10 * k + frame))
    engine.index_folder(folder, "walkers", profile="person", config=profile_config("person", "lomo"))
    query = write_rgb(tmp_path / "walker.jpg", pedestrian("blue", "grey", seed=99))
    page.goto(f"{live_server}/galleries/walkers")
    page.check("input[name=tracklets]")
    page.set_input_files("#file", str(query))
    page.wait_for_selector(".card .frames", timeout=120_000)
    cards = page.locator(".card")
    assert cards.count() == 3  # three tracklets of two images, not six images
    assert "3 tracklets" in page.inner_text("#query-status")
    for k in range(3):
        assert cards.nth(k).locator(".frames img").count() == 2
        assert "2 frames" in cards.nth(k).locator(".facts").inner_text()
    assert cards.nth(0).locator(".name").inner_text().startswith("0002_")
    page.goto(f"{live_server}/galleries/photos")  # a landmark gallery has no such option
    assert page.locator("input[name=tracklets]").count() == 0
