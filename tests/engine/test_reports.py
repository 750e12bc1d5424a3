"""Pictures outside the server: `query --save-matches`, and the HTML reports of `eval --report`."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from engine.evaluation.reid_protocols import PersonSet, ReidTrial
from engine.evaluation.retrieval import QueryOutcome, RetrievalDetails
from tests.conftest import sample_image, warp, write_rgb
from tests.engine.test_cli import tansaku

pytest.importorskip("jinja2", reason="reports need the serve extra")


def _inline_images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/[a-z]+;base64,([^"]+)"', text)]


def test_retrieval_report_lists_worst_queries_with_thumbnails(tmp_path: Path) -> None:
    from engine.reports import write_retrieval_report

    files = {n: write_rgb(tmp_path / f"{n}.jpg", sample_image(n, 96))
             for n in ("rocket", "coffee", "chelsea", "astronaut")}
    details = RetrievalDetails("holidays", [
        QueryOutcome("good", files["rocket"], 1.0, [(files["rocket"], True), (files["coffee"], False)]),
        QueryOutcome("bad", files["chelsea"], 0.25, [(files["astronaut"], False),
                                                     (files["chelsea"], True)]),
    ])
    scores = {"dataset": "tiny", "protocol": "holidays", "method": "m", "mAP": 62.5, "queries": 2}
    path = write_retrieval_report(tmp_path / "out" / "report.html", scores, details)
    text = path.read_text()
    assert "62.50" in text and "AP per query" in text
    assert text.index("AP 25.0") < text.index("AP 100.0")  # the worst query first
    images = _inline_images(text)
    assert len(images) == 6 and all(img[:2] == b"\xff\xd8" for img in images)  # JPEG thumbnails
    assert 'class="good"' in text and 'class="bad"' in text
    assert "http" not in text.split("<body>")[1]  # self-contained: nothing fetched


def test_reid_report_has_cmc_plot_and_marked_lists(tmp_path: Path) -> None:
    from engine.reports import write_reid_report

    paths = [write_rgb(tmp_path / f"{k:03d}.bmp", sample_image("astronaut", 64)) for k in range(6)]
    query = PersonSet(tuple(paths[:3]), np.array([1, 2, 3]), np.zeros(3, np.int64))
    gallery = PersonSet(tuple(paths[3:]), np.array([1, 2, 3]), np.ones(3, np.int64))
    distances = np.array([[0.1, 0.5, 0.9], [0.2, 0.3, 0.1], [0.5, 0.4, 0.3]])
    cmc = np.array([2 / 3, 1.0, 1.0])
    scores = {"dataset": "viper", "protocol": "p", "method": "lomo+xqda", "rank1": 66.67,
              "rank5": 100.0, "rank10": 100.0, "rank20": 100.0, "mAP": 80.0, "mINP": 70.0}
    text = write_reid_report(tmp_path / "reid.html", scores,
                             [ReidTrial(query, gallery, distances, cmc)]).read_text()
    assert "mINP" in text and "70.00" in text
    images = _inline_images(text)
    assert images[0][:8] == b"\x89PNG\r\n\x1a\n"  # the matplotlib CMC curve
    assert len(images) == 1 + 3 * 4  # plot + 3 queries with 3 ranked each
    assert text.count('class="good"') == 3  # each query's one correct match, marked
    assert "first correct: 3" in text  # query 2's own match is ranked third


@pytest.mark.slow
def test_query_save_matches_writes_match_views(sample_folder: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert tansaku(home, "index", str(sample_folder), "--gallery", "s").returncode == 0
    query = write_rgb(tmp_path / "q.jpg", warp(sample_image("rocket"), seed=2))
    out = tmp_path / "views"
    proc = tansaku(home, "query", str(query), "--gallery", "s", "--top-k", "3", "--save-matches",
                   str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["01-rocket.png", "02-" + written[1][3:], "03-" + written[2][3:]]
    assert (out / "01-rocket.png").stat().st_size > 10_000


def test_eval_reid_report_on_a_tiny_viper(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "viper"
    for pid in range(8):
        colour = rng.integers(0, 255, 3)
        for cam in ("cam_a", "cam_b"):
            crop = np.clip(colour + rng.normal(0, 20, (128, 48, 3)), 0, 255).astype(np.uint8)
            write_rgb(data / cam / f"{pid:03d}_{cam}.bmp", crop)
    report = tmp_path / "reid.html"
    proc = tansaku(tmp_path / "home", "eval", "reid", str(data), "--format", "viper", "--method",
                   "lomo", "--metric", "euclidean", "--trials", "2", "--report", str(report), "--json")
    assert proc.returncode == 0, proc.stderr
    assert report.exists() and "CMC curve" in report.read_text()


@pytest.mark.slow
def test_eval_retrieval_report_on_a_tiny_holidays(tmp_path: Path) -> None:
    data = tmp_path / "holidays"
    for group, name in enumerate(("rocket", "astronaut", "coffee"), start=100):
        image = sample_image(name, 200)
        write_rgb(data / f"{group}000.jpg", image)
        write_rgb(data / f"{group}001.jpg", warp(image, seed=group))
    report = tmp_path / "retrieval.html"
    proc = tansaku(tmp_path / "home", "eval", "retrieval", str(data), "--format", "holidays",
                   "--report", str(report), "--json")
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert "AP per query" in text
    assert all(f"{g}000.jpg" in text for g in (100, 101, 102))
    assert len(_inline_images(text)) == 3 * 6  # 3 queries, each with its 5 ranked images
