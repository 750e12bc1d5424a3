"""Gallery tracklets: grouping by person and camera, mean pooling in the index's space, and the
`query --tracklets` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.tracklets import Tracklets, group_tracklets
from storage.models import Image
from storage.vector_index import VectorIndex
from tests.engine.test_abn_cli import _people
from tests.engine.test_cli import assert_user_error, tansaku


def _rows() -> list[Image]:
    spec = [(1, 7, 1), (2, 7, 2), (3, 7, 1), (4, None, None), (5, 8, 1), (6, 7, None)]
    return [Image(id=i, person_id=p, camera_id=c) for i, p, c in spec]


def test_images_group_by_person_and_camera() -> None:
    # person 7 camera 1 is one tracklet; an image without a camera (or a person) stays alone
    assert group_tracklets(reversed(_rows())) == [[1, 3], [2], [4], [5], [6]]


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_tracklets_are_the_mean_of_their_frames(metric: str) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    index = VectorIndex(8, metric)
    index.add(np.arange(1, 7), vectors)
    tracks = Tracklets.from_index(_rows(), index)
    assert tracks.members == [[1, 3], [2], [4], [5], [6]]
    mean = vectors[[0, 2]].mean(axis=0)
    expected = mean / np.linalg.norm(mean) if metric == "ip" else mean
    np.testing.assert_allclose(tracks.vectors[0], expected, rtol=1e-5, atol=1e-6)
    # a query equal to the pooled tracklet ranks it first
    (best, _), *rest = tracks.search(mean, 3)
    assert best == 0 and len(rest) == 2


def test_removed_images_leave_their_tracklet() -> None:
    index = VectorIndex(4, "ip")
    index.add(np.array([1, 2, 5]), np.eye(4, dtype=np.float32)[:3])
    tracks = Tracklets.from_index(_rows(), index)  # 3, 4 and 6 are not in the index
    assert tracks.members == [[1], [2], [5]]


@pytest.mark.slow
def test_query_ranks_gallery_tracklets(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gallery = _people(tmp_path / "gallery", persons=5, cams=(1, 2), frames=3, seed=3)
    probe = tmp_path / "probe"
    probe.mkdir()
    for path in gallery.glob("*_c1s1_*"):  # camera 1 queries camera 2's tracklets
        path.rename(probe / path.name)
    assert tansaku(home, "index", str(gallery), "--gallery", "p", "--profile", "person",
                   "--method", "lomo").returncode == 0
    query = sorted(probe.glob("0003_*"))[0]
    proc = tansaku(home, "query", str(query), "--gallery", "p", "--tracklets", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 5  # five tracklets of three images, not fifteen images
    assert all(len(r["frames"]) == 3 for r in results)
    assert results[0]["person_id"] == 3
    assert {Path(f).name[:4] for f in results[0]["frames"]} == {"0003"}
    text = tansaku(home, "query", str(query), "--gallery", "p", "--tracklets")
    assert "(3 frames)" in text.stdout
    assert_user_error(tansaku(home, "query", str(query), "--gallery", "p", "--tracklets",
                              "--rerank-mode", "kreciprocal"), "--tracklets")
