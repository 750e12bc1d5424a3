"""The ABN re-ID commands as a user meets them: train-reid, multishot evaluation, tracklet queries,
heat maps (`query --explain`)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.engine.test_cli import assert_user_error, tansaku


def _people(folder: Path, persons: int = 6, cams: tuple[int, ...] = (1, 2), frames: int = 3,
            seed: int = 0, one_camera: int = 0) -> Path:
    """Market-style crops: a person is two colours (top, bottom) plus noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for pid in range(1, persons + one_camera + 1):
        top, bottom = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
        for cam in cams if pid <= persons else cams[:1]:
            for _ in range(frames):
                im = np.zeros((64, 32, 3))
                im[:32], im[32:] = top, bottom
                im = np.clip(im + rng.normal(0, 10, im.shape), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{pid:04d}_c{cam}s1_{n:06d}_00.jpg"), im[..., ::-1])
                n += 1
    return folder


def test_train_reid_of_a_missing_folder(tmp_path: Path) -> None:
    proc = tansaku(tmp_path / "home", "train-reid", str(tmp_path / "nope"), "--out",
                   str(tmp_path / "ck.pt"))
    assert_user_error(proc, "nope")


@pytest.mark.slow
def test_multishot_eval_reports_cmc_and_map(tmp_path: Path) -> None:
    data = tmp_path / "set"
    _people(data / "images", persons=8, one_camera=2)
    proc = tansaku(tmp_path / "home", "eval", "reid", str(data), "--format", "multishot",
                   "--method", "lomo", "--metric", "euclidean", "--trials", "2", "--shots", "2",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dataset"] == "multishot" and out["trials"] == 2 and out["shots"] == "2"
    assert out["rank1"] > 50.0  # colour-coded persons: LOMO finds most
    assert "2 one-camera persons as distractors" in out["protocol"]


@pytest.mark.slow
def test_train_reid_short_recipe_then_resume(tmp_path: Path) -> None:
    data = _people(tmp_path / "train", persons=4)
    ckpt = tmp_path / "abn.pt"
    proc = tansaku(tmp_path / "home", "train-reid", str(data), "--out", str(ckpt),
                   "--recipe", "short")
    assert proc.returncode == 0, proc.stderr
    assert ckpt.is_file() and (tmp_path / "abn.pt.log.tsv").is_file()
    again = tansaku(tmp_path / "home", "train-reid", str(data), "--out", str(ckpt),
                    "--recipe", "short")
    assert again.returncode == 0 and "already trained" in again.stderr


@pytest.mark.slow
def test_abn_gallery_tracklet_query_and_heat_maps(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ckpt = tmp_path / "abn.pt"
    train = _people(tmp_path / "train", persons=4, seed=1)
    assert tansaku(home, "train-reid", str(train), "--out", str(ckpt), "--recipe", "short"
                   ).returncode == 0
    gallery = _people(tmp_path / "gallery", persons=4, cams=(2,), frames=2, seed=2)
    proc = tansaku(home, "index", str(gallery), "--gallery", "p", "--profile", "person",
                   "--method", f"abn:{ckpt}")
    assert proc.returncode == 0, proc.stderr
    tracklet = _people(tmp_path / "query", persons=1, cams=(1,), frames=3, seed=2)
    out = tmp_path / "maps"
    proc = tansaku(home, "query", str(tracklet), "--gallery", "p", "--top-k", "3",
                   "--explain", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 3
    panels = sorted(out.glob("*.png"))
    assert len(panels) == 3 and all("attention" in p.name for p in panels)
    panel = cv2.imread(str(panels[0]))
    assert panel is not None and panel.shape[0] == 256
    # multishot evaluation with the checkpoint's temporal attention
    data = tmp_path / "set"
    _people(data / "images", persons=6, one_camera=1, seed=3)
    proc = tansaku(home, "eval", "reid", str(data), "--format", "multishot", "--method",
                   f"abn:{ckpt}", "--metric", "euclidean", "--trials", "2", "--pooling",
                   "attention", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pooling"] == "attention"


@pytest.mark.slow
def test_explain_needs_an_abn_gallery(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gallery = _people(tmp_path / "gallery", persons=2, cams=(2,), frames=1)
    assert tansaku(home, "index", str(gallery), "--gallery", "p", "--profile", "person",
                   "--method", "lomo").returncode == 0
    query = next(gallery.iterdir())
    proc = tansaku(home, "query", str(query), "--gallery", "p", "--explain", str(tmp_path / "m"))
    assert_user_error(proc, "abn:CKPT", "lomo")
