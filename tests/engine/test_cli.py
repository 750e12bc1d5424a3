"""The command line as a user meets it: exit codes, one-line errors, JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import sample_image, write_rgb


def tansaku(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TANSAKU_HOME": str(home)}
    env.pop("TANSAKU_DB", None)
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error:")
    for word in words:
        assert word in line


@pytest.mark.slow
def test_query_of_unknown_gallery(tmp_path: Path) -> None:
    image = write_rgb(tmp_path / "q.jpg", sample_image("coffee", 64))
    assert_user_error(tansaku(tmp_path / "home", "query", str(image), "--gallery", "nope"), "nope")


@pytest.mark.slow
def test_missing_query_image(tmp_path: Path) -> None:
    proc = tansaku(tmp_path / "home", "query", str(tmp_path / "missing.jpg"), "--gallery", "g")
    assert_user_error(proc, "missing.jpg")


@pytest.mark.slow
def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_user_error(tansaku(tmp_path / "home", "index", str(tmp_path / "empty"), "-g", "g"), "empty")


@pytest.mark.slow
def test_missing_folder(tmp_path: Path) -> None:
    proc = tansaku(tmp_path / "home", "index", str(tmp_path / "nowhere"), "-g", "g")
    assert_user_error(proc, "nowhere")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_data_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    (tmp_path / "imgs").mkdir()
    write_rgb(tmp_path / "imgs" / "a.jpg", sample_image("coffee", 64))
    proc = tansaku(locked / "home", "index", str(tmp_path / "imgs"), "-g", "g")
    assert_user_error(proc, "not writable")


@pytest.mark.slow
def test_data_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("I am not a folder")
    (tmp_path / "imgs").mkdir()
    write_rgb(tmp_path / "imgs" / "a.jpg", sample_image("coffee", 64))
    proc = tansaku(tmp_path / "file", "index", str(tmp_path / "imgs"), "-g", "g")
    assert_user_error(proc, "not writable", str(tmp_path / "file"))


@pytest.mark.slow
def test_unknown_profile_lists_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    write_rgb(tmp_path / "imgs" / "a.jpg", sample_image("coffee", 64))
    proc = tansaku(tmp_path / "home", "index", str(tmp_path / "imgs"), "-g", "g", "--profile", "cars")
    assert_user_error(proc, "cars", "landmark", "person")


@pytest.mark.slow
def test_index_then_query_json(sample_folder: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = tansaku(home, "index", str(sample_folder), "--gallery", "demo")
    assert proc.returncode == 0, proc.stderr
    assert "8 indexed, 0 unchanged, 0 failed" in proc.stdout
    query = str(sample_folder / "sub" / "coffee.jpg")
    proc = tansaku(home, "query", query, "-g", "demo", "--top-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert [r["rank"] for r in result["results"]] == [1, 2, 3]
    assert result["results"][0]["path"] == "sub/coffee.jpg"
    assert result["results"][0]["inliers"] > 50
    assert set(result["timings"]) >= {"extraction", "search", "matching", "verification"}


def test_ctrl_c_exits_130_with_a_message(monkeypatch, capsys, tmp_path: Path) -> None:
    from engine import cli
    from engine.core import Engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("TANSAKU_HOME", str(tmp_path))
    monkeypatch.setattr(Engine, "index_folder", interrupted)
    monkeypatch.setattr(sys, "argv", ["tansaku", "index", str(tmp_path), "-g", "g"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 130
    assert "interrupted" in capsys.readouterr().err


def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    proc = tansaku(tmp_path / "home", "query", "x.jpg", "--gallery", "g", "--top-k", "many")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--top-k" in proc.stderr
