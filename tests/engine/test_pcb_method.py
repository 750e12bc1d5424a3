"""`--method pcb:CKPT` end to end: a checkpoint trained here by train-pcb indexes a person gallery,
answers queries, is re-projected by train-projection from another folder, and is evaluated on a
tiny VIPeR layout, through the command line as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from indexer.extractors.pcb import load_any_pcb
from indexer.extractors.pcb_train import train_pcb
from indexer.extractors.person import describe_persons
from tests.conftest import write_rgb
from tests.engine.test_cli import assert_user_error
from tests.engine.test_person_gallery import person_crop

pytestmark = pytest.mark.slow
IDS = 6
SMALL = (96, 32)  # the smallest input with one stride-16 row per stripe: training takes seconds
REPO = Path(__file__).resolve().parents[2]


def tansaku(home: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The CLI of this checkout, run from `cwd`."""
    env = {**os.environ, "TANSAKU_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("TANSAKU_DB", None)
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market")
    rng = np.random.default_rng(0)
    for pid in range(1, IDS + 1):
        for cam in (1, 2):
            write_rgb(root / "bounding_box_train" / f"{pid + 50:04d}_c{cam}s1_000001_00.jpg",
                      person_crop(pid + 50, cam, rng))
            write_rgb(root / "bounding_box_test" / f"{pid:04d}_c{cam}s1_{cam:06d}_00.jpg",
                      person_crop(pid, cam, rng))
        write_rgb(root / "query" / f"{pid:04d}_c1s1_000009_00.jpg", person_crop(pid, 1, rng))
    return root


@pytest.fixture(scope="module")
def checkpoint(market: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_pcb(market, tmp_path_factory.mktemp("run"), epochs=1, batch_size=6, lr=0.05,
                         device="cpu", input_size=SMALL, pretrained=False)
    finally:
        torch.set_num_threads(before)


def test_index_query_and_project_with_a_trained_checkpoint(
    market: Path, checkpoint: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    relative = f"{checkpoint.parent.name}/{checkpoint.name}"  # from the run's parent folder
    proc = tansaku(home, "index", str(market / "bounding_box_test"), "--gallery", "p",
                   "--profile", "person", "--method", f"pcb:{relative}",
                   cwd=checkpoint.parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert f"{2 * IDS} indexed" in proc.stdout
    # from another folder, the gallery's stored method still names the file
    proc = tansaku(home, "train-projection", str(market), "--gallery", "p", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["method"] == f"pcb:{checkpoint.resolve()}" and report["reprojected"] == 2 * IDS
    query = market / "query" / "0003_c1s1_000009_00.jpg"
    proc = tansaku(home, "query", str(query), "-g", "p", "--top-k", "3", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 3 and all(r["path"].endswith(".jpg") for r in results)
    assert load_any_pcb(checkpoint).input_size == SMALL  # the size it was trained at


def test_stored_features_are_the_checkpoints(market: Path, checkpoint: Path) -> None:
    crops = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
             for p in sorted((market / "query").iterdir())[:2]]
    from indexer.extractors.pcb import load_pcb, pcb_batch

    direct = pcb_batch(crops, model=load_pcb(checkpoint), device="cpu")
    via_method = describe_persons(f"pcb:{checkpoint}", crops)
    np.testing.assert_allclose(via_method, direct, atol=1e-5)
    fused = describe_persons(f"gog+pcb:{checkpoint}", crops)
    assert fused.shape == (2, 27622 + direct.shape[1])
    # each fused part is L2-normalised: the PCB part is the checkpoint's, scaled to unit norm
    part = fused[:, 27622:]
    np.testing.assert_allclose(part, direct / np.linalg.norm(direct, axis=1, keepdims=True),
                               atol=1e-5)


def _viper(root: Path, market: Path) -> Path:
    """VIPeR's layout (cam_a/NNN_*.bmp, cam_b/NNN_*.bmp) from the test crops of each person."""
    for path in sorted((market / "bounding_box_test").iterdir()):
        pid, cam = int(path.name[:4]), int(path.name[6])
        folder = root / ("cam_a" if cam == 1 else "cam_b")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{pid:03d}_{cam * 45}.bmp"), cv2.imread(str(path)))
    return root


def test_eval_reid_with_a_checkpoint(market: Path, checkpoint: Path, tmp_path: Path) -> None:
    viper = _viper(tmp_path / "viper", market)
    proc = tansaku(tmp_path / "home", "eval", "reid", str(viper), "--format", "viper",
                   "--method", f"pcb:{checkpoint}", "--metric", "euclidean", "--trials", "2",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert scores["method"] == f"pcb:{checkpoint}+euclidean" and scores["trials"] == 2
    assert 0.0 <= scores["rank1"] <= scores["rank5"] <= 100.0
    # a file that is not a checkpoint is one error line naming it
    notes = tmp_path / "NOTES.txt"
    notes.write_text("not a checkpoint\n")
    proc = tansaku(tmp_path / "home", "eval", "reid", str(viper), "--format", "viper",
                   "--method", f"pcb:{notes}", "--metric", "euclidean", "--trials", "1")
    assert_user_error(proc, "NOTES.txt", "not a PCB checkpoint")
