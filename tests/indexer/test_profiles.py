"""Profiles and `--model` specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.profiles import GALLERY_HEADS, model_config, resolve_profile


def test_default_landmark_model_is_the_preset() -> None:
    assert model_config("gem-rootsift") == resolve_profile("landmark")
    assert resolve_profile("landmark")["whitening"]["min_images"] == 300


def test_delg_specs_resolve_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heads.pt").write_bytes(b"x")
    (tmp_path / "saved").mkdir()
    untrained = model_config("delg-efficientnet-lite0")
    assert untrained["joint"] == {"name": "delg-efficientnet-lite0", "conf": {"heads": GALLERY_HEADS}}
    trained = model_config("delg-efficientnet-lite0:heads.pt")
    assert trained["joint"]["conf"]["heads"] == str(tmp_path / "heads.pt")
    assert trained["model"] == f"delg-efficientnet-lite0:{tmp_path / 'heads.pt'}"
    saved = model_config("delg-savedmodel:saved")
    assert saved["joint"] == {"name": "delg-savedmodel",
                              "conf": {"path": str(tmp_path / "saved"), "preset": "r50-gldv2-clean"}}
    assert saved["model"] == f"delg-savedmodel:{tmp_path / 'saved'}"  # as before presets
    assert saved["metric"] == "ip" and "local" not in saved and saved["store"] == {"local": "int8"}


def test_savedmodel_preset_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r101").mkdir()
    spec = model_config("delg-savedmodel:r101?preset=R101-GLD")
    assert spec["joint"]["conf"] == {"path": str(tmp_path / "r101"), "preset": "r101-gld"}
    assert spec["model"] == f"delg-savedmodel:{tmp_path / 'r101'}?preset=r101-gld"
    assert model_config(spec["model"]) == spec  # the stored spec reads back the same


@pytest.mark.parametrize(("spec", "message"), [
    ("delf", "unknown model 'delf'"),
    ("delg-savedmodel", "needs the SavedModel folder"),
    ("delg-savedmodel:/no/such/dir", "SavedModel folder not found: /no/such/dir"),
    ("delg-efficientnet-lite0:/no/heads.pt", "heads file not found: /no/heads.pt"),
    ("gem-rootsift:x", "takes no argument"),
    ("delg-savedmodel:/tmp?preset=r18", "unknown DELG preset 'r18'; valid: r50-gldv2-clean, "
                                        "r101-gldv2-clean, r50-gld, r101-gld"),
    ("delg-savedmodel:/tmp?thres=1", r"unknown option \['thres'\]; valid: preset"),
    ("delg-savedmodel:/tmp?preset", "bad option 'preset'"),
])
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_config(spec)
